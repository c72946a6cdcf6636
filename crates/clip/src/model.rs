//! The CLIP model: a text tower, a vision tower and two projections into a joint space.
//!
//! Parameter names and layouts are Hugging Face's `CLIPModel` (`text_model.*`,
//! `vision_model.*`, `text_projection.weight`, `visual_projection.weight`, `logit_scale`),
//! so `openai/clip-vit-base-patch16`'s `model.safetensors` loads as is and a checkpoint
//! written by [`crate::checkpoint`] loads back into `transformers`. Random initialization
//! follows `transformers`' `CLIPPreTrainedModel._init_weights` distributions.
//!
//! Inputs: pixels as `[batch, 3, image_size, image_size]` f32 after CLIP normalization;
//! token ids as `[batch, context]` u32 rows that each contain the end-of-text token.

use candle_core::{D, DType, Device, Tensor};

use crate::config::{ClipConfig, TextConfig, VisionConfig};
use crate::error::ClipError;
use crate::nn::{BlockShape, Encoder, LayerNorm, Linear};
use crate::params::{Init, Params};

/// The text transformer up to its pooled output.
#[derive(Debug, Clone)]
pub struct TextTower {
    config: TextConfig,
    token_embedding: Tensor,
    position_embedding: Tensor,
    encoder: Encoder,
    final_norm: LayerNorm,
}

impl TextTower {
    fn new(params: &mut Params, config: &TextConfig, device: &Device) -> Result<Self, ClipError> {
        let hidden = config.hidden_size;
        let shape = BlockShape::text(config);
        Ok(Self {
            token_embedding: params.declare(
                "text_model.embeddings.token_embedding.weight",
                &[config.vocab_size, hidden],
                Init::Normal(0.02),
                device,
            )?,
            position_embedding: params.declare(
                "text_model.embeddings.position_embedding.weight",
                &[config.max_position_embeddings, hidden],
                Init::Normal(0.02),
                device,
            )?,
            encoder: Encoder::new(params, "text_model.encoder", shape, device)?,
            final_norm: LayerNorm::new(
                params,
                "text_model.final_layer_norm",
                hidden,
                config.layer_norm_eps,
                device,
            )?,
            config: config.clone(),
        })
    }

    /// Returns the hidden state at each row's end-of-text position, `[batch, hidden]`, computed in
    /// `dtype` (f32, or bf16 for mixed precision).
    pub fn forward(&self, ids: &Tensor, dtype: DType) -> Result<Tensor, ClipError> {
        let (batch, seq) = ids.dims2()?;
        let pool_rows = self.pool_positions(ids)?;

        let tokens = self.token_embedding.embedding(&ids.flatten_all()?)?;
        let tokens = tokens.reshape((batch, seq, self.config.hidden_size))?;
        let positions = self.position_embedding.narrow(0, 0, seq)?;
        let x = tokens.broadcast_add(&positions)?.to_dtype(dtype)?;

        let mask = causal_mask(seq, ids.device())?;
        let x = self.encoder.forward(&x, Some(&mask))?;
        let x = self.final_norm.forward(&x)?;

        let flat = x.reshape((batch * seq, self.config.hidden_size))?;
        let rows = Tensor::from_vec(pool_rows, batch, ids.device())?;
        Ok(flat.index_select(&rows, 0)?)
    }

    /// Flat row index (`b * seq + position`) of each row's end-of-text token.
    fn pool_positions(&self, ids: &Tensor) -> Result<Vec<u32>, ClipError> {
        let (_, seq) = ids.dims2()?;
        if seq > self.config.max_position_embeddings {
            return Err(ClipError::Input(format!(
                "token rows have {seq} positions but the text tower holds {}; truncate \
                 captions to the model's context length",
                self.config.max_position_embeddings
            )));
        }
        let rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        rows.iter()
            .enumerate()
            .map(|(b, row)| {
                let position = self.eos_position(row).ok_or_else(|| {
                    ClipError::Input(format!(
                        "token row {b} has no end-of-text token {}; tokenize captions with \
                         start and end tokens",
                        self.config.eos_token_id
                    ))
                })?;
                Ok((b * seq + position) as u32)
            })
            .collect()
    }

