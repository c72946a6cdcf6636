//! Scheduler events for the host program: one [`Event`] per start, finish, failure,
//! retry, skip, wait and stop. The library only emits them; the CLI prints them and tests
//! collect them.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Something that happened to one scheduled pipeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Scheduler clock time when it happened.
    pub at: DateTime<Utc>,
    pub dataset: String,
    pub pipeline: PathBuf,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The pipeline waits for its next due time.
    Waiting { due: DateTime<Utc> },
    /// A run started. `attempt` is 1 for the due time's first run, 2 for its first retry,
    /// and so on. `catch_up` marks a run for due times missed while no scheduler ran.
    Started {
        /// The id the run records itself under.
        run_id: String,
        due: DateTime<Utc>,
        attempt: u32,
        catch_up: bool,
    },
    /// A run completed.
    Finished {
        run_id: String,
        attempt: u32,
        outcome: RunOutcome,
        elapsed_secs: f64,
    },
    /// A run failed. `retry_at` is when it is tried again; `None` when no retry is left
    /// and the pipeline waits for its next due time.
    Failed {
        /// The failed run's record under `<data dir>/runs/`, when it wrote one.
        run_id: Option<String>,
        attempt: u32,
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
    /// A due time came while the previous run (or its retries) was still going; it is
    /// dropped, not queued.
    Skipped {
        due: DateTime<Utc>,
        /// Due time of the refresh that is still going.
        busy_with: DateTime<Utc>,
    },
    /// The scheduler stopped this pipeline; `interrupted_attempt` is the run it cut short.
    Stopped { interrupted_attempt: Option<u32> },
}

/// Result of a completed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RunOutcome {
    Published {
        version: u64,
    },
    Unchanged {
        version: u64,
    },
    /// The run produced no samples, so it published nothing.
    NoSamples,
}

/// Receives the scheduler's events. Called from the scheduler's tasks, so keep it quick.
pub trait EventSink: Send + Sync {
    fn event(&self, event: &Event);
}

/// Ignores every event (the scheduler logs them with `tracing` anyway).
pub struct NoEvents;

impl EventSink for NoEvents {
    fn event(&self, _event: &Event) {}
}

/// Forwards events to a channel; a closed channel drops them.
impl EventSink for tokio::sync::mpsc::UnboundedSender<Event> {
    fn event(&self, event: &Event) {
        let _ = self.send(event.clone());
    }
}
