//! The summary cache: every summary outcome, ok or not, as rows of a Delta Lake table at
//! `<data dir>/summaries/`, shared by all datasets of the data directory.
//!
//! A row is keyed by [`SummaryKey`]: the SHA-256 of the abstract, the backend's model id,
//! the SHA-256 of the prompt template and of the schema file, and the sampling settings
//! as JSON. `summary_key` is the SHA-256 of that key's canonical JSON, so a change of any
//! part is a new key and never reuses an old summary.
//!
//! Invariants:
//! - rows are only appended, one Delta commit per batch of outcomes, so an interrupted run
//!   keeps what it committed and a concurrent writer never overwrites another's rows;
//! - when a key has several rows, an `ok` row wins over any other, and otherwise the latest
//!   (`created_at`) does. A key with an `ok` row is never sent to a backend again;
//! - every row keeps the raw output of its last attempt, so a rejection can be inspected
//!   with `paperclip sql` or any Delta reader.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, ListArray, ListBuilder, RecordBatch, StringArray,
    StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::protocol::SaveMode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;

use super::backend::Sampling;
use super::error::SummaryError;
use super::schema::Summary;

/// Folder of the cache table under the data directory.
pub const CACHE_DIR: &str = "summaries";

/// Delta table property and value: a checkpoint every this many commits, so opening the
/// table replays few log entries however many batches were appended.
const CHECKPOINT_INTERVAL: (&str, &str) = ("delta.checkpointInterval", "10");

/// Inputs a summary depends on. Two requests with equal keys give interchangeable summaries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SummaryKey {
    pub abstract_sha256: String,
    pub model_id: String,
    pub prompt_sha256: String,
    pub schema_sha256: String,
    /// [`Sampling`] as JSON.
    pub sampling: String,
}

impl SummaryKey {
    pub fn new(
        abstract_raw: &str,
        model_id: &str,
        prompt_sha256: &str,
        schema_sha256: &str,
        sampling: &Sampling,
    ) -> Self {
        Self {
            abstract_sha256: hex::encode(Sha256::digest(abstract_raw.as_bytes())),
            model_id: model_id.to_string(),
            prompt_sha256: prompt_sha256.to_string(),
            schema_sha256: schema_sha256.to_string(),
            sampling: serde_json::to_string(sampling).expect("sampling serializes"),
        }
    }

    /// SHA-256 of the key's JSON (fields in declaration order), hex.
    pub fn id(&self) -> String {
        let json = serde_json::to_vec(self).expect("a key serializes");
        hex::encode(Sha256::digest(&json))
    }
}

/// Outcome class of a summary row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SummaryStatus {
    /// The output passed every check.
    Ok,
    /// The backend returned an output, but it failed a check.
    Rejected,
    /// The backend returned no completion (unreachable, HTTP error, timeout).
    Failed,
}

impl SummaryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Ok, Self::Rejected, Self::Failed]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// One row of the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRecord {
    pub summary_key: String,
    pub key: SummaryKey,
    pub status: SummaryStatus,
    /// Stable reason code when not ok: a rejection code or a backend error code.
    pub reason: Option<String>,
    pub detail: Option<String>,
    /// Text of the last completion; `None` when no completion came back.
    pub raw_output: Option<String>,
    pub finish_reason: Option<String>,
    pub summary: Option<Summary>,
    /// "objects, ...; use cases, ..." for an ok summary.
    pub caption: Option<String>,
    /// Requests made for this key, over all runs.
    pub attempts: u32,
    /// Wall time of this row's attempts, retries and waits included.
    pub elapsed_secs: f64,
    /// Token budget of the last request.
    pub max_tokens: u32,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub run_id: String,
    /// RFC 3339 UTC with milliseconds; orders the rows of one key.
    pub created_at: String,
}

/// Every outcome in the cache, latest per key, with the table's location.
#[derive(Debug)]
pub struct SummaryCache {
    dir: PathBuf,
    latest: HashMap<String, SummaryRecord>,
}

