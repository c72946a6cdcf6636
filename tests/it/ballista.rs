//! The SQL models and the image stage on an Apache Ballista cluster: a scheduler and two
//! executors started as `paperclip cluster` processes on 127.0.0.1, with the input tables
//! staged on an S3-compatible server (`s3s-fs`). The published samples must equal a local
//! run's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::object_storage::{ACCESS_KEY, BUCKET, S3Server, SECRET_KEY};

/// A child process killed when dropped, with its standard error in a file.
struct Process {
    child: Child,
    stderr: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn s3_env(server: &S3Server) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", server.port)),
        ("AWS_ALLOW_HTTP", "true".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ]
}

/// Starts `paperclip --log-level info cluster ARGS` with the S3 environment.
fn cluster_process(dir: &Path, name: &str, args: &[String], env: &[(&str, String)]) -> Process {
    let stderr = dir.join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_paperclip"))
        .args(["--log-level", "info", "cluster"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    Process { child, stderr }
}

/// Waits until `done` holds for the scheduler's log, or fails with the log.
fn wait_for(process: &Process, what: &str, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = process.log();
        if done(&log) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A scheduler and two executors of two task slots each, on 127.0.0.1.
struct Cluster {
    scheduler: Process,
    executors: Vec<Process>,
    /// The `--engine` value that reaches the scheduler.
    engine: String,
}

impl Cluster {
    /// Starts the processes with `env` and waits until both executors registered.
    fn start(dir: &Path, env: &[(&str, String)]) -> Self {
        let scheduler_port = free_port();
        let listen = format!("127.0.0.1:{scheduler_port}");
        let scheduler = cluster_process(
            dir,
            "scheduler",
            &["scheduler".into(), "--listen".into(), listen.clone()],
            env,
        );
        let executors: Vec<Process> = (0..2)
            .map(|n| {
                let args = [
                    "executor".into(),
                    "--scheduler".into(),
                    listen.clone(),
                    "--listen".into(),
                    format!("127.0.0.1:{}", free_port()),
                    "--grpc-port".into(),
                    free_port().to_string(),
                    "--concurrent-tasks".into(),
                    "2".into(),
                ];
                cluster_process(dir, &format!("executor-{n}"), &args, env)
            })
            .collect();
        wait_for(&scheduler, "two executors to register", |log| {
            log.matches("Received register executor request").count() == 2
        });
        Self {
            scheduler,
            executors,
            engine: format!("ballista://{listen}"),
        }
    }
}

/// Writes the sample pipeline with `[storage]` at `s3://<bucket>/<prefix>`.
fn pipeline_file(dir: &Path, prefix: &str) -> PathBuf {
    let root = crate::support::repo_root();
    let pipeline = std::fs::read_to_string(root.join("pipelines/hst-paperclip.toml"))
        .unwrap()
        .replace("\"../sql/", &format!("\"{}/sql/", root.display()));
    let path = dir.join(format!("{prefix}.toml"));
    let storage = format!("\n[storage]\nurl = \"s3://{BUCKET}/{prefix}\"\n");
    std::fs::write(&path, format!("{pipeline}{storage}")).unwrap();
    path
}

fn paperclip(data_dir: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paperclip"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

/// Every published sample of the latest version, as JSON rows in key order.
fn published_samples(data_dir: &Path) -> String {
    let query = r#"SELECT * FROM "hst-paperclip".latest.samples ORDER BY key"#;
    let output = paperclip(data_dir, &["--json", "sql", query], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn pipeline_on_ballista_publishes_what_the_local_engine_publishes() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = s3_env(&server);

    // The executors keep their own caches, as on machines without a shared file system.
    let executor_cache = dir.path().join("executor-cache");
    let executor_env = [
        &env[..],
        &[("PAPERCLIP_CACHE", executor_cache.display().to_string())],
    ]
    .concat();
    let Cluster {
        scheduler,
        executors,
        engine,
    } = Cluster::start(dir.path(), &executor_env);
    let cluster_pipeline = pipeline_file(dir.path(), "on-ballista");
    let cluster_data = dir.path().join("cluster-data");
    let run = [
        "--json",
        "run",
        cluster_pipeline.to_str().unwrap(),
        "--archive",
        "embedded",
        "--engine",
        engine.as_str(),
    ];
    let output = paperclip(&cluster_data, &run, &env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["engine"], engine.as_str());
    assert_eq!(report["published_version"], 1);
    assert_eq!(report["uploaded_versions"], serde_json::json!([1]));
    let counts = &report["counts"];
    assert_eq!(counts["downloads_fetched"], 9, "{counts}");
    assert_eq!(counts["images_prepared"], 9, "{counts}");
    assert!(
        counts["bytes_downloaded_by_executors"].as_u64() > Some(0),
        "{counts}"
    );

    let local_pipeline = pipeline_file(dir.path(), "local");
    let local_data = dir.path().join("local-data");
    let run = ["--json", "run", local_pipeline.to_str().unwrap()];
    let output = paperclip(
        &local_data,
        &[&run[..], &["--archive", "embedded"]].concat(),
        &env,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let on_cluster = published_samples(&cluster_data);
    assert!(on_cluster.contains("\"key\""), "no samples: {on_cluster}");
    assert_eq!(on_cluster, published_samples(&local_data));

    // The executors worked in their own caches and shared the results through the
    // bucket; the run prepared nothing itself.
    let bucket_prefix = server.root.path().join(BUCKET).join("on-ballista");
    let prepared_in_bucket = walk_files(&bucket_prefix.join("prepared"));
    assert_eq!(prepared_in_bucket.len(), 9, "{prepared_in_bucket:?}");
    assert!(!walk_files(&executor_cache.join("executor/blobs/sha256")).is_empty());
    assert!(walk_files(&cluster_data.join("prepared")).is_empty());

    // A new machine with an empty data directory, publishing under a prefix of its own,
    // reuses every download and preparation from the bucket.
    let fresh_pipeline = dir.path().join("fresh.toml");
    let shared_blobs = format!("blobs_url = \"s3://{BUCKET}/on-ballista\"\n");
    let text = std::fs::read_to_string(pipeline_file(dir.path(), "fresh")).unwrap();
    std::fs::write(&fresh_pipeline, format!("{text}{shared_blobs}")).unwrap();
    let fresh_data = dir.path().join("fresh-data");
    let run = ["--json", "run", fresh_pipeline.to_str().unwrap()];
    let output = paperclip(
        &fresh_data,
        &[&run[..], &["--archive", "embedded"]].concat(),
        &env,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let counts = &report["counts"];
    assert_eq!(
        counts["downloads_fetched"],
        serde_json::Value::Null,
        "{counts}"
    );
    assert_eq!(counts["downloads_reused"], 9, "{counts}");
    assert_eq!(counts["images_reused"], 9, "{counts}");
    assert_eq!(published_samples(&fresh_data), on_cluster);

    let planned = scheduler.log();
    assert!(
        planned.contains("file_groups={1 group: [[on-ballista/staging/"),
        "the scheduler did not plan scans of the staged tables:\n{planned}"
    );
    assert!(
        planned.contains("file_groups={9 groups: [[on-ballista/staging/")
            && planned.contains("-images/image_requests/part-00004.parquet")
            && planned.contains("paperclip_prepare_image(data_uri@1"),
        "the scheduler did not plan the image stage in 9 partitions:\n{planned}"
    );
    for (n, executor) in executors.iter().enumerate() {
        let tasks = executor.log().matches("Execute task").count();
        assert!(tasks > 0, "executor {n} ran no task:\n{}", executor.log());
    }
    let staging = server.root.path().join(BUCKET).join("on-ballista/staging");
    let staged: Vec<_> = walk_files(&staging);
    assert!(staged.is_empty(), "staged inputs were left: {staged:?}");
    for log in executors.iter().chain([&scheduler]).map(Process::log) {
        assert!(!log.contains(SECRET_KEY), "the secret key reached a log");
    }
    assert!(
        !stderr.contains(SECRET_KEY),
        "the secret key reached the run's output"
    );
}

/// Stops `paperclip run` on the cluster with SIGINT once, then kills it with SIGKILL at
/// spread-out moments, against a slow archive, and then lets a run finish. The executors' jobs of the killed runs
/// go on writing to the same caches meanwhile. The finished run must publish exactly what
/// a local run publishes. Without `[storage]`, the inputs are staged in the data
/// directory, which the executors share with the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_cluster_runs_publish_the_local_result() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot_dir = dir.path().join("snapshot");
    paperclip::snapshots::fixtures::build(&snapshot_dir).unwrap();
    let slow = paperclip_archive::ServeOptions {
        latency_ms: 150,
        ..paperclip_archive::ServeOptions::default()
    };
    let server = crate::support::serve_snapshot(&snapshot_dir, slow).await;
    let archive = server.base_url().to_string();
    let cluster = Cluster::start(dir.path(), &[]);
    let pipeline = crate::support::pipeline_path();
    let run = |data_dir: &Path, engine: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_paperclip"));
        command
            .arg("--data-dir")
            .arg(data_dir)
            .arg("run")
            .arg(&pipeline)
            .args(["--archive", &archive, "--engine", engine])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };

    // The local run's time spaces the kills: a cluster run takes longer, so the kills
    // land while one runs.
    let local_data = dir.path().join("local");
    let started = Instant::now();
    let output = run(&local_data, "local").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run_ms = started.elapsed().as_millis() as u64;

    let cluster_data = dir.path().join("cluster");
    // Ctrl-C (SIGINT) stops the run with a message and deletes what it staged.
    let child = run(&cluster_data, &cluster.engine).spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(run_ms / 2)).await;
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let staged = walk_files(&cluster_data.join("staging"));
    assert!(staged.is_empty(), "an interrupted run left {staged:?}");

    let mut interrupted = 0;
    for kill in 1..=3 {
        let mut child = run(&cluster_data, &cluster.engine).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(run_ms * kill / 4)).await;
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    eprintln!("local run {run_ms} ms; {interrupted} of 3 kills interrupted a cluster run");
    assert!(interrupted >= 2, "most kills must interrupt a run");
    let output = run(&cluster_data, &cluster.engine).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    assert_eq!(
        published_samples(&cluster_data),
        published_samples(&local_data)
    );
    let versions = std::fs::read_dir(cluster_data.join("datasets/hst-paperclip/versions"))
        .unwrap()
        .count();
    assert_eq!(
        versions, 1,
        "equal input publishes one version however often killed"
    );
    let staged = walk_files(&cluster_data.join("staging"));
    assert!(
        staged.is_empty(),
        "killed runs' staged inputs were left: {staged:?}"
    );
    let planned = cluster.scheduler.log();
    assert!(
        planned.contains("-images/image_requests/part-00000.parquet"),
        "the image stage did not run on the cluster:\n{planned}"
    );
}

#[test]
fn unreachable_scheduler_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = crate::support::repo_root().join("pipelines/hst-paperclip.toml");
    let engine = format!("ballista://127.0.0.1:{}", free_port());
    let args = [
        "run",
        pipeline.to_str().unwrap(),
        "--archive",
        "embedded",
        "--engine",
        &engine,
    ];
    let output = paperclip(dir.path(), &args, &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the Ballista scheduler at {engine}"))
            && stderr.contains("paperclip cluster scheduler"),
        "{stderr}"
    );
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn engine_with_a_password_is_refused_without_echo() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = crate::support::repo_root().join("pipelines/hst-paperclip.toml");
    let args = [
        "run",
        pipeline.to_str().unwrap(),
        "--engine",
        "ballista://analyst:pw-not-shown@127.0.0.1:50050",
    ];
    let output = paperclip(dir.path(), &args, &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("user name or password"), "{stderr}");
    assert!(
        !stderr.contains("pw-not-shown"),
        "the password was echoed: {stderr}"
    );
}
