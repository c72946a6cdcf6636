//! Content-addressed blob store for downloaded products and prepared images.
//!
//! Layout under the store root:
//! - `sha256/<aa>/<sha256>`: the bytes whose SHA-256 is the file name (`aa` = first two hex digits);
//! - `uris/<sha256 of the URI>.json`: which blob a data URI resolved to, with its size;
//! - `tmp/`: partial files, never read;
//! - `store-id`: a random id written once, by which processes on other machines check
//!   that they opened this store and not a folder of their own at the same path.
//!
//! Invariants: a file under `sha256/` is only ever created by renaming a fully written,
//! fsynced temporary file whose hash and size were checked, so a reader never sees a partial
//! blob. Identical bytes are stored once, however many URIs point at them. A URI record is
//! written (atomically, after its blob) only when the blob exists, so a URI with a record is
//! never fetched again unless its blob is missing or fails verification.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{PipelineError, Result};

/// Location of a data URI's bytes, as recorded after a verified download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UriRecord {
    pub uri: String,
    pub sha256: String,
    pub size_bytes: u64,
}

/// The file under the store root that contains the store's id.
const STORE_ID_FILE: &str = "store-id";

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for sub in ["sha256", "uris", "tmp"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(|e| PipelineError::io(&dir, e))?;
        }
        Ok(Self { root })
    }

    /// Opens the store at `root` only if it exists and carries `expected_id`, the
    /// [`Self::store_id`] its owner read. A process on another machine uses this to be
    /// sure it writes where the owner reads.
    pub fn open_shared(root: impl Into<PathBuf>, expected_id: &str) -> Result<Self> {
        let root = root.into();
        let path = root.join(STORE_ID_FILE);
        let found = fs::read_to_string(&path).ok();
        if found.as_deref().map(str::trim) != Some(expected_id) {
            let found = found.map_or_else(
                || "no store id".to_string(),
                |id| format!("store id {:?}", id.trim()),
            );
            return Err(PipelineError::Invalid(format!(
                "the blob store {} holds {found}, not {expected_id:?}: this process does not \
                 see the data directory of the run that sent the work; mount that data \
                 directory at the same path on every executor (a shared file system), or run \
                 with --engine local",
                root.display()
            )));
        }
        Ok(Self { root })
    }

    /// Returns the store's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Returns the store's id, writing a new random one the first time. Two processes
    /// that race to write it agree on the one that landed first.
    pub fn store_id(&self) -> Result<String> {
        let path = self.root.join(STORE_ID_FILE);
        let found = fs::read_to_string(&path).ok();
        if let Some(id) = found.as_deref().map(str::trim)
            && is_store_id(id)
        {
            return Ok(id.to_string());
        }

        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let seed = format!("{nanos}:{}:{}", std::process::id(), self.root.display());
        let id = hex::encode(&Sha256::digest(seed.as_bytes())[..16]);
        if found.is_some() {
            tracing::warn!(path = %path.display(), "the blob store's id is damaged; writing a new one");
            write_atomic(&path, id.as_bytes())?;
            return Ok(id);
        }
        let mut tmp = tempfile::NamedTempFile::new_in(self.tmp_dir())
            .map_err(|e| PipelineError::io(self.tmp_dir(), e))?;
        tmp.write_all(id.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| PipelineError::io(&path, e))?;
        make_readable(tmp.path())?;
        match tmp.persist_noclobber(&path) {
            Ok(_) => Ok(id),
            Err(error) if error.error.kind() == std::io::ErrorKind::AlreadyExists => {
                let id = fs::read_to_string(&path).map_err(|e| PipelineError::io(&path, e))?;
                Ok(id.trim().to_string())
            }
            Err(error) => Err(PipelineError::io(&path, error.error)),
        }
    }

    /// Directory for partial files; same filesystem as the blobs, so renames are atomic.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(&sha256[..2]).join(sha256)
    }

    pub fn contains(&self, sha256: &str) -> bool {
        is_sha256_hex(sha256) && self.blob_path(sha256).is_file()
    }

    /// Reads a blob and checks its hash, so silent disk corruption is reported, not used.
    pub fn read_verified(&self, sha256: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(sha256);
        let bytes = fs::read(&path).map_err(|e| PipelineError::io(&path, e))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != sha256 {
            return Err(PipelineError::CorruptBlob {
                sha256: sha256.to_string(),
                path,
                detail: format!("its content hashes to {actual}"),
            });
        }
        Ok(bytes)
    }

    /// Stores bytes and returns their SHA-256; storing bytes already present is a no-op.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<String> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        if self.contains(&sha256) {
            return Ok(sha256);
        }

        let tmp_dir = self.tmp_dir();
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(|e| PipelineError::io(&tmp_dir, e))?;
        tmp.write_all(bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| PipelineError::io(tmp.path(), e))?;
        self.commit(
            tmp.into_temp_path()
                .keep()
                .map_err(|e| PipelineError::io(&tmp_dir, e.error))?,
            &sha256,
        )?;
        Ok(sha256)
    }

    /// Moves a fully written temporary file into the store after checking its hash and size.
    ///
    /// The file must be in [`Self::tmp_dir`]. On a mismatch the file is deleted and an error
    /// names both hashes.
    pub fn put_file(&self, tmp_path: &Path, sha256: &str, size_bytes: u64) -> Result<()> {
        let (actual_sha256, actual_size) = hash_file(tmp_path)?;
        if actual_sha256 != sha256 || actual_size != size_bytes {
            let _ = fs::remove_file(tmp_path);
            return Err(PipelineError::CorruptBlob {
                sha256: sha256.to_string(),
                path: tmp_path.to_path_buf(),
                detail: format!(
                    "the downloaded file has sha256 {actual_sha256} and {actual_size} bytes, expected {size_bytes} bytes"
                ),
            });
        }
        // A stored file of another size is damaged (a partial copy, say), so the verified
        // download replaces it instead of being dropped.
        let stored_size = fs::metadata(self.blob_path(sha256)).map(|m| m.len()).ok();
        if self.contains(sha256) && stored_size == Some(size_bytes) {
            let _ = fs::remove_file(tmp_path);
            return Ok(());
        }
        self.commit(tmp_path.to_path_buf(), sha256)
    }

    fn commit(&self, tmp_path: PathBuf, sha256: &str) -> Result<()> {
        make_readable(&tmp_path)?;
        let target = self.blob_path(sha256);
        let parent = target.parent().expect("blob path has a parent");
        fs::create_dir_all(parent).map_err(|e| PipelineError::io(parent, e))?;
        fs::rename(&tmp_path, &target).map_err(|e| PipelineError::io(&target, e))?;
        sync_dir(parent)
    }

    /// Looks up a URI whose blob is present and has the recorded size.
    pub fn lookup_uri(&self, uri: &str) -> Option<UriRecord> {
        let path = self.uri_record_path(uri);
        let record: UriRecord = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
        let blob_size = fs::metadata(self.blob_path(&record.sha256)).ok()?.len();
        (record.uri == uri && blob_size == record.size_bytes && is_sha256_hex(&record.sha256))
            .then_some(record)
    }

    /// Records which blob a URI resolved to; the blob must already be stored.
    pub fn record_uri(&self, record: &UriRecord) -> Result<()> {
        if !self.contains(&record.sha256) {
            return Err(PipelineError::Invalid(format!(
                "cannot record {} -> {}: the blob is not in the store",
                record.uri, record.sha256
            )));
        }
        let path = self.uri_record_path(&record.uri);
        let json = serde_json::to_vec_pretty(record).expect("UriRecord serializes");
        write_atomic(&path, &json)
    }

    fn uri_record_path(&self, uri: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(uri.as_bytes()));
        self.root.join("uris").join(format!("{key}.json"))
    }
}