impl SummaryCache {
    /// Reads the cache table under `data_dir`; an absent table is an empty cache.
    pub async fn open(data_dir: &Path) -> Result<Self, SummaryError> {
        let dir = data_dir.join(CACHE_DIR);
        let mut cache = Self {
            dir,
            latest: HashMap::new(),
        };
        if !has_commits(&cache.dir) {
            return Ok(cache);
        }
        for record in read_rows(&cache.dir).await? {
            cache.keep(record);
        }
        tracing::debug!(dir = %cache.dir.display(), keys = cache.latest.len(), "summary cache read");
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Returns the row that represents `summary_key`, if any.
    pub fn get(&self, summary_key: &str) -> Option<&SummaryRecord> {
        self.latest.get(summary_key)
    }

    /// Appends rows in one Delta commit and makes them visible to [`Self::get`].
    pub async fn append(&mut self, records: Vec<SummaryRecord>) -> Result<(), SummaryError> {
        if records.is_empty() {
            return Ok(());
        }
        let batch = records_to_batch(&records)?;
        let delta_error = |source| SummaryError::Delta {
            path: self.dir.clone(),
            source,
        };
        let table = open_table(&self.dir).await.map_err(delta_error)?;
        table
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_configuration([(CHECKPOINT_INTERVAL.0, Some(CHECKPOINT_INTERVAL.1))])
            .await
            .map_err(delta_error)?;
        for record in records {
            self.keep(record);
        }
        Ok(())
    }

    fn keep(&mut self, record: SummaryRecord) {
        match self.latest.get(&record.summary_key) {
            Some(current) if !supersedes(&record, current) => {}
            _ => {
                self.latest.insert(record.summary_key.clone(), record);
            }
        }
    }
}

/// Whether `new` should stand for its key instead of `current`.
fn supersedes(new: &SummaryRecord, current: &SummaryRecord) -> bool {
    let ok = |r: &SummaryRecord| r.status == SummaryStatus::Ok;
    match (ok(new), ok(current)) {
        (true, false) => true,
        (false, true) => false,
        _ => new.created_at >= current.created_at,
    }
}

fn has_commits(dir: &Path) -> bool {
    fs::read_dir(dir.join("_delta_log")).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".json"))
    })
}

