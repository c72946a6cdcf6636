//! Published dataset versions.
//!
//! On disk, under `<data dir>/datasets/<name>/`:
//! - `samples/`: a Delta Lake table with one row per sample. Dataset version `N` is Delta
//!   table version `N - 1`, so Spark, Polars and the Python `deltalake` package can
//!   time-travel to any dataset version.
//! - `versions/v<N>/`: the version's immutable files: WebDataset shards, `manifest.json`
//!   and `skips.parquet`.
//! - `.lock`: held (an OS file lock) by the run that is writing the dataset.
//!
//! Publishing order: the version directory is staged, fsynced and renamed into place, then
//! the Delta commit (which carries the version record in its commit metadata) makes the
//! version visible. The commit is the single atomic step. A crash before it leaves only an
//! unreferenced directory, which the next run deletes and rebuilds. A published version's
//! files are never written again; only `datasets gc` removes them, whole, under the lock
//! (see [`super::gc`]). Delta's own expired-log cleanup is turned off on every commit, so
//! old versions leave only through gc, which records them in `expired.json`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use datafusion::arrow::record_batch::RecordBatch;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use url::Url;

use super::delta_log::LogListing;
use super::retention::{load_expired, unavailable_version};
use super::shards::ShardInfo;
use crate::error::{PipelineError, Result};
use crate::pipeline::stages::StageInputs;

/// Delta table property and value: a checkpoint every this many commits.
const CHECKPOINT_INTERVAL_KEY: &str = "delta.checkpointInterval";
const CHECKPOINT_INTERVAL_COMMITS: &str = "10";

/// Key of the version record inside the Delta commit metadata.
const COMMIT_METADATA_KEY: &str = "paperclip";

/// Record of a published version, stored in its Delta commit and in `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub dataset: String,
    pub version: u64,
    pub created_at: String,
    pub run_id: String,
    /// SHA-256 of the pipeline file that produced the version.
    pub pipeline_sha256: String,
    /// SHA-256 over the sorted (key, image, caption, split) of every sample; equal
    /// fingerprints mean equal datasets.
    pub fingerprint: String,
    pub counts: BTreeMap<String, u64>,
    pub skips_by_reason: BTreeMap<String, usize>,
    pub shards: Vec<ShardInfo>,
    /// Inputs of the stages that produced the version; records written before stage
    /// tracking have none, which makes every stage stale.
    #[serde(default)]
    pub stage_inputs: BTreeMap<String, StageInputs>,
    /// The archive state (a run id) the samples were selected from.
    #[serde(default)]
    pub archive_state: Option<String>,
    /// Release dates (MJD) below this were covered by the archive state.
    #[serde(default)]
    pub released_before_mjd: Option<f64>,
}

/// Lineage of a version's inputs, recorded with the version.
#[derive(Debug, Clone, Default)]
pub struct Lineage {
    pub stage_inputs: BTreeMap<String, StageInputs>,
    pub archive_state: Option<String>,
    pub released_before_mjd: Option<f64>,
}

/// Paths of one dataset under the data directory.
#[derive(Debug, Clone)]
pub struct DatasetPaths {
    pub name: String,
    pub root: PathBuf,
}

impl DatasetPaths {
    pub fn new(data_dir: &Path, name: &str) -> Self {
        Self {
            name: name.to_string(),
            root: data_dir.join("datasets").join(name),
        }
    }

    pub fn samples_table(&self) -> PathBuf {
        self.root.join("samples")
    }

    pub fn version_dir(&self, version: u64) -> PathBuf {
        self.root.join("versions").join(format!("v{version}"))
    }

    pub fn staging_dir(&self, run_id: &str) -> PathBuf {
        self.root.join("staging").join(run_id)
    }

    /// Returns the samples table's Delta log folder.
    pub fn log_dir(&self) -> PathBuf {
        self.samples_table().join("_delta_log")
    }

    pub(crate) fn table_url(&self) -> Result<Url> {
        let path = self.samples_table();
        check_table_path(&path)?;
        fs::create_dir_all(&path).map_err(|e| PipelineError::io(&path, e))?;
        let absolute = fs::canonicalize(&path).map_err(|e| PipelineError::io(&path, e))?;
        Url::from_directory_path(&absolute).map_err(|()| {
            PipelineError::Invalid(format!("{} is not a valid table path", absolute.display()))
        })
    }

    pub(crate) fn delta_error(&self, source: deltalake::DeltaTableError) -> PipelineError {
        PipelineError::Delta {
            path: self.samples_table(),
            source,
        }
    }
}

