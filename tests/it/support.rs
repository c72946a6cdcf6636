//! Shared test helpers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use paperclip::pipeline::{NoProgress, PipelineConfig, RunOptions, RunReport};

/// Returns the repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Returns the path of the project's pipeline file.
pub fn pipeline_path() -> PathBuf {
    repo_root().join("pipelines/hst-paperclip.toml")
}

/// Returns the real third-party test data next to the repository, when present.
///
/// Returns `None` (after printing why) when it is absent, unless
/// `PAPERCLIP_REQUIRE_SHARED_DATA=1`, which turns absence into a failure.
pub fn shared_data() -> Option<PathBuf> {
    let dir = repo_root().join("../shared/data");
    if dir.join("README.md").is_file() {
        return Some(dir);
    }
    let message = format!("skipping: shared data not found at {}", dir.display());
    if std::env::var("PAPERCLIP_REQUIRE_SHARED_DATA").as_deref() == Ok("1") {
        panic!("{message}");
    }
    eprintln!("{message}");
    None
}

/// Runs the project's pipeline against an archive URL with a given data directory.
pub async fn run_pipeline(data_dir: &Path, archive: url::Url) -> RunReport {
    let config = paperclip::pipeline::config::load(&pipeline_path()).expect("pipeline file loads");
    run_config(&config, data_dir, archive).await
}

/// Options of a plain run against an archive URL.
pub fn run_options(data_dir: &Path, archive: url::Url) -> RunOptions {
    RunOptions {
        data_dir: data_dir.to_path_buf(),
        archive_override: Some(archive),
        progress: Arc::new(NoProgress),
        plan_only: false,
        now: None,
        started_at: None,
        full_refresh: false,
        run_id: None,
        saved_plan: None,
        engine: Default::default(),
    }
}

pub async fn run_config(config: &PipelineConfig, data_dir: &Path, archive: url::Url) -> RunReport {
    let options = run_options(data_dir, archive);
    paperclip::pipeline::run(config, &options)
        .await
        .expect("run succeeds")
}

/// Runs one SQL query over the datasets under `data_dir` and renders it as a table.
pub async fn query(data_dir: &Path, sql: &str) -> String {
    let ctx = paperclip::sql::new_session();
    paperclip::dataset::catalog::register_datasets(&ctx, data_dir)
        .await
        .expect("datasets register");
    let batches = ctx
        .sql(sql)
        .await
        .expect("query plans")
        .collect()
        .await
        .expect("query runs");
    datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .expect("batches format")
        .to_string()
}

/// Counts the files under a directory tree.
pub fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { count_files(&p) } else { 1 })
        .sum()
}

/// Opens a snapshot directory and serves it on a free loopback port.
pub async fn serve_snapshot(
    dir: &Path,
    options: paperclip_archive::ServeOptions,
) -> paperclip_archive::RunningServer {
    let snapshot = paperclip_archive::Snapshot::open(dir).expect("snapshot opens");
    let address = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
    paperclip_archive::server::bind(snapshot, address, options)
        .await
        .expect("server binds")
}

/// Runs the `paperclip` binary with a data directory, without inherited log or data-dir
/// settings.
pub fn paperclip(data_dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_paperclip"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("PAPERCLIP_DATA_DIR")
        .output()
        .expect("the binary runs")
}

/// Builds a chat completions response of an OpenAI-compatible server with `content` as the
/// assistant's message, for the scripted test servers.
pub fn chat_answer(content: &str) -> axum::response::Response {
    use axum::response::IntoResponse;

    axum::Json(serde_json::json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 400, "completion_tokens": 30},
    }))
    .into_response()
}
