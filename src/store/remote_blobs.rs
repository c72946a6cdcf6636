//! The object storage copy of the blob store and the prepared cache, under
//! `<storage.url>/blobs/` and `<storage.url>/prepared/`, with the local layout:
//! - `blobs/sha256/<aa>/<sha256>`: downloads and prepared images;
//! - `blobs/uris/<sha256 of the URI>.json`: which blob a data URI resolved to;
//! - `prepared/<key>.json`: the result of preparing a blob with given settings.
//!
//! The local store stays the working copy: images are decoded and shards written from
//! local files. This copy lets another machine, or the same one after its data directory
//! was lost, reuse every finished download and preparation instead of repeating it.
//!
//! Invariants, as locally: a record is uploaded only after the blobs it names, so a
//! record found here always has its blobs. An object is written whole by one `put`, so a
//! reader never sees part of one. Restored blobs are checked against their hash before
//! they enter the local store, so a damaged object is reported, never used.

use std::sync::Arc;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use super::blobs::{BlobStore, UriRecord};
use crate::error::{PipelineError, Result};

/// The object storage copy of a blob store; see the module docs.
#[derive(Debug, Clone)]
pub struct RemoteBlobs {
    store: Arc<dyn ObjectStore>,
    root: StorePath,
    /// The storage URL, for messages; it carries no credential.
    url: String,
}

impl RemoteBlobs {
    /// Opens the copy under `storage_url` (the pipeline's `storage.url`), with credentials
    /// from the environment.
    pub fn open(storage_url: &str) -> Result<Self> {
        let url = url::Url::parse(storage_url).map_err(|e| {
            PipelineError::Invalid(format!("storage.url = {storage_url:?} is not a URL: {e}"))
        })?;
        let (store, root) = super::remote::open(&url, &Default::default())?;
        Ok(Self::new(store, root, storage_url))
    }

    /// Wraps `store` with the copy under `root`.
    pub fn new(store: Arc<dyn ObjectStore>, root: StorePath, url: &str) -> Self {
        Self {
            store,
            root,
            url: url.trim_end_matches('/').to_string(),
        }
    }

    /// Returns the storage URL this copy lives under.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Uploads the local blob `sha256` unless the copy has it already.
    pub async fn upload_blob(&self, local: &BlobStore, sha256: &str) -> Result<()> {
        let path = self.blob_path(sha256);
        if self.exists(&path).await? {
            return Ok(());
        }
        let bytes = local.read_verified(sha256)?;
        self.put(&path, bytes).await
    }

    /// Copies blob `sha256` into the local store when this copy has it; returns false
    /// when it has not. Bytes that do not hash to `sha256` are an error.
    pub async fn restore_blob(&self, local: &BlobStore, sha256: &str) -> Result<bool> {
        if local.contains(sha256) {
            return Ok(true);
        }
        let path = self.blob_path(sha256);
        let Some(bytes) = self.get(&path).await? else {
            return Ok(false);
        };
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != sha256 {
            return Err(PipelineError::Invalid(format!(
                "{}/{path} hashes to {actual}, not to its name; delete the object so that \
                 the next run downloads the file again",
                self.url
            )));
        }
        local.put_bytes(&bytes)?;
        Ok(true)
    }

    /// Uploads which blob a URI resolved to; the blob must be uploaded first.
    pub async fn upload_uri(&self, record: &UriRecord) -> Result<()> {
        let json = serde_json::to_vec_pretty(record).expect("UriRecord serializes");
        self.put(&self.uri_path(&record.uri), json).await
    }

    /// Returns the copy's record of `uri`, with its blob restored locally, or `None`.
    pub async fn restore_uri(&self, local: &BlobStore, uri: &str) -> Result<Option<UriRecord>> {
        let Some(json) = self.get(&self.uri_path(uri)).await? else {
            return Ok(None);
        };
        let Ok(record) = serde_json::from_slice::<UriRecord>(&json) else {
            tracing::warn!(%uri, storage = %self.url, "unreadable URI record in object storage; downloading again");
            return Ok(None);
        };
        if record.uri != uri || !self.restore_blob(local, &record.sha256).await? {
            return Ok(None);
        }
        local.record_uri(&record)?;
        Ok(Some(record))
    }

