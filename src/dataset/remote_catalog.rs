//! Exposes the versions that runs uploaded to an object store (`[storage]`) to SQL, with
//! no data directory: the same names as the local catalog, catalog = dataset name, schema
//! = `latest` or `v<N>`, tables = `samples` and `skips`.
//!
//! The datasets are the folders under `<storage.url>/datasets/` whose `samples` Delta
//! table has a commit; the versions are the commits that carry a version record. Tables
//! are opened when a query names them, so listing costs one Delta log read per dataset.
//!
//! Example: `paperclip sql --storage s3://bucket/prefix 'SELECT count(*) FROM
//! "hst-paperclip".latest.samples'`.

use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, SchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use object_store::ObjectStore;
use url::Url;

use super::versions::version_records;
use crate::error::{PipelineError, Result};

/// Registers every dataset uploaded under `storage_url` in the session; returns the
/// dataset names.
pub async fn register_remote_datasets(
    ctx: &SessionContext,
    storage_url: &str,
) -> Result<Vec<String>> {
    let url = Url::parse(storage_url).map_err(|e| {
        PipelineError::Invalid(format!(
            "--storage {storage_url:?} is not a URL: {e}; use the pipeline's storage.url, \
             e.g. s3://bucket/prefix"
        ))
    })?;
    if !crate::store::remote::SCHEMES.contains(&url.scheme()) {
        return Err(PipelineError::Invalid(format!(
            "--storage {storage_url:?} is not an object store URL; use the pipeline's \
             storage.url, with s3://, gs:// or az://"
        )));
    }
    crate::store::remote::register_delta_stores();
    let (store, root) = crate::store::remote::open(&url, &Default::default())?;
    let bucket = Url::parse(&format!(
        "{}://{}",
        url.scheme(),
        url.host_str().unwrap_or_default()
    ))
    .map_err(|e| PipelineError::Invalid(format!("{url} names no bucket: {e}")))?;
    ctx.register_object_store(&bucket, store.clone());

    let base = storage_url.trim_end_matches('/');
    let mut names = Vec::new();
    for name in dataset_folders(store.as_ref(), &root, base).await? {
        let table_url = format!("{base}/datasets/{name}/samples");
        let Some(versions) = dataset_versions(&table_url).await? else {
            continue;
        };
        let catalog = MemoryCatalogProvider::new();
        for (index, &version) in versions.iter().enumerate() {
            let schema: Arc<dyn SchemaProvider> = Arc::new(RemoteVersion {
                table_url: table_url.clone(),
                skips_url: format!("{base}/datasets/{name}/versions/v{version}/skips.parquet"),
                version,
                state: ctx.state(),
            });
            catalog.register_schema(&format!("v{version}"), schema.clone())?;
            if index + 1 == versions.len() {
                catalog.register_schema("latest", schema)?;
            }
        }
        ctx.register_catalog(name.as_str(), Arc::new(catalog));
        names.push(name);
    }
    if names.is_empty() {
        tracing::warn!(storage = %base, "no dataset has been uploaded under this URL");
    }
    Ok(names)
}

/// Lists the names of the folders under `<root>/datasets/`, sorted.
async fn dataset_folders(
    store: &dyn ObjectStore,
    root: &object_store::path::Path,
    base: &str,
) -> Result<Vec<String>> {
    let prefix = root.clone().join("datasets");
    let listing = store
        .list_with_delimiter(Some(&prefix))
        .await
        .map_err(|source| PipelineError::ObjectStore {
            url: format!("{base}/datasets"),
            source,
        })?;
    let mut names: Vec<String> = listing
        .common_prefixes
        .iter()
        .filter_map(|folder| folder.filename().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

/// Returns the dataset versions of the samples table at `table_url`, oldest first;
/// `None` when the folder contains no table.
async fn dataset_versions(table_url: &str) -> Result<Option<Vec<u64>>> {
    let url = Url::parse(table_url)
        .map_err(|e| PipelineError::Invalid(format!("{table_url} is not a URL: {e}")))?;
    let table = match deltalake::open_table(url).await {
        Ok(table) => table,
        Err(deltalake::DeltaTableError::NotATable(_)) => return Ok(None),
        Err(error) => {
            return Err(PipelineError::Invalid(format!(
                "cannot read the Delta table {table_url}: {error}"
            )));
        }
    };
    let records = version_records(&table).await.map_err(|error| {
        PipelineError::Invalid(format!("cannot read the history of {table_url}: {error}"))
    })?;
    let mut versions: Vec<u64> = records.iter().map(|record| record.version).collect();
    versions.sort_unstable();
    versions.dedup();
    Ok(Some(versions))
}

/// The tables of one uploaded version, opened on first use.
#[derive(Debug)]
struct RemoteVersion {
    table_url: String,
    skips_url: String,
    version: u64,
    state: datafusion::execution::SessionState,
}

impl RemoteVersion {
    async fn samples(&self) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let failed = |error: String| {
            DataFusionError::Plan(format!(
                "cannot read v{} of {}: {error}",
                self.version, self.table_url
            ))
        };
        let url = Url::parse(&self.table_url).map_err(|e| failed(e.to_string()))?;
        // Dataset version N is Delta version N - 1.
        let delta_version = self.version.saturating_sub(1);
        let table = deltalake::open_table_with_version(url, delta_version)
            .await
            .map_err(|e| failed(e.to_string()))?;
        table
            .update_datafusion_session(&self.state)
            .map_err(|e| failed(e.to_string()))?;
        table
            .table_provider()
            .await
            .map_err(|e| failed(e.to_string()))
    }

    async fn skips(&self) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let ctx = SessionContext::new_with_state(self.state.clone());
        let skips = ctx
            .read_parquet(self.skips_url.as_str(), ParquetReadOptions::default())
            .await
            .map_err(|error| {
                DataFusionError::Plan(format!(
                    "the skips table of v{} cannot be read from {}: {error}",
                    self.version, self.skips_url
                ))
            })?;
        Ok(skips.into_view())
    }
}

#[async_trait::async_trait]
impl SchemaProvider for RemoteVersion {
    fn table_names(&self) -> Vec<String> {
        vec!["samples".to_string(), "skips".to_string()]
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        match name {
            "samples" => self.samples().await.map(Some),
            "skips" => self.skips().await.map(Some),
            _ => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        matches!(name, "samples" | "skips")
    }
}
