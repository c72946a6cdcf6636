//! The scheduler against the fixture archive, with a manual clock that the tests move by
//! hand: runs start at their due times and not before, an overlapping due time is skipped,
//! a failed run is retried, missed due times make one catch-up run, and stopping cuts a
//! run short. Runs take real time (the archive is real); waiting for a due time never does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use paperclip::pipeline::config::ScheduleSection;
use paperclip::schedule::{
    Event, EventKind, ManualClock, RunOutcome, RunSettings, ScheduleError, ScheduledPipeline,
    Scheduler,
};
use paperclip_archive::server::ServeOptions;
use tokio::sync::mpsc::{UnboundedReceiver, error::TryRecvError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::paperclip;
use crate::support::{pipeline_path, serve_snapshot};

/// Noon UTC; with `0 3 * * *` in Berlin (CET, UTC+1) the next due time is 02:00 UTC.
const START: &str = "2030-01-15T12:00:00Z";
const CRON: &str = "0 3 * * *";

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// Returns the `n`th daily due time after [`START`], counting from 1.
fn due(n: i64) -> DateTime<Utc> {
    at("2030-01-15T02:00:00Z") + TimeDelta::days(n)
}

/// A scheduler running the project's pipeline against its own fixture archive.
struct Harness {
    clock: Arc<ManualClock>,
    events: UnboundedReceiver<Event>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), ScheduleError>>,
    data_dir: PathBuf,
    _archive: paperclip_archive::RunningServer,
}

/// Pipeline settings a test changes: the schedule and the archive client's own retries.
fn scheduled_pipeline(retry_delay_secs: u64, max_retries: u32) -> ScheduledPipeline {
    let path = pipeline_path();
    let mut config = paperclip::pipeline::config::load(&path).unwrap();
    // Make one injected archive failure fail the run, so the scheduler's retry shows.
    config.archive.max_retries = 0;
    config.schedule = Some(ScheduleSection {
        cron: Some(CRON.to_string()),
        time_zone: Some("Europe/Berlin".to_string()),
        retry_delay_secs,
        max_retries,
    });
    ScheduledPipeline::new(&path, config).unwrap()
}

impl Harness {
    async fn start(dir: &Path, archive: ServeOptions, pipeline: ScheduledPipeline) -> Self {
        let snapshot = dir.join("snapshot");
        if !snapshot.exists() {
            paperclip::snapshots::fixtures::build(&snapshot).unwrap();
        }
        let server = serve_snapshot(&snapshot, archive).await;
        let clock = Arc::new(ManualClock::new(at(START)));
        Self::start_with(dir, server, clock, pipeline)
    }

    fn start_with(
        dir: &Path,
        archive: paperclip_archive::RunningServer,
        clock: Arc<ManualClock>,
        pipeline: ScheduledPipeline,
    ) -> Self {
        let data_dir = dir.join("data");
        let settings = RunSettings {
            data_dir: data_dir.clone(),
            archive_override: Some(archive.base_url()),
            engine: Default::default(),
        };
        let (sender, events) = tokio::sync::mpsc::unbounded_channel();
        let scheduler =
            Scheduler::new(vec![pipeline], settings, clock.clone(), Arc::new(sender)).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(scheduler.run(stop.clone()));
        Self {
            clock,
            events,
            stop,
            task,
            data_dir,
            _archive: archive,
        }
    }

    /// Receives the next event. The timeout only guards against a hung test, because a
    /// run on the fixture archive takes seconds.
    async fn next(&mut self) -> EventKind {
        let event = tokio::time::timeout(Duration::from_secs(120), self.events.recv())
            .await
            .expect("an event within 120 s")
            .expect("the scheduler is running");
        assert_eq!(event.dataset, "hst-paperclip");
        match event.kind {
            EventKind::Started {
                run_id,
                due,
                attempt,
                catch_up,
            } => {
                assert!(!run_id.is_empty(), "a start names its run");
                EventKind::Started {
                    run_id: String::new(),
                    due,
                    attempt,
                    catch_up,
                }
            }
            other => other,
        }
    }

