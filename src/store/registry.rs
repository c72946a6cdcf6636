//! A DataFusion object store registry that opens cloud stores on first use.
//!
//! DataFusion looks up the store of every `s3://`, `gs://` or `az://` location it reads. The
//! default registry resolves only the local file system, so a Ballista executor handed a plan
//! that scans `s3://bucket/...` would fail. This registry opens the bucket's store with
//! [`super::remote::open`] the first time it is asked for it, with credentials from the
//! environment of the process that reads, and keeps it for later lookups. The client, the
//! scheduler and every executor use it, so one URL means the same store everywhere.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use object_store::ObjectStore;
use url::Url;

use super::remote;

/// Resolves `file://` like DataFusion's default registry and opens cloud stores from the
/// environment on demand.
#[derive(Debug, Default)]
pub struct EnvStoreRegistry {
    stores: DefaultObjectStoreRegistry,
}

impl EnvStoreRegistry {
    pub fn new() -> Self {
        Self::default()
    }
}

impl ObjectStoreRegistry for EnvStoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.stores.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.stores.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.stores.get_store(url) {
            return Ok(store);
        }
        if !remote::SCHEMES.contains(&url.scheme()) {
            return self.stores.get_store(url);
        }

        let root = bucket_url(url)?;
        let (store, _) = remote::open(&root, &HashMap::new())
            .map_err(|error| DataFusionError::External(Box::new(error)))?;
        tracing::debug!(store = %root, "opened object store");
        self.stores.register_store(&root, store.clone());
        Ok(store)
    }
}

/// Returns the URL of the bucket or container holding `url`: scheme and host, no path.
fn bucket_url(url: &Url) -> Result<Url> {
    let host = url.host_str().unwrap_or_default();
    Url::parse(&format!("{}://{host}", url.scheme())).map_err(|error| {
        DataFusionError::Configuration(format!(
            "{}://{host} is not a valid object store location: {error}",
            url.scheme()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_url_keeps_scheme_and_bucket_only() {
        let url = Url::parse("s3://bucket/prefix/table/part-0.parquet").unwrap();
        assert_eq!(bucket_url(&url).unwrap().as_str(), "s3://bucket");
    }

    #[test]
    fn local_files_resolve_without_the_environment() {
        let registry = EnvStoreRegistry::new();
        let url = Url::parse("file:///tmp/table").unwrap();
        assert!(registry.get_store(&url).is_ok());
    }

    #[test]
    fn unknown_schemes_are_refused() {
        let registry = EnvStoreRegistry::new();
        let url = Url::parse("ftp://host/table").unwrap();
        let error = registry.get_store(&url).unwrap_err().to_string();
        assert!(error.contains("ftp://host"), "{error}");
    }
}
