//! Copies published versions from the data directory to an object store, so readers of
//! the store see each version whole or not at all.
//!
//! The store contains the same layout as the data directory under its prefix:
//! `datasets/<name>/versions/v<N>/...` and the Delta table `datasets/<name>/samples/`.
//! Dataset version `N` is Delta version `N - 1`, and a Delta reader sees a version only
//! once its commit file exists. So each version is uploaded in this order: its folder
//! (shards, manifest, skips), the data files its commit adds, then the commit file, with a
//! put that fails when the file already exists. An upload that stops anywhere before the
//! commit leaves files no version references, and the next upload completes them: files
//! with the same bytes and Delta data files of the same size are kept.
//! Checkpoints follow their commit. Version folder files are written with create-only
//! puts too, so a second writer never replaces the first one's files. A commit or a file
//! that exists with other bytes, or a store with a version the data directory lacks,
//! means another writer uses the prefix, and the upload stops with an error.

use std::path::Path as LocalPath;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use url::Url;

use super::delta_log::LogListing;
use super::versions::DatasetPaths;
use crate::error::{PipelineError, Result};

/// A dataset's place in an object store.
pub struct Mirror {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/datasets/<name>` inside the store.
    root: Path,
    /// The store's URL, for messages; it never contains credentials.
    url: Url,
}

impl Mirror {
    /// Places dataset `name` under `prefix` of `store`, which `url` names.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &Path, url: Url, name: &str) -> Self {
        let root = prefix.clone().join("datasets").join(name);
        Self { store, root, url }
    }

    /// Uploads every local version the store does not have yet, oldest first, and returns
    /// their dataset version numbers.
    pub async fn upload_missing(&self, paths: &DatasetPaths) -> Result<Vec<u64>> {
        let local = LogListing::read(&paths.log_dir())?;
        let remote = self.remote_commits().await?;
        self.check_same_history(paths, &local, &remote).await?;
        let missing: Vec<u64> = local.commits().filter(|v| !remote.contains(v)).collect();
        if let Some(&first) = missing.first()
            && first > 0
            && !remote.contains(&(first - 1))
        {
            // TODO: upload the checkpoint a gc left as the table's start, with the data
            // files it references, so a gc'd local table can seed an empty store.
            return Err(PipelineError::Invalid(format!(
                "{} lacks version {} that version {} builds on, and `datasets gc` removed it from the data directory; upload to a prefix that has it, or run the pipeline into a new data directory",
                self.url,
                first,
                first + 1
            )));
        }

        let mut uploaded = Vec::new();
        for delta_version in missing {
            let span =
                tracing::info_span!("upload_version", version = delta_version + 1, url = %self.url);
            let _entered = span.enter();
            self.upload_version(paths, &local, delta_version).await?;
            uploaded.push(delta_version + 1);
        }
        Ok(uploaded)
    }

    /// Checks that the store's newest version that the data directory also has is the
    /// same commit, and that the store has no newer one. Either difference means another
    /// writer uses the prefix.
    async fn check_same_history(
        &self,
        paths: &DatasetPaths,
        local: &LogListing,
        remote: &[u64],
    ) -> Result<()> {
        let local_versions: Vec<u64> = local.commits().collect();
        if let (Some(&remote_latest), Some(&local_latest)) = (remote.last(), local_versions.last())
            && remote_latest > local_latest
        {
            return Err(self.another_writer(remote_latest));
        }
        let Some(&common) = remote.iter().rev().find(|v| local_versions.contains(v)) else {
            return Ok(());
        };
        let commit = paths.log_dir().join(format!("{common:020}.json"));
        let local_bytes = std::fs::read(&commit).map_err(|e| PipelineError::io(&commit, e))?;
        let key = self.table_key(&format!("_delta_log/{common:020}.json"));
        if self.get_bytes(&key).await? != local_bytes {
            return Err(self.another_writer(common));
        }
        Ok(())
    }

    fn another_writer(&self, delta_version: u64) -> PipelineError {
        PipelineError::Invalid(format!(
            "{} contains a version {} of this dataset that the data directory did not publish, so another writer uses this prefix; give each data directory a prefix of its own",
            self.url,
            delta_version + 1
        ))
    }

    /// Lists the Delta versions whose commit file the store contains.
    async fn remote_commits(&self) -> Result<Vec<u64>> {
        let log = self.root.clone().join("samples").join("_delta_log");
        let objects: Vec<_> = self
            .store
            .list(Some(&log))
            .try_collect()
            .await
            .map_err(|source| self.failed(source))?;
        let mut versions: Vec<u64> = objects
            .iter()
            .filter_map(|object| object.location.filename())
            .filter_map(|name| name.strip_suffix(".json"))
            .filter(|stem| stem.len() == 20)
            .filter_map(|stem| stem.parse().ok())
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    async fn upload_version(
        &self,
        paths: &DatasetPaths,
        local: &LogListing,
        delta_version: u64,
    ) -> Result<()> {
        let version_dir = paths.version_dir(delta_version + 1);
        let version_key = self
            .root
            .clone()
            .join("versions")
            .join(format!("v{}", delta_version + 1));
        self.upload_folder(&version_dir, &version_key).await?;

        let log_dir = paths.log_dir();
        let commit = log_dir.join(format!("{delta_version:020}.json"));
        let commit_bytes = std::fs::read(&commit).map_err(|e| PipelineError::io(&commit, e))?;
        let table = paths.samples_table();
        for relative in added_files(&commit_bytes, &commit)? {
            let key = self.table_key(&relative);
            self.upload_data_file(&table.join(&relative), &key).await?;
        }

        self.put_commit(delta_version, commit_bytes).await?;
        if local.has_checkpoint(delta_version) {
            let name = format!("{delta_version:020}.checkpoint.parquet");
            self.upload_file(
                &log_dir.join(&name),
                &self.table_key(&format!("_delta_log/{name}")),
            )
            .await?;
            let last = log_dir.join("_last_checkpoint");
            if last.is_file() {
                self.upload_file(&last, &self.table_key("_delta_log/_last_checkpoint"))
                    .await?;
            }
        }
        tracing::info!(version = delta_version + 1, url = %self.url, "uploaded a version");
        Ok(())
    }

    /// Writes the commit file only when it does not exist; an existing one must be equal.
    async fn put_commit(&self, delta_version: u64, bytes: Vec<u8>) -> Result<()> {
        let key = self.table_key(&format!("_delta_log/{delta_version:020}.json"));
        let create = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&key, PutPayload::from(bytes.clone()), create)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                if self.get_bytes(&key).await? == bytes {
                    return Ok(());
                }
                Err(self.another_writer(delta_version))
            }
            Err(source) => Err(self.failed(source)),
        }
    }

    /// Uploads every file under `folder` to the same relative keys under `key`, each with
    /// [`Self::create_file`].
    async fn upload_folder(&self, folder: &LocalPath, key: &Path) -> Result<()> {
        let mut pending = vec![(folder.to_path_buf(), key.clone())];
        while let Some((dir, prefix)) = pending.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| PipelineError::io(&dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| PipelineError::io(&dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let child = prefix.clone().join(name.as_str());
                if entry.path().is_dir() {
                    pending.push((entry.path(), child));
                } else {
                    self.create_file(&entry.path(), &child).await?;
                }
            }
        }
        Ok(())
    }

    /// Uploads a Delta data file, unless the store already contains an object of the same
    /// size there (a file of an earlier, interrupted upload). Data file names carry a UUID,
    /// so an object of that name can only be this file.
    async fn upload_data_file(&self, file: &LocalPath, key: &Path) -> Result<()> {
        let size_bytes = std::fs::metadata(file)
            .map_err(|e| PipelineError::io(file, e))?
            .len();
        if let Ok(meta) = self.store.head(key).await
            && meta.size == size_bytes
        {
            return Ok(());
        }
        self.upload_file(file, key).await
    }

    /// Uploads one file, replacing any object at `key`.
    // TODO: multipart uploads. Each file is read whole into memory and sent in one PUT,
    // which S3 limits to 5 GiB; shards of 1,000 samples are about 77 MB.
    async fn upload_file(&self, file: &LocalPath, key: &Path) -> Result<()> {
        let bytes = std::fs::read(file).map_err(|e| PipelineError::io(file, e))?;
        self.store
            .put(key, PutPayload::from(bytes))
            .await
            .map_err(|source| self.failed(source))?;
        Ok(())
    }

    /// Uploads a file of a version folder with a create-only put. An object already there
    /// must have the same bytes (an earlier, interrupted upload of this version); other
    /// bytes belong to another writer, whose files are never replaced.
    async fn create_file(&self, file: &LocalPath, key: &Path) -> Result<()> {
        let bytes = std::fs::read(file).map_err(|e| PipelineError::io(file, e))?;
        let create = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(key, PutPayload::from(bytes.clone()), create)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                if self.get_bytes(key).await? == bytes {
                    return Ok(());
                }
                Err(PipelineError::Invalid(format!(
                    "{} already contains {key} with other content: another writer uploads this version, or stopped while uploading it. If no other writer uses this prefix, delete that version's folder from the store and run again",
                    self.url
                )))
            }
            Err(source) => Err(self.failed(source)),
        }
    }

    async fn get_bytes(&self, key: &Path) -> Result<Vec<u8>> {
        let result = self.store.get(key).await.map_err(|s| self.failed(s))?;
        let bytes = result.bytes().await.map_err(|s| self.failed(s))?;
        Ok(bytes.to_vec())
    }

    fn table_key(&self, relative: &str) -> Path {
        relative
            .split('/')
            .fold(self.root.clone().join("samples"), |key, part| {
                key.join(part)
            })
    }

    fn failed(&self, source: object_store::Error) -> PipelineError {
        PipelineError::ObjectStore {
            url: self.url.to_string(),
            source,
        }
    }
}

/// Returns the data files a commit adds, relative to the table folder.
fn added_files(commit: &[u8], path: &LocalPath) -> Result<Vec<String>> {
    let text = std::str::from_utf8(commit).map_err(|_| {
        PipelineError::Invalid(format!("Delta commit {} is not UTF-8", path.display()))
    })?;
    let mut files = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let action: serde_json::Value = serde_json::from_str(line).map_err(|error| {
            PipelineError::Invalid(format!(
                "Delta commit {} contains a line that is not JSON ({error}); run `paperclip datasets verify`",
                path.display()
            ))
        })?;
        if let Some(relative) = action.pointer("/add/path").and_then(|p| p.as_str()) {
            // Delta percent-encodes the paths in its log.
            let decoded = Path::from_url_path(relative).map_err(|error| {
                PipelineError::Invalid(format!(
                    "Delta commit {} adds a file with an invalid path {relative:?}: {error}",
                    path.display()
                ))
            })?;
            files.push(decoded.to_string());
        }
    }
    Ok(files)
}