    /// Moves the clock to just before `due`, waits until the scheduler sleeps until `due`
    /// again, and checks that it did nothing meanwhile.
    async fn assert_idle_until(&mut self, due: DateTime<Utc>) {
        self.clock.set(due - TimeDelta::seconds(1));
        self.clock.wait_for_sleeper(due).await;
        match self.events.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => panic!("expected nothing before {due}, got {other:?}"),
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

/// A started event; its run id is compared separately (see `Harness::next`).
fn started(due: DateTime<Utc>, attempt: u32, catch_up: bool) -> EventKind {
    EventKind::Started {
        run_id: String::new(),
        due,
        attempt,
        catch_up,
    }
}

/// Checks that the event is a finished run with this outcome and returns its run id.
fn assert_finished(event: EventKind, expected: RunOutcome, expected_attempt: u32) -> String {
    let EventKind::Finished {
        run_id,
        outcome,
        attempt,
        ..
    } = event
    else {
        panic!("expected a finished run, got {event:?}");
    };
    assert_eq!((outcome, attempt), (expected, expected_attempt));
    run_id
}

fn runs_list_json(data_dir: &Path) -> serde_json::Value {
    let output = paperclip(data_dir, &["runs", "list", "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_at_each_due_time_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = scheduled_pipeline(600, 2);
    let mut harness = Harness::start(dir.path(), ServeOptions::default(), pipeline).await;

    assert_eq!(harness.next().await, EventKind::Waiting { due: due(1) });
    harness.assert_idle_until(due(1)).await;
    harness.clock.set(due(1));
    assert_eq!(harness.next().await, started(due(1), 1, false));
    assert_eq!(harness.next().await, EventKind::Waiting { due: due(2) });
    let first = assert_finished(
        harness.next().await,
        RunOutcome::Published { version: 1 },
        1,
    );

    harness.assert_idle_until(due(2)).await;
    harness.clock.set(due(2));
    assert_eq!(harness.next().await, started(due(2), 1, false));
    assert_eq!(harness.next().await, EventKind::Waiting { due: due(3) });
    let second = assert_finished(
        harness.next().await,
        RunOutcome::Unchanged { version: 1 },
        1,
    );

    let data_dir = harness.data_dir.clone();
    let rest = harness.stop().await;
    assert_eq!(
        rest,
        [EventKind::Stopped {
            interrupted_attempt: None
        }]
    );
    let runs = runs_list_json(&data_dir);
    let ids: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "newest first");
    assert_eq!(runs[0]["status"], "unchanged");
    assert_eq!(runs[1]["status"], "published");
    assert_eq!(runs[1]["version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_due_times_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    // Each query response with rows waits 1.5 s, so a run lasts several seconds while the
    // test moves the clock over two more due times in a few milliseconds.
    let slow = ServeOptions {
        latency_ms: 1500,
        latency_min_rows: 1,
        ..ServeOptions::default()
    };
    let mut harness = Harness::start(dir.path(), slow, scheduled_pipeline(600, 2)).await;

    assert_eq!(harness.next().await, EventKind::Waiting { due: due(1) });
    harness.clock.set(due(1));
    assert_eq!(harness.next().await, started(due(1), 1, false));
    assert_eq!(harness.next().await, EventKind::Waiting { due: due(2) });
    for n in [2, 3] {
        harness.clock.set(due(n));
        assert_eq!(
            harness.next().await,
            EventKind::Skipped {
                due: due(n),
                busy_with: due(1)
            }
        );
        assert_eq!(harness.next().await, EventKind::Waiting { due: due(n + 1) });
    }
    assert_finished(
        harness.next().await,
        RunOutcome::Published { version: 1 },
        1,
    );

    // The skipped due times left nothing behind: no run until the next due time.
    harness.assert_idle_until(due(4)).await;
    let rest = harness.stop().await;
    assert_eq!(
        rest,
        [EventKind::Stopped {
            interrupted_attempt: None
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_run_is_retried_after_delay() {
    let dir = tempfile::tempdir().unwrap();
    let failing = ServeOptions {
        fail_first_n: 1,
        ..ServeOptions::default()
    };
    let retry_delay = TimeDelta::seconds(600);
    let mut harness = Harness::start(dir.path(), failing, scheduled_pipeline(600, 2)).await;

    assert_eq!(harness.next().await, EventKind::Waiting { due: due(1) });
    harness.clock.set(due(1));
    assert_eq!(harness.next().await, started(due(1), 1, false));
    assert_eq!(harness.next().await, EventKind::Waiting { due: due(2) });
    let EventKind::Failed {
        run_id: Some(failed_run),
        attempt: 1,
        error,
        retry_at: Some(retry_at),
    } = harness.next().await
    else {
        panic!("expected a failed first attempt with a record and a retry time");
    };
    assert!(error.contains("503"), "{error}");
    assert_eq!(retry_at, due(1) + retry_delay);

    harness.assert_idle_until(retry_at).await;
    harness.clock.set(retry_at);
    assert_eq!(harness.next().await, started(due(1), 2, false));
    let retried = assert_finished(
        harness.next().await,
        RunOutcome::Published { version: 1 },
        2,
    );

    let data_dir = harness.data_dir.clone();
    harness.stop().await;
    let runs = runs_list_json(&data_dir);
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs:#}");
    assert_eq!(runs[0]["run_id"], retried.as_str());
    assert_eq!(runs[0]["status"], "published");
    assert_eq!(runs[0]["version"], 1);
    assert_eq!(runs[1]["run_id"], failed_run.as_str());
    assert_eq!(runs[1]["status"], "failed");
    assert!(
        runs[1]["error"].as_str().unwrap().contains("503"),
        "{runs:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_once_and_stop_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    // The latest recorded run started five days before the scheduler starts.
    let runs_dir = dir.path().join("data/runs");
    std::fs::create_dir_all(&runs_dir).unwrap();
    let last_run = "20300110T020000.000Z-1";
    let record =
        serde_json::json!({"run_id": last_run, "dataset": "hst-paperclip", "unchanged_version": 1});
    std::fs::write(
        runs_dir.join(format!("{last_run}.json")),
        record.to_string(),
    )
    .unwrap();

    let slow = ServeOptions {
        latency_ms: 1500,
        latency_min_rows: 1,
        ..ServeOptions::default()
    };
    let mut harness = Harness::start(dir.path(), slow, scheduled_pipeline(600, 2)).await;
    let first_missed = at("2030-01-11T02:00:00Z");
    assert_eq!(harness.next().await, started(first_missed, 1, true));
    assert_eq!(harness.next().await, EventKind::Waiting { due: due(1) });
    let rest = harness.stop().await;
    assert_eq!(
        rest,
        [EventKind::Stopped {
            interrupted_attempt: Some(1)
        }]
    );
    let records = std::fs::read_dir(&runs_dir).unwrap().count();
    assert_eq!(records, 1, "a run cut short leaves no record");

    // The cut-short run is caught up by the next start, once, and its dataset lock is free.
    let archive = serve_snapshot(&dir.path().join("snapshot"), ServeOptions::default()).await;
    let clock = Arc::new(ManualClock::new(at(START)));
    let pipeline = scheduled_pipeline(600, 2);
    let mut harness = Harness::start_with(dir.path(), archive, clock, pipeline);
    assert_eq!(harness.next().await, started(first_missed, 1, true));
    assert_eq!(harness.next().await, EventKind::Waiting { due: due(1) });
    assert_finished(
        harness.next().await,
        RunOutcome::Published { version: 1 },
        1,
    );
    harness.assert_idle_until(due(1)).await;
    harness.stop().await;
}

/// Writes a copy of the project's pipeline next to its SQL folder layout, with `extra`
/// appended, and returns its path.
fn pipeline_copy(dir: &Path, extra: &str) -> PathBuf {
    let pipelines = dir.join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    let sql = dir.join("sql");
    std::fs::create_dir_all(&sql).unwrap();
    for model in ["candidate_images.sql", "samples.sql"] {
        let source = crate::support::repo_root().join("sql").join(model);
        std::fs::copy(source, sql.join(model)).unwrap();
    }
    let text = std::fs::read_to_string(pipeline_path()).unwrap() + extra;
    let path = pipelines.join("scheduled.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn serve_without_schedule_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline_path();
    let output = paperclip(
        dir.path(),
        &["serve", pipeline.to_str().unwrap(), "--archive", "embedded"],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("hst-paperclip.toml has no [schedule] section"),
        "{stderr}"
    );
    assert!(
        stderr.contains("[schedule]\ncron = \"0 3 * * *\""),
        "{stderr}"
    );
}

#[test]
fn serve_prints_events_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let schedule = "\n[schedule]\ncron = \"0 3 1 1 *\"\ntime_zone = \"Europe/Berlin\"\n";
    let pipeline = pipeline_copy(dir.path(), schedule);
    let mut child = Command::new(env!("CARGO_BIN_EXE_paperclip"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["serve", pipeline.to_str().unwrap(), "--archive", "embedded"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("hst-paperclip  next run due "), "{line}");
    assert!(line.contains("-01-01 03:00:00 CET"), "{line}");

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let mut rest = String::new();
    stdout.read_line(&mut rest).unwrap();
    assert!(rest.contains("hst-paperclip  stopped"), "{rest}");
    assert!(output.status.success(), "{:?}", output.status);
}
