//! The pipeline file: a TOML document naming the dataset, the archive, the selection rules,
//! the image geometry, the caption form, the shard size and the SQL models.
//!
//! This crate reads the file and runs every check that needs nothing but its text: value
//! ranges, names, URLs and the summary settings. The checks that open other files (SQL
//! models, source tables, the prompt template) or need the scheduler's calendar run in
//! the `paperclip` crate after [`PipelineConfig::parse`]. Keeping this part free of I/O
//! and of the query engine lets it be fuzzed on its own.
//!
//! Every table rejects unknown keys, so a misspelt setting fails at load time with the
//! closest valid name instead of being ignored. Relative paths (SQL models, a catalog
//! path) are resolved against the directory that contains the pipeline file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod check;
mod names;
mod sections;
mod summaries;

pub use check::validate_dataset_name;
pub use names::{closest, plain_type_names, suggest_known_field};
pub use sections::*;
pub use summaries::*;

/// A parsed pipeline file with its paths resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub dataset: DatasetSection,
    #[serde(default)]
    pub archive: ArchiveSection,
    #[serde(default)]
    pub selection: SelectionSection,
    #[serde(default)]
    pub images: ImagesSection,
    #[serde(default)]
    pub captions: CaptionsSection,
    #[serde(default)]
    pub shards: ShardsSection,
    /// Which versions `paperclip datasets gc` keeps; by default every version.
    #[serde(default)]
    pub retention: RetentionSection,
    #[serde(default)]
    pub refresh: RefreshSection,
    pub sql: SqlSection,
    /// When `paperclip serve` refreshes the dataset; `None` for pipelines run by hand.
    #[serde(default)]
    pub schedule: Option<ScheduleSection>,
    /// Tables read from the curator's own files, by table name (`[sources.<name>]`).
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSection>,
    /// LLM summaries of the abstracts; off unless `enabled = true`.
    #[serde(default)]
    pub summaries: SummariesSection,
    /// The object store that receives every published version; none by default.
    #[serde(default)]
    pub storage: StorageSection,
    /// Directory containing the pipeline file; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// SHA-256 of the pipeline file bytes, recorded in every published version.
    #[serde(skip)]
    pub file_sha256: String,
}

impl PipelineConfig {
    /// Parses the bytes of a pipeline file and runs the checks that need no other file.
    /// `base_dir` is the directory relative paths resolve against. The error is a message
    /// for the curator that names the setting and the fix.
    pub fn parse(bytes: &[u8], base_dir: PathBuf) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "the file is not valid UTF-8; save it as UTF-8".to_string())?;
        let mut config: PipelineConfig = toml::from_str(text)
            .map_err(|error| plain_type_names(&suggest_known_field(&error.to_string())))?;

        config.base_dir = base_dir;
        config.file_sha256 = hex::encode(Sha256::digest(bytes));
        config.check_text()?;
        Ok(config)
    }

    /// Resolves a path written in the pipeline file against the file's directory.
    pub fn resolve(&self, relative: &Path) -> PathBuf {
        if relative.is_absolute() {
            relative.to_path_buf()
        } else {
            self.base_dir.join(relative)
        }
    }

    /// Returns the GGUF file of the `local` summary backend, resolved against the pipeline
    /// file.
    pub fn summary_model_path(&self) -> PathBuf {
        match &self.summaries.model_path {
            Some(path) => self.resolve(path),
            None => default_model_path(),
        }
    }
}

#[cfg(test)]
mod tests;
