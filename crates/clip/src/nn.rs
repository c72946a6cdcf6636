//! Transformer building blocks written with differentiable tensor operations only.
//!
//! candle 0.11's fused LayerNorm and `softmax_last_dim` record no backward pass, so a model
//! built on them trains only part of its parameters without any error. Every block here is
//! composed of operations that do have one (matmul, broadcast arithmetic, exp, sums), and
//! `tests/gradients.rs` checks that each parameter of a whole model receives a gradient.

use candle_core::{D, DType, Device, Tensor};

use crate::config::Activation;
use crate::error::ClipError;
use crate::params::{Init, Params};

/// `y = x Wᵀ + b` with `W` stored as `[out, in]` like PyTorch.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Declares `{prefix}.weight` (and `{prefix}.bias` when `bias`).
    pub fn new(
        params: &mut Params,
        prefix: &str,
        (in_dim, out_dim): (usize, usize),
        weight_stdev: f64,
        bias: bool,
        device: &Device,
    ) -> Result<Self, ClipError> {
        let weight = params.declare(
            &format!("{prefix}.weight"),
            &[out_dim, in_dim],
            Init::Normal(weight_stdev),
            device,
        )?;
        let bias = if bias {
            Some(params.declare(
                &format!("{prefix}.bias"),
                &[out_dim],
                Init::Const(0.0),
                device,
            )?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// Applies the layer to the last dimension of `x`.
    ///
    /// Leading dimensions are flattened into one, so the product is a single 2-D matrix
    /// product: its backward pass gives the weight gradient in one product instead of one
    /// per batch row summed afterwards.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ClipError> {
        let dims = x.dims().to_vec();
        let (in_dim, leading) = dims.split_last().ok_or_else(|| {
            ClipError::Input("a linear layer needs at least one dimension".to_string())
        })?;
        let rows: usize = leading.iter().product();
        let flat = x.reshape((rows, *in_dim))?;
        // Weights are kept in f32 and cast to the input's dtype (bf16 in mixed precision);
        // the cast is differentiable, so gradients reach the f32 weights.
        let weight = self.weight.to_dtype(x.dtype())?;
        let mut y = flat.matmul(&weight.t()?)?;
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(&bias.to_dtype(x.dtype())?)?;
        }
        let mut out_dims = leading.to_vec();
        out_dims.push(y.dim(1)?);
        Ok(y.reshape(out_dims)?)
    }
}

/// LayerNorm over the last dimension, as `torch.nn.LayerNorm` (biased variance).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Declares `{prefix}.weight` (ones) and `{prefix}.bias` (zeros).
    pub fn new(
        params: &mut Params,
        prefix: &str,
        dim: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self, ClipError> {
        Ok(Self {
            weight: params.declare(
                &format!("{prefix}.weight"),
                &[dim],
                Init::Const(1.0),
                device,
            )?,
            bias: params.declare(&format!("{prefix}.bias"), &[dim], Init::Const(0.0), device)?,
            eps,
        })
    }

    /// Normalizes `x` over its last dimension, in f32 whatever the dtype of `x`, and
    /// returns the dtype of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ClipError> {
        let normalized = crate::fused::standardize_last(&x.to_dtype(DType::F32)?, self.eps)?;
        let y = normalized
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?;
        Ok(y.to_dtype(x.dtype())?)
    }
}

/// Log-softmax over the last dimension.
pub fn log_softmax_last(x: &Tensor) -> Result<Tensor, ClipError> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&log_sum)?)
}

fn activate(x: &Tensor, activation: Activation) -> Result<Tensor, ClipError> {
    Ok(match activation {
        // candle's sigmoid has a backward pass (unlike its fused LayerNorm).
        Activation::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
        Activation::Gelu => x.gelu_erf()?,
    })
}

/// Sizes and initial scales shared by the blocks of one tower.
#[derive(Debug, Clone, Copy)]
pub struct BlockShape {
    /// Residual width.
    pub hidden: usize,
    /// MLP inner width.
    pub intermediate: usize,
    /// Attention heads.
    pub heads: usize,
    /// Number of blocks, which scales the initial weights as Hugging Face does.
    pub layers: usize,
    /// MLP non-linearity.
    pub activation: Activation,
    /// LayerNorm epsilon.
    pub eps: f64,
}

impl BlockShape {
    /// The blocks of the text tower.
    pub fn text(config: &crate::config::TextConfig) -> Self {
        Self {
            hidden: config.hidden_size,
            intermediate: config.intermediate_size,
            heads: config.num_attention_heads,
            layers: config.num_hidden_layers,
            activation: config.hidden_act,
            eps: config.layer_norm_eps,
        }
    }

