//! Errors of schedules and the scheduler. Each message names the bad value and the fix.

use std::path::PathBuf;

use thiserror::Error;

use crate::error::PipelineError;

#[derive(Debug, Error)]
pub enum ScheduleError {
    #[error(
        "schedule.cron is missing; add a 5-field cron expression such as cron = \"0 3 * * *\" (03:00 every day)"
    )]
    MissingCron,

    #[error(
        "schedule.cron = {expression:?} is not a valid cron expression (minute hour day-of-month month day-of-week): {reason}; use e.g. \"0 3 * * *\" for 03:00 every day"
    )]
    InvalidCron { expression: String, reason: String },

    #[error(
        "schedule.cron = {expression:?} never comes due (no date matches it); check the day-of-month and month fields"
    )]
    NeverDue { expression: String },

    #[error(
        "schedule.time_zone is missing or empty; cron times are read in an IANA time zone and there is no implicit UTC or local time: add e.g. time_zone = \"Europe/Berlin\" or time_zone = \"UTC\""
    )]
    MissingTimeZone,

    #[error(
        "schedule.time_zone = {name:?} is not an IANA time zone name;{hint} (names look like \"Europe/Berlin\", \"America/New_York\" or \"UTC\")"
    )]
    UnknownTimeZone {
        name: String,
        /// ` did you mean "X"?` when a zone is close to the name, else empty.
        hint: String,
    },

    #[error(
        "pipeline file {path} has no [schedule] section, so `paperclip serve` cannot tell when to run it; add one, e.g.\n[schedule]\ncron = \"0 3 * * *\"\ntime_zone = \"Europe/Berlin\"\nor run it once with `paperclip run {path}`"
    )]
    NotScheduled { path: PathBuf },

    #[error(
        "{}",
        if first == second {
            format!("pipeline file {} is given twice; give each pipeline once", first.display())
        } else {
            format!(
                "pipeline files {} and {} both build dataset {dataset:?}; their runs would wait for each other's lock, so serve only one of them",
                first.display(),
                second.display()
            )
        }
    )]
    DuplicateDataset {
        dataset: String,
        first: PathBuf,
        second: PathBuf,
    },

    #[error("no pipeline to schedule; pass one or more pipeline files")]
    NoPipelines,

    /// Boxed because pipeline errors are large and every schedule function returns this.
    #[error(transparent)]
    Pipeline(Box<PipelineError>),

    #[error(transparent)]
    RunLog(#[from] crate::runs::RunLogError),
}

impl From<PipelineError> for ScheduleError {
    fn from(error: PipelineError) -> Self {
        Self::Pipeline(Box::new(error))
    }
}
