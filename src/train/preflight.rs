//! Checks before a session's first step: that a resume continues the same run (dataset,
//! settings, model and vocabulary files), the run folder's lock, and that the data can
//! train the model (image geometry, captions, validation split size).
//!
//! Invariant: a resume changes nothing in the run folder before [`lock_run`] holds the
//! lock and every compatibility check has passed.

use std::path::Path;

use super::checkpoints::TrainerState;
use super::config::TrainConfig;
use super::data::SplitData;
use super::error::TrainError;
use super::record::RunRecord;
use super::trainer::TrainOptions;

/// Checks that a resume continues the checkpoint's dataset and still has steps to take.
pub(super) fn check_resume_target(
    dir: &Path,
    state: &TrainerState,
    dataset: &str,
    version_text: &str,
    options: &TrainOptions,
) -> Result<(), TrainError> {
    let fail = |message: String| {
        Err(TrainError::Resume {
            path: dir.to_path_buf(),
            message,
        })
    };
    if dataset != state.dataset {
        return fail(format!(
            "the checkpoint trained on dataset {:?} but data.dataset names {dataset:?}; resume \
             with the checkpoint's dataset or start a new run",
            state.dataset
        ));
    }
    let pinned = version_text.trim_start_matches('v');
    if version_text != "latest" && pinned != state.dataset_version.to_string() {
        return fail(format!(
            "the checkpoint trained on {}@{} but data.dataset asks for version {version_text}; \
             drop the version or start a new run",
            state.dataset, state.dataset_version
        ));
    }
    let end_step = options
        .stop_after
        .map_or(options.config.training.steps, |s| {
            s.min(options.config.training.steps)
        });
    if end_step <= state.step {
        return fail(format!(
            "the checkpoint is at step {} and this session would stop at step {end_step}; \
             raise --steps or --stop-after above {}",
            state.step, state.step
        ));
    }
    Ok(())
}

/// Refuses a resume whose step settings differ from the run's, naming the settings.
pub(super) fn check_same_settings(
    dir: &Path,
    state: &TrainerState,
    record: &RunRecord,
    config: &TrainConfig,
    fingerprint: &str,
) -> Result<(), TrainError> {
    if state.config_fingerprint == fingerprint {
        return Ok(());
    }
    let differing = serde_json::from_str::<TrainConfig>(&record.config_json)
        .map(|original| original.differing_settings(config))
        .unwrap_or_default();
    let named = if differing.is_empty() {
        "the model geometry (the file model.architecture names) or the vocabulary file".to_string()
    } else {
        differing.join(", ")
    };
    Err(TrainError::Resume {
        path: dir.to_path_buf(),
        message: format!(
            "{named} differs from what the run started with, and it changes what a step \
             computes (only logging, warning, validation cadence, checkpoint and loader \
             settings may change, and training.steps with the constant schedule); restore \
             it or start a new run"
        ),
    })
}

/// Drops what an earlier session wrote after `step`: its checkpoints and metric rows. A
/// resume from an earlier checkpoint starts a new history from there.
pub(super) fn discard_later_steps(run_dir: &Path, step: u64) -> Result<(), TrainError> {
    super::checkpoints::remove_after(run_dir, step)?;
    super::record::truncate_metrics(run_dir, step)
}

/// The config fingerprint extended with the resolved model geometry and the vocabulary
/// file's contents, so editing either file between sessions is caught on resume.
pub(super) fn run_fingerprint(
    config: &TrainConfig,
    model: &paperclip_clip::ClipConfig,
    vocabulary: &Path,
) -> Result<String, TrainError> {
    use sha2::{Digest, Sha256};

    let vocabulary_bytes = std::fs::read(vocabulary).map_err(|source| TrainError::Io {
        path: vocabulary.to_path_buf(),
        source,
    })?;
    let mut hasher = Sha256::new();
    hasher.update(config.fingerprint().as_bytes());
    hasher.update(serde_json::to_vec(model).unwrap_or_default());
    hasher.update(Sha256::digest(&vocabulary_bytes));
    Ok(hex::encode(hasher.finalize()))
}

/// Takes the run folder's lock, or fails when another process trains the same run.
pub(super) fn lock_run(run_dir: &Path, run_id: &str) -> Result<std::fs::File, TrainError> {
    let path = run_dir.join(".lock");
    let file = std::fs::File::create(&path).map_err(|source| TrainError::Io {
        path: path.clone(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(TrainError::Data(format!(
            "run {run_id} is being trained by another process (lock {}); wait for it to end",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(source)) => Err(TrainError::Io { path, source }),
    }
}

/// Fails before any step when the first training image cannot give a crop of the
/// model's image size.
pub(super) fn check_geometry(train: &SplitData, image_size: usize) -> Result<(), TrainError> {
    let image = train.image(0)?;
    let side = image.width_px().max(image.height_px());
    if side < image_size {
        return Err(TrainError::Data(format!(
            "training images are {side} pixels after resizing but the model takes \
             {image_size}; set training.resize_px to at least {image_size} or remove it"
        )));
    }
    Ok(())
}

/// Refuses a caption field that is empty for every training sample, and warns when some
/// captions are empty.
pub(super) fn check_captions(
    train: &SplitData,
    field: &str,
    warnings: &mut Vec<String>,
) -> Result<(), TrainError> {
    let empty = train
        .samples
        .iter()
        .filter(|s| s.caption.trim().is_empty())
        .count();
    let total = train.samples.len();
    if empty == total {
        return Err(TrainError::Data(format!(
            "data.caption_field = {field:?} is empty or null in all {total} training samples; \
             choose a field with text, such as \"caption\""
        )));
    }
    if empty > 0 {
        warnings.push(format!(
            "{empty} of {total} training samples have an empty {field:?}; they train with an \
             empty caption"
        ));
    }
    Ok(())
}

/// Turns validation off when the split has fewer than 2 samples, and warns when it is
/// smaller than one validation batch.
pub(super) fn usable_validation(
    val: Option<SplitData>,
    config: &TrainConfig,
    warnings: &mut Vec<String>,
) -> Option<SplitData> {
    let val = val?;
    let samples = val.samples.len();
    let batch = config.validation.batch_size;
    if samples < 2 {
        warnings.push(format!(
            "the {:?} split has {samples} sample, too few to rank; validation is off for \
             this run",
            val.split
        ));
        return None;
    }
    if samples < batch {
        warnings.push(format!(
            "the {:?} split has {samples} samples, fewer than validation.batch_size = \
             {batch}; validation ranks within one batch of {samples}",
            val.split
        ));
    }
    Some(val)
}
