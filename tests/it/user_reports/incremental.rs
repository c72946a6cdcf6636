//! Incremental refresh and versions: a saved plan applied twice, and what one published
//! version costs.
//!
//! Half-open release windows, the retry of a failed window and time travel after Delta's
//! log cleanup are tested in `tests/it/refresh.rs` (`release_window_half_open_boundaries`,
//! `retry_covers_failed_window`) and `tests/it/gc.rs` (`lost_log_versions_are_not_listed`).

use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use paperclip::dataset::versions::{DatasetPaths, list_versions};
use paperclip::pipeline::state::ArchiveState;
use paperclip::train::synthetic::{ShapesSpec, publish_shapes};
use paperclip_archive::ServeOptions;

use crate::support::{pipeline_path, run_options, serve_snapshot};

const DATASET: &str = "hst-paperclip";

fn day(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// Lists the Delta commit files of a table's log, sorted.
fn commits(log_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(log_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    names
}

// https://github.com/SQLMesh/sqlmesh/issues/2985
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_plan_applied_twice_is_noop() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let snapshot = dir.path().join("snapshot");
    paperclip::snapshots::fixtures::build(&snapshot).unwrap();
    let server = serve_snapshot(&snapshot, ServeOptions::default()).await;
    let mut config = paperclip::pipeline::config::load(&pipeline_path()).unwrap();
    config.refresh.lookback_days = 3.0;
    config.refresh.full_refresh_every_days = 0.0;
    let day0 = day("2026-03-10T00:00:00Z");
    let at = |now, plan_only| {
        let mut options = run_options(&data_dir, server.base_url());
        options.now = Some(now);
        options.plan_only = plan_only;
        options
    };
    paperclip::pipeline::run(&config, &at(day0, false))
        .await
        .unwrap();
    let plan = paperclip::pipeline::run(&config, &at(day0 + Duration::days(1), true))
        .await
        .unwrap()
        .plan
        .unwrap();

    let mut apply = at(day0 + Duration::days(1), false);
    apply.saved_plan = Some(plan.clone());
    let first = paperclip::pipeline::run(&config, &apply).await.unwrap();
    assert_eq!(
        first.published_version, None,
        "the plan publishes nothing new"
    );
    let paths = DatasetPaths::new(&data_dir, DATASET);
    let state = ArchiveState::load(&paths).unwrap().id;

    let mut again = at(day0 + Duration::days(1) + Duration::hours(1), false);
    again.saved_plan = Some(plan);
    let second = paperclip::pipeline::run(&config, &again)
        .await
        .unwrap_or_else(|e| panic!("applying the plan again fails: {e}"));
    assert_eq!(second.published_version, None);
    assert!(
        second.refresh.as_ref().unwrap().queries_nothing(),
        "the plan's window was applied already: {:?}",
        second.refresh
    );
    let after_archive: Vec<&str> = second
        .stages
        .iter()
        .filter(|s| s.stage != "catalog" && s.stage != "archive")
        .map(|s| s.status.as_str())
        .collect();
    assert_eq!(
        after_archive,
        ["fresh", "fresh", "fresh"],
        "{:?}",
        second.stages
    );
    assert_eq!(ArchiveState::load(&paths).unwrap().id, state);
    assert_eq!(list_versions(&paths).await.unwrap().len(), 1);
}

// https://github.com/lance-format/lance/issues/2318
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_is_one_commit_any_size() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = DatasetPaths::new(dir.path(), "shapes").log_dir();
    for (run, train_samples) in [(1, 10), (2, 400), (3, 30)] {
        let spec = ShapesSpec {
            name: "shapes".to_string(),
            train_samples,
            val_samples: 0,
            image_px: 8,
            seed: run,
        };
        let version = publish_shapes(dir.path(), &spec).await.unwrap();
        assert_eq!(version, run);
        let names = commits(&log_dir);
        assert_eq!(names.len(), run as usize, "{names:?}");
        let last = std::fs::read_to_string(log_dir.join(names.last().unwrap())).unwrap();
        let adds = last.lines().filter(|l| l.starts_with("{\"add\"")).count();
        assert_eq!(adds, 1, "one data file per version, not per row:\n{last}");
    }
    let versions = list_versions(&DatasetPaths::new(dir.path(), "shapes"))
        .await
        .unwrap();
    let rows: Vec<u64> = versions.iter().map(|v| v.counts["samples"]).collect();
    assert_eq!(rows, [10, 400, 30]);
}
