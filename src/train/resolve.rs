//! Finds the model geometry, the starting weights and the tokenizer vocabulary on disk.
//!
//! Nothing is downloaded: weights come from a path or from a Hugging Face hub cache that
//! the user filled earlier (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`). A hub name resolves to the snapshot `refs/main` points
//! at, or to the only snapshot when there is no ref.

use std::path::{Path, PathBuf};

use paperclip_clip::ClipConfig;
use paperclip_clip::checkpoint::{CONFIG_FILE, WEIGHTS_FILE};
use paperclip_clip::tokenizer::ClipTokenizer;

use super::config::ModelConfig;
use super::error::TrainError;

/// The CLIP BPE merges file open_clip ships.
pub const VOCABULARY_FILE: &str = "bpe_simple_vocab_16e6.txt.gz";

/// Result of [`resolve_model`].
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// Geometry.
    pub config: ClipConfig,
    /// Source of the geometry (a preset name or a file).
    pub config_source: String,
    /// Starting weights; random initialization when `None`.
    pub weights: Option<PathBuf>,
}

/// Names of the weights and vocabulary settings in errors: keys of a training config, or
/// command-line flags.
#[derive(Debug, Clone, Copy)]
pub struct SettingNames {
    /// The weights setting, for example `model.weights`.
    pub weights: &'static str,
    /// The vocabulary setting, for example `model.vocabulary`.
    pub vocabulary: &'static str,
}

/// The names of a training config's `[model]` keys.
pub const CONFIG_KEYS: SettingNames = SettingNames {
    weights: "model.weights =",
    vocabulary: "model.vocabulary =",
};

/// Resolves `[model]` into a geometry and an optional weights file.
pub fn resolve_model(model: &ModelConfig) -> Result<ResolvedModel, TrainError> {
    resolve_model_named(model, CONFIG_KEYS)
}

/// Resolves `[model]`, naming the settings in errors with `names`.
pub fn resolve_model_named(
    model: &ModelConfig,
    names: SettingNames,
) -> Result<ResolvedModel, TrainError> {
    let weights = model
        .weights
        .as_deref()
        .map(|text| find_weights(text, names.weights))
        .transpose()?;
    let beside_weights = weights
        .as_ref()
        .and_then(|w| w.parent())
        .map(|dir| dir.join(CONFIG_FILE))
        .filter(|path| path.is_file());

    let (config, config_source) = match (&model.architecture, beside_weights) {
        (Some(name), _) if !name.ends_with(".json") => (ClipConfig::preset(name)?, name.clone()),
        (Some(path), _) => (ClipConfig::from_json_file(Path::new(path))?, path.clone()),
        (None, Some(path)) => (
            ClipConfig::from_json_file(&path)?,
            path.display().to_string(),
        ),
        (None, None) => (ClipConfig::preset("vit-b-16")?, "vit-b-16".to_string()),
    };
    Ok(ResolvedModel {
        config,
        config_source,
        weights,
    })
}

/// Finds the weights file for a file path, a model directory or a hub cache name.
fn find_weights(text: &str, setting: &str) -> Result<PathBuf, TrainError> {
    let path = PathBuf::from(text);
    if path.is_file() {
        return Ok(path);
    }
    if path.is_dir() {
        let file = path.join(WEIGHTS_FILE);
        return if file.is_file() {
            Ok(file)
        } else {
            Err(TrainError::Data(format!(
                "{setting} {text:?} is a directory without {WEIGHTS_FILE}; point it at \
                 a safetensors file or a model directory"
            )))
        };
    }
    if let Some(file) = hub_snapshot(&hub_cache_dir(), text).map(|dir| dir.join(WEIGHTS_FILE))
        && file.is_file()
    {
        return Ok(file);
    }
    Err(TrainError::Data(format!(
        "{setting} {text:?} is neither a file, a model directory, nor a model in the \
         Hugging Face cache {}; download it once with internet (for example \
         `huggingface-cli download {text}`) or give a path",
        hub_cache_dir().display()
    )))
}