/// An exclusive lock on a dataset, released when dropped or when the process exits.
pub struct DatasetLock {
    _file: File,
}

impl DatasetLock {
    pub fn acquire(paths: &DatasetPaths) -> Result<Self> {
        fs::create_dir_all(&paths.root).map_err(|e| PipelineError::io(&paths.root, e))?;
        let lock_path = paths.root.join(".lock");
        let file = File::create(&lock_path).map_err(|e| PipelineError::io(&lock_path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(PipelineError::Locked {
                name: paths.name.clone(),
                lock_path,
            }),
            Err(fs::TryLockError::Error(e)) => Err(PipelineError::io(&lock_path, e)),
        }
    }
}

/// Returns the version records in the commits of a samples table, in log order.
pub async fn version_records(table: &DeltaTable) -> deltalake::DeltaResult<Vec<VersionRecord>> {
    let infos: Vec<_> = table.history(None).try_collect().await?;
    Ok(infos
        .into_iter()
        .filter_map(|info| info.info.get(COMMIT_METADATA_KEY).cloned())
        .filter_map(|value| serde_json::from_value(value).ok())
        .collect())
}

/// Lists the versions of a dataset that can be read, oldest first; empty when none is
/// published. Versions removed by gc, and versions whose Delta log entries are gone, are
/// left out.
pub async fn list_versions(paths: &DatasetPaths) -> Result<Vec<VersionRecord>> {
    let listing = LogListing::read(&paths.log_dir())?;
    if listing.latest_commit().is_none() {
        return Ok(Vec::new());
    }
    let table = deltalake::open_table(paths.table_url()?)
        .await
        .map_err(|e| paths.delta_error(e))?;
    let mut records = version_records(&table)
        .await
        .map_err(|e| paths.delta_error(e))?;
    let readable = listing.readable_versions();
    let expired = load_expired(paths)?;
    records.retain(|record| {
        record
            .version
            .checked_sub(1)
            .is_some_and(|delta_version| readable.contains(&delta_version))
            && !expired.iter().any(|e| e.version == record.version)
    });
    records.sort_by_key(|r| r.version);
    Ok(records)
}

/// Reads the latest version's record from its Delta commit alone, so the cost does not
/// grow with the number of versions. Falls back to [`list_versions`] when the latest commit
/// carries no version record.
pub async fn latest_version(paths: &DatasetPaths) -> Result<Option<VersionRecord>> {
    let listing = LogListing::read(&paths.log_dir())?;
    let Some(latest) = listing.latest_commit() else {
        return Ok(None);
    };
    let path = paths.log_dir().join(format!("{latest:020}.json"));
    let text = fs::read_to_string(&path).map_err(|e| PipelineError::io(&path, e))?;
    let record = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|action| action.get("commitInfo")?.get(COMMIT_METADATA_KEY).cloned())
        .and_then(|value| serde_json::from_value::<VersionRecord>(value).ok());
    match record {
        Some(record) if record.version == latest + 1 => Ok(Some(record)),
        _ => Ok(list_versions(paths).await?.pop()),
    }
}

/// Opens the samples table as of a dataset version. A version removed by gc, or whose Delta
/// log entries are gone, is an error that names the cause and lists the versions that can be read.
pub async fn open_version(paths: &DatasetPaths, version: u64) -> Result<DeltaTable> {
    let delta_version = version
        .checked_sub(1)
        .ok_or_else(|| PipelineError::Invalid("dataset versions start at 1".to_string()))?;
    let expired = load_expired(paths)?;
    let readable = LogListing::read(&paths.log_dir())?.is_readable(delta_version);
    if !readable || expired.iter().any(|e| e.version == version) {
        let available: Vec<u64> = list_versions(paths)
            .await?
            .iter()
            .map(|r| r.version)
            .collect();
        return Err(unavailable_version(paths, version, &expired, &available));
    }
    deltalake::open_table_with_version(paths.table_url()?, delta_version)
        .await
        .map_err(|e| paths.delta_error(e))
}

/// The samples table as of a dataset version, as a table `ctx` can query.
pub async fn version_provider(
    paths: &DatasetPaths,
    version: u64,
    ctx: &datafusion::prelude::SessionContext,
) -> Result<std::sync::Arc<dyn datafusion::datasource::TableProvider>> {
    let table = open_version(paths, version).await?;
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| paths.delta_error(e))?;
    Ok(table.table_provider().await?)
}

