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
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::json::reader::{ReaderBuilder, infer_json_schema_from_iterator};
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
    let records = read_run_records(&data_dir.join("runs"));
    let batch = if records.is_empty() {
        let schema = Schema::new(vec![
            Field::new("run_id", DataType::Utf8, true),
            Field::new("dataset", DataType::Utf8, true),
        ]);
        RecordBatch::new_empty(Arc::new(schema))
    } else {
        let schema = infer_json_schema_from_iterator(records.iter().map(Ok))?;
        let mut decoder = ReaderBuilder::new(Arc::new(schema.clone())).build_decoder()?;
        decoder.serialize(&records)?;
        decoder
            .flush()?
            .unwrap_or_else(|| RecordBatch::new_empty(Arc::new(schema)))
    };

    let runs = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    let schema = Arc::new(MemorySchemaProvider::new());
    schema.register_table("runs".into(), Arc::new(runs))?;
    let catalog = ctx.catalog("datafusion").ok_or_else(|| {
        PipelineError::Invalid("the SQL session has no default catalog".to_string())
    })?;
    catalog.register_schema("paperclip", schema)?;
    Ok(())
}

/// Reads every `*.json` file of the runs folder that contains one JSON object with a `run_id`.
fn read_run_records(runs_dir: &Path) -> Vec<serde_json::Value> {
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
            Some(record) => records.push(record),
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
            let skips = ctx
                .read_parquet(
                    skips_path.to_string_lossy().as_ref(),
                    ParquetReadOptions::default(),
                )
                .await?
                .into_view();
            schema.register_table("skips".into(), skips)?;
        }

        catalog.register_schema(&format!("v{}", record.version), schema.clone())?;
        if index + 1 == versions.len() {
            catalog.register_schema("latest", schema)?;
        }
    }
    ctx.register_catalog(paths.name.as_str(), Arc::new(catalog));
    Ok(())
}
