//! AdamW, learning-rate schedules and gradient clipping, with PyTorch's exact arithmetic.
//!
//! [`AdamW::step`] follows `torch.optim.AdamW` (decoupled weight decay applied before the
//! moment update, bias-corrected moments, `eps` added after the square root) so that one
//! step matches PyTorch to float rounding. The moments are kept by parameter name and can
//! be saved and restored with [`AdamW::state`] and [`AdamW::restore`], which is what lets a
//! resumed run continue exactly where it stopped.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor, backprop::GradStore};
use serde::{Deserialize, Serialize};

use crate::error::ClipError;
use crate::params::Params;

/// AdamW hyper-parameters; the defaults are the PAPERCLIP run's (optax defaults plus
/// weight decay 1e-3 on every parameter).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
    /// Decoupled weight decay, multiplied by the learning rate.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-3,
        }
    }
}

/// First and second moments of one parameter.
#[derive(Debug, Clone)]
struct Moments {
    first: Tensor,
    second: Tensor,
}

/// AdamW over every parameter of a [`Params`] set.
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    steps_taken: u64,
    moments: BTreeMap<String, Moments>,
}

impl AdamW {
    /// Creates an optimizer with zero moments for every parameter.
    pub fn new(params: &Params, config: AdamWConfig) -> Result<Self, ClipError> {
        let moments = params
            .iter()
            .map(|(name, var)| {
                let zeros = var.zeros_like()?;
                Ok((
                    name.to_string(),
                    Moments {
                        first: zeros.clone(),
                        second: zeros,
                    },
                ))
            })
            .collect::<Result<_, ClipError>>()?;
        Ok(Self {
            config,
            steps_taken: 0,
            moments,
        })
    }

    /// Number of steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.steps_taken
    }

    /// Updates every parameter that has a gradient with learning rate `lr`.
    ///
    /// Parameters without a gradient are left alone, as PyTorch does for `grad is None`.
    pub fn step(&mut self, params: &Params, grads: &GradStore, lr: f64) -> Result<(), ClipError> {
        self.steps_taken += 1;
        let t = self.steps_taken as i32;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        let bias1 = 1.0 - beta1.powi(t);
        let bias2_sqrt = (1.0 - beta2.powi(t)).sqrt();
        let step_size = lr / bias1;

        for (name, var) in params.iter() {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let moments = self
                .moments
                .get_mut(name)
                .ok_or_else(|| ClipError::Input(format!("optimizer has no state for {name:?}")))?;
            let grad = grad.to_dtype(DType::F32)?;

            moments.first = ((&moments.first * beta1)? + (&grad * (1.0 - beta1))?)?;
            moments.second = ((&moments.second * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?;

            let decayed = (var.as_tensor() * (1.0 - lr * weight_decay))?;
            let denom = ((moments.second.sqrt()? / bias2_sqrt)? + eps)?;
            let update = (moments.first.div(&denom)? * step_size)?;
            var.set(&(decayed - update)?)?;
        }
        Ok(())
    }

    /// Returns the moments by name (`{name}.exp_avg`, `{name}.exp_avg_sq`) for a checkpoint.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        self.moments
            .iter()
            .flat_map(|(name, m)| {
                [
                    (format!("{name}.exp_avg"), m.first.clone()),
                    (format!("{name}.exp_avg_sq"), m.second.clone()),
                ]
            })
            .collect()
    }

    /// Restores moments saved by [`AdamW::state`] and the step count that goes with them.
    pub fn restore(
        &mut self,
        state: &BTreeMap<String, Tensor>,
        steps_taken: u64,
    ) -> Result<(), ClipError> {
        for (name, moments) in &mut self.moments {
            let expected = moments.first.dims().to_vec();
            let get = |suffix: &str| {
                let key = format!("{name}.{suffix}");
                let tensor = state.get(&key).ok_or_else(|| {
                    ClipError::Input(format!(
                        "optimizer state has no tensor {key:?}; the checkpoint belongs to \
                         another model geometry"
                    ))
                })?;
                if tensor.dims() != expected.as_slice() {
                    return Err(ClipError::Input(format!(
                        "optimizer state {key:?} has shape {:?}, the model needs {:?}",
                        tensor.dims(),
                        expected
                    )));
                }
                Ok(tensor.clone())
            };
            moments.first = get("exp_avg")?;
            moments.second = get("exp_avg_sq")?;
        }
        self.steps_taken = steps_taken;
        Ok(())
    }
}

/// Global L2 norm of all gradients, as `torch.nn.utils.clip_grad_norm_` computes it.
pub fn grad_norm(params: &Params, grads: &GradStore) -> Result<f64, ClipError> {
    let mut sum_sq = 0f64;
    for (_, var) in params.iter() {
        if let Some(grad) = grads.get(var.as_tensor()) {
            sum_sq += grad
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
    }
    Ok(sum_sq.sqrt())
}

/// Scales every gradient so that their global norm is at most `max_norm`, as
/// `clip_grad_norm_` does (factor `max_norm / (norm + 1e-6)`, only when below 1), and
/// returns the norm before clipping.
pub fn clip_grad_norm(
    params: &Params,
    grads: &mut GradStore,
    max_norm: f64,
) -> Result<f64, ClipError> {
    let norm = grad_norm(params, grads)?;
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        for (_, var) in params.iter() {
            if let Some(grad) = grads.get(var.as_tensor()) {
                let scaled = (grad * factor)?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

/// Shape of the learning rate after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Stays at the peak (the PAPERCLIP main run).
    Constant,
    /// Follows half a cosine from the peak to zero at the last step.
    Cosine,
}

/// Linear warm-up from zero, then [`Decay`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Learning rate after warm-up.
    pub peak_lr: f64,
    /// Steps of the linear ramp from 0.
    pub warmup_steps: u64,
    /// Total steps of the run (the cosine reaches zero here).
    pub total_steps: u64,
    /// Shape after warm-up.
    pub decay: Decay,
}

impl Schedule {
    /// Returns the learning rate of the 0-based `step`, as optax's `linear_schedule` (0 at step 0).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * step as f64 / self.warmup_steps as f64;
        }
        match self.decay {
            Decay::Constant => self.peak_lr,
            Decay::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
                0.5 * self.peak_lr * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}