fn table_url(dir: &Path) -> Result<Url, SummaryError> {
    crate::dataset::versions::check_table_path(dir)
        .map_err(|error| SummaryError::Settings(error.to_string()))?;
    fs::create_dir_all(dir).map_err(|source| SummaryError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let absolute = fs::canonicalize(dir).map_err(|source| SummaryError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Url::from_directory_path(&absolute).map_err(|()| SummaryError::CacheData {
        path: absolute.clone(),
        problem: "the path is not usable as a table URL".to_string(),
    })
}

async fn open_table(dir: &Path) -> Result<deltalake::DeltaTable, deltalake::DeltaTableError> {
    let url =
        table_url(dir).map_err(|error| deltalake::DeltaTableError::Generic(error.to_string()))?;
    if has_commits(dir) {
        deltalake::open_table(url).await
    } else {
        // A table that does not exist yet; loading it would only log a kernel error.
        deltalake::DeltaTableBuilder::from_url(url).and_then(|builder| builder.build())
    }
}

/// The cache table under `data_dir` as a table `ctx` can query (every attempt ever
/// recorded, not only the latest per key); `None` before the first summary.
pub async fn table_provider(
    data_dir: &Path,
    ctx: &datafusion::prelude::SessionContext,
) -> Result<Option<std::sync::Arc<dyn datafusion::datasource::TableProvider>>, SummaryError> {
    let dir = data_dir.join(CACHE_DIR);
    if !has_commits(&dir) {
        return Ok(None);
    }
    let delta_error = |source| SummaryError::Delta {
        path: dir.clone(),
        source,
    };
    let table = open_table(&dir).await.map_err(delta_error)?;
    table
        .update_datafusion_session(&ctx.state())
        .map_err(delta_error)?;
    Ok(Some(table.table_provider().await?))
}

async fn read_rows(dir: &Path) -> Result<Vec<SummaryRecord>, SummaryError> {
    let delta_error = |source| SummaryError::Delta {
        path: dir.to_path_buf(),
        source,
    };
    let table = open_table(dir).await.map_err(delta_error)?;
    let ctx = crate::sql::new_session();
    table
        .update_datafusion_session(&ctx.state())
        .map_err(delta_error)?;
    let provider = table.table_provider().await?;
    let batches = ctx.read_table(provider)?.collect().await?;
    let mut records = Vec::new();
    for batch in batches {
        records.extend(batch_to_records(&batch, dir)?);
    }
    Ok(records)
}

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

/// Columns of the cache table.
pub fn cache_schema() -> SchemaRef {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let integer = |name: &str, nullable| Field::new(name, DataType::Int64, nullable);
    Arc::new(Schema::new(vec![
        text("summary_key", false),
        text("abstract_sha256", false),
        text("model_id", false),
        text("prompt_sha256", false),
        text("schema_sha256", false),
        text("sampling", false),
        text("status", false),
        text("reason", true),
        text("detail", true),
        text("raw_output", true),
        text("finish_reason", true),
        Field::new("objects_and_phenomena", list_type(), true),
        Field::new("science_use_cases", list_type(), true),
        text("caption", true),
        integer("attempts", false),
        Field::new("elapsed_secs", DataType::Float64, false),
        integer("max_tokens", false),
        integer("prompt_tokens", true),
        integer("completion_tokens", true),
        text("run_id", false),
        text("created_at", false),
    ]))
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

/// Builds a list column from optional lists of strings.
pub fn string_lists<'a>(values: impl Iterator<Item = Option<&'a [String]>>) -> ArrayRef {
    let mut builder = ListBuilder::new(StringBuilder::new());
    for value in values {
        match value {
            Some(items) => {
                for item in items {
                    builder.values().append_value(item);
                }
                builder.append(true);
            }
            None => builder.append(false),
        }
    }
    Arc::new(builder.finish())
}

fn records_to_batch(records: &[SummaryRecord]) -> Result<RecordBatch, SummaryError> {
    let text = |f: fn(&SummaryRecord) -> Option<&str>| strings(records.iter().map(f));
    let integers = |f: fn(&SummaryRecord) -> Option<i64>| -> ArrayRef {
        Arc::new(records.iter().map(f).collect::<Int64Array>())
    };
    let columns: Vec<ArrayRef> = vec![
        text(|r| Some(&r.summary_key)),
        text(|r| Some(&r.key.abstract_sha256)),
        text(|r| Some(&r.key.model_id)),
        text(|r| Some(&r.key.prompt_sha256)),
        text(|r| Some(&r.key.schema_sha256)),
        text(|r| Some(&r.key.sampling)),
        text(|r| Some(r.status.as_str())),
        text(|r| r.reason.as_deref()),
        text(|r| r.detail.as_deref()),
        text(|r| r.raw_output.as_deref()),
        text(|r| r.finish_reason.as_deref()),
        string_lists(records.iter().map(|r| {
            r.summary
                .as_ref()
                .map(|s| s.objects_and_phenomena.as_slice())
        })),
        string_lists(
            records
                .iter()
                .map(|r| r.summary.as_ref().map(|s| s.science_use_cases.as_slice())),
        ),
        text(|r| r.caption.as_deref()),
        integers(|r| Some(i64::from(r.attempts))),
        Arc::new(Float64Array::from_iter_values(
            records.iter().map(|r| r.elapsed_secs),
        )),
        integers(|r| Some(i64::from(r.max_tokens))),
        integers(|r| r.prompt_tokens.map(i64::from)),
        integers(|r| r.completion_tokens.map(i64::from)),
        text(|r| Some(&r.run_id)),
        text(|r| Some(&r.created_at)),
    ];
    Ok(RecordBatch::try_new(cache_schema(), columns)?)
}

/// Reads one batch of the table back; column types are cast to [`cache_schema`], since
/// readers may return other string types (Utf8View).
fn batch_to_records(batch: &RecordBatch, dir: &Path) -> Result<Vec<SummaryRecord>, SummaryError> {
    let columns = Columns::new(batch, dir)?;
    (0..batch.num_rows())
        .map(|row| columns.record(row))
        .collect()
}

/// The cache table's columns of one batch, cast to their canonical types.
struct Columns<'a> {
    dir: &'a Path,
    arrays: HashMap<&'static str, ArrayRef>,
}

impl<'a> Columns<'a> {
    fn new(batch: &RecordBatch, dir: &'a Path) -> Result<Self, SummaryError> {
        let schema = cache_schema();
        let mut arrays = HashMap::new();
        for name in CACHE_COLUMNS {
            let field = schema
                .field_with_name(name)
                .expect("listed columns are in the schema");
            let column = batch
                .column_by_name(name)
                .ok_or_else(|| SummaryError::CacheData {
                    path: dir.to_path_buf(),
                    problem: format!("the table has no column {name}"),
                })?;
            arrays.insert(name, cast(column, field.data_type())?);
        }
        Ok(Self { dir, arrays })
    }

    fn text(&self, name: &str, row: usize) -> Option<String> {
        let array = self.arrays[name]
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("cast to Utf8");
        array.is_valid(row).then(|| array.value(row).to_string())
    }

    fn required(&self, name: &str, row: usize) -> Result<String, SummaryError> {
        self.text(name, row)
            .ok_or_else(|| self.bad(format!("{name} is NULL in a row")))
    }

    fn integer(&self, name: &str, row: usize) -> Option<i64> {
        let array = self.arrays[name]
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("cast to Int64");
        array.is_valid(row).then(|| array.value(row))
    }

    fn list(&self, name: &str, row: usize) -> Option<Vec<String>> {
        let array = self.arrays[name]
            .as_any()
            .downcast_ref::<ListArray>()
            .expect("cast to List<Utf8>");
        if !array.is_valid(row) {
            return None;
        }
        let values = array.value(row);
        let values = values
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("list items are Utf8");
        Some(values.iter().flatten().map(str::to_string).collect())
    }

    fn bad(&self, problem: String) -> SummaryError {
        SummaryError::CacheData {
            path: self.dir.to_path_buf(),
            problem,
        }
    }

    fn small(&self, name: &str, row: usize) -> Option<u32> {
        self.integer(name, row).and_then(|v| u32::try_from(v).ok())
    }

    fn record(&self, row: usize) -> Result<SummaryRecord, SummaryError> {
        let status_text = self.required("status", row)?;
        let status = SummaryStatus::parse(&status_text)
            .ok_or_else(|| self.bad(format!("unknown status {status_text:?}")))?;
        let summary = match (
            self.list("objects_and_phenomena", row),
            self.list("science_use_cases", row),
        ) {
            (Some(objects_and_phenomena), Some(science_use_cases)) => Some(Summary {
                objects_and_phenomena,
                science_use_cases,
            }),
            _ => None,
        };
        let elapsed = self.arrays["elapsed_secs"]
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("cast to Float64");
        Ok(SummaryRecord {
            summary_key: self.required("summary_key", row)?,
            key: SummaryKey {
                abstract_sha256: self.required("abstract_sha256", row)?,
                model_id: self.required("model_id", row)?,
                prompt_sha256: self.required("prompt_sha256", row)?,
                schema_sha256: self.required("schema_sha256", row)?,
                sampling: self.required("sampling", row)?,
            },
            status,
            reason: self.text("reason", row),
            detail: self.text("detail", row),
            raw_output: self.text("raw_output", row),
            finish_reason: self.text("finish_reason", row),
            summary,
            caption: self.text("caption", row),
            attempts: self.small("attempts", row).unwrap_or(0),
            elapsed_secs: if elapsed.is_valid(row) {
                elapsed.value(row)
            } else {
                0.0
            },
            max_tokens: self.small("max_tokens", row).unwrap_or(0),
            prompt_tokens: self.small("prompt_tokens", row),
            completion_tokens: self.small("completion_tokens", row),
            run_id: self.required("run_id", row)?,
            created_at: self.required("created_at", row)?,
        })
    }
}

const CACHE_COLUMNS: [&str; 21] = [
    "summary_key",
    "abstract_sha256",
    "model_id",
    "prompt_sha256",
    "schema_sha256",
    "sampling",
    "status",
    "reason",
    "detail",
    "raw_output",
    "finish_reason",
    "objects_and_phenomena",
    "science_use_cases",
    "caption",
    "attempts",
    "elapsed_secs",
    "max_tokens",
    "prompt_tokens",
    "completion_tokens",
    "run_id",
    "created_at",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &SummaryKey, status: SummaryStatus, created_at: &str) -> SummaryRecord {
        let summary = (status == SummaryStatus::Ok).then(|| Summary {
            objects_and_phenomena: vec!["η Carinae".into(), "massive stars".into()],
            science_use_cases: vec!["measure outflow speeds".into()],
        });
        SummaryRecord {
            summary_key: key.id(),
            key: key.clone(),
            status,
            reason: (status != SummaryStatus::Ok).then(|| "schema_violation".to_string()),
            detail: None,
            raw_output: Some("{\"a\": \"\\u0007\"}\n".into()),
            finish_reason: Some("stop".into()),
            caption: summary.as_ref().map(Summary::caption),
            summary,
            attempts: 2,
            elapsed_secs: 1.5,
            max_tokens: 4800,
            prompt_tokens: Some(300),
            completion_tokens: None,
            run_id: "run-1".into(),
            created_at: created_at.into(),
        }
    }

    fn key(text: &str) -> SummaryKey {
        SummaryKey::new(text, "test:model", "p", "s", &Sampling::default())
    }

    #[test]
    fn listed_columns_are_the_schema() {
        let schema = cache_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, CACHE_COLUMNS);
    }

    #[test]
    fn every_part_of_the_key_changes_its_id() {
        let base = key("abstract");
        let mut ids = std::collections::HashSet::from([base.id()]);
        let sampling = Sampling {
            temperature: 0.0,
            seed: Some(1),
        };
        for changed in [
            key("abstract "),
            SummaryKey::new("abstract", "test:other", "p", "s", &Sampling::default()),
            SummaryKey::new("abstract", "test:model", "p2", "s", &Sampling::default()),
            SummaryKey::new("abstract", "test:model", "p", "s2", &Sampling::default()),
            SummaryKey::new("abstract", "test:model", "p", "s", &sampling),
        ] {
            assert!(ids.insert(changed.id()), "{changed:?}");
        }
        assert_eq!(base.id(), key("abstract").id());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_round_trip_and_ok_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = SummaryCache::open(dir.path()).await.unwrap();
        assert!(cache.is_empty());
        let a = key("a");
        let b = key("b");
        let ok = record(&a, SummaryStatus::Ok, "2030-01-01T00:00:00.000Z");
        cache
            .append(vec![
                ok.clone(),
                record(&b, SummaryStatus::Failed, "2030-01-01T00:00:00.000Z"),
            ])
            .await
            .unwrap();
        // A later failure of an ok key does not replace it; a later row of a failed key does.
        let later_b = record(&b, SummaryStatus::Rejected, "2030-01-02T00:00:00.000Z");
        cache
            .append(vec![
                record(&a, SummaryStatus::Failed, "2030-01-02T00:00:00.000Z"),
                later_b.clone(),
            ])
            .await
            .unwrap();

        let reopened = SummaryCache::open(dir.path()).await.unwrap();
        assert_eq!(reopened.len(), 2);
        assert_eq!(reopened.get(&a.id()), Some(&ok));
        assert_eq!(reopened.get(&b.id()), Some(&later_b));
        assert_eq!(cache.get(&a.id()), Some(&ok));
    }
}
