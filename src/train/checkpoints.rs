//! Training checkpoints: `<run dir>/checkpoints/step-NNNNNNN/` with the model in the
//! Hugging Face layout (`model.safetensors`, `config.json`), the AdamW moments
//! (`optimizer.safetensors`) and `trainer_state.json`.
//!
//! Invariants: a checkpoint folder is written under a temporary name and renamed, so a
//! folder named `step-*` is complete. Retention keeps the newest checkpoint and the
//! `keep_best` ones with the lowest validation loss; nothing else is ever needed to resume.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use paperclip_clip::ClipModel;
use paperclip_clip::checkpoint::save_model;
use paperclip_clip::optim::AdamW;
use serde::{Deserialize, Serialize};

use super::error::TrainError;

/// Optimizer moments file inside a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Trainer state file inside a checkpoint.
pub const STATE_FILE: &str = "trainer_state.json";

/// State a resume needs besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// The run the checkpoint belongs to.
    pub run_id: String,
    /// Steps completed; a resumed run starts with this step.
    pub step: u64,
    /// Optimizer steps taken (equal to `step`).
    pub optimizer_steps: u64,
    /// Seed of data order, augmentation and caption chunking; with `step` it fixes every
    /// later random draw.
    pub seed: u64,
    /// The config fingerprint the run was started with.
    pub config_fingerprint: String,
    /// Dataset trained on.
    pub dataset: String,
    /// Its version.
    pub dataset_version: u64,
    /// Validation loss at this step, when validated.
    pub val_loss: Option<f64>,
}

/// Folder of a run's checkpoints.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Writes a checkpoint for `state.step` and returns its folder.
pub fn write_checkpoint(
    run_dir: &Path,
    model: &ClipModel,
    optimizer: &AdamW,
    state: &TrainerState,
) -> Result<PathBuf, TrainError> {
    let root = checkpoints_dir(run_dir);
    let name = format!("step-{:07}", state.step);
    let final_dir = root.join(&name);
    let tmp_dir = root.join(format!("{name}.tmp"));
    if tmp_dir.exists() {
        std::fs::remove_dir_all(&tmp_dir).map_err(|source| io(&tmp_dir, source))?;
    }

    save_model(model, &tmp_dir)?;
    let state_path = tmp_dir.join(STATE_FILE);
    let text = serde_json::to_string_pretty(state).unwrap_or_default();
    std::fs::write(&state_path, text).map_err(|source| io(&state_path, source))?;
    let moments: HashMap<String, Tensor> = optimizer.state().into_iter().collect();
    let optimizer_path = tmp_dir.join(OPTIMIZER_FILE);
    candle_core::safetensors::save(&moments, &optimizer_path).map_err(|err| {
        TrainError::Data(format!(
            "cannot write the optimizer state {}: {err}",
            optimizer_path.display()
        ))
    })?;
    paperclip_clip::checkpoint::copy_permissions(&state_path, &optimizer_path)?;

    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|source| io(&final_dir, source))?;
    }
    std::fs::rename(&tmp_dir, &final_dir).map_err(|source| io(&final_dir, source))?;
    Ok(final_dir)
}

/// Reads a checkpoint's state, checking that its files are there.
pub fn read_state(dir: &Path) -> Result<TrainerState, TrainError> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|_| TrainError::Resume {
        path: dir.to_path_buf(),
        message: format!(
            "no {STATE_FILE}; give a checkpoint folder such as <run>/checkpoints/step-0001000"
        ),
    })?;
    serde_json::from_str(&text).map_err(|err| TrainError::Resume {
        path: dir.to_path_buf(),
        message: format!("{STATE_FILE} is not readable: {err}"),
    })
}

/// Loads a checkpoint's weights into `model` and its moments into `optimizer`.
pub fn restore(
    dir: &Path,
    model: &ClipModel,
    optimizer: &mut AdamW,
    state: &TrainerState,
    device: &Device,
) -> Result<(), TrainError> {
    model.load_weights(&dir.join(paperclip_clip::checkpoint::WEIGHTS_FILE))?;
    let path = dir.join(OPTIMIZER_FILE);
    let moments: BTreeMap<String, Tensor> = candle_core::safetensors::load(&path, device)
        .map_err(|err| TrainError::Resume {
            path: dir.to_path_buf(),
            message: format!("{OPTIMIZER_FILE} is not readable: {err}"),
        })?
        .into_iter()
        .collect();
    optimizer
        .restore(&moments, state.optimizer_steps)
        .map_err(|err| TrainError::Resume {
            path: dir.to_path_buf(),
            message: err.to_string(),
        })
}

/// The newest checkpoint of a run, if any.
pub fn latest_checkpoint(run_dir: &Path) -> Option<PathBuf> {
    list_checkpoints(run_dir).pop().map(|(_, dir)| dir)
}

/// Complete checkpoints of a run, by step.
fn list_checkpoints(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(checkpoints_dir(run_dir)) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Removes the checkpoints after `step`, and unfinished checkpoint folders.
pub fn remove_after(run_dir: &Path, step: u64) -> Result<(), TrainError> {
    for (found, dir) in list_checkpoints(run_dir) {
        if found > step {
            std::fs::remove_dir_all(&dir).map_err(|source| io(&dir, source))?;
        }
    }
    let Ok(entries) = std::fs::read_dir(checkpoints_dir(run_dir)) else {
        return Ok(());
    };
    for entry in entries.filter_map(|e| e.ok()) {
        if entry.file_name().to_string_lossy().ends_with(".tmp") {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(|source| io(&path, source))?;
        }
    }
    Ok(())
}

/// Removes checkpoints that are neither the newest nor among the `keep_best` lowest
/// validation losses; returns the best of the kept ones.
pub fn apply_retention(run_dir: &Path, keep_best: usize) -> Result<Option<PathBuf>, TrainError> {
    let checkpoints = list_checkpoints(run_dir);
    let Some((newest, _)) = checkpoints.last().cloned() else {
        return Ok(None);
    };
    let mut scored: Vec<(f64, u64, PathBuf)> = checkpoints
        .iter()
        .filter_map(|(step, dir)| {
            let loss = read_state(dir).ok()?.val_loss?;
            Some((loss, *step, dir.clone()))
        })
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
    let kept: Vec<u64> = scored
        .iter()
        .take(keep_best)
        .map(|(_, step, _)| *step)
        .collect();

    for (step, dir) in &checkpoints {
        if *step != newest && !kept.contains(step) {
            std::fs::remove_dir_all(dir).map_err(|source| io(dir, source))?;
        }
    }
    Ok(scored
        .into_iter()
        .take(keep_best)
        .next()
        .map(|(_, _, dir)| dir))
}

fn io(path: &Path, source: std::io::Error) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}
