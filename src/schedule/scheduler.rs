//! The scheduler: runs each scheduled pipeline when it comes due, one run at a time per
//! pipeline, with retries, until it is stopped.
//!
//! Invariants:
//! - A pipeline never has two runs at once. A refresh is a due time's first run plus its
//!   retries. A due time that comes while a refresh is running or waiting to retry is
//!   skipped and reported as [`EventKind::Skipped`], never queued.
//! - A failed run is tried again after `retry_delay_secs`, at most `max_retries` times;
//!   then the pipeline waits for its next due time.
//! - At start, a due time that passed since the dataset's latest recorded run (scheduled or
//!   not, failed or not) makes one catch-up run at once, however many due times passed. A
//!   dataset with no recorded run waits for its next due time. The same holds while running:
//!   when the clock jumps over several due times, they make one run.
//! - Stopping cuts a running run short at its next await point. That is safe because a
//!   version is published by one atomic Delta commit and a run's leftovers are removed by
//!   the next run; the cut-short run leaves no record, so the next start catches it up.
//! - Time is read only through the [`Clock`]; each run gets the clock's time as
//!   [`RunOptions::now`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use url::Url;

use super::clock::Clock;
use super::due::{FirstDue, Schedule};
use super::error::ScheduleError;
use super::events::{Event, EventKind, EventSink, RunOutcome};
use crate::error::PipelineError;
use crate::pipeline::{NoProgress, PipelineConfig, RunOptions, RunReport};
use crate::runs::list_runs;

/// A pipeline file with a valid `[schedule]` section.
#[derive(Debug, Clone)]
pub struct ScheduledPipeline {
    pub path: PathBuf,
    pub config: PipelineConfig,
    pub schedule: Schedule,
}

impl ScheduledPipeline {
    /// Loads a pipeline file; one without `[schedule]` is an error naming the file.
    pub fn load(path: &Path) -> Result<Self, ScheduleError> {
        Self::new(path, crate::pipeline::config::load(path)?)
    }

    /// Wraps an already loaded pipeline file.
    pub fn new(path: &Path, config: PipelineConfig) -> Result<Self, ScheduleError> {
        let section = config
            .schedule
            .as_ref()
            .ok_or_else(|| ScheduleError::NotScheduled {
                path: path.to_path_buf(),
            })?;
        let schedule = Schedule::from_section(section)?;
        Ok(Self {
            path: path.to_path_buf(),
            config,
            schedule,
        })
    }

    fn dataset(&self) -> &str {
        &self.config.dataset.name
    }
}

/// Data directory and archive of every scheduled run.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub data_dir: PathBuf,
    /// Replaces each pipeline's archive base URL, as `paperclip run --archive` does.
    pub archive_override: Option<Url>,
    /// The engine that runs each run's SQL models.
    pub engine: crate::sql::engine::Engine,
}

/// Runs scheduled pipelines until stopped.
pub struct Scheduler {
    pipelines: Vec<ScheduledPipeline>,
    settings: RunSettings,
    clock: Arc<dyn Clock>,
    events: Arc<dyn EventSink>,
}

impl Scheduler {
    /// Checks that there is at least one pipeline and that no two build the same dataset.
    pub fn new(
        pipelines: Vec<ScheduledPipeline>,
        settings: RunSettings,
        clock: Arc<dyn Clock>,
        events: Arc<dyn EventSink>,
    ) -> Result<Self, ScheduleError> {
        if pipelines.is_empty() {
            return Err(ScheduleError::NoPipelines);
        }
        for (index, pipeline) in pipelines.iter().enumerate() {
            if let Some(other) = pipelines[..index]
                .iter()
                .find(|other| other.dataset() == pipeline.dataset())
            {
                return Err(ScheduleError::DuplicateDataset {
                    dataset: pipeline.dataset().to_string(),
                    first: other.path.clone(),
                    second: pipeline.path.clone(),
                });
            }
        }
        Ok(Self {
            pipelines,
            settings,
            clock,
            events,
        })
    }

