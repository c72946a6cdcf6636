//! Exposes every dataset version to SQL: catalog = dataset name, schema = `latest` or
//! `v<N>`, tables = `samples` (the Delta table at that version) and `skips` (what the run
//! that published the version could not use, with reasons).
//!
//! Only versions that can be read are listed. Naming one that cannot (removed by
//! `datasets gc`, or whose Delta log entries are gone) fails at planning time with the
//! reason and the versions that can be read.
//!
//! The run log of the data directory is `paperclip.runs`, one row per run, with the views
//! `paperclip.stages` (one row per stage of each run: ran, fresh or failed, and why) and
//! `paperclip.skips` (one row per skipped item of each run, with its reason). When LLM
//! summaries were made, `paperclip.summaries` holds every attempt with its status.
//! Training runs are `paperclip.training_runs` (one row per run) and
//! `paperclip.training_metrics` (one row per metric per logged step).
//!
//! Example: `SELECT count(*) FROM "hst-paperclip".v1.samples`.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema};
use datafusion::arrow::json::reader::ReaderBuilder;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider,
};
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use super::retention::{ExpiredVersion, load_expired, unavailable_version};
use super::versions::{DatasetPaths, list_datasets, list_versions, version_provider};
use crate::error::{PipelineError, Result};

/// Registers all datasets under `data_dir` in the session, and the run log as
/// `paperclip.runs`; returns the dataset names.
pub async fn register_datasets(ctx: &SessionContext, data_dir: &Path) -> Result<Vec<String>> {
    let names = list_datasets(data_dir)?;
    for name in &names {
        register_dataset(ctx, &DatasetPaths::new(data_dir, name)).await?;
    }
    register_run_log(ctx, data_dir).await?;
    Ok(names)
}

/// Exposes the run records `<data dir>/runs/*.json` as `paperclip.runs` (an empty table
/// when there are none). Files that are not run records are left out with a warning, so one
/// stray file cannot break every query.
async fn register_run_log(ctx: &SessionContext, data_dir: &Path) -> Result<()> {
    let schema = Arc::new(run_log_schema());
    let mut batches = Vec::new();
    let records =
        crate::runs::read_records(data_dir).map_err(|e| PipelineError::Invalid(e.to_string()))?;
    for (path, mut record) in records {
        let status = crate::runs::run_status(&record);
        if let Some(fields) = record.as_object_mut() {
            fields.insert("status".into(), status.into());
        }
        match decode_run_record(&schema, &record) {
            Ok(batch) => batches.push(batch),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "run record does not match the run log schema; left out of paperclip.runs")
            }
        }
    }
    let batch = datafusion::arrow::compute::concat_batches(&schema, &batches)?;

    let runs = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    let schema = Arc::new(MemorySchemaProvider::new());
    schema.register_table("runs".into(), Arc::new(runs))?;
    if let Some(summaries) = crate::summaries::cache::table_provider(data_dir, ctx).await? {
        schema.register_table("summaries".into(), summaries)?;
    }
    for (name, table) in crate::train::tables::training_tables(data_dir)? {
        schema.register_table(name, table)?;
    }
    let catalog = ctx.catalog("datafusion").ok_or_else(|| {
        PipelineError::Invalid("the SQL session has no default catalog".to_string())
    })?;
    catalog.register_schema("paperclip", schema)?;
    register_run_log_views(ctx).await
}

/// Columns of `paperclip.runs`, fixed so queries do not depend on which runs exist.
fn run_log_schema() -> Schema {
    let map = |name: &str| {
        Field::new_map(
            name,
            "entries",
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Int64, true),
            false,
            true,
        )
    };
    let stage = Fields::from(vec![
        Field::new("stage", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, true),
        Field::new(
            "reasons",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        Field::new("input_sha256", DataType::Utf8, true),
        Field::new("elapsed_secs", DataType::Float64, true),
    ]);
    let skip = Fields::from(vec![
        Field::new("stage", DataType::Utf8, true),
        Field::new("item", DataType::Utf8, true),
        Field::new("proposal_id", DataType::Int64, true),
        Field::new("reason", DataType::Utf8, true),
        Field::new("detail", DataType::Utf8, true),
    ]);
    Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("dataset", DataType::Utf8, true),
        Field::new("published_version", DataType::Int64, true),
        Field::new("unchanged_version", DataType::Int64, true),
        // Derived from the three fields around it when the records are read.
        Field::new("status", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
        map("counts"),
        map("skipped_by_reason"),
        Field::new("archive_requests", DataType::Int64, true),
        Field::new("archive_retries", DataType::Int64, true),
        Field::new("elapsed_secs", DataType::Float64, true),
        Field::new(
            "skips",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(skip), true))),
            true,
        ),
        Field::new("started_at", DataType::Utf8, true),
        Field::new(
            "stages",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(stage), true))),
            true,
        ),
    ])
}

