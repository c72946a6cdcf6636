//! Loads a CLIP checkpoint for evaluation and embeds images and captions with it.
//!
//! Invariants:
//! - Embeddings are L2-normalized f32 rows, so a dot product is a cosine similarity.
//! - Images get no randomness: the stored square, resized as the checkpoint was trained
//!   (when the training run's record has `training.resize_px`), then the centred crop of the model's
//!   input size. Captions are tokenized whole and cut at the model's context length.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use paperclip_clip::augment::AugmentMode;
use paperclip_clip::tokenizer::ClipTokenizer;
use paperclip_clip::{ClipConfig, ClipModel};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::{EvalError, io};
use crate::train::config::ModelConfig;
use crate::train::data::{BatchRecipe, SplitData, build_batch};
use crate::train::resolve::{
    SettingNames, load_tokenizer, resolve_model_named, resolve_vocabulary_named,
};

/// Locations of the files a checkpoint folder lacks, and the image resize.
#[derive(Debug, Clone, Default)]
pub struct ModelOptions {
    /// The CLIP vocabulary; found next to the weights, in the training run's settings or
    /// in the paperclip cache when absent.
    pub vocabulary: Option<PathBuf>,
    /// Side the stored images are resized to before the crop; the training run's
    /// `training.resize_px` when absent.
    pub resize_px: Option<usize>,
    /// The data directory whose `training/<run id>/run.json` describes a checkpoint that
    /// was copied out of its run folder.
    pub data_dir: Option<PathBuf>,
}

/// Names of the checkpoint and vocabulary in errors: their command-line flags.
const FLAG_NAMES: SettingNames = SettingNames {
    weights: "--checkpoint",
    vocabulary: "--vocabulary",
};

/// The training run a checkpoint came from, read from its run record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingOrigin {
    /// Run id.
    pub run_id: String,
    /// Dataset trained on.
    pub dataset: String,
    /// Its version.
    pub dataset_version: u64,
    /// The split trained on.
    pub train_split: String,
}

/// A checkpoint ready to embed.
pub struct EvalModel {
    /// Name in reports.
    pub label: String,
    /// The checkpoint as given.
    pub source: String,
    /// SHA-256 of the weights file.
    pub weights_sha256: String,
    /// The vocabulary file used.
    pub vocabulary: PathBuf,
    /// Resize before the crop, if any.
    pub resize_px: Option<usize>,
    /// The training run that wrote the checkpoint, when its record was found.
    pub origin: Option<TrainingOrigin>,
    /// The model.
    pub model: ClipModel,
    /// Its tokenizer.
    pub tokenizer: ClipTokenizer,
}

impl std::fmt::Debug for EvalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalModel")
            .field("label", &self.label)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Settings of the training run a checkpoint belongs to, from its `run.json`.
#[derive(Debug, Default)]
struct RunSettings {
    vocabulary: Option<PathBuf>,
    resize_px: Option<usize>,
    origin: Option<TrainingOrigin>,
}

