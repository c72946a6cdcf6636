//! Stage fingerprints: the named inputs each stage's output depends on (SQL files,
//! settings, code version, upstream content), compared with those of the latest published
//! version to say whether the stage is stale and why.
//!
//! Every published version records the inputs of its `models`, `images` and `publish`
//! stages. When all three are unchanged, the version's samples would come out the same, so
//! a run stops there and publishes nothing.

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::PipelineConfig;
use crate::dataset::versions::DatasetPaths;
use crate::error::{PipelineError, Result};

/// Version of the stage code; a new release makes every stage stale.
pub const CODE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Stages whose inputs decide whether a version would change, in run order.
pub const VERSIONED_STAGES: [&str; 3] = ["models", "images", "publish"];

/// Named inputs of one stage: part name → content hash or short value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageInputs(pub BTreeMap<String, String>);

impl StageInputs {
    fn with(mut self, part: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(part.into(), value.into());
        self
    }

    /// Adds parts computed outside this module, such as those of the summaries stage.
    pub fn with_parts(mut self, parts: impl IntoIterator<Item = (String, String)>) -> Self {
        self.0.extend(parts);
        self
    }

    /// SHA-256 over the parts in name order.
    pub fn sha256(&self) -> String {
        let mut hasher = Sha256::new();
        for (part, value) in &self.0 {
            hasher.update(part.as_bytes());
            hasher.update([0]);
            hasher.update(value.as_bytes());
            hasher.update([0]);
        }
        hex::encode(hasher.finalize())
    }

    /// Human-readable reasons this stage differs from `previous`; empty when equal.
    pub fn changes_since(&self, previous: Option<&StageInputs>, since: &str) -> Vec<String> {
        let Some(previous) = previous else {
            return vec![format!("no earlier inputs recorded ({since})")];
        };
        let mut reasons = Vec::new();
        for (part, value) in &self.0 {
            match previous.0.get(part) {
                None => reasons.push(format!("{part} is new since {since}")),
                Some(old) if old != value && part == "code" => {
                    reasons.push(format!("code version {old} → {value} since {since}"))
                }
                Some(old) if old != value => reasons.push(format!("{part} changed since {since}")),
                Some(_) => {}
            }
        }
        for part in previous.0.keys().filter(|p| !self.0.contains_key(*p)) {
            reasons.push(format!("{part} was removed since {since}"));
        }
        reasons
    }
}

/// Stage inputs that a run found to give exactly the samples of `version`, though they
/// differ from the inputs recorded with it (a comment added to a model, say). Later runs
/// with these inputs are then fresh too, instead of running the models every time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfirmedInputs {
    pub version: u64,
    pub stage_inputs: BTreeMap<String, StageInputs>,
}

const CONFIRMED_INPUTS_FILE: &str = "confirmed_inputs.json";

impl ConfirmedInputs {
    /// Reads the confirmed inputs of a dataset; `None` when absent or unreadable (which
    /// only costs one run of the models).
    pub fn load(paths: &DatasetPaths) -> Option<Self> {
        let path = paths.root.join(CONFIRMED_INPUTS_FILE);
        let bytes = std::fs::read(&path).ok()?;
        serde_json::from_slice(&bytes)
            .inspect_err(|error| {
                tracing::warn!(path = %path.display(), %error, "ignoring unreadable confirmed stage inputs")
            })
            .ok()
    }

    /// Writes the file atomically; call with the dataset lock held.
    pub fn save(&self, paths: &DatasetPaths) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("inputs serialize");
        crate::store::blobs::write_atomic(&paths.root.join(CONFIRMED_INPUTS_FILE), &json)
    }
}

/// What one stage did in a run; the rows of `paperclip.stages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub stage: String,
    /// `ran`, `fresh` (inputs unchanged since the latest version, so not run), `would_run`
    /// (in a plan), or `failed`.
    pub status: String,
    /// Why the stage ran or would run.
    pub reasons: Vec<String>,
    /// SHA-256 of the stage inputs; empty where they are not tracked.
    pub input_sha256: String,
    pub elapsed_secs: f64,
}

/// Inputs of the SQL models: every model file, every source table file and declaration,
/// the selection and caption settings, the proposals and the archive state.
pub fn models_inputs(
    config: &PipelineConfig,
    proposals_sha256: &str,
    archive_state_sha256: &str,
) -> Result<StageInputs> {
    let mut inputs = StageInputs::default()
        .with("code", CODE_VERSION)
        .with("settings.selection", json(&config.selection))
        .with("settings.captions", json(&config.captions))
        .with("proposals", proposals_sha256)
        .with("archive_state", archive_state_sha256)
        .with("sql.samples_model", config.sql.samples_model.clone());
    for (part, sha256) in crate::sql::sources::source_fingerprints(config)? {
        inputs = inputs.with(part, sha256);
    }
    for model in &config.sql.models {
        let path = config.resolve(model);
        let name = crate::sql::model_name(&path)?;
        inputs = inputs.with(format!("sql model {name}"), file_sha256(&path)?);
    }
    Ok(inputs)
}

/// Inputs of the image stage: the models stage and the image settings that shape the
/// output (`threads` only sets how many images are prepared at once).
pub fn images_inputs(config: &PipelineConfig, models: &StageInputs) -> StageInputs {
    let mut settings = config.images.clone();
    settings.threads = None;
    StageInputs::default()
        .with("code", CODE_VERSION)
        .with("upstream stage models", models.sha256())
        .with("settings.images", json(&settings))
}

/// Inputs of the publish stage: the image stage and the shard settings.
pub fn publish_inputs(config: &PipelineConfig, images: &StageInputs) -> StageInputs {
    StageInputs::default()
        .with("code", CODE_VERSION)
        .with("upstream stage images", images.sha256())
        .with("settings.shards", json(&config.shards))
}

/// SHA-256 of a table's rows in their current order.
pub fn batch_sha256(batch: &RecordBatch) -> Result<String> {
    let mut bytes = Vec::new();
    let mut writer =
        datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("settings serialize")
}

fn file_sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| PipelineError::io(path, e))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_changed_parts() {
        let old = StageInputs::default()
            .with("code", "0.1.0")
            .with("sql a.sql", "x")
            .with("gone", "1");
        let new = StageInputs::default()
            .with("code", "0.2.0")
            .with("sql a.sql", "y")
            .with("added", "2");
        let reasons = new.changes_since(Some(&old), "v3");
        assert_eq!(
            reasons,
            vec![
                "added is new since v3",
                "code version 0.1.0 → 0.2.0 since v3",
                "sql a.sql changed since v3",
                "gone was removed since v3",
            ]
        );
        assert!(new.changes_since(Some(&new), "v3").is_empty());
        assert_ne!(old.sha256(), new.sha256());
    }

    #[test]
    fn image_threads_leave_stage_inputs_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        let pipeline =
            "[dataset]\nname = \"demo\"\n[sql]\nmodels = [\"a.sql\"]\nsamples_model = \"a\"\n";
        std::fs::write(&path, pipeline).unwrap();
        std::fs::write(dir.path().join("a.sql"), "SELECT 1").unwrap();
        let mut config = crate::pipeline::config::load(&path).unwrap();
        let models = StageInputs::default().with("code", "0.1.0");
        let unset = images_inputs(&config, &models);

        config.images.threads = Some(3);
        assert_eq!(images_inputs(&config, &models).sha256(), unset.sha256());

        config.images.size_px = 256;
        assert_ne!(images_inputs(&config, &models).sha256(), unset.sha256());
    }
}
