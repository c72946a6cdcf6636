//! The embedded archive behind `paperclip run --archive embedded`: the built-in fixture
//! snapshot, written once under the data directory and served on a free loopback port for
//! the length of a run.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use paperclip_archive::server::{RunningServer, ServeOptions, bind};
use url::Url;

use crate::error::{PipelineError, Result};

/// Bump when the fixture content changes, so an old copy under a data directory is not reused.
const FIXTURE_VERSION: &str = "fixtures-v1";

/// A running embedded archive; stop it when the run ends.
pub struct EmbeddedArchive {
    pub url: Url,
    server: RunningServer,
}

impl EmbeddedArchive {
    pub async fn stop(mut self) {
        self.server.shutdown();
        if let Err(error) = self.server.join().await {
            tracing::warn!(%error, "embedded archive stopped with an error");
        }
    }
}

/// Writes the fixture snapshot (once) and serves it on 127.0.0.1 with a free port.
pub async fn start(data_dir: &Path) -> Result<EmbeddedArchive> {
    let dir = data_dir.join("archive").join(FIXTURE_VERSION);
    if !dir.join("snapshot.json").is_file() {
        let staging = data_dir
            .join("archive")
            .join(format!(".{FIXTURE_VERSION}.partial"));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| PipelineError::io(&staging, e))?;
        }
        super::fixtures::build(&staging)?;
        std::fs::rename(&staging, &dir).map_err(|e| PipelineError::io(&dir, e))?;
    }

    let snapshot = paperclip_archive::Snapshot::open(&dir)?;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let server = bind(snapshot, address, ServeOptions::default()).await?;
    let url = Url::parse(&format!("http://{}/", server.local_addr())).map_err(|e| {
        PipelineError::Invalid(format!("embedded archive address is not a URL: {e}"))
    })?;
    tracing::info!(%url, dir = %dir.display(), "embedded archive started");
    Ok(EmbeddedArchive { url, server })
}
