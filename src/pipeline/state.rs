//! The archive state of a dataset: every observation and product row that the runs so far
//! collected, and the coverage bookkeeping that records which proposals and release dates
//! those rows account for.
//!
//! On disk, under `<data dir>/datasets/<name>/state/`:
//! - `<state id>/observations.parquet` and `products.parquet`, rows sorted by key;
//! - `<state id>/coverage.json`, a [`Coverage`];
//! - `CURRENT`, the state id in force.
//!
//! A state folder is written completely, fsynced and renamed into place before `CURRENT`
//! names it, and is never written again. A run that dies before replacing `CURRENT` leaves
//! the previous state in force, so the next run queries the same window again. Folders that
//! `CURRENT` does not name are removed by the next run that holds the dataset lock.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::{
    SortColumn, concat_batches, filter_record_batch, lexsort_to_indices, take_record_batch,
};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::skips::StoredSkip;
use super::tables;
use crate::dataset::versions::DatasetPaths;
use crate::error::{PipelineError, Result};
use crate::store::blobs::{sync_dir, write_atomic};

/// Coverage of the archive state: the inputs it accounts for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// Proposals whose observations were queried in full at least once.
    pub proposals: BTreeSet<i64>,
    /// Release dates (`t_obs_release`, MJD) below this are covered for every proposal in
    /// `proposals`; `None` before the first run.
    pub released_before_mjd: Option<f64>,
    /// When every proposal was last queried in full, MJD.
    pub last_full_refresh_mjd: Option<f64>,
    /// Every window a run queried and committed, oldest first.
    pub intervals: Vec<CoveredInterval>,
}

/// One committed archive query window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoveredInterval {
    pub run_id: String,
    /// `full` (every proposal by id), `new_proposals` (new proposals by id) or `released`
    /// (the release-date window of known proposals).
    pub kind: String,
    /// Inclusive start, MJD; `None` for queries by id, which cover every earlier date.
    pub start_mjd: Option<f64>,
    /// Exclusive end, MJD.
    pub end_mjd: f64,
    /// Proposals the query asked for (by id), or that had rows in the window.
    pub proposals: u64,
    /// Observation rows the query contributed.
    pub observations: u64,
}

/// Observations and products collected so far, with their coverage.
#[derive(Debug, Clone)]
pub struct ArchiveState {
    /// The state id (the run id that wrote it); `None` for the empty state.
    pub id: Option<String>,
    pub observations: RecordBatch,
    pub products: RecordBatch,
    pub coverage: Coverage,
    /// Skips from product queries, reported again by every run until the products of
    /// their observation are queried again.
    pub product_skips: Vec<StoredSkip>,
}

const CURRENT_FILE: &str = "CURRENT";
const OBSERVATIONS_FILE: &str = "observations.parquet";
const PRODUCTS_FILE: &str = "products.parquet";
const COVERAGE_FILE: &str = "coverage.json";
const PRODUCT_SKIPS_FILE: &str = "product_skips.json";

fn state_root(paths: &DatasetPaths) -> PathBuf {
    paths.root.join("state")
}

impl ArchiveState {
    /// Returns the state before the first run: no rows, nothing covered.
    pub fn empty() -> Self {
        Self {
            id: None,
            observations: tables::observations_batch(&[]),
            products: tables::products_batch(&[]),
            coverage: Coverage::default(),
            product_skips: Vec::new(),
        }
    }

