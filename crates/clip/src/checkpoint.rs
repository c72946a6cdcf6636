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

    let weights = dir.join(WEIGHTS_FILE);
    let weights_tmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
    model.params().save(&weights_tmp)?;
    make_readable(&weights_tmp)?;
    std::fs::rename(&weights_tmp, &weights).map_err(|err| io_error(&weights, err))?;

    let config = dir.join(CONFIG_FILE);
    let config_tmp = dir.join(format!("{CONFIG_FILE}.tmp"));
    let text = serde_json::to_string_pretty(&model.config().to_hf_json())
        .map_err(|err| ClipError::Input(format!("cannot render config.json: {err}")))?;
    std::fs::write(&config_tmp, text).map_err(|err| io_error(&config_tmp, err))?;
    std::fs::rename(&config_tmp, &config).map_err(|err| io_error(&config, err))?;
    Ok(())
}

/// Gives a file written by the safetensors writer (mode 0600) the usual 0644, like the
/// config next to it, so other users of a shared machine can load the checkpoint.
pub fn make_readable(path: &Path) -> Result<(), ClipError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(|err| io_error(path, err))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn io_error(path: &Path, err: std::io::Error) -> ClipError {
    ClipError::Io {
        path: path.to_path_buf(),
        message: err.to_string(),
    }
}