    /// Drives every pipeline until `stop` is cancelled, then returns once each running
    /// run has been cut short. Returns early with an error only when the run log cannot be
    /// read at start.
    pub async fn run(self, stop: CancellationToken) -> Result<(), ScheduleError> {
        let mut drivers = JoinSet::new();
        for pipeline in self.pipelines {
            let last_started = list_runs(&self.settings.data_dir, Some(pipeline.dataset()))?
                .first()
                .and_then(|run| run.started_at);
            let first = pipeline
                .schedule
                .first_due(last_started, self.clock.now())?;
            let span = tracing::info_span!(
                "schedule",
                dataset = %pipeline.dataset(),
                pipeline = %pipeline.path.display(),
                cron = %pipeline.schedule.expression(),
                time_zone = %pipeline.schedule.time_zone(),
            );
            let driver = Driver {
                pipeline: Arc::new(pipeline),
                settings: self.settings.clone(),
                clock: Arc::clone(&self.clock),
                events: Arc::clone(&self.events),
            };
            drivers.spawn(driver.drive(first, stop.clone()).instrument(span));
        }
        while let Some(joined) = drivers.join_next().await {
            if let Err(error) = joined
                && error.is_panic()
            {
                std::panic::resume_unwind(error.into_panic());
            }
        }
        Ok(())
    }
}

/// One pipeline's loop.
struct Driver {
    pipeline: Arc<ScheduledPipeline>,
    settings: RunSettings,
    clock: Arc<dyn Clock>,
    events: Arc<dyn EventSink>,
}

/// A due time's first run and its retries.
struct Refresh {
    due: DateTime<Utc>,
    attempt: u32,
    step: Step,
}

enum Step {
    Running {
        task: JoinHandle<Result<RunReport, PipelineError>>,
        /// The id the run records itself under.
        run_id: String,
    },
    RetryAt(DateTime<Utc>),
}

/// Point a refresh in progress has reached: its run ended, or its retry time came.
enum Reached {
    RunEnded(Box<Result<Result<RunReport, PipelineError>, JoinError>>),
    RetryDue,
}

