//! Contrastive losses over a batch of image and text embeddings.
//!
//! Both losses take unnormalized features, normalize them, scale the cosine similarities by
//! the temperature parameter as the chosen [`ScaleMode`] sets, and average the image→text
//! and text→image cross-entropies. With [`Positives::Diagonal`] this is CLIP's symmetric
//! InfoNCE; with [`Positives::SameGroup`] every pair whose group ids match is a positive
//! and the target of each row is spread evenly over them.

use candle_core::{D, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::ClipError;
use crate::model::l2_normalize;
use crate::nn::log_softmax_last;

/// Rule that turns the stored temperature parameter into the logit multiplier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleMode {
    /// Logits are the cosines times the raw stored value, as the PAPERCLIP training code
    /// did (about 4.6 for OpenAI weights, a temperature near 0.22).
    Paper,
    /// Logits are the cosines times `exp` of the stored value, clamped at 100, as CLIP does.
    Standard,
}

/// Rule for which image–text pairs of a batch count as matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Positives {
    /// Only row i with column i.
    Diagonal,
    /// Pairs whose group ids (for example proposal ids) are equal.
    SameGroup(Vec<i64>),
}

/// Returns the logit multiplier for `mode` from the stored parameter, as a scalar tensor.
pub fn logit_multiplier(logit_scale: &Tensor, mode: ScaleMode) -> Result<Tensor, ClipError> {
    Ok(match mode {
        ScaleMode::Paper => logit_scale.clone(),
        ScaleMode::Standard => logit_scale.exp()?.clamp(f32::MIN, 100f32)?,
    })
}

/// Image-by-text logits `[batch, batch]`.
pub fn logits(
    image_features: &Tensor,
    text_features: &Tensor,
    logit_scale: &Tensor,
    mode: ScaleMode,
) -> Result<Tensor, ClipError> {
    let images = l2_normalize(image_features)?;
    let texts = l2_normalize(text_features)?;
    let cosines = images.matmul(&texts.t()?)?;
    Ok(cosines.broadcast_mul(&logit_multiplier(logit_scale, mode)?)?)
}

/// Computes the symmetric contrastive loss of one batch, a scalar tensor.
pub fn contrastive_loss(
    image_features: &Tensor,
    text_features: &Tensor,
    logit_scale: &Tensor,
    mode: ScaleMode,
    positives: &Positives,
) -> Result<Tensor, ClipError> {
    let batch = image_features.dim(0)?;
    if text_features.dim(0)? != batch {
        return Err(ClipError::Input(format!(
            "{batch} image features but {} text features; a batch needs one caption per image",
            text_features.dim(0)?
        )));
    }
    let per_image = logits(image_features, text_features, logit_scale, mode)?;
    let per_text = per_image.t()?;
    let targets = target_matrix(positives, batch, image_features.device())?;

    let image_to_text = soft_cross_entropy(&per_image, &targets)?;
    let text_to_image = soft_cross_entropy(&per_text, &targets.t()?)?;
    Ok(((image_to_text + text_to_image)? * 0.5)?)
}

/// Mean over rows of `-Σ_j target_ij · log_softmax(logits)_ij`.
fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor, ClipError> {
    let log_probs = log_softmax_last(logits)?;
    let per_row = (log_probs * targets)?.sum(D::Minus1)?;
    Ok(per_row.mean_all()?.neg()?)
}

/// Row-stochastic targets: the identity, or each row's positives with equal weight.
fn target_matrix(
    positives: &Positives,
    batch: usize,
    device: &candle_core::Device,
) -> Result<Tensor, ClipError> {
    let values: Vec<f32> = match positives {
        Positives::Diagonal => (0..batch)
            .flat_map(|i| (0..batch).map(move |j| if i == j { 1.0 } else { 0.0 }))
            .collect(),
        Positives::SameGroup(groups) => {
            if groups.len() != batch {
                return Err(ClipError::Input(format!(
                    "{} group ids for a batch of {batch}; give one group id per sample",
                    groups.len()
                )));
            }
            groups
                .iter()
                .flat_map(|gi| {
                    let count = groups.iter().filter(|gj| *gj == gi).count() as f32;
                    groups
                        .iter()
                        .map(move |gj| if gj == gi { 1.0 / count } else { 0.0 })
                })
                .collect()
        }
    };
    Ok(Tensor::from_vec(values, (batch, batch), device)?)
}
