//! Object storage against an S3-compatible server process (`s3s-fs`) on 127.0.0.1: plain
//! objects, conditional puts and Delta tables at `s3://` URLs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use paperclip::store::remote;
use url::Url;

pub const ACCESS_KEY: &str = "paperclip-test-key";
pub const SECRET_KEY: &str = "paperclip-test-secret";
pub const BUCKET: &str = "datasets";

/// Returns the `s3s-fs` binary: `PAPERCLIP_S3S_FS`, or `s3s-fs` on the PATH. `None` (after
/// printing why) when neither exists, unless `PAPERCLIP_REQUIRE_S3S=1`.
fn s3s_fs() -> Option<PathBuf> {
    let candidate = std::env::var_os("PAPERCLIP_S3S_FS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("s3s-fs"));
    let found = Command::new(&candidate)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(candidate);
    }
    let install = "cargo install --locked s3s-fs@0.14.1 --features binary";
    if std::env::var("PAPERCLIP_REQUIRE_S3S").as_deref() == Ok("1") {
        panic!("PAPERCLIP_REQUIRE_S3S=1 but s3s-fs is not installed ({install})");
    }
    eprintln!("skipped: s3s-fs is not installed ({install})");
    None
}

/// An `s3s-fs` process serving one bucket from a temporary folder, killed when dropped.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub root: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    /// Starts the server with an empty bucket, or returns `None` without `s3s-fs`.
    pub fn start() -> Option<Self> {
        let binary = s3s_fs()?;
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self { child, port, root };

        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    /// Returns the options that point `object_store` at this server.
    pub fn options(&self) -> HashMap<String, String> {
        HashMap::from([
            (
                "aws_endpoint".into(),
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("aws_allow_http".into(), "true".into()),
            ("aws_access_key_id".into(), ACCESS_KEY.into()),
            ("aws_secret_access_key".into(), SECRET_KEY.into()),
            ("aws_region".into(), "us-east-1".into()),
        ])
    }

    pub fn url(&self, path: &str) -> Url {
        Url::parse(&format!("s3://{BUCKET}/{path}")).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_and_create_is_exclusive() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let (store, prefix) = remote::open(&server.url("runs/a"), &server.options()).unwrap();
    let location = prefix.clone().join("one.json");

    store
        .put(&location, PutPayload::from_static(b"{\"n\": 1}"))
        .await
        .unwrap();
    let bytes = store.get(&location).await.unwrap().bytes().await.unwrap();
    assert_eq!(&bytes[..], b"{\"n\": 1}");
    assert!(
        server
            .root
            .path()
            .join(BUCKET)
            .join("runs/a/one.json")
            .is_file(),
        "the server stores the object under its key"
    );

    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let first = prefix.clone().join("commit.json");
    store
        .put_opts(&first, PutPayload::from_static(b"1"), create.clone())
        .await
        .unwrap();
    let second = store
        .put_opts(&first, PutPayload::from_static(b"2"), create)
        .await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "a second create of one key must fail: {second:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_table_at_s3_url_round_trips() {
    let Some(server) = S3Server::start() else {
        return;
    };
    remote::register_delta_stores();
    let url = server.url("delta/samples");
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    let batch =
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();

    let table = deltalake::DeltaTableBuilder::from_url(url.clone())
        .unwrap()
        .with_storage_options(server.options())
        .build()
        .unwrap();
    table.write(vec![batch]).await.unwrap();

    let table = deltalake::open_table_with_storage_options(url, server.options())
        .await
        .unwrap();
    assert_eq!(table.version(), Some(0));
    let files: Vec<String> = table.get_file_uris().unwrap().collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].starts_with("s3://datasets/delta/samples/"),
        "{files:?}"
    );
    let commit = server
        .root
        .path()
        .join(BUCKET)
        .join("delta/samples/_delta_log/00000000000000000000.json");
    assert!(
        commit.is_file(),
        "the commit is an object under the table's key"
    );
}

#[test]
fn credentials_in_the_url_are_rejected_without_echo() {
    let url = Url::parse("s3://AKIDEXAMPLE:s3cr3t@bucket/prefix").unwrap();

    let error = remote::open(&url, &HashMap::new())
        .err()
        .unwrap()
        .to_string();

    assert!(error.contains("carries credentials"), "{error}");
    assert!(!error.contains("s3cr3t"), "{error}");
    assert!(!error.contains("AKIDEXAMPLE"), "{error}");
}

const DATASET: &str = "hst-paperclip";

/// Opens the dataset's samples table in the store at its latest version.
async fn remote_table(server: &S3Server) -> Result<deltalake::DeltaTable, String> {
    remote::register_delta_stores();
    let url = server.url(&format!("paperclip/datasets/{DATASET}/samples"));
    deltalake::open_table_with_storage_options(url, server.options())
        .await
        .map_err(|e| e.to_string())
}