impl Driver {
    async fn drive(self, first: FirstDue, stop: CancellationToken) {
        let (mut next_due, mut refresh) = match first {
            FirstDue::CatchUp { missed } => {
                let refresh = self.start(missed, 1, true);
                (self.next_due_after(self.clock.now()), Some(refresh))
            }
            FirstDue::At(due) => (Some(due), None),
        };
        if let Some(due) = next_due {
            self.emit(EventKind::Waiting { due });
        }
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    self.stop(refresh).await;
                    return;
                }
                reached = wait_for(&mut refresh, self.clock.as_ref()) => {
                    let current = refresh.take().expect("only a refresh can be reached");
                    refresh = self.on_reached(current, reached);
                }
                () = sleep_until(self.clock.as_ref(), next_due) => {
                    let due = next_due.expect("only a due time can come due");
                    self.on_due(due, &mut refresh);
                    next_due = self.next_due_after(due.max(self.clock.now()));
                    if let Some(due) = next_due {
                        self.emit(EventKind::Waiting { due });
                    }
                }
            }
        }
    }

    /// Starts a run of `due` now, unless a refresh is still going.
    fn on_due(&self, due: DateTime<Utc>, refresh: &mut Option<Refresh>) {
        match refresh {
            Some(busy) => self.emit(EventKind::Skipped {
                due,
                busy_with: busy.due,
            }),
            None => *refresh = Some(self.start(due, 1, false)),
        }
    }

    /// Handles the end of a run or of a retry wait; returns the refresh still going.
    fn on_reached(&self, refresh: Refresh, reached: Reached) -> Option<Refresh> {
        let Refresh { due, attempt, step } = refresh;
        let run_id = match step {
            Step::Running { run_id, .. } => run_id,
            Step::RetryAt(_) => return Some(self.start(due, attempt + 1, false)),
        };
        let Reached::RunEnded(ended) = reached else {
            unreachable!("a running refresh ends with its run");
        };
        let error = match *ended {
            Ok(Ok(report)) => {
                self.emit(finished(&report, attempt));
                return None;
            }
            Ok(Err(error)) => error.to_string(),
            Err(join_error) => format!("the run stopped unexpectedly: {join_error}"),
        };
        let retry_at = (attempt <= self.pipeline.schedule.max_retries).then(|| {
            let delay_secs =
                i64::try_from(self.pipeline.schedule.retry_delay_secs).unwrap_or(i64::MAX);
            let delay = TimeDelta::try_seconds(delay_secs).unwrap_or(TimeDelta::MAX);
            self.clock
                .now()
                .checked_add_signed(delay)
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        });
        self.emit(EventKind::Failed {
            run_id: Some(run_id),
            attempt,
            error,
            retry_at,
        });
        retry_at.map(|at| Refresh {
            due,
            attempt,
            step: Step::RetryAt(at),
        })
    }

    /// Spawns one run of the pipeline.
    fn start(&self, due: DateTime<Utc>, attempt: u32, catch_up: bool) -> Refresh {
        let run_id = crate::pipeline::run::new_run_id();
        tracing::info!(dataset = %self.pipeline.dataset(), %run_id, %due, attempt, "starting a scheduled run");
        let now = self.clock.now();
        let options = RunOptions {
            data_dir: self.settings.data_dir.clone(),
            archive_override: self.settings.archive_override.clone(),
            progress: Arc::new(NoProgress),
            plan_only: false,
            now: Some(now),
            started_at: Some(now),
            full_refresh: false,
            run_id: Some(run_id.clone()),
            saved_plan: None,
            engine: self.settings.engine.clone(),
        };
        let pipeline = Arc::clone(&self.pipeline);
        let span = tracing::info_span!("scheduled_run", dataset = %pipeline.dataset(), %run_id, %due, attempt);
        let task = tokio::spawn(
            async move { crate::pipeline::run(&pipeline.config, &options).await }.instrument(span),
        );
        self.emit(EventKind::Started {
            run_id: run_id.clone(),
            due,
            attempt,
            catch_up,
        });
        Refresh {
            due,
            attempt,
            step: Step::Running { task, run_id },
        }
    }

    /// Cuts a running run short and reports the stop.
    async fn stop(&self, refresh: Option<Refresh>) {
        let mut interrupted_attempt = None;
        if let Some(Refresh {
            attempt,
            step: Step::Running { task, .. },
            ..
        }) = refresh
        {
            task.abort();
            // Waiting lets the run's dataset lock and files close before the caller exits.
            match task.await {
                Ok(Ok(report)) => self.emit(finished(&report, attempt)),
                Ok(Err(error)) => self.emit(EventKind::Failed {
                    run_id: None,
                    attempt,
                    error: error.to_string(),
                    retry_at: None,
                }),
                Err(_) => interrupted_attempt = Some(attempt),
            }
        }
        self.emit(EventKind::Stopped {
            interrupted_attempt,
        });
    }

    /// Returns the next due time, or `None` after logging when the schedule has none.
    /// Loading the pipeline file rules that out.
    fn next_due_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.pipeline
            .schedule
            .next_due_after(after)
            .inspect_err(|error| tracing::error!(%error, "no further due time"))
            .ok()
    }

    fn emit(&self, kind: EventKind) {
        let event = Event {
            at: self.clock.now(),
            dataset: self.pipeline.dataset().to_string(),
            pipeline: self.pipeline.path.clone(),
            kind,
        };
        log_event(&event);
        self.events.event(&event);
    }
}

