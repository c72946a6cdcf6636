//! Incremental refresh: release windows with an injected clock, new and withdrawn
//! proposals, retries after a failed run, and shard reuse between versions.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use paperclip::dataset::versions::{DatasetPaths, list_versions};
use paperclip::pipeline::refresh::mjd;
use paperclip::pipeline::state::ArchiveState;
use paperclip::pipeline::{PipelineConfig, RunReport};
use paperclip_archive::{RunningServer, ServeOptions};
use serde_json::{Value, json};

use crate::support::{pipeline_path, query, run_options, serve_snapshot};

const DATASET: &str = "hst-paperclip";

/// A fixture snapshot that tests edit between runs; each run serves its current files.
pub(crate) struct Archive {
    pub(crate) dir: PathBuf,
}

impl Archive {
    pub(crate) fn new(root: &Path) -> Self {
        let dir = root.join("snapshot");
        paperclip::snapshots::fixtures::build(&dir).unwrap();
        Self { dir }
    }

    pub(crate) async fn serve(&self, options: ServeOptions) -> RunningServer {
        serve_snapshot(&self.dir, options).await
    }

    /// Adds an observation of `proposal_id` released at `released`, without products.
    pub(crate) fn add_observation(&self, obsid: u64, proposal_id: u32, released: DateTime<Utc>) {
        let path = self.dir.join("caom/observations/rows-000000.json");
        let mut envelope: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let rows = envelope["data"].as_array_mut().unwrap();
        let mut row = rows[0].clone();
        row["obsid"] = json!(obsid);
        row["obs_id"] = json!(format!("late{obsid}"));
        row["proposal_id"] = json!(proposal_id.to_string());
        row["t_obs_release"] = json!(mjd(released));
        rows.push(row);
        std::fs::write(&path, serde_json::to_vec(&envelope).unwrap()).unwrap();
    }

    /// Removes a proposal's record from the catalog, keeping every other byte (one PI
    /// name is Latin-1).
    pub(crate) fn withdraw_proposal(&self, proposal_id: u32) {
        let path = self.dir.join("catalog/abstracts.cat");
        let latin1: String = std::fs::read(&path)
            .unwrap()
            .into_iter()
            .map(char::from)
            .collect();
        let rule = "-".repeat(80);
        let kept: Vec<&str> = latin1
            .split(&rule)
            .filter(|record| !record.contains(&format!("ID: {proposal_id}\n")))
            .collect();
        let bytes: Vec<u8> = kept.join(&rule).chars().map(|c| c as u8).collect();
        std::fs::write(&path, bytes).unwrap();
    }
}

pub(crate) fn config(lookback_days: f64) -> PipelineConfig {
    let mut config = paperclip::pipeline::config::load(&pipeline_path()).unwrap();
    config.refresh.lookback_days = lookback_days;
    config.refresh.full_refresh_every_days = 0.0;
    config
}

pub(crate) async fn run_at(
    config: &PipelineConfig,
    data_dir: &Path,
    server: &RunningServer,
    now: DateTime<Utc>,
) -> Result<RunReport, paperclip::error::PipelineError> {
    let mut options = run_options(data_dir, server.base_url());
    options.now = Some(now);
    paperclip::pipeline::run(config, &options).await
}

