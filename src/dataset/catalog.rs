//! Exposes every dataset version to SQL: catalog = dataset name, schema = `latest` or
//! `v<N>`, tables = `samples` (the Delta table at that version) and `skips` (what the run
//! that published the version could not use, with reasons).
//!
//! The run log of the data directory is `paperclip.runs`.
//!
//! Example: `SELECT count(*) FROM "hst-paperclip".v1.samples`.

use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider,
};
use datafusion::datasource::TableProvider;
use datafusion::prelude::{JsonReadOptions, ParquetReadOptions, SessionContext};

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

/// Exposes `<data dir>/runs/*.json` (one run report per file) as `paperclip.runs`.
async fn register_run_log(ctx: &SessionContext, data_dir: &Path) -> Result<()> {
    let runs_dir = data_dir.join("runs");
    let has_runs = std::fs::read_dir(&runs_dir)
        .map(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json")))
        })
        .unwrap_or(false);
    if !has_runs {
        return Ok(());
    }
    let options = JsonReadOptions::default().file_extension(".json");
    let runs = ctx
        .read_json(format!("{}/", runs_dir.display()), options)
        .await?
        .into_view();
    let schema = Arc::new(MemorySchemaProvider::new());
    schema.register_table("runs".into(), runs)?;
    let catalog = ctx.catalog("datafusion").ok_or_else(|| {
        PipelineError::Invalid("the SQL session has no default catalog".to_string())
    })?;
    catalog.register_schema("paperclip", schema)?;
    Ok(())
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