/// Completes when the refresh in progress ends its run or reaches its retry time; never
/// when there is none.
async fn wait_for(refresh: &mut Option<Refresh>, clock: &dyn Clock) -> Reached {
    match refresh {
        Some(Refresh {
            step: Step::Running { task, .. },
            ..
        }) => Reached::RunEnded(Box::new(task.await)),
        Some(Refresh {
            step: Step::RetryAt(at),
            ..
        }) => {
            clock.sleep_until(*at).await;
            Reached::RetryDue
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(clock: &dyn Clock, due: Option<DateTime<Utc>>) {
    match due {
        Some(due) => clock.sleep_until(due).await,
        None => std::future::pending().await,
    }
}

fn finished(report: &RunReport, attempt: u32) -> EventKind {
    let outcome = match (report.published_version, report.unchanged_version) {
        (Some(version), _) => RunOutcome::Published { version },
        (None, Some(version)) => RunOutcome::Unchanged { version },
        (None, None) => RunOutcome::NoSamples,
    };
    EventKind::Finished {
        run_id: report.run_id.clone(),
        attempt,
        outcome,
        elapsed_secs: report.elapsed_secs,
    }
}

/// Logs an event for developers. The dataset is also a field of the enclosing span; it is
/// repeated so each line is readable on its own.
fn log_event(event: &Event) {
    let dataset = event.dataset.as_str();
    match &event.kind {
        EventKind::Waiting { due } => {
            tracing::debug!(dataset, %due, "waiting for the next due time")
        }
        EventKind::Started {
            run_id,
            due,
            attempt,
            catch_up,
        } => tracing::info!(dataset, run_id, %due, attempt, catch_up, "scheduled run started"),
        EventKind::Finished {
            run_id,
            attempt,
            outcome,
            elapsed_secs,
        } => tracing::info!(
            dataset,
            run_id,
            attempt,
            ?outcome,
            elapsed_secs,
            "scheduled run finished"
        ),
        EventKind::Failed {
            run_id,
            attempt,
            error,
            retry_at: Some(retry_at),
        } => {
            tracing::warn!(dataset, run_id, attempt, error, %retry_at, "scheduled run failed; retrying")
        }
        EventKind::Failed {
            run_id,
            attempt,
            error,
            retry_at: None,
        } => tracing::error!(
            dataset,
            run_id,
            attempt,
            error,
            "scheduled run failed; no retry left"
        ),
        EventKind::Skipped { due, busy_with } => {
            tracing::warn!(dataset, %due, %busy_with, "due time skipped: the previous refresh is still going")
        }
        EventKind::Stopped {
            interrupted_attempt,
        } => tracing::info!(dataset, interrupted_attempt, "scheduler stopped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{ManualClock, NoEvents};

    /// Writes a pipeline file with one SQL model and the given extra sections.
    fn pipeline_file(dir: &Path, name: &str, dataset: &str, sections: &str) -> PathBuf {
        std::fs::write(dir.join("a.sql"), "SELECT 1").unwrap();
        let path = dir.join(name);
        let text = format!(
            "[dataset]\nname = \"{dataset}\"\n[sql]\nmodels = [\"a.sql\"]\nsamples_model = \"a\"\n{sections}"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load_error(sections: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = pipeline_file(dir.path(), "p.toml", "d", sections);
        ScheduledPipeline::load(&path).unwrap_err().to_string()
    }

    #[test]
    fn schedule_section_is_read_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let sections = "[schedule]\ncron = \"0 3 * * *\"\ntime_zone = \"Europe/Berlin\"\n";
        let path = pipeline_file(dir.path(), "p.toml", "d", sections);
        let pipeline = ScheduledPipeline::load(&path).unwrap();
        assert_eq!(pipeline.schedule.expression(), "0 3 * * *");
        assert_eq!(pipeline.schedule.time_zone(), chrono_tz::Europe::Berlin);
        assert_eq!(pipeline.schedule.retry_delay_secs, 600);
        assert_eq!(pipeline.schedule.max_retries, 3);
    }

    #[test]
    fn missing_schedule_names_file_and_fix() {
        let message = load_error("");
        assert!(
            message.contains("p.toml has no [schedule] section"),
            "{message}"
        );
        assert!(message.contains("cron = \"0 3 * * *\""), "{message}");
    }

    #[test]
    fn schedule_is_checked_when_the_pipeline_file_loads() {
        let message = load_error("[schedule]\ncron = \"0 3 * * *\"\n");
        assert!(message.contains("invalid pipeline file"), "{message}");
        assert!(
            message.contains("schedule.time_zone is missing"),
            "{message}"
        );

        let message = load_error("[schedule]\ncron = \"0 3 * * *\"\ntimezone = \"UTC\"\n");
        assert!(message.contains("unknown field `timezone`"), "{message}");
        assert!(message.contains("time_zone"), "{message}");

        let message = load_error("[schedule]\ncron = \"every day\"\ntime_zone = \"UTC\"\n");
        assert!(
            message.contains("schedule.cron = \"every day\""),
            "{message}"
        );
    }

    #[test]
    fn two_pipelines_of_one_dataset_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let sections = "[schedule]\ncron = \"0 3 * * *\"\ntime_zone = \"UTC\"\n";
        let first = pipeline_file(dir.path(), "a.toml", "same", sections);
        let second = pipeline_file(dir.path(), "b.toml", "same", sections);
        let pipelines = vec![
            ScheduledPipeline::load(&first).unwrap(),
            ScheduledPipeline::load(&second).unwrap(),
        ];
        let settings = RunSettings {
            data_dir: dir.path().join("data"),
            archive_override: None,
            engine: Default::default(),
        };
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let Err(error) = Scheduler::new(pipelines, settings, clock, Arc::new(NoEvents)) else {
            panic!("duplicate datasets are accepted");
        };
        let message = error.to_string();
        assert!(message.contains("both build dataset \"same\""), "{message}");
        assert!(message.contains("a.toml"), "{message}");
        assert!(message.contains("b.toml"), "{message}");
    }
}
