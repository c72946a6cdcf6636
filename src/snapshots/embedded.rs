//! The embedded archive behind `paperclip run --archive embedded`: the built-in fixture
//! snapshot, generated for each run and served on a free loopback port while it lasts.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use paperclip_archive::server::{RunningServer, ServeOptions, bind};
use url::Url;

use crate::error::{PipelineError, Result};

/// A running embedded archive; stop it when the run ends.
pub struct EmbeddedArchive {
    pub url: Url,
    server: RunningServer,
    /// The snapshot, regenerated for every run and deleted with this value, so a damaged
    /// copy can never be served.
    _dir: tempfile::TempDir,
    /// Held for the archive's lifetime; a directory whose lock is free belongs to a run that
    /// ended without deleting it.
    _lock: std::fs::File,
}

const DIR_PREFIX: &str = ".embedded-archive-";

/// Deletes embedded archive directories left by runs that were killed.
pub fn remove_abandoned(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let abandoned = entry.file_name().to_string_lossy().starts_with(DIR_PREFIX)
            && std::fs::File::open(path.join(".lock")).is_ok_and(|lock| lock.try_lock().is_ok());
        if abandoned && let Err(error) = std::fs::remove_dir_all(&path) {
            tracing::warn!(dir = %path.display(), %error, "cannot remove an abandoned embedded archive");
        }
    }
}

impl EmbeddedArchive {
    pub async fn stop(mut self) {
        self.server.shutdown();
        if let Err(error) = self.server.join().await {
            tracing::warn!(%error, "embedded archive stopped with an error");
        }
    }
}

/// Writes the fixture snapshot into a temporary directory under the data directory and
/// serves it on 127.0.0.1 with a free port.
pub async fn start(data_dir: &Path) -> Result<EmbeddedArchive> {
    std::fs::create_dir_all(data_dir).map_err(|e| PipelineError::io(data_dir, e))?;
    let dir = tempfile::Builder::new()
        .prefix(DIR_PREFIX)
        .tempdir_in(data_dir)
        .map_err(|e| PipelineError::io(data_dir, e))?;
    let lock_path = dir.path().join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| PipelineError::io(&lock_path, e))?;
    lock.lock().map_err(|e| PipelineError::io(&lock_path, e))?;
    let snapshot_dir = dir.path().join("snapshot");
    super::fixtures::build(&snapshot_dir)?;

    let snapshot = paperclip_archive::Snapshot::open(&snapshot_dir)?;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let server = bind(snapshot, address, ServeOptions::default()).await?;
    let url = server.base_url();
    tracing::info!(%url, "embedded archive started");
    Ok(EmbeddedArchive {
        url,
        server,
        _dir: dir,
        _lock: lock,
    })
}