/// Writes a file by writing a sibling temporary file, fsyncing it and renaming it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| PipelineError::io(parent, e))?;
    let mut tmp =
        tempfile::NamedTempFile::new_in(parent).map_err(|e| PipelineError::io(parent, e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| PipelineError::io(path, e))?;
    make_readable(tmp.path())?;
    tmp.persist(path)
        .map_err(|e| PipelineError::io(path, e.error))?;
    sync_dir(parent)
}

/// Gives a finished file the usual mode 0644; temporary files start as 0600, and
/// published files should be as readable as the shards beside them.
fn make_readable(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o644))
            .map_err(|e| PipelineError::io(path, e))?;
    }
    Ok(())
}

/// Fsyncs a directory so a rename into it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| PipelineError::io(dir, e))
}

/// Returns the SHA-256 (hex) and size of a file, reading it in chunks.
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut file = File::open(path).map_err(|e| PipelineError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut size_bytes = 0u64;
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| PipelineError::io(path, e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size_bytes += read as u64;
    }
    Ok((hex::encode(hasher.finalize()), size_bytes))
}

/// Returns true for a store id: 32 lower-case hex digits.
fn is_store_id(value: &str) -> bool {
    value.len() == 32
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_sha256_hex(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let first = store.put_bytes(b"pixels").unwrap();
        let second = store.put_bytes(b"pixels").unwrap();
        assert_eq!(first, second);
        let files: Vec<_> = walk(&dir.path().join("sha256"));
        assert_eq!(files.len(), 1);
        assert_eq!(store.read_verified(&first).unwrap(), b"pixels");
    }

    #[test]
    fn put_file_rejects_wrong_hash_and_deletes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let tmp = store.tmp_dir().join("partial");
        fs::write(&tmp, b"first 1000 bytes only").unwrap();
        let wrong = "0".repeat(64);
        let error = store.put_file(&tmp, &wrong, 21).unwrap_err().to_string();
        assert!(error.contains("expected 21 bytes"), "{error}");
        assert!(!tmp.exists());
        assert!(!store.contains(&wrong));
    }

    #[test]
    fn uri_record_requires_matching_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let sha256 = store.put_bytes(b"abc").unwrap();
        let record = UriRecord {
            uri: "mast:HST/product/x.jpg".into(),
            sha256: sha256.clone(),
            size_bytes: 3,
        };
        store.record_uri(&record).unwrap();
        assert_eq!(store.lookup_uri("mast:HST/product/x.jpg"), Some(record));
        assert_eq!(store.lookup_uri("mast:HST/product/y.jpg"), None);

        fs::write(store.blob_path(&sha256), b"abcd").unwrap();
        assert_eq!(store.lookup_uri("mast:HST/product/x.jpg"), None);
        assert!(store.read_verified(&sha256).is_err());
    }

    #[test]
    fn shared_store_opens_only_with_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let id = store.store_id().unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(store.store_id().unwrap(), id, "the id is written once");
        fs::write(dir.path().join(STORE_ID_FILE), b"").unwrap();
        let replaced = store.store_id().unwrap();
        assert!(is_store_id(&replaced), "{replaced:?}");
        assert_ne!(replaced, id, "a damaged id is replaced");
        let id = replaced;

        assert!(BlobStore::open_shared(dir.path(), &id).is_ok());
        let error = BlobStore::open_shared(dir.path(), "0123").unwrap_err();
        assert!(
            error.to_string().contains("same path on every executor"),
            "{error}"
        );
        let elsewhere = dir.path().join("not-a-store");
        let error = BlobStore::open_shared(&elsewhere, &id).unwrap_err();
        assert!(error.to_string().contains("holds no store id"), "{error}");
        assert!(!elsewhere.exists(), "a missing store is not created");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }
}
