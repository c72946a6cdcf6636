//! The training config file (`paperclip train CONFIG.toml`).
//!
//! Every section and key is optional except `[data] dataset`; the defaults are the
//! PAPERCLIP run's settings (`configs/paperclip-vit-b16.toml` spells them all out). Unknown
//! keys are errors that list the valid names, so a typo never silently falls back to a
//! default. [`TrainConfig::fingerprint`] hashes every setting that changes what a step
//! computes; a resumed run must have the same fingerprint as the run that wrote the
//! checkpoint.

use std::path::{Path, PathBuf};

use paperclip_clip::augment::AugmentMode;
use paperclip_clip::loss::ScaleMode;
use paperclip_clip::optim::Decay;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::TrainError;

/// Maximum number of steps of a run.
pub const MAX_STEPS: u64 = 1_000_000_000;

fn diff_json(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                let null = serde_json::Value::Null;
                diff_json(
                    &name,
                    x.get(key).unwrap_or(&null),
                    y.get(key).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// A whole training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Dataset version and the sample fields read from it.
    pub data: DataConfig,
    /// Model geometry and starting weights.
    #[serde(default)]
    pub model: ModelConfig,
    /// Contrastive loss.
    #[serde(default)]
    pub loss: LossConfig,
    /// AdamW and the learning-rate schedule.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// Steps, batch, augmentation, seed.
    #[serde(default)]
    pub training: TrainingConfig,
    /// In-training validation.
    #[serde(default)]
    pub validation: ValidationConfig,
    /// Checkpoint cadence and retention.
    #[serde(default)]
    pub checkpoints: CheckpointConfig,
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `NAME` (latest version) or `NAME@N` / `NAME@vN`.
    pub dataset: String,
    /// Split used for training.
    #[serde(default = "default_train_split")]
    pub train_split: String,
    /// Split used for validation; `""` turns validation off.
    #[serde(default = "default_val_split")]
    pub val_split: String,
    /// Sample metadata field used as the caption (`caption`, `caption_paper`,
    /// `caption_clean`, or any other string field of the samples table).
    #[serde(default = "default_caption_field")]
    pub caption_field: String,
    /// The paper's abstract chunking: whole sentences up to this many words from a random
    /// start sentence, drawn again every step. Off when absent.
    #[serde(default)]
    pub chunk_words: Option<usize>,
    /// Keep every decoded image in memory when they all fit in this budget; otherwise
    /// images are decoded again for every batch by the background threads.
    #[serde(default = "default_memory_budget_mib")]
    pub decoded_cache_mib: u64,
    /// Threads that read and decode images ahead of the training step.
    #[serde(default = "default_loader_threads")]
    pub loader_threads: usize,
}

/// `[model]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A preset (`vit-b-16`, `vit-b-32`, `vit-l-14`) or a Hugging Face `config.json` /
    /// open_clip model config path (relative to the config file). When absent: the
    /// `config.json` next to the weights, or `vit-b-16`.
    #[serde(default)]
    pub architecture: Option<String>,
    /// Starting weights: a `model.safetensors` file, a directory holding one (with its
    /// `config.json`), or a Hugging Face hub cache name such as
    /// `openai/clip-vit-base-patch16`. Random initialization when absent.
    #[serde(default)]
    pub weights: Option<String>,
    /// Seed of the random initialization.
    #[serde(default)]
    pub init_seed: u64,
    /// The CLIP BPE merges file (`bpe_simple_vocab_16e6.txt.gz`) or a `merges.txt`; when
    /// absent, looked for next to the weights, then in the paperclip cache.
    #[serde(default)]
    pub vocabulary: Option<PathBuf>,
}

/// `[loss]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// `paper`: logits scaled by the raw stored temperature; `standard`: by its exp,
    /// clamped at 100.
    #[serde(default = "default_scale_mode")]
    pub temperature: ScaleMode,
    /// `diagonal`: only each image's own caption is a positive; `proposal`: every caption
    /// of the same proposal in the batch is.
    #[serde(default = "default_positives")]
    pub positives: PositivesConfig,
}