/// Returns the hub cache directory, from the same variables `huggingface_hub` reads.
pub fn hub_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    home_dir().join(".cache").join("huggingface").join("hub")
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Returns the snapshot folder of `owner/name` in the hub cache `cache`.
fn hub_snapshot(cache: &Path, name: &str) -> Option<PathBuf> {
    let (owner, model) = name.split_once('/')?;
    let repo = cache.join(format!("models--{owner}--{model}"));
    let snapshots = repo.join("snapshots");
    if let Ok(revision) = std::fs::read_to_string(repo.join("refs").join("main")) {
        let dir = snapshots.join(revision.trim());
        if dir.is_dir() {
            return Some(dir);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    (dirs.len() == 1).then(|| dirs.remove(0))
}

/// The vocabulary: the configured path, else a merges file next to the weights, else the
/// paperclip cache (`$PAPERCLIP_CACHE` or `~/.cache/paperclip`)`/clip/`.
pub fn resolve_vocabulary(
    model: &ModelConfig,
    weights: Option<&Path>,
) -> Result<PathBuf, TrainError> {
    resolve_vocabulary_named(model, weights, CONFIG_KEYS)
}

/// Finds the vocabulary, naming the settings in errors with `names`.
pub fn resolve_vocabulary_named(
    model: &ModelConfig,
    weights: Option<&Path>,
    names: SettingNames,
) -> Result<PathBuf, TrainError> {
    if let Some(path) = &model.vocabulary {
        return if path.is_file() {
            Ok(path.clone())
        } else {
            Err(TrainError::Data(format!(
                "{} {} is not a file; give the path of CLIP's {VOCABULARY_FILE} \
                 or a merges.txt",
                names.vocabulary,
                path.display()
            )))
        };
    }
    let mut candidates = Vec::new();
    if let Some(dir) = weights.and_then(Path::parent) {
        candidates.push(dir.join(VOCABULARY_FILE));
        candidates.push(dir.join("merges.txt"));
    }
    candidates.push(crate::store::cache_dir().join("clip").join(VOCABULARY_FILE));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            TrainError::Data(format!(
                "no CLIP vocabulary found (looked for {}); run tools/fetch-clip-vocabulary.sh or \
             set {}",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                names.vocabulary.trim_end_matches(" =")
            ))
        })
}

/// Loads the tokenizer from open_clip's gzip merges file or a plain `merges.txt`.
pub fn load_tokenizer(path: &Path) -> Result<ClipTokenizer, TrainError> {
    if path.extension().is_some_and(|e| e == "gz") {
        return Ok(ClipTokenizer::from_bpe_gz(path)?);
    }
    let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(ClipTokenizer::from_merges_text(&text)?)
}

#[cfg(test)]
mod tests {
    use super::hub_snapshot;

    #[test]
    fn hub_names_resolve_to_the_snapshot_main_points_at() {
        let cache = tempfile::tempdir().unwrap();
        let repo = cache.path().join("models--openai--clip-vit-base-patch16");
        for revision in ["aaa111", "bbb222"] {
            std::fs::create_dir_all(repo.join("snapshots").join(revision)).unwrap();
        }
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "bbb222\n").unwrap();

        let found = hub_snapshot(cache.path(), "openai/clip-vit-base-patch16").unwrap();
        assert!(found.ends_with("snapshots/bbb222"), "{}", found.display());
        assert!(hub_snapshot(cache.path(), "openai/clip-vit-large-patch14").is_none());
        assert!(hub_snapshot(cache.path(), "no-slash").is_none());
    }

    #[test]
    fn a_single_snapshot_is_used_without_a_ref() {
        let cache = tempfile::tempdir().unwrap();
        let snapshot = cache.path().join("models--me--tiny/snapshots/ccc333");
        std::fs::create_dir_all(&snapshot).unwrap();
        assert_eq!(hub_snapshot(cache.path(), "me/tiny").unwrap(), snapshot);
    }
}