    fn eos_position(&self, row: &[u32]) -> Option<usize> {
        if self.config.eos_token_id == 2 {
            // Hugging Face's legacy rule: the first occurrence of the largest id.
            let max = *row.iter().max()?;
            return row.iter().position(|&id| id == max);
        }
        row.iter().position(|&id| id == self.config.eos_token_id)
    }
}

/// `[seq, seq]` additive mask: 0 on and below the diagonal, a large negative value above.
fn causal_mask(seq: usize, device: &Device) -> Result<Tensor, ClipError> {
    let values: Vec<f32> = (0..seq)
        .flat_map(|i| (0..seq).map(move |j| if j > i { f32::MIN } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(values, (seq, seq), device)?)
}

/// The vision transformer up to its pooled, normalized class token.
#[derive(Debug, Clone)]
pub struct VisionTower {
    config: VisionConfig,
    class_embedding: Tensor,
    patch_embedding: Tensor,
    position_embedding: Tensor,
    pre_norm: LayerNorm,
    encoder: Encoder,
    post_norm: LayerNorm,
}

impl VisionTower {
    fn new(params: &mut Params, config: &VisionConfig, device: &Device) -> Result<Self, ClipError> {
        let hidden = config.hidden_size;
        let patch = config.patch_size;
        let shape = BlockShape::vision(config);
        let eps = config.layer_norm_eps;
        Ok(Self {
            class_embedding: params.declare(
                "vision_model.embeddings.class_embedding",
                &[hidden],
                Init::Normal((hidden as f64).powf(-0.5)),
                device,
            )?,
            patch_embedding: params.declare(
                "vision_model.embeddings.patch_embedding.weight",
                &[hidden, 3, patch, patch],
                Init::Normal(0.02),
                device,
            )?,
            position_embedding: params.declare(
                "vision_model.embeddings.position_embedding.weight",
                &[config.num_positions(), hidden],
                Init::Normal(0.02),
                device,
            )?,
            // The misspelling is Hugging Face's parameter name.
            pre_norm: LayerNorm::new(params, "vision_model.pre_layrnorm", hidden, eps, device)?,
            encoder: Encoder::new(params, "vision_model.encoder", shape, device)?,
            post_norm: LayerNorm::new(params, "vision_model.post_layernorm", hidden, eps, device)?,
            config: config.clone(),
        })
    }

    /// Returns the post-normalized class token, `[batch, hidden]`, computed in `dtype`.
    pub fn forward(&self, pixels: &Tensor, dtype: DType) -> Result<Tensor, ClipError> {
        let (batch, channels, height, width) = pixels.dims4()?;
        let size = self.config.image_size;
        if channels != 3 || height != size || width != size {
            return Err(ClipError::Input(format!(
                "pixel batch has shape [{batch}, {channels}, {height}, {width}] but the vision \
                 tower takes [batch, 3, {size}, {size}]; crop or resize images to {size} pixels"
            )));
        }
        let hidden = self.config.hidden_size;

        let patches = self.embed_patches(&pixels.to_dtype(dtype)?)?;
        let class = self
            .class_embedding
            .to_dtype(dtype)?
            .reshape((1, 1, hidden))?
            .broadcast_as((batch, 1, hidden))?;
        let x = Tensor::cat(&[&class, &patches], 1)?;
        let x = x.broadcast_add(&self.position_embedding.to_dtype(dtype)?)?;

        let x = self.pre_norm.forward(&x)?;
        let x = self.encoder.forward(&x, None)?;
        let class_out = x.narrow(1, 0, 1)?.squeeze(1)?;
        self.post_norm.forward(&class_out)
    }

    /// Computes the stride-`patch` convolution without bias, as a reshape and one matrix product.
    fn embed_patches(&self, pixels: &Tensor) -> Result<Tensor, ClipError> {
        let batch = pixels.dim(0)?;
        let patch = self.config.patch_size;
        let grid = self.config.grid_size();
        let hidden = self.config.hidden_size;

        let columns = pixels
            .reshape((batch, 3, grid, patch, grid, patch))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((batch, grid * grid, 3 * patch * patch))?;
        let kernel = self
            .patch_embedding
            .to_dtype(pixels.dtype())?
            .reshape((hidden, 3 * patch * patch))?;
        Ok(columns.broadcast_matmul(&kernel.t()?)?)
    }
}

/// Both towers, both projections and the stored temperature.
#[derive(Debug)]
pub struct ClipModel {
    config: ClipConfig,
    params: Params,
    /// Dtype of the towers' activations; parameters stay f32 (the master weights).
    compute_dtype: DType,
    text: TextTower,
    vision: VisionTower,
    text_projection: Linear,
    visual_projection: Linear,
    logit_scale: Tensor,
}

impl ClipModel {
    /// Creates a model with weights drawn from `seed` (Hugging Face's initial distributions).
    pub fn random(config: &ClipConfig, seed: u64, device: &Device) -> Result<Self, ClipError> {
        config.validate("model")?;
        let mut params = Params::default();
        let text = TextTower::new(&mut params, &config.text, device)?;
        let vision = VisionTower::new(&mut params, &config.vision, device)?;
        let text_projection = Linear::new(
            &mut params,
            "text_projection",
            (config.text.hidden_size, config.projection_dim),
            (config.text.hidden_size as f64).powf(-0.5),
            false,
            device,
        )?;
        let visual_projection = Linear::new(
            &mut params,
            "visual_projection",
            (config.vision.hidden_size, config.projection_dim),
            (config.vision.hidden_size as f64).powf(-0.5),
            false,
            device,
        )?;
        let logit_scale = params.declare(
            "logit_scale",
            &[],
            Init::Const(config.logit_scale_init),
            device,
        )?;
        params.initialize(seed)?;
        Ok(Self {
            config: config.clone(),
            params,
            compute_dtype: DType::F32,
            text,
            vision,
            text_projection,
            visual_projection,
            logit_scale,
        })
    }

    /// The geometry.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// Returns every trainable tensor by name.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Returns the stored temperature parameter as a scalar tensor (log space in OpenAI weights).
    pub fn logit_scale(&self) -> &Tensor {
        &self.logit_scale
    }

    /// Runs the towers in `dtype`: f32 (the default), or bf16 for mixed precision, where
    /// matrix products and activations are bf16 while parameters, LayerNorm statistics,
    /// attention softmax and the returned features stay f32.
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        self.compute_dtype = dtype;
    }

    /// Returns the dtype of the towers' activations.
    pub fn compute_dtype(&self) -> DType {
        self.compute_dtype
    }

    /// Projected image features, `[batch, projection_dim]`, f32, not normalized.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor, ClipError> {
        let pooled = self.vision.forward(pixels, self.compute_dtype)?;
        Ok(self
            .visual_projection
            .forward(&pooled)?
            .to_dtype(DType::F32)?)
    }

    /// Projected text features, `[batch, projection_dim]`, not normalized.
    pub fn text_features(&self, ids: &Tensor) -> Result<Tensor, ClipError> {
        let pooled = self.text.forward(ids, self.compute_dtype)?;
        Ok(self
            .text_projection
            .forward(&pooled)?
            .to_dtype(DType::F32)?)
    }

    /// Returns the vision tower's pooled output before projection.
    pub fn vision_pooled(&self, pixels: &Tensor) -> Result<Tensor, ClipError> {
        Ok(self
            .vision
            .forward(pixels, self.compute_dtype)?
            .to_dtype(DType::F32)?)
    }

    /// Returns the text tower's pooled output before projection.
    pub fn text_pooled(&self, ids: &Tensor) -> Result<Tensor, ClipError> {
        Ok(self
            .text
            .forward(ids, self.compute_dtype)?
            .to_dtype(DType::F32)?)
    }
}

/// Divides each row by its L2 norm (rows of zeros stay zero).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor, ClipError> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(x.broadcast_div(&norm.clamp(1e-12f32, f32::MAX)?)?)
}

impl ClipModel {
    /// Overwrites every parameter from a safetensors file with Hugging Face names (for
    /// example `openai/clip-vit-base-patch16`'s `model.safetensors`) and returns the names
    /// of tensors in the file that the model does not use.
    pub fn load_weights(&self, path: &std::path::Path) -> Result<Vec<String>, ClipError> {
        self.params.load(path, &[])
    }
}