/// Rule for which pairs of a batch are positives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositivesConfig {
    /// Image i with caption i only (CLIP, PAPERCLIP).
    Diagonal,
    /// Images and captions of the same proposal.
    Proposal,
}

/// `[optimizer]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Peak learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Linear warm-up steps from 0.
    #[serde(default = "default_warmup")]
    pub warmup_steps: u64,
    /// `constant` or `cosine` after warm-up.
    #[serde(default = "default_decay")]
    pub schedule: Decay,
    /// Decoupled weight decay on every parameter.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// First-moment decay.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// Second-moment decay.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// AdamW epsilon.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Clip the global gradient norm to this value; off when absent, as in the PAPERCLIP training code.
    #[serde(default)]
    pub max_grad_norm: Option<f64>,
}

/// `[training]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Image–caption pairs per step.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Optimizer steps in the whole run.
    #[serde(default = "default_steps")]
    pub steps: u64,
    /// Seed of the data order, augmentation and caption chunking.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// `paper`: rotation per image, flips and crop shared by the batch; `per_image`: all
    /// per image; `center_crop`: no augmentation.
    #[serde(default = "default_augment")]
    pub augment: AugmentMode,
    /// Resize stored images to this side before cropping (for small models); the stored
    /// 512-pixel images are cropped directly when absent, as in the PAPERCLIP training code.
    #[serde(default)]
    pub resize_px: Option<usize>,
    /// Log the training loss every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// `cpu`, or `cuda` / `cuda:N` in builds with the `cuda` feature.
    #[serde(default = "default_device")]
    pub device: String,
    /// `fp32`, or `bf16`: activations in bf16 with f32 parameters, gradients and AdamW
    /// state (for GPUs; on a CPU it is slower than fp32).
    #[serde(default = "default_precision")]
    pub precision: Precision,
    /// Warn when the mean per-dimension variance of the batch's normalized image or text
    /// embeddings falls below this value (a collapsed model maps everything to one point).
    #[serde(default = "default_collapse")]
    pub collapse_variance: f64,
}

/// Number format of the activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32.
    Fp32,
    /// Activations in bf16; parameters, gradients, AdamW state, LayerNorm statistics,
    /// attention softmax and the loss in f32.
    Bf16,
}

/// `[validation]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// Validate at step 0 and every this many steps; 0 turns validation off.
    #[serde(default = "default_eval_every")]
    pub every: u64,
    /// Pairs per validation batch (the in-batch retrieval metric ranks within a batch).
    #[serde(default = "default_eval_batch")]
    pub batch_size: usize,
    /// Image preprocessing: `center_crop` (no randomness), or `paper` / `per_image` with a
    /// fixed seed so every validation uses the same crops, as the PAPERCLIP training code did.
    #[serde(default = "default_eval_augment")]
    pub augment: AugmentMode,
    /// Use at most this many validation batches (all when absent).
    #[serde(default)]
    pub max_batches: Option<usize>,
}

/// `[checkpoints]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Write a checkpoint every this many steps (and always after the last step).
    #[serde(default = "default_checkpoint_every")]
    pub every: u64,
    /// Keep the checkpoints with the lowest validation loss, this many, plus the latest.
    #[serde(default = "default_keep_best")]
    pub keep_best: usize,
}

