//! Clock jumps. Runs take their time from `RunOptions::now` and the scheduler from its
//! `Clock`, so these tests move time backwards and forwards between runs and during the
//! scheduler's life. Versions keep their order and stay readable, and release windows
//! neither skip nor repeat an observation. The scheduler runs a missed due time once and
//! a finished one never again.
//!
//! The last section runs the pipeline against downloads that are cut in the middle of
//! the body or declare a wrong `Content-Length`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use futures::future::BoxFuture;
use paperclip::dataset::versions::{DatasetPaths, list_versions};
use paperclip::pipeline::config::ScheduleSection;
use paperclip::pipeline::refresh::mjd;
use paperclip::pipeline::state::ArchiveState;
use paperclip::pipeline::{PipelineConfig, RunReport};
use paperclip::schedule::{
    Clock, Event, EventKind, ManualClock, RunOutcome, RunSettings, ScheduleError,
    ScheduledPipeline, Scheduler,
};
use paperclip_archive::{RunningServer, ServeOptions};
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, error::TryRecvError};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::refresh::{Archive, config, run_at};
use crate::support::{pipeline_path, query, run_options, serve_snapshot};

const DATASET: &str = "hst-paperclip";

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// Returns the data URIs of the archive's files with their sizes.
fn file_sizes(archive: &Archive) -> BTreeMap<String, u64> {
    let root = archive.dir.join("files");
    let mut sizes = BTreeMap::new();
    let mut folders = vec![root.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                let relative = path.strip_prefix(&root).unwrap().to_str().unwrap();
                let size = std::fs::metadata(&path).unwrap().len();
                sizes.insert(format!("mast:{relative}"), size);
            }
        }
    }
    sizes
}

fn state(data_dir: &Path) -> ArchiveState {
    ArchiveState::load(&DatasetPaths::new(data_dir, DATASET)).unwrap()
}

fn window(report: &RunReport) -> Option<(f64, f64)> {
    report.refresh.as_ref().unwrap().window
}

/// Observation ids of the archive state; panics on a repeated id.
fn state_obsids(data_dir: &Path) -> HashSet<i64> {
    let observations = state(data_dir).observations;
    let obsids = paperclip::sql::int64_column(&observations, "state", "obsid").unwrap();
    let unique: HashSet<i64> = obsids.iter().flatten().collect();
    assert_eq!(
        unique.len(),
        observations.num_rows(),
        "an obsid is repeated"
    );
    unique
}

