//! Version retention and `datasets gc`: expired versions disappear cleanly, kept versions
//! stay byte-identical and readable (by paperclip and by Python's `deltalake`), and a
//! version whose Delta log is gone is never advertised.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use paperclip::dataset::gc::{GcOptions, GcReport, RemovedKind, collect_garbage};
use paperclip::dataset::retention::RetentionPolicy;
use paperclip::dataset::versions::{
    DatasetLock, DatasetPaths, VersionRecord, list_versions, open_version, publish,
};
use paperclip_archive::server::ServeOptions;

use crate::support::paperclip;
use crate::support::{count_files, pipeline_path, query, repo_root, run_config, serve_snapshot};

const DATASET: &str = "hst-paperclip";

fn keep_last(n: u64) -> Option<RetentionPolicy> {
    Some(RetentionPolicy {
        keep_last: Some(n),
        keep_days: None,
    })
}

async fn gc(paths: &DatasetPaths, policy: Option<RetentionPolicy>, dry_run: bool) -> GcReport {
    let options = GcOptions {
        dry_run,
        policy,
        now: Utc::now(),
    };
    collect_garbage(paths, &options).await.expect("gc succeeds")
}

fn version_numbers(records: &[VersionRecord]) -> Vec<u64> {
    records.iter().map(|r| r.version).collect()
}

fn expired_numbers(report: &GcReport) -> Vec<u64> {
    report.expired_versions.iter().map(|e| e.version).collect()
}

/// Plans and runs one query; returns the error text, panicking when the query succeeds.
async fn query_error(data_dir: &Path, sql: &str) -> String {
    let ctx = paperclip::sql::new_session();
    paperclip::dataset::catalog::register_datasets(&ctx, data_dir)
        .await
        .expect("datasets register");
    match paperclip::sql::read_only_query(&ctx, sql).await {
        Ok(frame) => match frame.collect().await {
            Ok(_) => panic!("{sql} succeeded"),
            Err(error) => error.to_string(),
        },
        Err(error) => error.to_string(),
    }
}

/// Publishes four versions of the fixture dataset by changing the per-proposal cap, with
/// `[retention] keep_last = 2` in the pipeline.
async fn four_fixture_versions(dir: &Path) -> (paperclip_archive::RunningServer, url::Url) {
    let snapshot_dir = dir.join("snapshot");
    paperclip::snapshots::fixtures::build(&snapshot_dir).unwrap();
    let server = serve_snapshot(&snapshot_dir, ServeOptions::default()).await;
    let url = server.base_url();
    let mut config = paperclip::pipeline::config::load(&pipeline_path()).unwrap();
    config.retention.keep_last = Some(2);
    for (cap, version) in [(20, 1), (1, 2), (2, 3), (20, 4)] {
        config.selection.max_images_per_proposal = cap;
        let report = run_config(&config, &dir.join("data"), url.clone()).await;
        assert_eq!(report.published_version, Some(version));
    }
    (server, url)
}