    /// Loads the state `CURRENT` names, or the empty state when there is none. Any
    /// unreadable part is an error that names the file and the way out (`--full-refresh`).
    pub fn load(paths: &DatasetPaths) -> Result<Self> {
        let current = state_root(paths).join(CURRENT_FILE);
        let Some(id) = current_id(paths)? else {
            return Ok(Self::empty());
        };
        let dir = state_root(paths).join(&id);
        let unreadable = |file: &Path, detail: String| {
            PipelineError::Invalid(format!(
                "the archive state file {} is unreadable ({detail}); run with --full-refresh to rebuild the state, or delete {}",
                file.display(),
                current.display()
            ))
        };
        let coverage_path = dir.join(COVERAGE_FILE);
        let coverage_bytes =
            fs::read(&coverage_path).map_err(|e| unreadable(&coverage_path, e.to_string()))?;
        let coverage = serde_json::from_slice(&coverage_bytes)
            .map_err(|e| unreadable(&coverage_path, e.to_string()))?;
        let empty = Self::empty();
        let table = |name: &str, like: &RecordBatch| {
            let path = dir.join(name);
            read_parquet(&path, like).map_err(|e| unreadable(&path, e))
        };
        let skips_path = dir.join(PRODUCT_SKIPS_FILE);
        let product_skips = match fs::read(&skips_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| unreadable(&skips_path, e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(unreadable(&skips_path, e.to_string())),
        };
        Ok(Self {
            id: Some(id),
            observations: table(OBSERVATIONS_FILE, &empty.observations)?,
            products: table(PRODUCTS_FILE, &empty.products)?,
            coverage,
            product_skips,
        })
    }

    /// Writes the state as a new folder named `state_id` and makes it current.
    pub fn commit(&mut self, paths: &DatasetPaths, state_id: &str) -> Result<()> {
        let root = state_root(paths);
        let staging = root.join(format!(".tmp-{state_id}"));
        let final_dir = root.join(state_id);
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(|e| PipelineError::io(&staging, e))?;
        }
        fs::create_dir_all(&staging).map_err(|e| PipelineError::io(&staging, e))?;

        write_parquet(&staging.join(OBSERVATIONS_FILE), &self.observations)?;
        write_parquet(&staging.join(PRODUCTS_FILE), &self.products)?;
        let coverage = serde_json::to_vec_pretty(&self.coverage).expect("Coverage serializes");
        write_atomic(&staging.join(COVERAGE_FILE), &coverage)?;
        let skips = serde_json::to_vec_pretty(&self.product_skips).expect("skips serialize");
        write_atomic(&staging.join(PRODUCT_SKIPS_FILE), &skips)?;
        sync_dir(&staging)?;

        fs::rename(&staging, &final_dir).map_err(|e| PipelineError::io(&final_dir, e))?;
        sync_dir(&root)?;
        write_atomic(&root.join(CURRENT_FILE), state_id.as_bytes())?;
        self.id = Some(state_id.to_string());
        Ok(())
    }

    /// SHA-256 over the rows of both tables, in their stored (sorted) order.
    pub fn content_sha256(&self) -> Result<String> {
        let mut hasher = Sha256::new();
        for batch in [&self.observations, &self.products] {
            let mut bytes = Vec::new();
            let mut writer =
                datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &batch.schema())?;
            writer.write(batch)?;
            writer.finish()?;
            hasher.update(&bytes);
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

/// Reads the state id that `CURRENT` names, or `None` when there is no `CURRENT`. It is an
/// error when the id is not a plain folder name or names no folder.
fn current_id(paths: &DatasetPaths) -> Result<Option<String>> {
    let current = state_root(paths).join(CURRENT_FILE);
    let text = match fs::read_to_string(&current) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PipelineError::io(&current, e)),
    };
    let id = text.trim();
    let plain = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with('.');
    if !plain || !state_root(paths).join(id).is_dir() {
        return Err(PipelineError::Invalid(format!(
            "{} names the archive state {id:?}, which is not a state folder next to it; run with --full-refresh to rebuild the state, or delete {}",
            current.display(),
            current.display()
        )));
    }
    Ok(Some(id.to_string()))
}

/// Removes state folders that `CURRENT` does not name. Call only with the dataset lock
/// held. Removes nothing while `CURRENT` is missing or unreadable, so a damaged pointer
/// never costs the folders it should have named.
pub fn remove_unused_states(paths: &DatasetPaths) {
    let root = state_root(paths);
    let Ok(Some(current)) = current_id(paths) else {
        return;
    };
    let Ok(entries) = fs::read_dir(&root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == CURRENT_FILE || name == current || !entry.path().is_dir() {
            continue;
        }
        if let Err(error) = fs::remove_dir_all(entry.path()) {
            tracing::warn!(dir = %entry.path().display(), %error, "cannot remove an unused archive state");
        }
    }
}

