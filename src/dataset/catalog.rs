//! Exposes every dataset version to SQL: catalog = dataset name, schema = `latest` or
//! `v<N>`, tables = `samples` (the Delta table at that version) and `skips` (what the run
//! that published the version could not use, with reasons).
//!
//! The run log of the data directory is `paperclip.runs`.
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

use super::versions::{DatasetPaths, list_datasets, list_versions, open_version};
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
    for (path, record) in read_run_records(&data_dir.join("runs")) {
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
    let catalog = ctx.catalog("datafusion").ok_or_else(|| {
        PipelineError::Invalid("the SQL session has no default catalog".to_string())
    })?;
    catalog.register_schema("paperclip", schema)?;
    Ok(())
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
    ])
}

/// Decodes one run record; a record with a value of the wrong type is an error.
fn decode_run_record(schema: &Arc<Schema>, record: &serde_json::Value) -> Result<RecordBatch> {
    let mut decoder = ReaderBuilder::new(Arc::clone(schema)).build_decoder()?;
    decoder.serialize(std::slice::from_ref(record))?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema))))
}

/// Reads every `*.json` file of the runs folder that contains one JSON object with a `run_id`.
fn read_run_records(runs_dir: &Path) -> Vec<(std::path::PathBuf, serde_json::Value)> {
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();

    let mut records = Vec::new();
    for path in paths {
        let record = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .filter(|value| value.get("run_id").is_some_and(|id| id.is_string()));
        match record {
            Some(record) => records.push((path, record)),
            None => {
                tracing::warn!(path = %path.display(), "not a run record; left out of paperclip.runs")
            }
        }
    }
    records
}

async fn register_dataset(ctx: &SessionContext, paths: &DatasetPaths) -> Result<()> {
    let catalog = MemoryCatalogProvider::new();
    let versions = list_versions(paths).await?;

    for (index, record) in versions.iter().enumerate() {
        let schema = Arc::new(MemorySchemaProvider::new());
        let table = open_version(paths, record.version).await?;
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|source| PipelineError::Delta {
                path: paths.samples_table(),
                source,
            })?;
        let samples: Arc<dyn TableProvider> = table.table_provider().await?;
        schema.register_table("samples".into(), samples)?;

        let skips_path = paths.version_dir(record.version).join("skips.parquet");
        if skips_path.is_file() {
            // A damaged skips file hides that one table; it must not break every query.
            match ctx
                .read_parquet(
                    skips_path.to_string_lossy().as_ref(),
                    ParquetReadOptions::default(),
                )
                .await
            {
                Ok(skips) => {
                    schema.register_table("skips".into(), skips.into_view())?;
                }
                Err(error) => {
                    tracing::warn!(path = %skips_path.display(), %error, "skips file is unreadable; run `paperclip datasets verify`")
                }
            }
        }

        catalog.register_schema(&format!("v{}", record.version), schema.clone())?;
        if index + 1 == versions.len() {
            catalog.register_schema("latest", schema)?;
        }
    }
    ctx.register_catalog(paths.name.as_str(), Arc::new(catalog));
    Ok(())
}