/// Renders a version's samples as text, through SQL over the Delta table.
async fn samples_text(data_dir: &Path, version: u64) -> String {
    query(
        data_dir,
        &format!(r#"SELECT * FROM "{DATASET}".v{version}.samples ORDER BY key"#),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_newest_versions_identical() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (_server, url) = four_fixture_versions(dir.path()).await;
    let paths = DatasetPaths::new(&data_dir, DATASET);
    let kept_before = [
        samples_text(&data_dir, 3).await,
        samples_text(&data_dir, 4).await,
    ];
    let shards_before = shard_hashes(&paths, &[3, 4]);

    // A dry run reports the plan and removes nothing.
    let files_before = count_files(&paths.root);
    let plan = gc(&paths, None, true).await;
    assert_eq!(expired_numbers(&plan), [1, 2]);
    assert_eq!(plan.kept_versions, [3, 4]);
    assert!(plan.bytes_freed > 0, "{plan}");
    assert!(
        plan.to_string().contains("would remove versions/v1"),
        "{plan}"
    );
    assert_eq!(count_files(&paths.root), files_before);
    assert_eq!(
        version_numbers(&list_versions(&paths).await.unwrap()),
        [1, 2, 3, 4]
    );

    // The policy recorded by the pipeline run expires v1 and v2.
    let report = gc(&paths, None, false).await;
    assert_eq!(expired_numbers(&report), expired_numbers(&plan));
    assert_eq!(report.removed, plan.removed);
    assert_eq!(report.bytes_freed, plan.bytes_freed);
    let kinds: Vec<RemovedKind> = report.removed.iter().map(|r| r.kind).collect();
    assert!(kinds.contains(&RemovedKind::DeltaDataFile), "{report}");
    assert!(kinds.contains(&RemovedKind::DeltaLogFile), "{report}");
    assert_eq!(report.checkpoint_delta_version, Some(2));
    assert!(!paths.version_dir(1).exists());
    assert!(!paths.version_dir(2).exists());

    // Kept versions read back identical, and verify finds nothing wrong.
    assert_eq!(
        version_numbers(&list_versions(&paths).await.unwrap()),
        [3, 4]
    );
    assert_eq!(samples_text(&data_dir, 3).await, kept_before[0]);
    assert_eq!(samples_text(&data_dir, 4).await, kept_before[1]);
    assert_eq!(shard_hashes(&paths, &[3, 4]), shards_before);
    let problems = paperclip::dataset::verify::verify_dataset(&paths)
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");

    // Expired versions fail with the reason, in SQL and in the library.
    for table in ["samples", "skips"] {
        let error = query_error(
            &data_dir,
            &format!(r#"SELECT count(*) FROM "{DATASET}".v1.{table}"#),
        )
        .await;
        assert!(
            error.contains(
                "version 1 of hst-paperclip was removed by retention (keep_last = 2); available: v3..v4"
            ),
            "{error}"
        );
    }
    let error = open_version(&paths, 2).await.unwrap_err().to_string();
    assert!(
        error.contains("version 2 of hst-paperclip was removed"),
        "{error}"
    );
    let error = paperclip::dataset::diff::resolve_version(&paths, "v2")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("available: v3..v4"), "{error}");

    // A second gc has nothing to do.
    let again = gc(&paths, None, false).await;
    assert!(again.is_noop(), "{again}");
    assert!(again.to_string().contains("nothing to remove"), "{again}");

    // Publishing continues with the next number, and Python's deltalake agrees.
    let mut config = paperclip::pipeline::config::load(&pipeline_path()).unwrap();
    config.selection.max_images_per_proposal = 1;
    let next = run_config(&config, &data_dir, url).await;
    assert_eq!(next.published_version, Some(5));
    assert_eq!(
        version_numbers(&list_versions(&paths).await.unwrap()),
        [3, 4, 5]
    );
    check_with_python(&data_dir);
}

/// SHA-256 of every shard file of the given versions.
fn shard_hashes(paths: &DatasetPaths, versions: &[u64]) -> Vec<(u64, String, String)> {
    let mut hashes = Vec::new();
    for &version in versions {
        let dir = paths.version_dir(version).join("shards");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            let (sha256, _) = paperclip::store::blobs::hash_file(&dir.join(&name)).unwrap();
            hashes.push((version, name.to_string_lossy().into_owned(), sha256));
        }
    }
    hashes
}

/// Runs `tests/python/check_dataset.py` when the project's virtual environment exists
/// and has the readers of `tests/python/requirements.txt` (`.ci/run` installs them).
fn check_with_python(data_dir: &Path) {
    let python = repo_root().join(".venv/bin/python");
    if !python.is_file() {
        eprintln!("skipping the Python check: {} not found", python.display());
        return;
    }
    let readers = std::process::Command::new(&python)
        .args(["-c", "import deltalake, webdataset"])
        .output()
        .unwrap();
    if !readers.status.success() {
        eprintln!(
            "skipping the Python check: install tests/python/requirements.txt into {}",
            python.display()
        );
        return;
    }
    let output = std::process::Command::new(python)
        .arg(repo_root().join("tests/python/check_dataset.py"))
        .arg(data_dir)
        .arg(DATASET)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Contents of the one shard of a directly published test version.
enum Shard {
    /// No shard file: the version verifies clean.
    None,
    Bytes(Vec<u8>),
    /// A hard link to the shard of an earlier version, as reused shards are.
    LinkTo(u64),
}

/// Publishes `version` with one row and one shard file, without running a pipeline.
async fn publish_direct(paths: &DatasetPaths, version: u64, created_at: &str, shard: Shard) {
    let staging = paths.staging_dir(&format!("test-{version}"));
    let shards = staging.join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    let shard_path = shards.join("train-00000.tar");
    match shard {
        Shard::None => {}
        Shard::Bytes(bytes) => std::fs::write(&shard_path, bytes).unwrap(),
        Shard::LinkTo(earlier) => std::fs::hard_link(
            paths.version_dir(earlier).join("shards/train-00000.tar"),
            &shard_path,
        )
        .unwrap(),
    }

    let record: VersionRecord = serde_json::from_value(serde_json::json!({
        "dataset": paths.name,
        "version": version,
        "created_at": created_at,
        "run_id": format!("test-{version}"),
        "pipeline_sha256": "",
        "fingerprint": format!("{version:064}"),
        "counts": {"samples": 1},
        "skips_by_reason": {},
        "shards": [],
    }))
    .unwrap();
    std::fs::write(
        staging.join("manifest.json"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();

    // The one row is also the version's skips file: verify only needs readable Parquet.
    let keys: ArrayRef = Arc::new(StringArray::from(vec![format!("k{version}")]));
    let batch = RecordBatch::try_from_iter([("key", keys)]).unwrap();
    let skips = std::fs::File::create(staging.join("skips.parquet")).unwrap();
    let mut writer =
        datafusion::parquet::arrow::ArrowWriter::try_new(skips, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    publish(paths, &staging, batch, &record).await.unwrap();
}

fn days_ago(days: i64) -> String {
    (Utc::now() - chrono::Duration::days(days)).to_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_hard_linked_shards() {
    let dir = tempfile::tempdir().unwrap();
    let paths = DatasetPaths::new(dir.path(), "linked");
    publish_direct(&paths, 1, &days_ago(30), Shard::Bytes(vec![1; 1000])).await;
    publish_direct(&paths, 2, &days_ago(20), Shard::Bytes(vec![2; 3000])).await;
    publish_direct(&paths, 3, &days_ago(10), Shard::LinkTo(2)).await;
    publish_direct(&paths, 4, &days_ago(0), Shard::LinkTo(3)).await;

    let metadata_bytes = |version: u64| -> u64 {
        ["manifest.json", "skips.parquet"]
            .iter()
            .map(|name| {
                let path = paths.version_dir(version).join(name);
                std::fs::metadata(path).unwrap().len()
            })
            .sum()
    };
    let (v1_metadata, v2_metadata) = (metadata_bytes(1), metadata_bytes(2));

    // keep_days = 15 keeps v3 and v4; v2's shard lives on as theirs.
    let policy = Some(RetentionPolicy {
        keep_last: None,
        keep_days: Some(15),
    });
    let report = gc(&paths, policy, false).await;
    assert_eq!(expired_numbers(&report), [1, 2]);
    let folders: Vec<(String, u64)> = report
        .removed
        .iter()
        .filter(|r| r.kind == RemovedKind::VersionFolder)
        .map(|r| (r.path.display().to_string(), r.bytes_freed))
        .collect();
    assert_eq!(
        folders,
        [
            ("versions/v1".to_string(), 1000 + v1_metadata),
            ("versions/v2".to_string(), v2_metadata)
        ]
    );
    for version in [3, 4] {
        let shard = paths.version_dir(version).join("shards/train-00000.tar");
        assert_eq!(std::fs::read(&shard).unwrap(), vec![2; 3000]);
    }
    assert!(report.to_string().contains("keep_days = 15"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_fails_while_dataset_locked() {
    let dir = tempfile::tempdir().unwrap();
    let paths = DatasetPaths::new(dir.path(), "locked");
    publish_direct(&paths, 1, &days_ago(1), Shard::Bytes(vec![1])).await;
    publish_direct(&paths, 2, &days_ago(0), Shard::Bytes(vec![2])).await;

    let lock = DatasetLock::acquire(&paths).unwrap();
    let options = GcOptions {
        dry_run: false,
        policy: keep_last(1),
        now: Utc::now(),
    };
    let error = collect_garbage(&paths, &options)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("dataset \"locked\" is locked"), "{error}");
    assert!(error.contains("wait for it to finish"), "{error}");
    assert!(paths.version_dir(1).exists(), "nothing removed");

    drop(lock);
    let report = gc(&paths, keep_last(1), false).await;
    assert_eq!(expired_numbers(&report), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_keep_last_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("p.toml");
    let sql_dir = format!("\"{}/", repo_root().join("sql").display());
    let text = std::fs::read_to_string(pipeline_path())
        .unwrap()
        .replace("\"../sql/", &sql_dir)
        .replace("[sql]", "[retention]\nkeep_last = 0\n\n[sql]");
    std::fs::write(&pipeline, text).unwrap();
    let message = paperclip::pipeline::config::load(&pipeline)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("retention.keep_last = 0 is invalid"),
        "{message}"
    );
    assert!(message.contains("use 1 or more"), "{message}");

    let paths = DatasetPaths::new(dir.path(), "zero");
    publish_direct(&paths, 1, &days_ago(0), Shard::Bytes(vec![1])).await;
    let options = GcOptions {
        dry_run: true,
        policy: keep_last(0),
        now: Utc::now(),
    };
    let error = collect_garbage(&paths, &options)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("--keep-last 0 is invalid"), "{error}");
}

/// Sets every log file's modification time back, so Delta's own log cleanup (30 days of
/// retention by default) treats them as expired.
fn age_log_files(log_dir: &Path, days: i64) {
    let then: DateTime<Utc> = Utc::now() - chrono::Duration::days(days);
    for entry in std::fs::read_dir(log_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(then.into()).unwrap();
        }
    }
}

/// Publishes 155 versions with a checkpoint every 10 Delta versions, then runs Delta's own
/// cleanup of month-old log entries, as a Delta tool run against the table would. Only the
/// versions from the last checkpoint on can be read, and no other version is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_log_versions_are_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path();
    let paths = DatasetPaths::new(data_dir, "long");
    for version in 1..=155u64 {
        publish_direct(&paths, version, &days_ago(0), Shard::None).await;
        if version % 10 == 0 {
            let table = open_version(&paths, version).await.unwrap();
            deltalake::checkpoints::create_checkpoint(&table, None)
                .await
                .unwrap();
        }
    }
    age_log_files(&paths.log_dir(), 31);
    let table = open_version(&paths, 155).await.unwrap();
    let removed = deltalake::checkpoints::cleanup_metadata(&table, None)
        .await
        .unwrap();
    assert!(removed > 100, "Delta removed {removed} log files");

    // Delta version 149 (dataset v150) has the newest checkpoint; older ones are gone.
    let listed = version_numbers(&list_versions(&paths).await.unwrap());
    assert_eq!(listed, (150..=155).collect::<Vec<_>>());
    assert_eq!(
        open_version(&paths, 150).await.unwrap().version(),
        Some(149)
    );
    let error = open_version(&paths, 149).await.unwrap_err().to_string();
    assert!(
        error.contains(
            "version 149 of long can no longer be read: its Delta log entries were removed"
        ),
        "{error}"
    );
    assert!(error.contains("available: v150..v155"), "{error}");
    let error = query_error(data_dir, r#"SELECT * FROM "long".v149.samples"#).await;
    assert!(error.contains("available: v150..v155"), "{error}");
    let rows = query(data_dir, r#"SELECT key FROM "long".v150.samples"#).await;
    assert!(rows.contains("k150"), "{rows}");
    let problems = paperclip::dataset::verify::verify_dataset(&paths)
        .await
        .unwrap();
    let folders = problems
        .iter()
        .filter(|p| p.item.starts_with("versions/"))
        .count();
    let data_files = problems
        .iter()
        .filter(|p| p.item.starts_with("samples/"))
        .count();
    assert_eq!((folders, data_files), (149, 149), "{problems:?}");
    assert!(
        problems
            .iter()
            .all(|p| p.detail.contains("datasets gc long")),
        "{problems:?}"
    );

    // gc removes what can no longer be read and applies keep_last = 3 to the rest.
    let report = gc(&paths, keep_last(3), false).await;
    assert_eq!(expired_numbers(&report), (1..=152).collect::<Vec<_>>());
    assert_eq!(report.kept_versions, [153, 154, 155]);
    assert_eq!(report.checkpoint_delta_version, Some(152));
    let listed = version_numbers(&list_versions(&paths).await.unwrap());
    assert_eq!(listed, [153, 154, 155]);
    let rows = query(data_dir, r#"SELECT key FROM "long".v153.samples"#).await;
    assert!(rows.contains("k153"), "{rows}");
    let error = query_error(data_dir, r#"SELECT * FROM "long".v151.samples"#).await;
    assert!(
        error.contains(
            "version 151 of long was removed by retention (keep_last = 3); available: v153..v155"
        ),
        "{error}"
    );
    let error = query_error(data_dir, r#"SELECT * FROM "long".v20.samples"#).await;
    assert!(
        error.contains("was removed by gc after its Delta log entries were removed"),
        "{error}"
    );
    let problems = paperclip::dataset::verify::verify_dataset(&paths)
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert!(gc(&paths, keep_last(3), false).await.is_noop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_command_plans_removes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let paths = DatasetPaths::new(dir.path(), "cli");
    for version in 1..=3 {
        publish_direct(&paths, version, &days_ago(0), Shard::Bytes(vec![1; 10])).await;
    }

    let args = [
        "--json",
        "datasets",
        "gc",
        "cli",
        "--keep-last",
        "1",
        "--dry-run",
    ];
    let dry_run = paperclip(dir.path(), &args);
    assert!(dry_run.status.success(), "{dry_run:?}");
    let plan: serde_json::Value = serde_json::from_slice(&dry_run.stdout).unwrap();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["policy_source"], "flags");
    assert_eq!(plan["kept_versions"], serde_json::json!([3]));
    assert!(paths.version_dir(1).exists());

    let run = paperclip(dir.path(), &["datasets", "gc", "cli", "--keep-last", "1"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{run:?}");
    assert!(stdout.contains("removed versions/v1"), "{stdout}");
    assert!(stdout.contains("freed"), "{stdout}");

    let show = paperclip(dir.path(), &["datasets", "show", "cli"]);
    let stdout = String::from_utf8_lossy(&show.stdout);
    assert!(stdout.contains("1 version(s)"), "{stdout}");
    assert!(
        stdout.contains("removed by retention (keep_last = 1)"),
        "{stdout}"
    );

    let sql = paperclip(dir.path(), &["sql", r#"SELECT * FROM "cli".v2.samples"#]);
    let stderr = String::from_utf8_lossy(&sql.stderr);
    assert_eq!(sql.status.code(), Some(1));
    assert!(
        stderr.contains("version 2 of cli was removed by retention (keep_last = 1); available: v3"),
        "{stderr}"
    );

    let zero = paperclip(dir.path(), &["datasets", "gc", "cli", "--keep-days", "0"]);
    let stderr = String::from_utf8_lossy(&zero.stderr);
    assert_eq!(zero.status.code(), Some(1));
    assert!(stderr.contains("--keep-days 0 is invalid"), "{stderr}");
}