fn default_train_split() -> String {
    "train".into()
}
fn default_val_split() -> String {
    "val".into()
}
fn default_caption_field() -> String {
    "caption".into()
}
fn default_memory_budget_mib() -> u64 {
    4096
}
fn default_loader_threads() -> usize {
    2
}
fn default_scale_mode() -> ScaleMode {
    ScaleMode::Paper
}
fn default_positives() -> PositivesConfig {
    PositivesConfig::Diagonal
}
fn default_lr() -> f64 {
    1e-5
}
fn default_warmup() -> u64 {
    2000
}
fn default_decay() -> Decay {
    Decay::Constant
}
fn default_weight_decay() -> f64 {
    1e-3
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_batch() -> usize {
    32
}
fn default_steps() -> u64 {
    20_000
}
fn default_seed() -> u64 {
    42
}
fn default_augment() -> AugmentMode {
    AugmentMode::Paper
}
fn default_log_every() -> u64 {
    100
}
fn default_device() -> String {
    "cpu".into()
}
fn default_precision() -> Precision {
    Precision::Fp32
}
fn default_collapse() -> f64 {
    1e-4
}
fn default_eval_every() -> u64 {
    200
}
fn default_eval_batch() -> usize {
    100
}
fn default_eval_augment() -> AugmentMode {
    AugmentMode::CenterCrop
}
fn default_checkpoint_every() -> u64 {
    1000
}
fn default_keep_best() -> usize {
    3
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            temperature: default_scale_mode(),
            positives: default_positives(),
        }
    }
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            lr: default_lr(),
            warmup_steps: default_warmup(),
            schedule: default_decay(),
            weight_decay: default_weight_decay(),
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            max_grad_norm: None,
        }
    }
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            batch_size: default_batch(),
            steps: default_steps(),
            seed: default_seed(),
            augment: default_augment(),
            resize_px: None,
            log_every: default_log_every(),
            device: default_device(),
            precision: default_precision(),
            collapse_variance: default_collapse(),
        }
    }
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            every: default_eval_every(),
            batch_size: default_eval_batch(),
            augment: default_eval_augment(),
            max_batches: None,
        }
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every: default_checkpoint_every(),
            keep_best: default_keep_best(),
        }
    }
}

impl TrainConfig {
    /// Reads and checks a config file; relative paths inside it are resolved against the
    /// file's folder.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: Self = toml::from_str(&text).map_err(|err| TrainError::Config {
            path: path.to_path_buf(),
            message: crate::error::suggest_known_field(&err.to_string()),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.check().map_err(|message| TrainError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        // Absolute, normalized paths, so the same file gives the same config fingerprint
        // however the config file was named on the command line.
        let resolve = |text: &str| -> String {
            let path = Path::new(text);
            let joined =
                if path.is_relative() && (text.starts_with('.') || base.join(path).exists()) {
                    base.join(path)
                } else if path.is_absolute() || path.exists() {
                    path.to_path_buf()
                } else {
                    return text.to_string();
                };
            std::fs::canonicalize(&joined)
                .or_else(|_| std::path::absolute(&joined))
                .unwrap_or(joined)
                .display()
                .to_string()
        };
        if let Some(architecture) = &self.model.architecture
            && architecture.ends_with(".json")
        {
            self.model.architecture = Some(resolve(architecture));
        }
        if let Some(weights) = &self.model.weights {
            self.model.weights = Some(resolve(weights));
        }
        if let Some(vocabulary) = &self.model.vocabulary {
            self.model.vocabulary = Some(PathBuf::from(resolve(&vocabulary.display().to_string())));
        }
    }

