//! Exposes every dataset version to SQL: catalog = dataset name, schema = `latest` or
//! `v<N>`, tables = `samples` (the Delta table at that version) and `skips` (what the run
//! that published the version could not use, with reasons).
//!
//! Example: `SELECT count(*) FROM "hst-paperclip".v1.samples`.

use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider,
};
use datafusion::datasource::TableProvider;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use super::versions::{DatasetPaths, list_datasets, list_versions, open_version};
use crate::error::{PipelineError, Result};

/// Registers all datasets under `data_dir` in the session; returns their names.
pub async fn register_datasets(ctx: &SessionContext, data_dir: &Path) -> Result<Vec<String>> {
    let names = list_datasets(data_dir)?;
    for name in &names {
        register_dataset(ctx, &DatasetPaths::new(data_dir, name)).await?;
    }
    Ok(names)
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