/// Views over `paperclip.runs`, one row per stage and per skip of every run.
const RUN_LOG_VIEWS: [(&str, &str); 2] = [
    (
        "stages",
        "SELECT run_id, dataset, CAST(started_at AS TIMESTAMP) AS started_at,
                s['stage'] AS stage, s['status'] AS status,
                array_to_string(s['reasons'], '; ') AS reasons,
                s['input_sha256'] AS input_sha256, s['elapsed_secs'] AS elapsed_secs
         FROM (SELECT run_id, dataset, started_at, unnest(stages) AS s FROM paperclip.runs)",
    ),
    (
        "skips",
        "SELECT run_id, dataset, CAST(started_at AS TIMESTAMP) AS started_at,
                s['stage'] AS stage, s['item'] AS item, s['proposal_id'] AS proposal_id,
                s['reason'] AS reason, s['detail'] AS detail
         FROM (SELECT run_id, dataset, started_at, unnest(skips) AS s FROM paperclip.runs)",
    ),
];

async fn register_run_log_views(ctx: &SessionContext) -> Result<()> {
    for (name, query) in RUN_LOG_VIEWS {
        let plan = ctx.sql(query).await?.into_unoptimized_plan();
        let view = datafusion::catalog::view::ViewTable::new(plan, Some(query.to_string()));
        ctx.register_table(format!("paperclip.{name}"), Arc::new(view))?;
    }
    Ok(())
}

/// Decodes one run record; a record with a value of the wrong type is an error.
fn decode_run_record(schema: &Arc<Schema>, record: &serde_json::Value) -> Result<RecordBatch> {
    let mut decoder = ReaderBuilder::new(Arc::clone(schema)).build_decoder()?;
    decoder.serialize(std::slice::from_ref(record))?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema))))
}

async fn register_dataset(ctx: &SessionContext, paths: &DatasetPaths) -> Result<()> {
    let versions = list_versions(paths).await?;
    let catalog = DatasetCatalog {
        versions: MemoryCatalogProvider::new(),
        paths: paths.clone(),
        expired: load_expired(paths)?,
        available: versions.iter().map(|v| v.version).collect(),
    };

    for (index, record) in versions.iter().enumerate() {
        // Opened when a query names it, so a dataset with many versions costs one listing.
        let schema: Arc<dyn SchemaProvider> = Arc::new(VersionSchema {
            paths: paths.clone(),
            version: record.version,
            state: ctx.state(),
        });
        catalog.register_schema(&format!("v{}", record.version), schema.clone())?;
        if index + 1 == versions.len() {
            catalog.register_schema("latest", schema)?;
        }
    }
    ctx.register_catalog(paths.name.as_str(), Arc::new(catalog));
    Ok(())
}

/// The tables of one version, opened on first use: `samples` (the Delta table at that
/// version) and `skips` (the version's skips file).
#[derive(Debug)]
struct VersionSchema {
    paths: DatasetPaths,
    version: u64,
    state: datafusion::execution::SessionState,
}

/// The name of the table of a version's embeddings, one row per sample and checkpoint.
const EMBEDDINGS_TABLE: &str = "embeddings";

impl VersionSchema {
    fn skips_path(&self) -> std::path::PathBuf {
        self.paths.version_dir(self.version).join("skips.parquet")
    }

    /// The version's skips file as a table. A missing or damaged file fails only the
    /// queries that name this table, with the fix.
    async fn skips(&self) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let path = self.skips_path();
        let unusable = |problem: String| {
            datafusion::error::DataFusionError::Plan(format!(
                "the skips table of {} v{} cannot be read: {} {problem}; run `paperclip \
                 datasets verify {}`",
                self.paths.name,
                self.version,
                path.display(),
                self.paths.name
            ))
        };
        if !path.is_file() {
            return Err(unusable("is missing".into()));
        }
        let ctx = SessionContext::new_with_state(self.state.clone());
        let skips = ctx
            .read_parquet(
                path.to_string_lossy().as_ref(),
                ParquetReadOptions::default(),
            )
            .await
            .map_err(|error| unusable(format!("is damaged ({error})")))?;
        Ok(skips.into_view())
    }
}

