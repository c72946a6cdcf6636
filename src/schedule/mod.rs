//! Scheduled refreshes for `paperclip serve`: each pipeline's `[schedule]` names a cron
//! expression and its IANA time zone, and the [`Scheduler`] runs the pipeline whenever it
//! comes due.
//!
//! - [`due`]: parsing a schedule and computing due times, daylight saving time included.
//! - [`clock`]: the injectable [`Clock`]; [`SystemClock`] for real use, [`ManualClock`]
//!   for tests, which move time by hand instead of waiting.
//! - [`scheduler`]: one loop per pipeline, one run at a time, skips, retries, catch-up
//!   after downtime, and stopping.
//! - [`events`]: what the scheduler reports to its host through an [`EventSink`].
//!
//! The library draws nothing: the CLI prints events, tests collect them.

pub mod clock;
mod cron_check;
pub mod due;
mod error;
pub mod events;
pub mod scheduler;

pub use clock::{Clock, ManualClock, SystemClock};
pub use due::{FirstDue, Schedule};
pub use error::ScheduleError;
pub use events::{Event, EventKind, EventSink, NoEvents, RunOutcome};
pub use scheduler::{RunSettings, ScheduledPipeline, Scheduler};