/// Finds the run record of a checkpoint: `run.json` above a checkpoint folder
/// (`<run>/checkpoints/step-N/`), else the record of the run id in the folder's
/// `trainer_state.json` under `data_dir`, for a folder copied out of its run.
fn run_record_path(checkpoint: &Path, data_dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = checkpoint
        .ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join("run.json"))
        .find(|path| path.is_file())
    {
        return Some(path);
    }
    let state = std::fs::read_to_string(checkpoint.join("trainer_state.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&state).ok()?;
    let run_id = state["run_id"].as_str()?;
    let path = crate::train::record::RunRecord::dir(data_dir?, run_id).join("run.json");
    path.is_file().then_some(path)
}

fn run_settings(checkpoint: &Path, data_dir: Option<&Path>) -> RunSettings {
    let Some(record) = run_record_path(checkpoint, data_dir)
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
    else {
        return RunSettings::default();
    };
    let config = record["config_json"]
        .as_str()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .unwrap_or_default();
    let origin = (|| {
        Some(TrainingOrigin {
            run_id: record["run_id"].as_str()?.to_string(),
            dataset: record["dataset"].as_str()?.to_string(),
            dataset_version: record["dataset_version"].as_u64()?,
            train_split: config["data"]["train_split"]
                .as_str()
                .unwrap_or("train")
                .to_string(),
        })
    })();
    RunSettings {
        vocabulary: config["model"]["vocabulary"].as_str().map(PathBuf::from),
        resize_px: config["training"]["resize_px"]
            .as_u64()
            .map(|side| side as usize),
        origin,
    }
}

impl EvalModel {
    /// Loads a model folder, a safetensors file or a Hugging Face hub name.
    pub fn load(checkpoint: &str, label: &str, options: &ModelOptions) -> Result<Self, EvalError> {
        let run = run_settings(Path::new(checkpoint), options.data_dir.as_deref());
        let model_config = ModelConfig {
            weights: Some(checkpoint.to_string()),
            vocabulary: options.vocabulary.clone().or(run.vocabulary),
            ..ModelConfig::default()
        };
        let resolved = resolve_model_named(&model_config, FLAG_NAMES)?;
        let weights = resolved.weights.clone().ok_or_else(|| {
            EvalError::Invalid(format!("checkpoint {checkpoint:?} has no weights file"))
        })?;
        let vocabulary = resolve_vocabulary_named(&model_config, Some(&weights), FLAG_NAMES)?;
        let tokenizer = load_tokenizer(&vocabulary)?;
        check_vocabulary(&tokenizer, &resolved.config, &vocabulary)?;
        let resize_px = options.resize_px.or(run.resize_px);
        check_resize(resize_px, &resolved.config)?;

        let model = ClipModel::random(&resolved.config, 0, &Device::Cpu)?;
        let unused = model.load_weights(&weights)?;
        if !unused.is_empty() {
            tracing::warn!(
                checkpoint,
                unused = unused.len(),
                "tensors not used by the model"
            );
        }
        Ok(Self {
            label: label.to_string(),
            source: checkpoint.to_string(),
            weights_sha256: file_sha256(&weights)?,
            vocabulary: std::fs::canonicalize(&vocabulary).unwrap_or(vocabulary),
            resize_px,
            origin: run.origin,
            model,
            tokenizer,
        })
    }

    fn context_length(&self) -> usize {
        self.model.config().text.max_position_embeddings
    }

    fn image_size_px(&self) -> usize {
        self.model.config().vision.image_size
    }

    /// Embeds texts in batches of `batch_size`.
    pub fn embed_texts(&self, texts: &[String], batch_size: usize) -> Result<Matrix, EvalError> {
        let context = self.context_length();
        let mut rows = Matrix::default();
        for chunk in texts.chunks(batch_size.max(1)) {
            let mut ids = Vec::with_capacity(chunk.len() * context);
            for text in chunk {
                ids.extend(self.tokenizer.encode_padded(text, context)?);
            }
            let ids = Tensor::from_slice(&ids, (chunk.len(), context), &Device::Cpu)?;
            rows.push_normalized(&self.model.text_features(&ids)?)?;
        }
        Ok(rows)
    }

    /// Embeds every image and caption of a split, in split order. `progress` gets the
    /// number of samples done after each batch.
    pub fn embed_split(
        &self,
        data: &SplitData,
        batch_size: usize,
        progress: &dyn Fn(usize),
    ) -> Result<(Matrix, Matrix), EvalError> {
        let recipe = BatchRecipe {
            batch_size,
            seed: 0,
            augment: AugmentMode::CenterCrop,
            crop_px: self.image_size_px(),
            chunk_words: None,
            context_length: self.context_length(),
        };
        let (mut images, mut texts) = (Matrix::default(), Matrix::default());
        let indices: Vec<usize> = (0..data.samples.len()).collect();
        for (b, chunk) in indices.chunks(batch_size.max(1)).enumerate() {
            let batch = build_batch(data, &self.tokenizer, &recipe, chunk, b as u64, "eval")?;
            let (n, size) = (chunk.len(), recipe.crop_px);
            let pixels = Tensor::from_slice(&batch.pixels, (n, 3, size, size), &Device::Cpu)?;
            let ids = Tensor::from_slice(&batch.ids, (n, recipe.context_length), &Device::Cpu)?;
            images.push_normalized(&self.model.image_features(&pixels)?)?;
            texts.push_normalized(&self.model.text_features(&ids)?)?;
            progress(images.rows());
        }
        Ok((images, texts))
    }
}

/// Row-major f32 vectors of one width.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matrix {
    /// Width of each row.
    pub dim: usize,
    /// `rows() · dim` values.
    pub values: Vec<f32>,
}

impl Matrix {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.values.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// Appends the L2-normalized rows of `features` (`[batch, dim]`).
    fn push_normalized(&mut self, features: &Tensor) -> Result<(), EvalError> {
        let normalized = paperclip_clip::model::l2_normalize(features)?;
        let (_, dim) = normalized.dims2()?;
        self.dim = dim;
        self.values
            .extend(normalized.flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    }

    /// Computes the dot products of every row of `self` with every row of `other`, row-major.
    pub fn dot_all(&self, other: &Matrix) -> Result<Vec<f32>, EvalError> {
        if self.dim != other.dim {
            return Err(EvalError::Invalid(format!(
                "embeddings of width {} and {} cannot be compared; embed both with one model",
                self.dim, other.dim
            )));
        }
        let a = Tensor::from_slice(&self.values, (self.rows(), self.dim), &Device::Cpu)?;
        let b = Tensor::from_slice(&other.values, (other.rows(), other.dim), &Device::Cpu)?;
        Ok(a.matmul(&b.t()?)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// Rejects a vocabulary whose size differs from the text tower's embedding rows: its ids
/// would mean other tokens than the model learned.
fn check_vocabulary(
    tokenizer: &ClipTokenizer,
    config: &ClipConfig,
    path: &Path,
) -> Result<(), EvalError> {
    let (tokens, rows) = (tokenizer.vocab_size(), config.text.vocab_size);
    if tokens == rows {
        return Ok(());
    }
    Err(EvalError::Invalid(format!(
        "the vocabulary {} has {tokens} tokens, but the checkpoint's text tower has {rows}; \
         give the vocabulary the model was trained with (--vocabulary)",
        path.display()
    )))
}

/// Rejects a resize smaller than the model's input, which the centre crop cannot fill.
fn check_resize(resize_px: Option<usize>, config: &ClipConfig) -> Result<(), EvalError> {
    let input_px = config.vision.image_size;
    match resize_px {
        Some(side) if side < input_px => Err(EvalError::Invalid(format!(
            "--resize-px {side} is smaller than the model's input of {input_px} pixels; give \
             at least {input_px}, or leave it out"
        ))),
        _ => Ok(()),
    }
}

/// Returns the resize setting as text for messages: `80 px` or `none`.
pub fn resize_text(resize_px: Option<usize>) -> String {
    resize_px.map_or_else(|| "none".to_string(), |side| format!("{side} px"))
}

/// Computes the SHA-256 of a file, in hex.
pub(crate) fn file_sha256(path: &Path) -> Result<String, EvalError> {
    let mut file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = std::io::Read::read(&mut file, &mut buffer).map_err(|e| io(path, e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}