/// Runs a query that returns one integer.
async fn scalar(data_dir: &Path, sql: &str) -> i64 {
    let ctx = paperclip::sql::new_session();
    paperclip::dataset::catalog::register_datasets(&ctx, data_dir)
        .await
        .unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let batch = &batches[0];
    assert_eq!(batch.num_rows(), 1, "{sql}");
    paperclip::sql::int64_column(batch, "query", batch.schema().field(0).name())
        .unwrap()
        .value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_back_run_publishes_next_version() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = Archive::new(dir.path());
    let config = config(7.0);
    let day0 = at("2026-03-10T00:00:00Z");
    let server = archive.serve(ServeOptions::default()).await;
    let first = run_at(&config, &data_dir, &server, day0).await.unwrap();
    assert_eq!(first.published_version, Some(1));
    drop(server);

    // The clock is a day behind the first run, and the catalog lost a proposal.
    archive.withdraw_proposal(90002);
    let server = archive.serve(ServeOptions::default()).await;
    let back = run_at(&config, &data_dir, &server, day0 - Duration::days(1))
        .await
        .unwrap();
    assert_eq!(back.published_version, Some(2));
    assert_eq!(
        window(&back),
        None,
        "no release date is newer than the state"
    );
    assert_eq!(
        state(&data_dir).coverage.released_before_mjd,
        Some(mjd(day0)),
        "the coverage does not move back with the clock"
    );

    let paths = DatasetPaths::new(&data_dir, DATASET);
    let versions: Vec<u64> = list_versions(&paths)
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(versions, [1, 2]);
    let samples = first.counts["samples"] as i64;
    let remaining = back.counts["samples"] as i64;
    assert!(remaining < samples);
    let of_90002 = |version: &str| {
        format!(
            r#"SELECT count(*) FROM "hst-paperclip".{version}.samples WHERE proposal_id = 90002"#
        )
    };
    let all = |version: &str| format!(r#"SELECT count(*) FROM "hst-paperclip".{version}.samples"#);
    assert_eq!(scalar(&data_dir, &all("v1")).await, samples);
    assert_eq!(
        scalar(&data_dir, &of_90002("v1")).await,
        samples - remaining
    );
    assert_eq!(scalar(&data_dir, &all("v2")).await, remaining);
    assert_eq!(scalar(&data_dir, &of_90002("v2")).await, 0);
    assert_eq!(scalar(&data_dir, &all("latest")).await, remaining);
    let problems = paperclip::dataset::verify::verify_dataset(&paths)
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");

    // Back on time: the window starts where the first run's coverage ended.
    let next = run_at(&config, &data_dir, &server, day0 + Duration::days(1))
        .await
        .unwrap();
    assert_eq!(
        window(&next),
        Some((mjd(day0) - 7.0, mjd(day0 + Duration::days(1))))
    );
    assert_eq!(next.unchanged_version, Some(2));
    let runs = paperclip::runs::list_runs(&data_dir, Some(DATASET)).unwrap();
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(runs.iter().all(|run| run.error.is_none()), "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_contiguous_across_backward_jump() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = Archive::new(dir.path());
    let config = config(0.0);
    let day0 = at("2026-03-01T00:00:00Z");
    let server = archive.serve(ServeOptions::default()).await;
    run_at(&config, &data_dir, &server, day0).await.unwrap();
    drop(server);

    let early = 9_000_000_101;
    archive.add_observation(early, 90002, day0 + Duration::hours(12));
    let server = archive.serve(ServeOptions::default()).await;
    let second = run_at(&config, &data_dir, &server, day0 + Duration::days(1))
        .await
        .unwrap();
    assert_eq!(second.counts["observations_in_window"], 1);
    drop(server);

    // Twelve hours back: nothing is newer than the coverage, so nothing is queried.
    let late = 9_000_000_102;
    archive.add_observation(late, 90002, day0 + Duration::hours(30));
    let server = archive.serve(ServeOptions::default()).await;
    let back = run_at(&config, &data_dir, &server, day0 + Duration::hours(12))
        .await
        .unwrap();
    assert_eq!(window(&back), None);
    assert_eq!(back.counts.get("observations_in_window"), None);
    assert_eq!(back.unchanged_version, Some(1));

    let third = run_at(&config, &data_dir, &server, day0 + Duration::days(2))
        .await
        .unwrap();
    assert_eq!(
        window(&third),
        Some((mjd(day0 + Duration::days(1)), mjd(day0 + Duration::days(2))))
    );
    assert_eq!(
        third.counts["observations_in_window"], 1,
        "the early row is not counted again"
    );

    let released: Vec<(f64, f64, u64)> = state(&data_dir)
        .coverage
        .intervals
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
    let obsids = state_obsids(&data_dir);
    assert_eq!(obsids.len(), 10);
    assert!(obsids.contains(&(early as i64)));
    assert!(obsids.contains(&(late as i64)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrected_clock_needs_full_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = Archive::new(dir.path());
    let config = config(0.0);
    let day0 = at("2026-03-01T00:00:00Z");
    let server = archive.serve(ServeOptions::default()).await;
    run_at(&config, &data_dir, &server, day0).await.unwrap();

    // The clock runs 40 days ahead for one run, then is corrected.
    let ahead = run_at(&config, &data_dir, &server, day0 + Duration::days(40))
        .await
        .unwrap();
    assert_eq!(
        window(&ahead),
        Some((mjd(day0), mjd(day0 + Duration::days(40))))
    );
    let state_before = state(&data_dir).id;
    let corrected = day0 + Duration::days(1);
    let error = run_at(&config, &data_dir, &server, corrected)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("the clock moved back"), "{error}");
    assert!(error.contains("2026-04-10T00:00:00Z"), "{error}");
    assert!(error.contains("2026-03-02T00:00:00Z"), "{error}");
    assert!(error.contains("--full-refresh"), "{error}");
    assert_eq!(
        state(&data_dir).id,
        state_before,
        "a refused run commits nothing"
    );
    let failed = paperclip::runs::list_runs(&data_dir, Some(DATASET)).unwrap();
    assert_eq!(failed[0].status, "failed", "{failed:?}");

    let mut options = run_options(&data_dir, server.base_url());
    options.now = Some(corrected);
    options.full_refresh = true;
    let full = paperclip::pipeline::run(&config, &options).await.unwrap();
    assert_eq!(full.unchanged_version, Some(1));
    assert_eq!(
        state(&data_dir).coverage.released_before_mjd,
        Some(mjd(corrected))
    );
    drop(server);

    // Incremental again: a row released after the correction is found once.
    let row = 9_000_000_201;
    archive.add_observation(row, 90001, corrected + Duration::hours(6));
    let server = archive.serve(ServeOptions::default()).await;
    let next = run_at(&config, &data_dir, &server, corrected + Duration::days(1))
        .await
        .unwrap();
    assert_eq!(
        window(&next),
        Some((mjd(corrected), mjd(corrected + Duration::days(1))))
    );
    assert_eq!(next.counts["observations_in_window"], 1);
    assert!(state_obsids(&data_dir).contains(&(row as i64)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skew_under_a_day_covered_by_look_back() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = Archive::new(dir.path());
    let config = config(3.0);
    let day0 = at("2026-03-01T00:00:00Z");
    let server = archive.serve(ServeOptions::default()).await;
    run_at(&config, &data_dir, &server, day0).await.unwrap();
    run_at(&config, &data_dir, &server, day0 + Duration::hours(20))
        .await
        .unwrap();
    drop(server);

    // Released two hours after the first run by the true clock, listed only now.
    let row = 9_000_000_301;
    archive.add_observation(row, 90001, day0 + Duration::hours(2));
    let server = archive.serve(ServeOptions::default()).await;
    let corrected = run_at(&config, &data_dir, &server, day0 + Duration::hours(3))
        .await
        .unwrap();
    assert_eq!(window(&corrected), None, "within the clock skew tolerance");
    let next = run_at(&config, &data_dir, &server, day0 + Duration::hours(27))
        .await
        .unwrap();
    assert_eq!(next.counts["observations_in_window"], 1);
    assert!(state_obsids(&data_dir).contains(&(row as i64)));
}

// The scheduler.

const START: &str = "2030-01-15T12:00:00Z";

/// Returns the `n`th daily due time of `0 3 * * *` in Berlin after [`START`], counting from 1.
fn due(n: i64) -> DateTime<Utc> {
    at("2030-01-15T02:00:00Z") + Duration::days(n)
}

fn scheduled_pipeline() -> ScheduledPipeline {
    let path = pipeline_path();
    let mut config = paperclip::pipeline::config::load(&path).unwrap();
    config.schedule = Some(ScheduleSection {
        cron: Some("0 3 * * *".to_string()),
        time_zone: Some("Europe/Berlin".to_string()),
        retry_delay_secs: 600,
        max_retries: 2,
    });
    ScheduledPipeline::new(&path, config).unwrap()
}

/// A clock that tests set by hand, backwards too. Like `ManualClock`, it wakes exactly
/// the sleepers whose time has come, so a test can check that nothing happened.
struct JumpClock {
    state: Mutex<JumpState>,
}

struct JumpState {
    now: DateTime<Utc>,
    sleepers: Vec<(DateTime<Utc>, oneshot::Sender<()>)>,
}

impl JumpClock {
    fn new(start: DateTime<Utc>) -> Self {
        Self {
            state: Mutex::new(JumpState {
                now: start,
                sleepers: Vec::new(),
            }),
        }
    }

    fn set(&self, to: DateTime<Utc>) {
        let mut state = self.state.lock().unwrap();
        state.now = to;
        let (due, waiting) = std::mem::take(&mut state.sleepers)
            .into_iter()
            .partition(|(deadline, _)| *deadline <= to);
        state.sleepers = waiting;
        for (_, wake) in due {
            let _ = wake.send(());
        }
    }

    /// Waits until something sleeps until exactly `deadline`.
    async fn wait_for_sleeper(&self, deadline: DateTime<Utc>) {
        loop {
            {
                let mut state = self.state.lock().unwrap();
                state.sleepers.retain(|(_, wake)| !wake.is_closed());
                if state.sleepers.iter().any(|(d, _)| *d == deadline) {
                    return;
                }
            }
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
    }
}

impl Clock for JumpClock {
    fn now(&self) -> DateTime<Utc> {
        self.state.lock().unwrap().now
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let woken = {
                let mut state = self.state.lock().unwrap();
                if deadline <= state.now {
                    return;
                }
                let (wake, woken) = oneshot::channel();
                state.sleepers.push((deadline, wake));
                woken
            };
            if woken.await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// A scheduler of the project's pipeline over the fixture archive.
struct Serve {
    events: UnboundedReceiver<Event>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ScheduleError>>,
    data_dir: PathBuf,
    _archive: RunningServer,
}

impl Serve {
    async fn start(dir: &Path, clock: Arc<dyn Clock>) -> Self {
        let snapshot = dir.join("snapshot");
        if !snapshot.exists() {
            paperclip::snapshots::fixtures::build(&snapshot).unwrap();
        }
        let archive = serve_snapshot(&snapshot, ServeOptions::default()).await;
        let data_dir = dir.join("data");
        let settings = RunSettings {
            data_dir: data_dir.clone(),
            archive_override: Some(archive.base_url()),
            engine: Default::default(),
        };
        let (sender, events) = tokio::sync::mpsc::unbounded_channel();
        let scheduler = Scheduler::new(
            vec![scheduled_pipeline()],
            settings,
            clock,
            Arc::new(sender),
        )
        .unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(scheduler.run(stop.clone()));
        Self {
            events,
            stop,
            task,
            data_dir,
            _archive: archive,
        }
    }

    /// Receives the next event, with the run id of a start left out.
    async fn next(&mut self) -> EventKind {
        let event = tokio::time::timeout(StdDuration::from_secs(120), self.events.recv())
            .await
            .expect("an event within 120 s")
            .expect("the scheduler is running");
        match event.kind {
            EventKind::Started {
                due,
                attempt,
                catch_up,
                ..
            } => started(due, attempt, catch_up),
            other => other,
        }
    }

    fn assert_no_event(&mut self, when: &str) {
        match self.events.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => panic!("expected nothing {when}, got {other:?}"),
        }
    }

    async fn stop(mut self) -> Vec<EventKind> {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
        let mut rest = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            rest.push(event.kind);
        }
        rest
    }
}

fn started(due: DateTime<Utc>, attempt: u32, catch_up: bool) -> EventKind {
    EventKind::Started {
        run_id: String::new(),
        due,
        attempt,
        catch_up,
    }
}

/// Checks a finished run's outcome and returns its run id.
fn finished_with(event: EventKind, expected: RunOutcome) -> String {
    let EventKind::Finished {
        run_id, outcome, ..
    } = event
    else {
        panic!("expected a finished run, got {event:?}");
    };
    assert_eq!(outcome, expected);
    run_id
}

/// Returns the release window end (`now`) that a recorded run used, as MJD.
fn recorded_now_mjd(data_dir: &Path, run_id: &str) -> f64 {
    let path = data_dir.join("runs").join(format!("{run_id}.json"));
    let record: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    record["refresh"]["now_mjd"].as_f64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_jump_over_due_times_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(at(START)));
    let mut serve = Serve::start(dir.path(), clock.clone()).await;
    assert_eq!(serve.next().await, EventKind::Waiting { due: due(1) });

    // The clock jumps over three due times at once.
    let jumped = due(3) + Duration::hours(1);
    clock.set(jumped);
    assert_eq!(serve.next().await, started(due(1), 1, false));
    assert_eq!(serve.next().await, EventKind::Waiting { due: due(4) });
    let run_id = finished_with(serve.next().await, RunOutcome::Published { version: 1 });
    assert_eq!(
        recorded_now_mjd(&serve.data_dir, &run_id),
        mjd(jumped),
        "the run takes the clock's time after the jump"
    );

    clock.set(due(4) - Duration::seconds(1));
    clock.wait_for_sleeper(due(4)).await;
    serve.assert_no_event("for the due times the jump passed");
    clock.set(due(4));
    assert_eq!(serve.next().await, started(due(4), 1, false));
    assert_eq!(serve.next().await, EventKind::Waiting { due: due(5) });
    finished_with(serve.next().await, RunOutcome::Unchanged { version: 1 });
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backward_jump_reruns_no_due_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(JumpClock::new(at(START)));
    let mut serve = Serve::start(dir.path(), clock.clone()).await;
    assert_eq!(serve.next().await, EventKind::Waiting { due: due(1) });
    clock.set(due(1));
    assert_eq!(serve.next().await, started(due(1), 1, false));
    assert_eq!(serve.next().await, EventKind::Waiting { due: due(2) });
    finished_with(serve.next().await, RunOutcome::Published { version: 1 });

    // The clock goes back two hours, then passes the finished due time again.
    clock.set(due(1) - Duration::hours(2));
    clock.set(due(1) + Duration::minutes(5));
    clock.wait_for_sleeper(due(2)).await;
    serve.assert_no_event("when the clock passes a finished due time again");

    let second_due = due(2);
    clock.set(second_due);
    assert_eq!(serve.next().await, started(second_due, 1, false));
    assert_eq!(serve.next().await, EventKind::Waiting { due: due(3) });
    let run_id = finished_with(serve.next().await, RunOutcome::Unchanged { version: 1 });
    assert_eq!(recorded_now_mjd(&serve.data_dir, &run_id), mjd(second_due));
    let rest = serve.stop().await;
    assert_eq!(
        rest,
        [EventKind::Stopped {
            interrupted_attempt: None
        }]
    );
}

/// Writes a run record of the project's dataset that started at `started`.
fn write_run_record(data_dir: &Path, started: DateTime<Utc>) {
    let runs = data_dir.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let run_id = format!("{}-1", started.format("%Y%m%dT%H%M%S%.3fZ"));
    let record = json!({"run_id": run_id, "dataset": DATASET, "unchanged_version": 1});
    std::fs::write(runs.join(format!("{run_id}.json")), record.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_behind_latest_run_waits() {
    let dir = tempfile::tempdir().unwrap();
    // The latest recorded run started five due times after the clock's present.
    write_run_record(&dir.path().join("data"), due(5));
    let clock = Arc::new(ManualClock::new(at(START)));
    let mut serve = Serve::start(dir.path(), clock.clone()).await;

    assert_eq!(serve.next().await, EventKind::Waiting { due: due(1) });
    clock.set(due(1) - Duration::seconds(1));
    clock.wait_for_sleeper(due(1)).await;
    serve.assert_no_event("before the next due time");
    let rest = serve.stop().await;
    assert_eq!(
        rest,
        [EventKind::Stopped {
            interrupted_attempt: None
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_does_not_rerun_due_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(at(START)));
    let mut serve = Serve::start(dir.path(), clock.clone()).await;
    assert_eq!(serve.next().await, EventKind::Waiting { due: due(1) });
    clock.set(due(1));
    assert_eq!(serve.next().await, started(due(1), 1, false));
    assert_eq!(serve.next().await, EventKind::Waiting { due: due(2) });
    finished_with(serve.next().await, RunOutcome::Published { version: 1 });
    serve.stop().await;

    let clock = Arc::new(ManualClock::new(due(1) + Duration::hours(1)));
    let mut serve = Serve::start(dir.path(), clock.clone()).await;
    assert_eq!(serve.next().await, EventKind::Waiting { due: due(2) });
    serve.stop().await;
}

// Downloads cut in the middle of the body or sent with a wrong Content-Length, through
// the whole pipeline.

/// Returns the pipeline with few archive retries, so a persistent fault fails in about a
/// second.
fn download_config(max_retries: u32) -> PipelineConfig {
    let mut config = config(7.0);
    config.archive.max_retries = max_retries;
    config
}

/// Checks that every stored download has the archive's size for its URI.
fn assert_no_partial_blob(data_dir: &Path, archive: &Archive) -> usize {
    let store = paperclip::store::blobs::BlobStore::open(data_dir.join("blobs")).unwrap();
    let mut stored = 0;
    for (uri, size) in file_sizes(archive) {
        if let Some(record) = store.lookup_uri(&uri) {
            assert_eq!(record.size_bytes, size, "{uri} is stored partly");
            stored += 1;
        }
    }
    assert_eq!(
        crate::support::count_files(&data_dir.join("blobs/tmp")),
        0,
        "no temporary download is left"
    );
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn briefly_cut_downloads_publish_all() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = Archive::new(dir.path());
    let cut = ServeOptions {
        cut_downloads_after_bytes: Some(500),
        download_faults_first_n: Some(3),
        ..ServeOptions::default()
    };
    let server = archive.serve(cut).await;

    let report = run_at(
        &download_config(3),
        &data_dir,
        &server,
        at("2026-03-01T00:00:00Z"),
    )
    .await
    .unwrap();

    assert_eq!(report.published_version, Some(1));
    assert_eq!(report.counts["samples"], 7);
    assert_eq!(report.counts["downloads_fetched"], 9);
    assert_eq!(report.archive_retries, 3);
    assert!(
        !report
            .skipped_by_reason
            .keys()
            .any(|r| r.starts_with("download/")),
        "{:?}",
        report.skipped_by_reason
    );
    assert_eq!(assert_no_partial_blob(&data_dir, &archive), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_cut_downloads_fail_then_complete() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = Archive::new(dir.path());
    let config = download_config(1);
    let day0 = at("2026-03-01T00:00:00Z");
    let cut = ServeOptions {
        cut_downloads_after_bytes: Some(500),
        ..ServeOptions::default()
    };
    let server = archive.serve(cut).await;

    let error = run_at(&config, &data_dir, &server, day0)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("download(s) failed with errors that may pass"),
        "{error}"
    );
    assert!(
        error.contains("Download/file failed after 2 attempts"),
        "{error}"
    );
    assert!(error.contains("run again"), "{error}");
    assert!(!error.contains("query fewer"), "{error}");
    let paths = DatasetPaths::new(&data_dir, DATASET);
    assert!(list_versions(&paths).await.unwrap().is_empty());
    assert_no_partial_blob(&data_dir, &archive);
    drop(server);

    let server = archive.serve(ServeOptions::default()).await;
    let next = run_at(&config, &data_dir, &server, day0 + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(next.published_version, Some(1));
    assert_eq!(next.counts["samples"], 7);
    assert_eq!(assert_no_partial_blob(&data_dir, &archive), 9);
    let failed = "SELECT count(*) FROM paperclip.runs WHERE error IS NOT NULL";
    assert_eq!(scalar(&data_dir, failed).await, 1);
    assert_eq!(
        scalar(&data_dir, "SELECT count(*) FROM paperclip.runs").await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_content_length_skipped_then_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = Archive::new(dir.path());
    // One download at a time, so the first file gets every short response.
    let mut config = download_config(1);
    config.archive.download_concurrency = 1;
    let day0 = at("2026-03-01T00:00:00Z");
    let short = ServeOptions {
        content_length_offset_bytes: -100,
        download_faults_first_n: Some(2),
        ..ServeOptions::default()
    };
    let server = archive.serve(short).await;

    let first = run_at(&config, &data_dir, &server, day0).await.unwrap();
    assert_eq!(
        first.skipped_by_reason.get("download/size_mismatch"),
        Some(&1),
        "{:?}",
        first.skipped_by_reason
    );
    let skips = query(
        &data_dir,
        r#"SELECT item, detail FROM "hst-paperclip".latest.skips WHERE reason = 'size_mismatch'"#,
    )
    .await;
    assert!(skips.contains("mast:"), "{skips}");
    assert!(skips.contains("after 2 attempts"), "{skips}");
    assert!(skips.contains("retry later"), "{skips}");
    assert_eq!(assert_no_partial_blob(&data_dir, &archive), 8);
    drop(server);

    let server = archive.serve(ServeOptions::default()).await;
    let next = run_at(&config, &data_dir, &server, day0 + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(next.counts.get("downloads_fetched"), Some(&1), "{next:?}");
    let images = next.stages.iter().find(|s| s.stage == "images").unwrap();
    assert_eq!(
        images.reasons,
        ["v1 skipped 1 incomplete download(s); trying them again"]
    );
    assert_eq!(next.published_version, Some(2));
    assert!(
        !next
            .skipped_by_reason
            .contains_key("download/size_mismatch"),
        "{:?}",
        next.skipped_by_reason
    );
    assert_eq!(assert_no_partial_blob(&data_dir, &archive), 9);

    // The new version has no such skip, so the next run is fresh again.
    let settled = run_at(&config, &data_dir, &server, day0 + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(settled.unchanged_version, Some(2));
    assert_eq!(settled.counts.get("downloads_fetched"), None);
}