fn day(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn state(data_dir: &Path) -> ArchiveState {
    ArchiveState::load(&DatasetPaths::new(data_dir, DATASET)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_window_half_open_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = Archive::new(dir.path());
    let config = config(0.0);
    let day0 = day("2026-03-01T00:00:00Z");

    let server = archive.serve(ServeOptions::default()).await;
    let first = run_at(&config, &data_dir, &server, day0).await.unwrap();
    assert!(first.refresh.as_ref().unwrap().full);
    drop(server);

    // One row a second before midnight, one exactly at midnight.
    archive.add_observation(
        9_000_000_001,
        90002,
        day0 + Duration::days(1) - Duration::seconds(1),
    );
    archive.add_observation(9_000_000_002, 90002, day0 + Duration::days(1));
    let server = archive.serve(ServeOptions::default()).await;

    let second = run_at(&config, &data_dir, &server, day0 + Duration::days(1))
        .await
        .unwrap();
    let window = second.refresh.as_ref().unwrap().window.unwrap();
    assert_eq!(window, (mjd(day0), mjd(day0 + Duration::days(1))));
    assert_eq!(second.counts["observations_in_window"], 1);

    let third = run_at(&config, &data_dir, &server, day0 + Duration::days(2))
        .await
        .unwrap();
    assert_eq!(third.counts["observations_in_window"], 1);

    let intervals = state(&data_dir).coverage.intervals;
    let released: Vec<(f64, f64, u64)> = intervals
        .iter()
        .filter(|i| i.kind == "released")
        .map(|i| (i.start_mjd.unwrap(), i.end_mjd, i.observations))
        .collect();
    assert_eq!(
        released,
        [
            (mjd(day0), mjd(day0 + Duration::days(1)), 1),
            (
                mjd(day0 + Duration::days(1)),
                mjd(day0 + Duration::days(2)),
                1
            ),
        ]
    );
    assert_eq!(state(&data_dir).observations.num_rows(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_same_instant_is_noop() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = Archive::new(dir.path());
    let config = config(7.0);
    let now = day("2026-03-01T00:00:00Z");
    let server = archive.serve(ServeOptions::default()).await;
    run_at(&config, &data_dir, &server, now).await.unwrap();

    let again = run_at(&config, &data_dir, &server, now).await.unwrap();
    assert!(again.refresh.as_ref().unwrap().queries_nothing());
    assert_eq!(again.archive_requests, 1, "only the catalog is read");
    assert_eq!(again.unchanged_version, Some(1));
    assert!(
        again.stages.iter().skip(1).all(|s| s.status == "fresh"),
        "{:?}",
        again.stages
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_back_picks_up_late_row() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = Archive::new(dir.path());
    let config = config(3.0);
    let day0 = day("2026-03-10T00:00:00Z");
    let server = archive.serve(ServeOptions::default()).await;
    run_at(&config, &data_dir, &server, day0).await.unwrap();
    drop(server);

    // Released two days before the last run, but listed by the archive only now.
    archive.add_observation(9_000_000_003, 90001, day0 - Duration::days(2));
    let server = archive.serve(ServeOptions::default()).await;
    let next = run_at(&config, &data_dir, &server, day0 + Duration::hours(6))
        .await
        .unwrap();
    assert_eq!(next.counts["observations_in_window"], 1);
    assert_eq!(state(&data_dir).observations.num_rows(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_covers_failed_window() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = Archive::new(dir.path());
    let mut config = config(0.0);
    config.archive.max_retries = 0;
    let last_success = day("2026-03-07T00:00:00Z");
    let server = archive.serve(ServeOptions::default()).await;
    run_at(&config, &data_dir, &server, last_success)
        .await
        .unwrap();
    drop(server);

    let failing = ServeOptions {
        fail_first_n: 1_000,
        fail_status: 503,
        ..ServeOptions::default()
    };
    let server = archive.serve(failing).await;
    let failed_day = last_success + Duration::days(3);
    assert!(
        run_at(&config, &data_dir, &server, failed_day)
            .await
            .is_err()
    );
    drop(server);
    assert_eq!(
        state(&data_dir).coverage.released_before_mjd,
        Some(mjd(last_success)),
        "a failed run commits no coverage"
    );

    let server = archive.serve(ServeOptions::default()).await;
    let retry_day = failed_day + Duration::days(4);
    let retry = run_at(&config, &data_dir, &server, retry_day)
        .await
        .unwrap();
    assert_eq!(
        retry.refresh.unwrap().window,
        Some((mjd(last_success), mjd(retry_day)))
    );
    let runs = query(
        &data_dir,
        "SELECT count(*) AS failed FROM paperclip.runs WHERE error IS NOT NULL",
    )
    .await;
    assert!(runs.contains("| 1      |"), "{runs}");
    let failed = query(
        &data_dir,
        "SELECT stage, status FROM paperclip.stages WHERE status = 'failed'",
    )
    .await;
    assert!(failed.contains("| catalog | failed |"), "{failed}");
}

/// Publishes v1 with one sample per shard on 2026-03-01; returns the data folder, the
/// archive, the config and that day.
async fn first_version_one_sample_per_shard(
    root: &Path,
) -> (PathBuf, Archive, PipelineConfig, DateTime<Utc>) {
    let data_dir = root.join("data");
    let archive = Archive::new(root);
    let mut config = config(7.0);
    config.shards.samples_per_shard = 1;
    let day0 = day("2026-03-01T00:00:00Z");
    let server = archive.serve(ServeOptions::default()).await;
    run_at(&config, &data_dir, &server, day0).await.unwrap();
    (data_dir, archive, config, day0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_proposal_recorded_in_skips() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, archive, config, day0) = first_version_one_sample_per_shard(dir.path()).await;

    archive.withdraw_proposal(90002);
    let server = archive.serve(ServeOptions::default()).await;
    let second = run_at(&config, &data_dir, &server, day0 + Duration::days(1))
        .await
        .unwrap();
    // The products of 90004 were not queried again, yet their quarantined row is still
    // reported in the new version.
    assert_eq!(
        second.skipped_by_reason.get("products/parent_obsid_zero"),
        Some(&1)
    );
    assert_eq!(second.published_version, Some(2));
    assert_eq!(second.counts["proposals_withdrawn"], 1);

    let remaining = query(
        &data_dir,
        r#"SELECT count(*) AS n FROM "hst-paperclip".v2.samples WHERE proposal_id = 90002"#,
    )
    .await;
    assert!(remaining.contains("| 0 |"), "{remaining}");
    let reasons = query(
        &data_dir,
        r#"SELECT reason FROM "hst-paperclip".v2.skips WHERE proposal_id = 90002"#,
    )
    .await;
    assert!(reasons.contains("withdrawn_from_catalog"), "{reasons}");

    // One sample per shard: every shard whose sample stayed is the same file as in v1.
    let paths = DatasetPaths::new(&data_dir, DATASET);
    let versions = list_versions(&paths).await.unwrap();
    let reused: Vec<_> = versions[1]
        .shards
        .iter()
        .filter(|s| s.reused_from == Some(1))
        .collect();
    let removed = versions[0].shards.len() - versions[1].shards.len();
    assert!(removed > 0);
    assert_eq!(reused.len(), versions[1].shards.len());
    for shard in reused {
        assert_same_file(
            &paths.version_dir(1).join("shards").join(&shard.name),
            &paths.version_dir(2).join("shards").join(&shard.name),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_refresh_notices_observations_the_archive_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = Archive::new(dir.path());
    let config = config(7.0);
    let day0 = day("2026-03-01T00:00:00Z");
    let server = archive.serve(ServeOptions::default()).await;
    run_at(&config, &data_dir, &server, day0).await.unwrap();
    drop(server);

    let path = archive.dir.join("caom/observations/rows-000000.json");
    let mut envelope: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    envelope["data"]
        .as_array_mut()
        .unwrap()
        .retain(|row| row["obs_id"] != "fx9d01020");
    std::fs::write(&path, serde_json::to_vec(&envelope).unwrap()).unwrap();

    let server = archive.serve(ServeOptions::default()).await;
    let incremental = run_at(&config, &data_dir, &server, day0 + Duration::days(1))
        .await
        .unwrap();
    assert_eq!(
        state(&data_dir).observations.num_rows(),
        8,
        "not noticed yet"
    );
    assert!(
        !incremental
            .skipped_by_reason
            .contains_key("archive/withdrawn_from_archive")
    );

    let mut options = run_options(&data_dir, server.base_url());
    options.now = Some(day0 + Duration::days(2));
    options.full_refresh = true;
    let full = paperclip::pipeline::run(&config, &options).await.unwrap();
    assert_eq!(
        full.skipped_by_reason.get("archive/withdrawn_from_archive"),
        Some(&1)
    );
    assert_eq!(state(&data_dir).observations.num_rows(), 7);
}

#[cfg(unix)]
fn assert_same_file(a: &Path, b: &Path) {
    use std::os::unix::fs::MetadataExt;
    let (a_meta, b_meta) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
    assert_eq!((a_meta.dev(), a_meta.ino()), (b_meta.dev(), b_meta.ino()));
}

#[cfg(not(unix))]
fn assert_same_file(a: &Path, b: &Path) {
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_plan_runs_or_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = Archive::new(dir.path());
    let config = config(3.0);
    let day0 = day("2026-03-10T00:00:00Z");
    let server = archive.serve(ServeOptions::default()).await;
    run_at(&config, &data_dir, &server, day0).await.unwrap();

    let plan_at = |now| {
        let mut options = run_options(&data_dir, server.base_url());
        options.plan_only = true;
        options.now = Some(now);
        options
    };
    let planned = paperclip::pipeline::run(&config, &plan_at(day0 + Duration::days(1)))
        .await
        .unwrap()
        .plan
        .unwrap();
    assert_eq!(planned.basis.base_version, Some(1));

    // Unchanged inputs: the saved plan runs, with the plan's release window.
    let mut options = run_options(&data_dir, server.base_url());
    options.saved_plan = Some(planned.clone());
    let report = paperclip::pipeline::run(&config, &options).await.unwrap();
    assert_eq!(
        report.refresh.unwrap().window.unwrap().1,
        mjd(day0 + Duration::days(1))
    );
    let second_plan = paperclip::pipeline::run(&config, &plan_at(day0 + Duration::days(2)))
        .await
        .unwrap()
        .plan
        .unwrap();
    drop(server);

    // A late row appears after planning: the run refuses and names what changed.
    archive.add_observation(9_000_000_004, 90001, day0);
    let server = archive.serve(ServeOptions::default()).await;
    let state_before = state(&data_dir).id;
    let mut options = run_options(&data_dir, server.base_url());
    options.saved_plan = Some(second_plan);
    let error = paperclip::pipeline::run(&config, &options)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("models: archive_state changed since the plan"),
        "{error}"
    );
    assert_eq!(
        state(&data_dir).id,
        state_before,
        "a refused plan commits nothing"
    );
    assert_eq!(
        list_versions(&DatasetPaths::new(&data_dir, DATASET))
            .await
            .unwrap()
            .len(),
        1
    );

    // A plan whose time is days after the clock (edited, or made on a fast clock).
    let mut ahead = planned;
    ahead.basis.now = chrono::Utc::now() + Duration::days(3);
    let mut options = run_options(&data_dir, server.base_url());
    options.saved_plan = Some(ahead);
    let error = paperclip::pipeline::run(&config, &options)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("is more than a day after this machine's clock"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_state_rebuilt_by_full_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = Archive::new(dir.path());
    let config = config(7.0);
    let day0 = day("2026-03-01T00:00:00Z");
    let server = archive.serve(ServeOptions::default()).await;
    run_at(&config, &data_dir, &server, day0).await.unwrap();
    let state_dir = DatasetPaths::new(&data_dir, DATASET).root.join("state");
    let good_id = state(&data_dir).id.unwrap();

    std::fs::write(state_dir.join("CURRENT"), "../../elsewhere").unwrap();
    let error = run_at(&config, &data_dir, &server, day0 + Duration::days(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("CURRENT") && error.contains("--full-refresh"),
        "{error}"
    );
    assert!(
        state_dir.join(&good_id).is_dir(),
        "a damaged pointer costs no folder"
    );

    std::fs::write(state_dir.join("CURRENT"), &good_id).unwrap();
    std::fs::write(
        state_dir.join(&good_id).join("observations.parquet"),
        "junk",
    )
    .unwrap();
    let error = run_at(&config, &data_dir, &server, day0 + Duration::days(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("observations.parquet"), "{error}");

    let mut options = run_options(&data_dir, server.base_url());
    options.now = Some(day0 + Duration::days(1));
    options.full_refresh = true;
    let rebuilt = paperclip::pipeline::run(&config, &options).await.unwrap();
    assert_eq!(rebuilt.counts["archive_state_rebuilt"], 1);
    assert_eq!(rebuilt.unchanged_version, Some(1));
    assert_eq!(state(&data_dir).observations.num_rows(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_that_give_the_same_samples_are_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = Archive::new(dir.path());
    let mut config = config(7.0);
    let now = day("2026-03-01T00:00:00Z");
    let server = archive.serve(ServeOptions::default()).await;
    run_at(&config, &data_dir, &server, now).await.unwrap();

    // A comment in a model changes its hash but not its samples.
    let sql_dir = dir.path().join("sql");
    std::fs::create_dir_all(&sql_dir).unwrap();
    let original = config.clone();
    for model in &mut config.sql.models {
        let source = original.resolve(model);
        let copy = sql_dir.join(source.file_name().unwrap());
        let text = std::fs::read_to_string(&source).unwrap();
        std::fs::write(&copy, format!("{text}\n-- a comment\n")).unwrap();
        *model = copy;
    }
    let first = run_at(&config, &data_dir, &server, now).await.unwrap();
    assert_eq!(first.unchanged_version, Some(1));
    assert!(
        first
            .stages
            .iter()
            .any(|s| s.stage == "models" && s.status == "ran")
    );

    let second = run_at(&config, &data_dir, &server, now).await.unwrap();
    let models = second.stages.iter().find(|s| s.stage == "models").unwrap();
    assert_eq!(models.status, "fresh", "{:?}", second.stages);

    // A new shard size alone publishes the same samples in a new layout, and the plan
    // reports it.
    config.shards.samples_per_shard = 2;
    let mut options = run_options(&data_dir, server.base_url());
    options.now = Some(now);
    options.plan_only = true;
    let plan = paperclip::pipeline::run(&config, &options)
        .await
        .unwrap()
        .plan
        .unwrap();
    assert_eq!(plan.would_publish_version, Some(2), "{}", plan.summary);
    let published = run_at(&config, &data_dir, &server, now).await.unwrap();
    assert_eq!(published.published_version, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_shards_rewritten_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, archive, config, day0) = first_version_one_sample_per_shard(dir.path()).await;

    // One shard changed in place (same size), one deleted.
    let paths = DatasetPaths::new(&data_dir, DATASET);
    let v1 = &list_versions(&paths).await.unwrap()[0];
    let shard_dir = paths.version_dir(1).join("shards");
    let (damaged, missing) = (&v1.shards[0].name, &v1.shards[1].name);
    let mut bytes = std::fs::read(shard_dir.join(damaged)).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(shard_dir.join(damaged), bytes).unwrap();
    std::fs::remove_file(shard_dir.join(missing)).unwrap();

    archive.withdraw_proposal(90002);
    let server = archive.serve(ServeOptions::default()).await;
    let second = run_at(&config, &data_dir, &server, day0 + Duration::days(1))
        .await
        .unwrap();
    assert_eq!(second.published_version, Some(2));

    let v2 = &list_versions(&paths).await.unwrap()[1];
    for name in [damaged, missing] {
        let shard = v2.shards.iter().find(|s| &s.name == name).unwrap();
        assert_eq!(shard.reused_from, None, "{name} was reused");
    }
    let problems = paperclip::dataset::verify::verify_dataset(&paths)
        .await
        .unwrap();
    let in_v2: Vec<String> = problems
        .iter()
        .filter(|p| p.version == 2)
        .map(ToString::to_string)
        .collect();
    assert!(in_v2.is_empty(), "{in_v2:?}");
    // v1 is still damaged, and verify reports it.
    assert!(problems.iter().any(|p| p.version == 1), "{problems:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplannable_model_run_recorded_failed() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = Archive::new(dir.path());
    let mut config = config(7.0);
    let samples = config
        .sql
        .models
        .iter_mut()
        .find(|p| p.ends_with("samples.sql"))
        .unwrap();
    let broken = dir.path().join("samples.sql");
    let pipeline_dir = pipeline_path().parent().unwrap().to_path_buf();
    let text = std::fs::read_to_string(pipeline_dir.join(&*samples)).unwrap();
    std::fs::write(&broken, text.replace("r.image_rule,", "r.image_rul,")).unwrap();
    *samples = broken;

    let server = archive.serve(ServeOptions::default()).await;
    let error = run_at(&config, &data_dir, &server, day("2026-03-01T00:00:00Z"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("image_rul"), "{error}");

    let runs = paperclip::runs::list_runs(&data_dir, Some(DATASET)).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, "failed");
    assert!(runs[0].error.as_deref().unwrap().contains("image_rul"));
    let table = query(
        &data_dir,
        "SELECT status, error IS NOT NULL AS has_error FROM paperclip.runs",
    )
    .await;
    assert!(table.contains("| failed | true      |"), "{table}");
}