impl VersionSchema {
    /// The Parquet tables `paperclip embed` wrote for this version.
    fn embedding_files(&self) -> Vec<std::path::PathBuf> {
        let Some(data_dir) = self.paths.root.parent().and_then(Path::parent) else {
            return Vec::new();
        };
        let dir = crate::eval::embeddings::table_dir(data_dir, &self.paths.name, self.version);
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|e| e == "parquet"))
            .collect();
        files.sort();
        files
    }

    /// Every embeddings table of the version as one table, with the checkpoint and its
    /// weights SHA-256 as the first columns.
    async fn embeddings(&self) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        use datafusion::prelude::lit;

        let ctx = SessionContext::new_with_state(self.state.clone());
        let mut union: Option<datafusion::prelude::DataFrame> = None;
        for path in self.embedding_files() {
            let info = crate::eval::embeddings::read_info(&path)
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            let table = ctx
                .read_parquet(
                    path.to_string_lossy().as_ref(),
                    ParquetReadOptions::default(),
                )
                .await?;
            let columns: Vec<_> = table
                .schema()
                .fields()
                .iter()
                .map(|f| datafusion::prelude::col(f.name()))
                .collect();
            let mut selected = vec![
                lit(info.checkpoint).alias("checkpoint"),
                lit(info.weights_sha256).alias("weights_sha256"),
            ];
            selected.extend(columns);
            let table = table.select(selected)?;
            union = Some(match union {
                Some(all) => all.union(table)?,
                None => table,
            });
        }
        Ok(union.map(|frame| frame.into_view()))
    }
}

#[async_trait::async_trait]
impl SchemaProvider for VersionSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = vec!["samples".to_string(), "skips".to_string()];
        if !self.embedding_files().is_empty() {
            names.push(EMBEDDINGS_TABLE.to_string());
        }
        names
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        match name {
            "samples" => {
                let ctx = SessionContext::new_with_state(self.state.clone());
                let provider = version_provider(&self.paths, self.version, &ctx)
                    .await
                    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
                Ok(Some(provider))
            }
            "skips" => self.skips().await.map(Some),
            EMBEDDINGS_TABLE => self.embeddings().await,
            _ => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        name == "samples"
            || name == "skips"
            || (name == EMBEDDINGS_TABLE && !self.embedding_files().is_empty())
    }
}

/// A dataset's versions as SQL schemas. A `v<N>` that is not registered (removed by gc,
/// lost with its Delta log, or never published) resolves to a schema whose tables fail with
/// the reason and the versions that can be read, instead of "table not found". Such schemas
/// are never listed.
#[derive(Debug)]
struct DatasetCatalog {
    versions: MemoryCatalogProvider,
    paths: DatasetPaths,
    expired: Vec<ExpiredVersion>,
    available: Vec<u64>,
}

impl CatalogProvider for DatasetCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.versions.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(schema) = self.versions.schema(name) {
            return Some(schema);
        }
        let digits = name.strip_prefix('v')?;
        let version = digits.parse::<u64>().ok()?;
        // `v01` is not a version name, so the table lookup fails and the error hint names
        // the right spelling.
        if digits != version.to_string() {
            return None;
        }
        let error = unavailable_version(&self.paths, version, &self.expired, &self.available);
        Some(Arc::new(UnavailableVersion {
            message: error.to_string(),
        }))
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> datafusion::error::Result<Option<Arc<dyn SchemaProvider>>> {
        self.versions.register_schema(name, schema)
    }
}

/// The schema of a version that cannot be read: every table lookup fails with `message`.
#[derive(Debug)]
struct UnavailableVersion {
    message: String,
}

#[async_trait::async_trait]
impl SchemaProvider for UnavailableVersion {
    fn table_names(&self) -> Vec<String> {
        Vec::new()
    }

    async fn table(
        &self,
        _name: &str,
    ) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        Err(datafusion::error::DataFusionError::Plan(
            self.message.clone(),
        ))
    }

    fn table_exist(&self, _name: &str) -> bool {
        false
    }
}