/// Keeps the rows whose `column` value satisfies `keep`.
pub fn filter_by_id(
    batch: &RecordBatch,
    column: &str,
    keep: impl Fn(i64) -> bool,
) -> Result<RecordBatch> {
    let ids = int64(batch, column)?;
    let mask: BooleanArray = (0..ids.len())
        .map(|i| Some(ids.is_valid(i) && keep(ids.value(i))))
        .collect();
    Ok(filter_record_batch(batch, &mask)?)
}

/// Appends `new` to `old` and sorts the result by `key_columns`.
pub fn merge_sorted(
    old: &RecordBatch,
    new: &RecordBatch,
    key_columns: &[&str],
) -> Result<RecordBatch> {
    let merged = concat_batches(&old.schema(), [old, new])?;
    let sort_columns = key_columns
        .iter()
        .map(|name| {
            let index = merged.schema().index_of(name)?;
            Ok(SortColumn {
                values: merged.column(index).clone(),
                options: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let indices = lexsort_to_indices(&sort_columns, None)?;
    Ok(take_record_batch(&merged, &indices)?)
}

/// Returns the distinct values of an Int64 column.
pub fn id_set(batch: &RecordBatch, column: &str) -> Result<HashSet<i64>> {
    Ok(int64(batch, column)?.iter().flatten().collect())
}

fn int64<'a>(batch: &'a RecordBatch, column: &str) -> Result<&'a Int64Array> {
    batch
        .column_by_name(column)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| {
            PipelineError::Invalid(format!("archive state table has no BIGINT column {column}"))
        })
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<()> {
    let file = fs::File::create(path).map_err(|e| PipelineError::io(path, e))?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None)
        .map_err(|e| PipelineError::parquet_write(path, e))?;
    writer
        .write(batch)
        .and_then(|()| writer.close().map(|_| ()))
        .map_err(|e| PipelineError::parquet_write(path, e))?;
    fs::File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(|e| PipelineError::io(path, e))
}

/// Reads a state table and checks it has the schema of `like`, the current table layout.
/// The error is the detail only; the caller names the file and the fix.
fn read_parquet(path: &Path, like: &RecordBatch) -> std::result::Result<RecordBatch, String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|builder| builder.build())
        .map_err(|e| e.to_string())?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let schema: Arc<_> = like.schema();
    if let Some(first) = batches.first()
        && first.schema().fields() != schema.fields()
    {
        return Err(format!(
            "its columns differ from this version's layout ({} vs {})",
            first.schema(),
            schema
        ));
    }
    concat_batches(&schema, &batches).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let paths = DatasetPaths::new(dir.path(), "d");
        assert!(ArchiveState::load(&paths).unwrap().id.is_none());

        let mut state = ArchiveState::empty();
        state.coverage.proposals.insert(7);
        state.coverage.released_before_mjd = Some(60000.5);
        state.commit(&paths, "run-1").unwrap();

        let loaded = ArchiveState::load(&paths).unwrap();
        assert_eq!(loaded.id.as_deref(), Some("run-1"));
        assert_eq!(loaded.coverage, state.coverage);
        assert_eq!(
            loaded.content_sha256().unwrap(),
            state.content_sha256().unwrap()
        );
    }

    #[test]
    fn unused_states_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = DatasetPaths::new(dir.path(), "d");
        let mut state = ArchiveState::empty();
        state.commit(&paths, "run-1").unwrap();
        state.commit(&paths, "run-2").unwrap();
        remove_unused_states(&paths);
        assert!(!paths.root.join("state/run-1").exists());
        assert_eq!(
            ArchiveState::load(&paths).unwrap().id.as_deref(),
            Some("run-2")
        );
    }
}
