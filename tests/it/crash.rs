//! Crash safety: a run killed with SIGKILL at arbitrary points, then run again, publishes
//! exactly what an uninterrupted run publishes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paperclip::dataset::versions::{DatasetPaths, list_versions};
use paperclip_archive::server::ServeOptions;

use crate::support::{pipeline_path, query, serve_snapshot};

const KILLS: u64 = 50;

fn run_command(data_dir: &std::path::Path, archive: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_paperclip"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .arg("run")
        .arg(pipeline_path())
        .arg("--archive")
        .arg(archive)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Deterministic kill delays spread over the run's duration (splitmix64).
fn delays_ms(count: u64, max_ms: u64) -> Vec<u64> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % max_ms.max(1)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runs_publish_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot_dir = dir.path().join("snapshot");
    paperclip::snapshots::fixtures::build(&snapshot_dir).unwrap();
    // Latency stretches the run so the kills land in every stage.
    let slow = ServeOptions {
        latency_ms: 15,
        ..ServeOptions::default()
    };
    let server = serve_snapshot(&snapshot_dir, slow).await;
    let archive = server.base_url().to_string();

    let reference_dir = dir.path().join("reference");
    let started = Instant::now();
    let status = run_command(&reference_dir, &archive).status().unwrap();
    assert!(status.success());
    let run_ms = started.elapsed().as_millis() as u64;
    let reference = list_versions(&DatasetPaths::new(&reference_dir, "hst-paperclip"))
        .await
        .unwrap();

    // Rounds: kills land on one data directory until a run manages to publish; that
    // version is checked and the next round starts from an empty directory, so every kill
    // interrupts a run that still has work to do.
    let mut round = 0;
    let mut crash_dir = dir.path().join("crashed-0");
    let (mut before_publish, mut after_publish, mut finished) = (0, 0, 0);
    for delay_ms in delays_ms(KILLS, run_ms) {
        let mut child = run_command(&crash_dir, &archive).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        if child.try_wait().unwrap().is_some() {
            finished += 1;
        } else {
            let _ = child.kill();
            let _ = child.wait();
            before_publish += 1;
        }
        let paths = DatasetPaths::new(&crash_dir, "hst-paperclip");
        if !list_versions(&paths).await.unwrap().is_empty() {
            after_publish += 1;
            assert_matches_reference(&crash_dir, &reference).await;
            round += 1;
            crash_dir = dir.path().join(format!("crashed-{round}"));
        }
    }
    // Reported for the benchmark notes; `cargo test -- --nocapture` shows it.
    eprintln!(
        "reference run {run_ms} ms; {KILLS} kills: {before_publish} killed a running run, {finished} came after the run had exited; {after_publish} rounds reached a published version"
    );

    let status = run_command(&crash_dir, &archive).status().unwrap();
    assert!(status.success(), "the run after the last kill completes");
    assert_matches_reference(&crash_dir, &reference).await;
    assert!(
        before_publish >= KILLS / 2,
        "most kills must interrupt a run"
    );
}

/// Checks that a data directory holds exactly the reference version.
async fn assert_matches_reference(
    data_dir: &std::path::Path,
    reference: &[paperclip::dataset::versions::VersionRecord],
) {
    let paths = DatasetPaths::new(data_dir, "hst-paperclip");
    let versions = list_versions(&paths).await.unwrap();
    assert_eq!(
        versions.len(),
        1,
        "equal input publishes one version however often it is killed"
    );
    assert_eq!(versions[0].fingerprint, reference[0].fingerprint);
    let shards: Vec<_> = versions[0]
        .shards
        .iter()
        .map(|s| (&s.name, &s.sha256))
        .collect();
    let reference_shards: Vec<_> = reference[0]
        .shards
        .iter()
        .map(|s| (&s.name, &s.sha256))
        .collect();
    assert_eq!(shards, reference_shards);
    assert!(
        paperclip::dataset::verify::verify_dataset(&paths)
            .await
            .unwrap()
            .is_empty()
    );

    let keys = query(
        data_dir,
        r#"SELECT count(*) AS n, count(DISTINCT key) AS k FROM "hst-paperclip".latest.samples"#,
    )
    .await;
    assert!(keys.contains("| 7 | 7 |"), "{keys}");
}
