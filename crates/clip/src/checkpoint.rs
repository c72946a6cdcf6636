//! Model files in the Hugging Face layout: `model.safetensors` plus `config.json` in one
//! directory, which `transformers.CLIPModel.from_pretrained(dir)` loads.
//!
//! Invariant: a directory is complete or absent. Files are written under temporary names
//! and renamed into place, the config last, so a reader that finds `config.json` finds
//! the weights that belong to it.

use std::path::Path;

use crate::error::ClipError;
use crate::model::ClipModel;

/// File name of the weights inside a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the Hugging Face config inside a model directory.
pub const CONFIG_FILE: &str = "config.json";

/// Writes the model's weights and config into `dir`, creating it.
pub fn save_model(model: &ClipModel, dir: &Path) -> Result<(), ClipError> {
    std::fs::create_dir_all(dir).map_err(|err| io_error(dir, err))?;

    let config = dir.join(CONFIG_FILE);
    let config_tmp = dir.join(format!("{CONFIG_FILE}.tmp"));
    let text = serde_json::to_string_pretty(&model.config().to_hf_json())
        .map_err(|err| ClipError::Input(format!("cannot render config.json: {err}")))?;
    std::fs::write(&config_tmp, text).map_err(|err| io_error(&config_tmp, err))?;

    let weights = dir.join(WEIGHTS_FILE);
    let weights_tmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
    model.params().save(&weights_tmp)?;
    copy_permissions(&config_tmp, &weights_tmp)?;
    std::fs::rename(&weights_tmp, &weights).map_err(|err| io_error(&weights, err))?;
    std::fs::rename(&config_tmp, &config).map_err(|err| io_error(&config, err))?;
    Ok(())
}

/// Gives `target` the permissions of `like`. The safetensors writer creates files with
/// mode 0600; a file written with `std::fs::write` gets the process's umask, which is what
/// a user expects of every file in a checkpoint.
pub fn copy_permissions(like: &Path, target: &Path) -> Result<(), ClipError> {
    let permissions = std::fs::metadata(like)
        .map_err(|err| io_error(like, err))?
        .permissions();
    std::fs::set_permissions(target, permissions).map_err(|err| io_error(target, err))
}

fn io_error(path: &Path, err: std::io::Error) -> ClipError {
    ClipError::Io {
        path: path.to_path_buf(),
        message: err.to_string(),
    }
}
