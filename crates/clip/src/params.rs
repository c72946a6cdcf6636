//! The trainable parameters of a model, by Hugging Face tensor name.
//!
//! Invariants: names are unique; iteration is in name order, so optimizer state, gradient
//! norms and checkpoints never depend on hash order; every tensor is a candle [`Var`], so
//! `loss.backward()` reaches it. Random initialization draws from the crate's seeded
//! [`Rng`](crate::rng::Rng) in name order, so one seed gives one model on every machine.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use crate::error::ClipError;
use crate::rng::Rng;

/// Starting value of a parameter before any weights are loaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Every element equals the value.
    Const(f64),
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
}

/// Named trainable tensors.
#[derive(Debug, Default)]
pub struct Params {
    vars: BTreeMap<String, Var>,
    inits: BTreeMap<String, (Vec<usize>, Init)>,
}

impl Params {
    /// Registers a parameter and returns its tensor; the values come from [`Params::initialize`].
    pub fn declare(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        device: &Device,
    ) -> Result<Tensor, ClipError> {
        if self.vars.contains_key(name) {
            return Err(ClipError::Input(format!(
                "parameter {name:?} declared twice"
            )));
        }
        let var = Var::zeros(shape, DType::F32, device)?;
        let tensor = var.as_tensor().clone();
        self.vars.insert(name.to_string(), var);
        self.inits.insert(name.to_string(), (shape.to_vec(), init));
        Ok(tensor)
    }

    /// Draws every parameter from its [`Init`], in name order, from one seeded generator.
    pub fn initialize(&self, seed: u64) -> Result<(), ClipError> {
        let mut rng = Rng::seeded(seed);
        for (name, var) in &self.vars {
            let (shape, init) = &self.inits[name];
            let count: usize = shape.iter().product();
            let values: Vec<f32> = match *init {
                Init::Const(value) => vec![value as f32; count],
                Init::Normal(stdev) => (0..count).map(|_| (rng.normal() * stdev) as f32).collect(),
            };
            var.set(&Tensor::from_vec(values, shape.as_slice(), var.device())?)?;
        }
        Ok(())
    }

    /// Parameters in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.vars.iter().map(|(name, var)| (name.as_str(), var))
    }

    /// Returns one parameter by name.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    /// Number of parameter tensors.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether no parameter was declared.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Number of scalar parameters.
    pub fn element_count(&self) -> usize {
        self.vars.values().map(|var| var.elem_count()).sum()
    }

    /// Copies the current values out, detached from the graph. The copies own their
    /// storage: later optimizer steps, which update parameters in place, leave them as
    /// they are.
    pub fn snapshot(&self) -> Result<BTreeMap<String, Tensor>, ClipError> {
        self.vars
            .iter()
            .map(|(name, var)| Ok((name.clone(), var.as_tensor().copy()?.detach())))
            .collect()
    }

    /// Writes every parameter to a safetensors file under its name.
    pub fn save(&self, path: &Path) -> Result<(), ClipError> {
        let tensors: std::collections::HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(name, var)| (name.clone(), var.as_detached_tensor()))
            .collect();
        candle_core::safetensors::save(&tensors, path).map_err(|err| ClipError::Io {
            path: path.to_path_buf(),
            message: err.to_string(),
        })
    }

    /// Sets parameters from a safetensors file with Hugging Face names.
    ///
    /// Every parameter must be in the file with the right shape, except those listed in
    /// `optional`, which keep their current value when absent. Tensors in the file that the
    /// model does not use (for example `text_model.embeddings.position_ids`) are ignored
    /// and returned, so a caller can report them.
    pub fn load(&self, path: &Path, optional: &[&str]) -> Result<Vec<String>, ClipError> {
        let device = self
            .vars
            .values()
            .next()
            .map(|var| var.device().clone())
            .unwrap_or(Device::Cpu);
        let tensors =
            candle_core::safetensors::load(path, &device).map_err(|err| ClipError::Io {
                path: path.to_path_buf(),
                message: format!("cannot read as safetensors: {err}"),
            })?;
        for (name, var) in &self.vars {
            let Some(tensor) = tensors.get(name) else {
                if optional.contains(&name.as_str()) {
                    continue;
                }
                return Err(ClipError::MissingTensor {
                    path: path.to_path_buf(),
                    name: name.clone(),
                });
            };
            let tensor = reshape_scalar(tensor, var.dims())?;
            if tensor.dims() != var.dims() {
                return Err(ClipError::ShapeMismatch {
                    path: path.to_path_buf(),
                    name: name.clone(),
                    found: tensor.dims().to_vec(),
                    expected: var.dims().to_vec(),
                });
            }
            var.set(&tensor.to_dtype(DType::F32)?)?;
        }
        let mut unused: Vec<String> = tensors
            .keys()
            .filter(|name| !self.vars.contains_key(*name))
            .cloned()
            .collect();
        unused.sort();
        Ok(unused)
    }
}

/// Checkpoints store `logit_scale` either as a scalar or as a one-element vector.
fn reshape_scalar(tensor: &Tensor, expected: &[usize]) -> Result<Tensor, ClipError> {
    if tensor.elem_count() == 1 && expected.iter().product::<usize>() == 1 {
        return Ok(tensor.reshape(expected)?);
    }
    Ok(tensor.clone())
}