    /// Uploads a prepared result, cached locally as `file_name`; its image must be
    /// uploaded first.
    pub async fn upload_prepared(&self, file_name: &str, json: Vec<u8>) -> Result<()> {
        self.put(&self.prepared_path(file_name), json).await
    }

    /// Returns the prepared result cached as `file_name`, or `None`.
    pub async fn prepared(&self, file_name: &str) -> Result<Option<Vec<u8>>> {
        self.get(&self.prepared_path(file_name)).await
    }

    fn blob_path(&self, sha256: &str) -> StorePath {
        self.root
            .clone()
            .join("blobs")
            .join("sha256")
            .join(&sha256[..2.min(sha256.len())])
            .join(sha256)
    }

    fn uri_path(&self, uri: &str) -> StorePath {
        let key = hex::encode(Sha256::digest(uri.as_bytes()));
        self.root
            .clone()
            .join("blobs")
            .join("uris")
            .join(format!("{key}.json"))
    }

    fn prepared_path(&self, file_name: &str) -> StorePath {
        self.root.clone().join("prepared").join(file_name)
    }

    fn error(&self, path: &StorePath, source: object_store::Error) -> PipelineError {
        PipelineError::ObjectStore {
            url: format!("{}/{path}", self.url),
            source,
        }
    }

    async fn exists(&self, path: &StorePath) -> Result<bool> {
        match self.store.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(self.error(path, source)),
        }
    }

    async fn get(&self, path: &StorePath) -> Result<Option<Vec<u8>>> {
        let found = match self.store.get(path).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(self.error(path, source)),
        };
        let bytes = found
            .bytes()
            .await
            .map_err(|source| self.error(path, source))?;
        Ok(Some(bytes.to_vec()))
    }

    // TODO: one `put` per object; blobs of hundreds of megabytes (full FITS files) need
    // multipart uploads.
    async fn put(&self, path: &StorePath, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|source| self.error(path, source))
    }
}

#[cfg(test)]
mod tests {
    use object_store::local::LocalFileSystem;

    use super::*;

    fn remote(dir: &std::path::Path) -> RemoteBlobs {
        let store = LocalFileSystem::new_with_prefix(dir).unwrap();
        RemoteBlobs::new(
            Arc::new(store),
            StorePath::from("prefix"),
            "s3://bucket/prefix",
        )
    }

    #[tokio::test]
    async fn restore_uri_fills_an_empty_store() {
        let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
        let remote = remote(dirs[0].path());
        let first = BlobStore::open(dirs[1].path()).unwrap();
        let sha256 = first.put_bytes(b"preview bytes").unwrap();
        let record = UriRecord {
            uri: "mast:HST/product/a.jpg".into(),
            sha256: sha256.clone(),
            size_bytes: 13,
        };
        remote.upload_blob(&first, &sha256).await.unwrap();
        remote.upload_uri(&record).await.unwrap();
        remote
            .upload_prepared("key.json", b"{}".to_vec())
            .await
            .unwrap();

        let second = BlobStore::open(dirs[2].path()).unwrap();
        let restored = remote.restore_uri(&second, &record.uri).await.unwrap();
        assert_eq!(restored, Some(record.clone()));
        assert_eq!(second.read_verified(&sha256).unwrap(), b"preview bytes");
        assert_eq!(second.lookup_uri(&record.uri), Some(record));
        let unknown = remote.restore_uri(&second, "mast:HST/product/b.jpg");
        assert_eq!(unknown.await.unwrap(), None);
        assert_eq!(
            remote.prepared("key.json").await.unwrap(),
            Some(b"{}".to_vec())
        );
        assert_eq!(remote.prepared("other.json").await.unwrap(), None);
    }

    #[tokio::test]
    async fn damaged_objects_are_refused() {
        let dirs = [(); 2].map(|()| tempfile::tempdir().unwrap());
        let remote = remote(dirs[0].path());
        let sha256 = hex::encode(Sha256::digest(b"original"));
        let object = dirs[0]
            .path()
            .join("prefix/blobs/sha256")
            .join(&sha256[..2])
            .join(&sha256);
        std::fs::create_dir_all(object.parent().unwrap()).unwrap();
        std::fs::write(&object, b"changed").unwrap();

        let local = BlobStore::open(dirs[1].path()).unwrap();
        let error = remote.restore_blob(&local, &sha256).await.unwrap_err();
        assert!(error.to_string().contains("not to its name"), "{error}");
        assert!(!local.contains(&sha256));
    }
}
