//! Object storage at `s3://`, `gs://` and `az://` URLs through the `object_store` crate.
//!
//! Credentials come from the environment, read by each cloud's builder (for S3:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` and
//! `AWS_ALLOW_HTTP` for S3-compatible servers). Explicit options override them, as
//! `object_store` config keys (`aws_endpoint`, `aws_allow_http`, ...). Without
//! credentials the store is not opened, because the cloud builders would otherwise ask the
//! cloud's instance metadata service. Only URLs are logged or put in errors, and a URL
//! that carries a user name or password is rejected, so no credential reaches a log, an
//! error or a record.
//!
//! [`register_delta_stores`] makes the same URLs usable as Delta table locations.

use std::collections::HashMap;
use std::sync::{Arc, Once};

use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path;
use url::Url;

use crate::error::{PipelineError, Result};

/// URL schemes of the object stores paperclip opens.
pub const SCHEMES: [&str; 5] = ["s3", "gs", "az", "abfs", "abfss"];

/// Opens the store that contains `url` and returns it with the path of `url` inside it.
/// `options` override what the environment sets.
pub fn open(url: &Url, options: &HashMap<String, String>) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let store = root_store(url, options)?;
    let path = Path::from_url_path(url.path()).map_err(|source| PipelineError::ObjectStore {
        url: url.to_string(),
        source: source.into(),
    })?;
    Ok((store, path))
}

/// Builds the store for the bucket or container of `url`.
fn root_store(url: &Url, options: &HashMap<String, String>) -> Result<Arc<dyn ObjectStore>> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(PipelineError::Invalid(format!(
            "the object store URL for {}://{} carries credentials; remove them from the URL and set them in the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for S3)",
            url.scheme(),
            url.host_str().unwrap_or_default()
        )));
    }
    check_credentials(url, options)?;
    let failed = |source: object_store::Error| PipelineError::ObjectStore {
        url: url.to_string(),
        source,
    };

    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "s3" => {
            let mut builder = AmazonS3Builder::from_env().with_url(url.as_str());
            for (key, value) in options {
                builder = builder.with_config(key.parse().map_err(failed)?, value);
            }
            Arc::new(builder.build().map_err(failed)?)
        }
        "gs" => {
            let mut builder = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            for (key, value) in options {
                builder = builder.with_config(key.parse().map_err(failed)?, value);
            }
            Arc::new(builder.build().map_err(failed)?)
        }
        "az" | "abfs" | "abfss" => {
            let mut builder = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            for (key, value) in options {
                builder = builder.with_config(key.parse().map_err(failed)?, value);
            }
            Arc::new(builder.build().map_err(failed)?)
        }
        other => {
            return Err(PipelineError::Invalid(format!(
                "object store scheme {other:?} in {url} is not supported; use s3://, gs:// or az://"
            )));
        }
    };
    Ok(store)
}

/// Credential settings of each scheme, as environment variables; the lower-case names
/// are also accepted as options. Without one of them the cloud builders fall back to the
/// cloud's instance metadata service, which paperclip never contacts.
fn credential_variables(scheme: &str) -> &'static [&'static str] {
    match scheme {
        "s3" => &[
            "AWS_ACCESS_KEY_ID",
            "AWS_SKIP_SIGNATURE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        ],
        "gs" => &[
            "GOOGLE_SERVICE_ACCOUNT",
            "GOOGLE_SERVICE_ACCOUNT_PATH",
            "GOOGLE_SERVICE_ACCOUNT_KEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "GOOGLE_SKIP_SIGNATURE",
        ],
        _ => &[
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_ACCESS_KEY",
            "AZURE_STORAGE_SAS_KEY",
            "AZURE_STORAGE_TOKEN",
            "AZURE_CLIENT_SECRET",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_SKIP_SIGNATURE",
            "AZURE_STORAGE_USE_EMULATOR",
        ],
    }
}

/// Checks that credentials, or an explicit request to send none, are set.
fn check_credentials(url: &Url, options: &HashMap<String, String>) -> Result<()> {
    let variables = credential_variables(url.scheme());
    let set = variables.iter().any(|name| {
        std::env::var_os(name).is_some_and(|value| !value.is_empty())
            || options.contains_key(&name.to_ascii_lowercase())
    });
    if set {
        return Ok(());
    }
    Err(PipelineError::Invalid(format!(
        "no credentials for {}://{}: set {} in the environment (for S3 also AWS_SECRET_ACCESS_KEY and AWS_REGION). Instance metadata services are not used",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        variables.join(" or ")
    )))
}

/// Registers the object stores of [`SCHEMES`] with Delta, so `deltalake::open_table` and
/// the Delta writers accept those URLs. Delta's storage options (from
/// `open_table_with_storage_options`) become the store's options.
pub fn register_delta_stores() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        for scheme in SCHEMES {
            let url = Url::parse(&format!("{scheme}://")).expect("a scheme makes a URL");
            object_store_factories().insert(url.clone(), Arc::new(EnvStores));
            logstore_factories().insert(url, Arc::new(DefaultLogStores));
        }
    });
}

/// Builds Delta's object stores with [`root_store`].
struct EnvStores;

impl ObjectStoreFactory for EnvStores {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> deltalake::DeltaResult<(ObjectStoreRef, Path)> {
        let store = root_store(url, &config.raw)
            .map_err(|error| deltalake::DeltaTableError::Generic(error.to_string()))?;
        let path = Path::from_url_path(url.path())
            .map_err(|error| deltalake::DeltaTableError::Generic(error.to_string()))?;
        Ok((store, path))
    }
}

/// Delta's own log store, which commits with a put that fails when the commit file exists.
/// Object stores with conditional puts (S3 since 2024, GCS, Azure) therefore detect two
/// writers committing the same version.
struct DefaultLogStores;

impl LogStoreFactory for DefaultLogStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}