    /// The blocks of the vision tower.
    pub fn vision(config: &crate::config::VisionConfig) -> Self {
        Self {
            hidden: config.hidden_size,
            intermediate: config.intermediate_size,
            heads: config.num_attention_heads,
            layers: config.num_hidden_layers,
            activation: config.hidden_act,
            eps: config.layer_norm_eps,
        }
    }

    fn in_proj_stdev(&self) -> f64 {
        (self.hidden as f64).powf(-0.5) * ((2 * self.layers) as f64).powf(-0.5)
    }
}

/// Multi-head self-attention with `q_proj`, `k_proj`, `v_proj` and `out_proj`.
#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    fn new(
        params: &mut Params,
        prefix: &str,
        shape: BlockShape,
        device: &Device,
    ) -> Result<Self, ClipError> {
        let dims = (shape.hidden, shape.hidden);
        let in_stdev = shape.in_proj_stdev();
        let out_stdev = (shape.hidden as f64).powf(-0.5);
        Ok(Self {
            q: Linear::new(
                params,
                &format!("{prefix}.q_proj"),
                dims,
                in_stdev,
                true,
                device,
            )?,
            k: Linear::new(
                params,
                &format!("{prefix}.k_proj"),
                dims,
                in_stdev,
                true,
                device,
            )?,
            v: Linear::new(
                params,
                &format!("{prefix}.v_proj"),
                dims,
                in_stdev,
                true,
                device,
            )?,
            out: Linear::new(
                params,
                &format!("{prefix}.out_proj"),
                dims,
                out_stdev,
                true,
                device,
            )?,
            heads: shape.heads,
        })
    }

    /// `x` is `[batch, seq, hidden]`; `mask`, when given, is added to the `[seq, seq]` scores.
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor, ClipError> {
        let (batch, seq, hidden) = x.dims3()?;
        let head_dim = hidden / self.heads;
        let split = |t: Tensor| -> Result<Tensor, ClipError> {
            Ok(t.reshape((batch, seq, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split((self.q.forward(x)? * (head_dim as f64).powf(-0.5))?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;

        // Scores, mask and softmax in f32, so a bf16 run cannot overflow there.
        let mut scores = q.matmul(&k.t()?.contiguous()?)?.to_dtype(DType::F32)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let weights = crate::fused::softmax_last(&scores)?.to_dtype(v.dtype())?;

        let context = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch, seq, hidden))?;
        self.out.forward(&context)
    }
}

/// One pre-norm transformer block: attention and MLP, each around a residual.
#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    attention: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl Block {
    fn new(
        params: &mut Params,
        prefix: &str,
        shape: BlockShape,
        device: &Device,
    ) -> Result<Self, ClipError> {
        let fc1_stdev = ((2 * shape.hidden) as f64).powf(-0.5);
        Ok(Self {
            norm1: LayerNorm::new(
                params,
                &format!("{prefix}.layer_norm1"),
                shape.hidden,
                shape.eps,
                device,
            )?,
            attention: Attention::new(params, &format!("{prefix}.self_attn"), shape, device)?,
            norm2: LayerNorm::new(
                params,
                &format!("{prefix}.layer_norm2"),
                shape.hidden,
                shape.eps,
                device,
            )?,
            fc1: Linear::new(
                params,
                &format!("{prefix}.mlp.fc1"),
                (shape.hidden, shape.intermediate),
                fc1_stdev,
                true,
                device,
            )?,
            fc2: Linear::new(
                params,
                &format!("{prefix}.mlp.fc2"),
                (shape.intermediate, shape.hidden),
                shape.in_proj_stdev(),
                true,
                device,
            )?,
            activation: shape.activation,
        })
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor, ClipError> {
        let attended = self.attention.forward(&self.norm1.forward(x)?, mask)?;
        let x = (x + attended)?;

        let inner = activate(
            &self.fc1.forward(&self.norm2.forward(&x)?)?,
            self.activation,
        )?;
        let mlp = self.fc2.forward(&inner)?;
        Ok((x + mlp)?)
    }
}

/// A stack of blocks named `{prefix}.layers.{i}`.
#[derive(Debug, Clone)]
pub struct Encoder {
    blocks: Vec<Block>,
}

impl Encoder {
    /// Declares `shape.layers` blocks.
    pub fn new(
        params: &mut Params,
        prefix: &str,
        shape: BlockShape,
        device: &Device,
    ) -> Result<Self, ClipError> {
        let blocks = (0..shape.layers)
            .map(|i| Block::new(params, &format!("{prefix}.layers.{i}"), shape, device))
            .collect::<Result<_, _>>()?;
        Ok(Self { blocks })
    }

    /// Runs every block in order.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor, ClipError> {
        let mut x = x.clone();
        for block in &self.blocks {
            x = block.forward(&x, mask)?;
        }
        Ok(x)
    }
}
