//! What a training session takes and gives: its options, the reports of steps and
//! validations, the observer that receives them (the CLI draws a progress bar from it),
//! and the outcome of a run.

use std::path::{Path, PathBuf};

use super::config::TrainConfig;
use super::record::RunRecord;

/// Options of a training session: data, config and resume point.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Data directory holding datasets and training runs.
    pub data_dir: PathBuf,
    /// The config file (recorded in the run record).
    pub config_path: PathBuf,
    /// The parsed config.
    pub config: TrainConfig,
    /// Continue from this checkpoint folder instead of starting a new run.
    pub resume: Option<PathBuf>,
    /// Stop after this step even when the config sets more (the run stays resumable).
    pub stop_after: Option<u64>,
}

/// One training step's numbers.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// Steps completed, this one included.
    pub step: u64,
    /// Steps in the whole run.
    pub total_steps: u64,
    /// Loss of the batch.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The logit multiplier after the step.
    pub logit_scale: f64,
    /// Image–caption pairs per second over this step, data wait included.
    pub samples_per_sec: f64,
}

/// One validation's numbers.
#[derive(Debug, Clone)]
pub struct ValReport {
    /// Steps completed when it ran.
    pub step: u64,
    /// Mean loss over the validation batches.
    pub loss: f64,
    /// `(name, value)` pairs such as `top5_text_to_image`.
    pub metrics: Vec<(String, f64)>,
}

/// Receives progress; the CLI draws it, tests record it.
pub trait TrainObserver {
    /// Receives the record of a run that is set up and about to take its first step.
    fn started(&mut self, record: &RunRecord, first_step: u64) {
        let _ = (record, first_step);
    }
    /// Receives a finished step.
    fn step(&mut self, report: &StepReport) {
        let _ = report;
    }
    /// Receives a finished validation.
    fn validated(&mut self, report: &ValReport) {
        let _ = report;
    }
    /// Receives the folder of a written checkpoint.
    fn checkpointed(&mut self, dir: &Path) {
        let _ = dir;
    }
    /// Something the user should know, such as a collapse warning.
    fn warn(&mut self, message: &str) {
        let _ = message;
    }
}

/// An observer that ignores everything.
pub struct Quiet;
impl TrainObserver for Quiet {}

/// Outcome of a finished run.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The final run record.
    pub record: RunRecord,
    /// The run folder.
    pub run_dir: PathBuf,
    /// The last validation, if any.
    pub last_validation: Option<ValReport>,
}
