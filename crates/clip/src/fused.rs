//! Softmax and LayerNorm standardization as single CPU kernels that have a backward pass.
//!
//! Composed from tensor operations, each of these takes five to nine passes over memory
//! forward and more backward; on the CPU that dominated a training step. These ops do one
//! pass each way over rows of the last dimension, in f32, on rayon. They run only on
//! contiguous f32 CPU tensors; [`softmax_last`] and [`standardize_last`] fall back to the
//! composed forms for anything else (other devices and dtypes), so results are the same
//! everywhere up to float rounding. `tests/parity.rs` and `tests/gradients.rs` cover both.

use candle_core::{CpuStorage, CustomOp1, D, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::ClipError;

fn uses_kernel(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Softmax over the last dimension.
pub fn softmax_last(x: &Tensor) -> Result<Tensor, ClipError> {
    if uses_kernel(x) {
        return Ok(x.contiguous()?.apply_op1(Softmax)?);
    }
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    let exp = shifted.exp()?;
    Ok(exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?)
}

/// `(x - mean) / sqrt(variance + eps)` over the last dimension (biased variance, as
/// `torch.nn.LayerNorm`).
pub fn standardize_last(x: &Tensor, eps: f64) -> Result<Tensor, ClipError> {
    if uses_kernel(x) {
        return Ok(x.contiguous()?.apply_op1(Standardize { eps: eps as f32 })?);
    }
    let centered = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let variance = centered.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(centered.broadcast_div(&(variance + eps)?.sqrt()?)?)
}

/// Returns the contiguous f32 data of a CPU storage, or an error naming the op.
fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        return Err(candle_core::Error::Msg(format!(
            "{op} takes f32 tensors only"
        )));
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op} takes contiguous tensors only")))?;
    Ok(&data[start..end])
}

/// Returns the last dimension's size, at least 1.
fn row_len(shape: &Shape) -> usize {
    shape.dims().last().copied().unwrap_or(1).max(1)
}

/// Reads a tensor as a contiguous f32 vector.
fn to_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "paperclip-softmax-last"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout, self.name())?;
        let n = row_len(layout.shape());
        let mut output = vec![0f32; input.len()];
        output
            .par_chunks_mut(n)
            .zip(input.par_chunks(n))
            .for_each(|(out, row)| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = (v - max).exp();
                    sum += *o;
                }
                let inverse = 1.0 / sum;
                out.iter_mut().for_each(|o| *o *= inverse);
            });
        Ok((CpuStorage::F32(output), layout.shape().clone()))
    }

    /// `dx = y * (g - Σ g·y)` per row.
    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let n = row_len(res.shape());
        let y = to_vec(res)?;
        let g = to_vec(&grad.to_dtype(DType::F32)?)?;
        let mut dx = vec![0f32; y.len()];
        dx.par_chunks_mut(n)
            .zip(y.par_chunks(n).zip(g.par_chunks(n)))
            .for_each(|(out, (y, g))| {
                let dot: f32 = y.iter().zip(g).map(|(a, b)| a * b).sum();
                for ((o, &yi), &gi) in out.iter_mut().zip(y).zip(g) {
                    *o = yi * (gi - dot);
                }
            });
        Ok(Some(Tensor::from_vec(dx, res.shape(), res.device())?))
    }
}

struct Standardize {
    eps: f32,
}

/// Mean and reciprocal standard deviation of one row.
fn row_moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let variance = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (variance + eps).sqrt())
}

impl CustomOp1 for Standardize {
    fn name(&self) -> &'static str {
        "paperclip-standardize-last"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout, self.name())?;
        let n = row_len(layout.shape());
        let mut output = vec![0f32; input.len()];
        output
            .par_chunks_mut(n)
            .zip(input.par_chunks(n))
            .for_each(|(out, row)| {
                let (mean, rstd) = row_moments(row, self.eps);
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = (v - mean) * rstd;
                }
            });
        Ok((CpuStorage::F32(output), layout.shape().clone()))
    }

    /// `dx = rstd · (g − mean(g) − x̂ · mean(g·x̂))` per row, with x̂ the output.
    fn bwd(
        &self,
        arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let n = row_len(res.shape());
        let x = to_vec(arg)?;
        let x_hat = to_vec(res)?;
        let g = to_vec(&grad.to_dtype(DType::F32)?)?;
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(n)
            .zip(
                x.par_chunks(n)
                    .zip(x_hat.par_chunks(n).zip(g.par_chunks(n))),
            )
            .for_each(|(out, (x, (x_hat, g)))| {
                let (_, rstd) = row_moments(x, self.eps);
                let len = n as f32;
                let mean_g = g.iter().sum::<f32>() / len;
                let mean_gx = g.iter().zip(x_hat).map(|(a, b)| a * b).sum::<f32>() / len;
                for ((o, &gi), &xi) in out.iter_mut().zip(g).zip(x_hat) {
                    *o = rstd * (gi - mean_g - xi * mean_gx);
                }
            });
        Ok(Some(Tensor::from_vec(dx, res.shape(), res.device())?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::{softmax_last, standardize_last};

    /// Runs `f` on the f32 kernel and on the composed f64 form; returns the largest
    /// difference of the outputs and of the input gradients for a weighted sum.
    fn compare(f: impl Fn(&Tensor) -> Tensor) -> (f64, f64) {
        let x = Tensor::randn(0f32, 2f32, (3, 5, 7), &Device::Cpu).unwrap();
        let weights = Tensor::randn(0f32, 1f32, (3, 5, 7), &Device::Cpu).unwrap();
        let run = |dtype: DType| {
            let var = Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap();
            let y = f(var.as_tensor());
            let loss = (&y * weights.to_dtype(dtype).unwrap())
                .unwrap()
                .sum_all()
                .unwrap();
            let grad = loss
                .backward()
                .unwrap()
                .get(var.as_tensor())
                .unwrap()
                .clone();
            let flat = |t: &Tensor| {
                t.to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            };
            (flat(&y), flat(&grad))
        };
        let (y32, g32) = run(DType::F32);
        let (y64, g64) = run(DType::F64);
        let max = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f64::max)
        };
        (max(&y32, &y64), max(&g32, &g64))
    }

    #[test]
    fn softmax_kernel_matches_composed_form() {
        let (value, grad) = compare(|x| softmax_last(x).unwrap());
        assert!(
            value < 1e-6 && grad < 1e-6,
            "value {value:e}, gradient {grad:e}"
        );
    }

    #[test]
    fn standardize_kernel_matches_composed_form() {
        let (value, grad) = compare(|x| standardize_last(x, 1e-5).unwrap());
        assert!(
            value < 1e-5 && grad < 1e-5,
            "value {value:e}, gradient {grad:e}"
        );
    }
}
