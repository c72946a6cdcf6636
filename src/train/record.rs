//! The training run record: `<data dir>/training/<run id>/run.json` (what ran, on which
//! data, with which code, and how it ended) and `metrics.jsonl` (one line per metric per
//! step). Both are tables in `paperclip sql`: `paperclip.training_runs` and
//! `paperclip.training_metrics`.
//!
//! Invariants: `run.json` is replaced atomically (temporary file and rename), so a reader
//! sees the old or the new record; metric lines are appended and flushed one at a time,
//! so a killed run leaves every metric it logged before the kill, and a resumed run
//! appends to the same file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::TrainError;

/// Folder of all training runs under the data directory.
pub fn training_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("training")
}

/// One training run, as stored in `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `train-<UTC time>-<pid>`.
    pub run_id: String,
    /// `running`, `finished`, `stopped`, `interrupted` or `failed`.
    pub status: String,
    /// The error that stopped a failed run.
    pub error: Option<String>,
    /// The config file given on the command line.
    pub config_path: String,
    /// The parsed config, as JSON text.
    pub config_json: String,
    /// Hash of the settings a resume must keep.
    pub config_fingerprint: String,
    /// Dataset name.
    pub dataset: String,
    /// Dataset version trained on.
    pub dataset_version: u64,
    /// Fingerprint of that version's samples.
    pub dataset_fingerprint: String,
    /// paperclip's version.
    pub code_version: String,
    /// Source of the model geometry (a preset name or a file).
    pub model_config: String,
    /// Starting weights, when not random.
    pub initial_weights: Option<String>,
    /// Number of scalar parameters.
    pub parameters: u64,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Training and validation samples.
    pub train_samples: u64,
    /// Validation samples (0 when validation is off).
    pub val_samples: u64,
    /// Steps completed.
    pub steps_done: u64,
    /// Steps the run was configured for.
    pub steps_total: u64,
    /// RFC 3339 start time of the first session of the run.
    pub started_at: String,
    /// RFC 3339 time of the last update.
    pub updated_at: String,
    /// The checkpoint the last session resumed from.
    pub resumed_from: Option<String>,
    /// The newest checkpoint folder.
    pub last_checkpoint: Option<String>,
    /// The checkpoint with the lowest validation loss.
    pub best_checkpoint: Option<String>,
}

impl RunRecord {
    /// Returns the run's folder.
    pub fn dir(data_dir: &Path, run_id: &str) -> PathBuf {
        training_dir(data_dir).join(run_id)
    }

    /// Writes `run.json` atomically.
    pub fn save(&self, run_dir: &Path) -> Result<(), TrainError> {
        std::fs::create_dir_all(run_dir).map_err(|source| io(run_dir, source))?;
        let path = run_dir.join("run.json");
        let tmp = run_dir.join("run.json.tmp");
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(&tmp, text).map_err(|source| io(&tmp, source))?;
        std::fs::rename(&tmp, &path).map_err(|source| io(&path, source))
    }

    /// Reads `run.json` of a run folder.
    pub fn load(run_dir: &Path) -> Result<Self, TrainError> {
        let path = run_dir.join("run.json");
        let text = std::fs::read_to_string(&path).map_err(|source| io(&path, source))?;
        serde_json::from_str(&text).map_err(|err| {
            TrainError::Data(format!("{} is not a run record: {err}", path.display()))
        })
    }
}

/// One metric value, one line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    /// The run.
    pub run_id: String,
    /// Steps completed when the value was measured.
    pub step: u64,
    /// `train` or `val`.
    pub split: String,
    /// Metric name, for example `loss`, `lr`, `top1_text_to_image`.
    pub metric: String,
    /// Value.
    pub value: f64,
    /// RFC 3339 time.
    pub at: String,
}

/// Appends metric rows to a run's `metrics.jsonl`.
pub struct MetricLog {
    path: PathBuf,
    file: File,
    run_id: String,
}

impl MetricLog {
    /// Opens (or creates) the log of a run for appending.
    pub fn open(run_dir: &Path, run_id: &str) -> Result<Self, TrainError> {
        std::fs::create_dir_all(run_dir).map_err(|source| io(run_dir, source))?;
        let path = run_dir.join("metrics.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| io(&path, source))?;
        Ok(Self {
            path,
            file,
            run_id: run_id.to_string(),
        })
    }

    /// Writes one line per `(metric, value)`.
    pub fn log(
        &mut self,
        step: u64,
        split: &str,
        values: &[(&str, f64)],
    ) -> Result<(), TrainError> {
        let at = chrono::Utc::now().to_rfc3339();
        let mut text = String::new();
        for (metric, value) in values {
            let row = MetricRow {
                run_id: self.run_id.clone(),
                step,
                split: split.to_string(),
                metric: (*metric).to_string(),
                value: *value,
                at: at.clone(),
            };
            text.push_str(&serde_json::to_string(&row).unwrap_or_default());
            text.push('\n');
        }
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|source| io(&self.path, source))
    }
}

/// Rewrites a run's `metrics.jsonl` without the rows after `step`.
pub fn truncate_metrics(run_dir: &Path, step: u64) -> Result<(), TrainError> {
    let path = run_dir.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| serde_json::from_str::<MetricRow>(line).is_ok_and(|row| row.step <= step))
        .map(|line| format!("{line}\n"))
        .collect();
    let tmp = run_dir.join("metrics.jsonl.tmp");
    std::fs::write(&tmp, kept).map_err(|source| io(&tmp, source))?;
    std::fs::rename(&tmp, &path).map_err(|source| io(&path, source))
}

fn io(path: &Path, source: std::io::Error) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads every run record under the data directory, oldest first; folders without a readable
/// `run.json` are skipped with a warning.
pub fn read_run_records(data_dir: &Path) -> Vec<RunRecord> {
    let Ok(entries) = std::fs::read_dir(training_dir(data_dir)) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    dirs.iter()
        .filter(|dir| dir.join("run.json").is_file())
        .filter_map(|dir| match RunRecord::load(dir) {
            Ok(record) => Some(record),
            Err(error) => {
                tracing::warn!(%error, "left out of paperclip.training_runs");
                None
            }
        })
        .collect()
}

/// Reads every metric row of every run; unreadable lines (a line cut by a kill) are skipped.
pub fn read_metric_rows(data_dir: &Path) -> Vec<MetricRow> {
    let mut rows = Vec::new();
    for record in read_run_records(data_dir) {
        let path = RunRecord::dir(data_dir, &record.run_id).join("metrics.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        rows.extend(
            text.lines()
                .filter_map(|line| serde_json::from_str(line).ok()),
        );
    }
    rows
}
