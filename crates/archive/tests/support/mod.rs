//! Helpers shared by the integration tests: snapshot fixtures, a local
//! archive server, a fixed-response server and log capture.

#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::any;
use paperclip_archive::{
    ClientConfig, MastClient, Row, RunningServer, ServeOptions, SnapshotWriter,
};
use serde_json::{Value, json};
use url::Url;

pub const LOOPBACK: &str = "127.0.0.1:0";

pub fn loopback() -> SocketAddr {
    LOOPBACK.parse().unwrap()
}

/// Returns a config with short timeouts and backoff so tests stay fast.
pub fn fast_config(base_url: Url) -> ClientConfig {
    ClientConfig {
        base_url,
        request_timeout_secs: 5,
        max_retries: 3,
        backoff_base_ms: 1,
        backoff_max_ms: 5,
        page_size: 1_000,
        products_batch_size: 100,
        proposals_per_query: 10,
        poll_interval_ms: 1,
        max_polls: 10,
        server_wait_secs: 1,
    }
}

pub fn rows(value: Value) -> Vec<Row> {
    serde_json::from_value(value).unwrap()
}

/// Builds an HST observation row as MAST sends it (obsid a number,
/// proposal_id a string).
pub fn observation_row(obsid: u64, proposal_id: u32) -> Row {
    let value = json!({
        "obsid": obsid, "obs_id": format!("j{obsid:08}q"), "proposal_id": proposal_id.to_string(),
        "obs_collection": "HST", "instrument_name": "ACS/WFC", "target_name": "NGC-104",
        "filters": "F606W", "dataproduct_type": "image", "calib_level": 3,
        "t_min": 56000.5, "t_exptime": 500.0, "s_ra": 6.02, "s_dec": -72.08,
        "obs_title": "A title", "proposal_pi": "Doe, Jane", "jpegURL": null, "dataRights": "PUBLIC"
    });
    serde_json::from_value(value).unwrap()
}

/// Builds a product row of `obsid`, without `parent_obsid` when it is `None`.
pub fn product_row(obsid: u64, parent_obsid: Option<u64>, file_name: &str) -> Row {
    let mut row: Row = serde_json::from_value(json!({
        "obsID": obsid.to_string(), "obs_collection": "HST", "obs_id": format!("j{obsid:08}q"),
        "dataURI": format!("mast:HST/product/{file_name}"), "productType": "SCIENCE",
        "productSubGroupDescription": "DRZ", "productFilename": file_name, "size": 10, "description": "drizzled"
    }))
    .unwrap();
    if let Some(parent_obsid) = parent_obsid {
        row.insert("parent_obsid".to_owned(), json!(parent_obsid));
    }
    row
}

/// A temporary snapshot directory with a running server and a client.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub server: RunningServer,
    pub client: MastClient,
}

impl Harness {
    /// Builds a snapshot with `fill`, serves it with `options`, and creates a
    /// client whose config `tune` may adjust.
    pub async fn start(
        options: ServeOptions,
        fill: impl FnOnce(&mut SnapshotWriter),
        tune: impl FnOnce(&mut ClientConfig),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SnapshotWriter::create(dir.path(), "test snapshot").unwrap();
        fill(&mut writer);
        let snapshot = writer.finish().unwrap();
        let server = paperclip_archive::bind(snapshot, loopback(), options)
            .await
            .unwrap();
        let mut config = fast_config(server.base_url());
        tune(&mut config);
        let client = MastClient::new(config).unwrap();
        Self {
            dir,
            server,
            client,
        }
    }
}

/// Serves `body` with `status` for every request on any path, counting requests.
pub struct FixedServer {
    pub base_url: Url,
    pub requests: Arc<Mutex<u32>>,
    _task: tokio::task::JoinHandle<()>,
}

impl FixedServer {
    pub async fn start(status: u16, body: Vec<u8>) -> Self {
        let requests = Arc::new(Mutex::new(0u32));
        let counter = Arc::clone(&requests);
        let body = Arc::new(body);
        let router = Router::new().fallback(any(move || {
            let body = Arc::clone(&body);
            let counter = Arc::clone(&counter);
            async move {
                *counter.lock().unwrap() += 1;
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    body.as_ref().clone(),
                )
            }
        }));
        let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            base_url: Url::parse(&format!("http://{addr}/")).unwrap(),
            requests,
            _task: task,
        }
    }

    pub fn request_count(&self) -> u32 {
        *self.requests.lock().unwrap()
    }
}

/// Captured log output of the current thread.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Installs a subscriber for the current thread; logs stop being captured
    /// when the guard drops.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let capture = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || capture.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