    /// Range checks that serde cannot express; the message names the key and the fix.
    pub fn check(&self) -> Result<(), String> {
        let t = &self.training;
        let o = &self.optimizer;
        if t.batch_size < 2 {
            return Err(format!(
                "training.batch_size = {} is too small; a contrastive batch needs at least 2 pairs",
                t.batch_size
            ));
        }
        if t.steps == 0 || t.steps > MAX_STEPS {
            return Err(format!(
                "training.steps = {} is out of range; use 1 to {MAX_STEPS}",
                t.steps
            ));
        }
        if !(o.eps > 0.0 && o.eps.is_finite()) {
            return Err(format!(
                "optimizer.eps = {} must be a positive number such as 1e-8",
                o.eps
            ));
        }
        if !(o.weight_decay >= 0.0 && o.weight_decay.is_finite()) {
            return Err(format!(
                "optimizer.weight_decay = {} must be 0 or a positive number",
                o.weight_decay
            ));
        }
        if !(t.collapse_variance >= 0.0 && t.collapse_variance.is_finite()) {
            return Err(format!(
                "training.collapse_variance = {} must be 0 (off) or a positive number",
                t.collapse_variance
            ));
        }
        if t.log_every == 0 {
            return Err("training.log_every = 0; use at least 1".into());
        }
        if t.resize_px == Some(0) {
            return Err("training.resize_px = 0; use a side in pixels or remove the key".into());
        }
        if self.validation.max_batches == Some(0) {
            return Err(
                "validation.max_batches = 0; remove it to use every batch, or set at least 1"
                    .into(),
            );
        }
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            return Err(format!("optimizer.lr = {} must be a positive number", o.lr));
        }
        if !(0.0..1.0).contains(&o.beta1) || !(0.0..1.0).contains(&o.beta2) {
            return Err(format!(
                "optimizer.beta1 = {} and beta2 = {} must both be in [0, 1)",
                o.beta1, o.beta2
            ));
        }
        if o.max_grad_norm.is_some_and(|n| n.is_nan() || n <= 0.0) {
            return Err(
                "optimizer.max_grad_norm must be positive; remove it to turn clipping off".into(),
            );
        }
        if self.validation.every > 0 && self.validation.batch_size < 2 {
            return Err(format!(
                "validation.batch_size = {} is too small; set at least 2",
                self.validation.batch_size
            ));
        }
        if self.data.chunk_words == Some(0) {
            return Err(
                "data.chunk_words = 0 would leave every caption empty; use at least 1 or remove it"
                    .into(),
            );
        }
        if self.data.loader_threads == 0 || self.data.loader_threads > 256 {
            return Err(format!(
                "data.loader_threads = {} is out of range; use 1 to 256 (a few per core)",
                self.data.loader_threads
            ));
        }
        if self.checkpoints.every == 0 {
            return Err("checkpoints.every = 0; use at least 1".into());
        }
        Ok(())
    }

    /// SHA-256 of [`TrainConfig::step_settings`].
    pub fn fingerprint(&self) -> String {
        let text = serde_json::to_string(&self.step_settings()).unwrap_or_default();
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    /// Returns every setting that changes what a given step computes or how checkpoints are ranked,
    /// as JSON. Left out: the dataset (checked by name and version on its own), the step
    /// count (unless the cosine schedule depends on it), cadences, the collapse warning
    /// threshold and the loader's resources.
    pub fn step_settings(&self) -> serde_json::Value {
        let mut relevant = self.clone();
        relevant.data.dataset = String::new();
        if relevant.optimizer.schedule == Decay::Constant {
            // The cosine schedule depends on the run length; the constant one does not.
            relevant.training.steps = 0;
        }
        relevant.training.log_every = 0;
        relevant.data.decoded_cache_mib = 0;
        relevant.data.loader_threads = 0;
        // Validation batches and augmentation stay: checkpoints are ranked by validation
        // loss, which is comparable only under the same validation settings.
        relevant.validation.every = 0;
        relevant.training.collapse_variance = 0.0;
        relevant.checkpoints = CheckpointConfig::default();
        serde_json::to_value(&relevant).unwrap_or_default()
    }

    /// Dotted names of the step settings that differ between two configs.
    pub fn differing_settings(&self, other: &TrainConfig) -> Vec<String> {
        let mut names = Vec::new();
        diff_json(
            "",
            &self.step_settings(),
            &other.step_settings(),
            &mut names,
        );
        names
    }

    /// The dataset name and the requested version (`latest` when not given).
    pub fn dataset_and_version(&self) -> (String, String) {
        match self.data.dataset.split_once('@') {
            Some((name, version)) => (name.to_string(), version.to_string()),
            None => (self.data.dataset.clone(), "latest".to_string()),
        }
    }
}