async fn remote_rows(table: deltalake::DeltaTable) -> usize {
    let ctx = datafusion::prelude::SessionContext::new();
    let provider = table.table_provider().await.unwrap();
    let batches = ctx.read_table(provider).unwrap().collect().await.unwrap();
    batches.iter().map(|b| b.num_rows()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_stopped_before_commit_shows_no_partial_version() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let snapshot = dir.path().join("snapshot");
    paperclip::snapshots::fixtures::build(&snapshot).unwrap();
    let archive =
        crate::support::serve_snapshot(&snapshot, paperclip_archive::ServeOptions::default()).await;
    let paths = paperclip::dataset::versions::DatasetPaths::new(&data_dir, DATASET);
    let prefix_url = server.url("paperclip");
    let (store, prefix) = remote::open(&prefix_url, &server.options()).unwrap();
    let mirror = paperclip::dataset::mirror::Mirror::new(store, &prefix, prefix_url, DATASET);

    // Version 1, uploaded whole.
    let mut config = paperclip::pipeline::config::load(&crate::support::pipeline_path()).unwrap();
    crate::support::run_config(&config, &data_dir, archive.base_url()).await;
    assert_eq!(mirror.upload_missing(&paths).await.unwrap(), [1]);
    let table = remote_table(&server).await.unwrap();
    assert_eq!(table.version(), Some(0));
    let v1_rows = remote_rows(table).await;
    assert!(v1_rows > 0);

    // Version 2, whose commit the server cannot store, because a folder has its key.
    config.shards.samples_per_shard = 2;
    let report = crate::support::run_config(&config, &data_dir, archive.base_url()).await;
    assert_eq!(report.published_version, Some(2));
    let bucket = server.root.path().join(BUCKET);
    let dataset_root = bucket.join(format!("paperclip/datasets/{DATASET}"));
    let blocked = dataset_root.join("samples/_delta_log/00000000000000000001.json");
    std::fs::create_dir_all(&blocked).unwrap();

    let error = mirror.upload_missing(&paths).await.unwrap_err().to_string();
    assert!(error.contains("s3://datasets/paperclip"), "{error}");
    assert!(!error.contains(SECRET_KEY), "{error}");
    assert!(
        dataset_root.join("versions/v2/manifest.json").is_file(),
        "the version's files were uploaded before its commit"
    );
    let table = remote_table(&server).await.unwrap();
    assert_eq!(table.version(), Some(0), "readers still see only version 1");
    assert_eq!(remote_rows(table).await, v1_rows);

    // The next upload finishes the version.
    std::fs::remove_dir(&blocked).unwrap();
    assert_eq!(mirror.upload_missing(&paths).await.unwrap(), [2]);
    let table = remote_table(&server).await.unwrap();
    assert_eq!(table.version(), Some(1));
    assert_eq!(
        mirror.upload_missing(&paths).await.unwrap(),
        Vec::<u64>::new()
    );
}

/// Returns the environment that points a paperclip process at `server`, credentials included.
fn s3_env(server: &S3Server) -> [(&'static str, String); 5] {
    [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", server.port)),
        ("AWS_ALLOW_HTTP", "true".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_uploads_versions_to_storage_url() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = crate::support::repo_root();
    let pipeline = std::fs::read_to_string(root.join("pipelines/hst-paperclip.toml"))
        .unwrap()
        .replace("\"../sql/", &format!("\"{}/sql/", root.display()));
    let pipeline_path = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline_path,
        format!("{pipeline}\n[storage]\nurl = \"s3://{BUCKET}/paperclip\"\n"),
    )
    .unwrap();
    let data_dir = dir.path().join("data");

    let output = Command::new(env!("CARGO_BIN_EXE_paperclip"))
        .args(["--json", "--log-level", "trace", "--data-dir"])
        .arg(&data_dir)
        .arg("run")
        .arg(&pipeline_path)
        .args(["--archive", "embedded"])
        .envs(s3_env(&server))
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["uploaded_versions"], serde_json::json!([1]));
    let table = remote_table(&server).await.unwrap();
    assert_eq!(table.version(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains(SECRET_KEY),
            "the secret key reached the output"
        );
    }

    // An analyst with no data directory queries the uploaded version by the same names.
    let sql = |data_dir: &std::path::Path, storage: Option<String>, query: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_paperclip"));
        command
            .args(["--json", "--data-dir"])
            .arg(data_dir)
            .arg("sql");
        if let Some(url) = storage {
            command.args(["--storage", &url]);
        }
        let output = command.arg(query).envs(s3_env(&server)).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{query}: {stderr}");
        String::from_utf8(output.stdout).unwrap()
    };
    let empty = dir.path().join("no-data-here");
    let storage = Some(format!("s3://{BUCKET}/paperclip"));
    for query in [
        r#"SELECT * FROM "hst-paperclip".latest.samples ORDER BY key"#,
        r#"SELECT * FROM "hst-paperclip".v1.samples ORDER BY key"#,
        r#"SELECT reason, count(*) AS n FROM "hst-paperclip".v1.skips GROUP BY reason ORDER BY reason"#,
    ] {
        let remote = sql(&empty, storage.clone(), query);
        assert!(remote.len() > 20, "{query}: {remote}");
        assert_eq!(remote, sql(&data_dir, None, query), "{query}");
    }
    assert!(!empty.join("datasets").exists());

    // The SQL server serves the same versions from the store.
    if crate::sql_server::psql().is_none() {
        return;
    }
    let port = crate::sql_server::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_paperclip"))
        .arg("--data-dir")
        .arg(&empty)
        .args(["serve", "--sql-listen", &format!("127.0.0.1:{port}")])
        .args(["--sql-storage", &format!("s3://{BUCKET}/paperclip")])
        .envs(s3_env(&server))
        .env_remove("PAPERCLIP_SQL_PASSWORD")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _server = crate::sql_server::Server(child);
    assert!(line.contains("SQL server listening"), "{line}");
    let count = r#"SELECT count(*) FROM "hst-paperclip".v1.samples"#;
    let (ok, served, error) = crate::sql_server::run_psql(port, count);
    assert!(ok, "{error}");
    let local = sql(&data_dir, None, count);
    assert!(
        local.contains(&format!(":{}", served.trim())),
        "{local} vs {served}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_writer_on_a_prefix_is_stopped() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snapshot");
    paperclip::snapshots::fixtures::build(&snapshot).unwrap();
    let archive =
        crate::support::serve_snapshot(&snapshot, paperclip_archive::ServeOptions::default()).await;
    let config = paperclip::pipeline::config::load(&crate::support::pipeline_path()).unwrap();
    let prefix_url = server.url("shared");
    let mirror = |store, prefix: &object_store::path::Path| {
        paperclip::dataset::mirror::Mirror::new(store, prefix, prefix_url.clone(), DATASET)
    };
    let (store, prefix) = remote::open(&prefix_url, &server.options()).unwrap();

    // Two data directories publish their own version 1 of the same dataset.
    let first = paperclip::dataset::versions::DatasetPaths::new(&dir.path().join("a"), DATASET);
    let second = paperclip::dataset::versions::DatasetPaths::new(&dir.path().join("b"), DATASET);
    for paths in [&first, &second] {
        let data_dir = paths.root.parent().unwrap().parent().unwrap();
        crate::support::run_config(&config, data_dir, archive.base_url()).await;
    }
    assert_eq!(
        mirror(store.clone(), &prefix)
            .upload_missing(&first)
            .await
            .unwrap(),
        [1]
    );
    let manifest = server.root.path().join(BUCKET).join(format!(
        "shared/datasets/{DATASET}/versions/v1/manifest.json"
    ));
    let uploaded = std::fs::read(&manifest).unwrap();

    let error = mirror(store, &prefix)
        .upload_missing(&second)
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("another writer uses this prefix"), "{error}");
    assert_eq!(
        std::fs::read(&manifest).unwrap(),
        uploaded,
        "the first writer's files stay"
    );

    // A writer that uploaded a file of version 1 but has not committed yet, racing the
    // second directory on a fresh prefix: its file is not replaced, and nothing commits.
    let race_url = server.url("race");
    let (store, prefix) = remote::open(&race_url, &server.options()).unwrap();
    let other = prefix
        .clone()
        .join("datasets")
        .join(DATASET)
        .join("versions")
        .join("v1")
        .join("manifest.json");
    store
        .put(&other, PutPayload::from_static(b"{\"run_id\": \"other\"}"))
        .await
        .unwrap();
    let error = paperclip::dataset::mirror::Mirror::new(store.clone(), &prefix, race_url, DATASET)
        .upload_missing(&second)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("with other content"), "{error}");
    let kept = store.get(&other).await.unwrap().bytes().await.unwrap();
    assert_eq!(&kept[..], b"{\"run_id\": \"other\"}");
    let race_log = server
        .root
        .path()
        .join(BUCKET)
        .join(format!("race/datasets/{DATASET}/samples/_delta_log"));
    assert!(!race_log.exists(), "no commit was written");
}

#[test]
fn store_without_credentials_is_not_opened() {
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
        eprintln!("skipped: AWS_ACCESS_KEY_ID is set in this environment");
        return;
    }
    let url = Url::parse("s3://bucket/prefix").unwrap();

    let error = remote::open(&url, &HashMap::new())
        .err()
        .unwrap()
        .to_string();

    assert!(error.contains("no credentials for s3://bucket"), "{error}");
    assert!(error.contains("AWS_ACCESS_KEY_ID"), "{error}");
}