/// Makes a staged version visible: moves its directory into place, then commits the samples.
///
/// `record.version` must be the next version (latest + 1); a leftover directory of an
/// unpublished attempt at that number is replaced.
pub async fn publish(
    paths: &DatasetPaths,
    staged_dir: &Path,
    samples: RecordBatch,
    record: &VersionRecord,
) -> Result<()> {
    let url = paths.table_url()?;
    let table = if has_commits(&paths.samples_table().join("_delta_log")) {
        deltalake::open_table(url).await
    } else {
        // A table that does not exist yet; loading it would only log a kernel error.
        deltalake::DeltaTableBuilder::from_url(url).and_then(|builder| builder.build())
    }
    .map_err(|e| paths.delta_error(e))?;
    // Dataset version N is Delta version N - 1, so the table must be at N - 2 (or empty for N = 1).
    let expected_delta_version = record.version.checked_sub(2);
    let current = table.version();
    if current != expected_delta_version {
        let describe =
            |v: Option<u64>| v.map_or("empty".to_string(), |v| format!("at Delta version {v}"));
        return Err(PipelineError::Invalid(format!(
            "cannot publish {} version {}: the samples table is {}, expected {}; another run published in between, run again",
            record.dataset,
            record.version,
            describe(current),
            describe(expected_delta_version)
        )));
    }

    move_into_place(staged_dir, &paths.version_dir(record.version))?;

    let metadata = serde_json::to_value(record).expect("VersionRecord serializes");
    table
        .write(vec![samples])
        .with_save_mode(SaveMode::Overwrite)
        .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
        // Opening the table replays the commits since the last checkpoint. A short
        // interval keeps that replay, and so the cost of each publish, small and flat.
        .with_configuration([(CHECKPOINT_INTERVAL_KEY, Some(CHECKPOINT_INTERVAL_COMMITS))])
        .with_commit_properties(
            CommitProperties::default()
                .with_metadata([(COMMIT_METADATA_KEY.to_string(), metadata)])
                // Log entries of old versions are removed only by `datasets gc`, which
                // records the versions it removes; Delta's own cleanup would drop them
                // silently once they are 30 days old.
                .with_cleanup_expired_logs(Some(false)),
        )
        .await
        .map_err(|e| paths.delta_error(e))?;
    Ok(())
}

fn move_into_place(staged_dir: &Path, final_dir: &Path) -> Result<()> {
    if final_dir.exists() {
        // Only an unpublished attempt can hold this number: publish() checked that the
        // table is one version behind, and a published version's number is never reused.
        tracing::warn!(dir = %final_dir.display(), "removing files of an unpublished attempt");
        fs::remove_dir_all(final_dir).map_err(|e| PipelineError::io(final_dir, e))?;
    }
    let parent = final_dir.parent().expect("version dir has a parent");
    fs::create_dir_all(parent).map_err(|e| PipelineError::io(parent, e))?;
    fs::rename(staged_dir, final_dir).map_err(|e| PipelineError::io(final_dir, e))?;
    crate::store::blobs::sync_dir(parent)
}

/// Characters that survive in a file URL only percent-encoded, which the Delta object
/// store does not decode consistently: a table under such a path commits but cannot be
/// read back. Paths with them are rejected before anything is written.
const UNSAFE_TABLE_PATH_CHARACTERS: [char; 5] = ['#', '?', '%', '[', ']'];

/// Rejects a data directory whose absolute path the Delta table store cannot round-trip.
pub fn check_table_path(path: &Path) -> Result<()> {
    let absolute = std::path::absolute(path).map_err(|e| PipelineError::io(path, e))?;
    let text = absolute.to_string_lossy();
    if let Some(bad) = text
        .chars()
        .find(|c| UNSAFE_TABLE_PATH_CHARACTERS.contains(c))
    {
        return Err(PipelineError::Invalid(format!(
            "the data directory path {text} contains {bad:?}, which Delta tables cannot use; choose a --data-dir without any of # ? % [ ]"
        )));
    }
    Ok(())
}

/// Lists dataset names under a data directory: folders whose samples table has at least
/// one commit.
pub fn list_datasets(data_dir: &Path) -> Result<Vec<String>> {
    let root = data_dir.join("datasets");
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(&root).map_err(|e| PipelineError::io(&root, e))? {
        let entry = entry.map_err(|e| PipelineError::io(&root, e))?;
        if has_commits(&entry.path().join("samples").join("_delta_log")) {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Returns true when a Delta log directory contains at least one commit file.
fn has_commits(log_dir: &Path) -> bool {
    fs::read_dir(log_dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "json"))
    })
}
