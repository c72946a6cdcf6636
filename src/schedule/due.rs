//! Due times: a pipeline's `[schedule]` section parsed into a cron expression read in an
//! IANA time zone, and the next instant it comes due.
//!
//! Invariants:
//! - Every due time is computed in the schedule's own time zone and returned as UTC, so
//!   the result does not depend on the machine's zone.
//! - [`Schedule::next_due_after`] is strictly after its argument, so passing back the due
//!   time just handled never returns it again (this also decides which pass of a repeated
//!   hour comes next).
//!
//! Daylight saving time follows the cron crate's rules (those of Vixie cron):
//! - A time whose minute and hour fields are single values (`30 2 * * *`) is a fixed
//!   time. In a spring-forward gap it comes due at the first minute after the gap: in
//!   Berlin on the last Sunday of March, 02:30 becomes 03:00 CEST. In a fall-back repeat it
//!   comes due once, in the first pass: 02:30 CEST, not again at 02:30 CET.
//! - A field with `*`, a step or a range (`15 * * * *`, `30 1-3 * * *`) comes due at every
//!   matching wall-clock time that exists: none inside a gap, twice in a repeated hour.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::error::ScheduleError;
use crate::pipeline::config::ScheduleSection;
use crate::sql::graph::closest;

/// A validated `[schedule]` section.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    expression: String,
    time_zone: Tz,
    /// Wait after a failed run before it is tried again.
    pub retry_delay_secs: u64,
    /// Retries of a failed run before the refresh waits for its next due time.
    pub max_retries: u32,
}

/// When a pipeline's first scheduled run is due after the scheduler starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstDue {
    /// A due time passed since the dataset's last recorded run: run once now. Several
    /// missed due times still make one catch-up run.
    CatchUp { missed: DateTime<Utc> },
    /// Nothing was missed; wait for this time.
    At(DateTime<Utc>),
}

impl Schedule {
    /// Parses and checks a `[schedule]` section: a 5-field cron expression that comes due
    /// at least once, and a known IANA time zone.
    pub fn from_section(section: &ScheduleSection) -> Result<Self, ScheduleError> {
        let expression = section.cron.as_deref().ok_or(ScheduleError::MissingCron)?;
        let name = section
            .time_zone
            .as_deref()
            .ok_or(ScheduleError::MissingTimeZone)?;
        let time_zone = parse_time_zone(name)?;
        let cron = parse_cron(expression)?;
        let schedule = Self {
            cron,
            expression: expression.to_string(),
            time_zone,
            retry_delay_secs: section.retry_delay_secs,
            max_retries: section.max_retries,
        };
        // Any fixed start works: a 5-field expression has no year, so it either comes
        // due within a few years of every date or never.
        let reference = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
        schedule.next_due_after(reference)?;
        Ok(schedule)
    }

    /// Returns the cron expression as written in the pipeline file.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// Computes the first due time strictly after `after`.
    pub fn next_due_after(&self, after: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        let local = after.with_timezone(&self.time_zone);
        self.cron
            .find_next_occurrence(&local, false)
            .map(|due| due.with_timezone(&Utc))
            .map_err(|_| ScheduleError::NeverDue {
                expression: self.expression.clone(),
            })
    }

    /// Decides the first run after a start at `now`, given when the dataset's latest
    /// recorded run started. A dataset with no recorded run waits for its next due time.
    pub fn first_due(
        &self,
        last_started: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<FirstDue, ScheduleError> {
        if let Some(last) = last_started {
            let missed = self.next_due_after(last)?;
            if missed <= now {
                return Ok(FirstDue::CatchUp { missed });
            }
        }
        Ok(FirstDue::At(self.next_due_after(now)?))
    }
}

fn parse_cron(expression: &str) -> Result<Cron, ScheduleError> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|error| ScheduleError::InvalidCron {
            expression: expression.to_string(),
            reason: super::cron_check::diagnose(expression).unwrap_or_else(|| error.to_string()),
        })
}

fn parse_time_zone(name: &str) -> Result<Tz, ScheduleError> {
    if name.trim().is_empty() {
        return Err(ScheduleError::MissingTimeZone);
    }
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::UnknownTimeZone {
            name: name.to_string(),
            hint: closest_time_zone(name)
                .map(|zone| format!(" did you mean {zone:?}?"))
                .unwrap_or_default(),
        })
}

/// Suggests an IANA name for `name`: the `Etc/GMT` zone of a whole-hour offset such as
/// `+02:00` or `UTC-5`, the zone written in another case, the zone of a city written
/// alone (`Berlin`), or the nearest name by edit distance when it is close enough to be a
/// typo. `None` when nothing is that close.
fn closest_time_zone(name: &str) -> Option<String> {
    if let Some(zone) = offset_zone(name) {
        return Some(zone);
    }
    let trimmed = name.trim();
    let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()).collect();
    let same_name = names.iter().find(|zone| zone.eq_ignore_ascii_case(trimmed));
    let same_city = || {
        names.iter().find(|zone| {
            zone.rsplit('/')
                .next()
                .is_some_and(|city| city.eq_ignore_ascii_case(trimmed))
        })
    };
    if let Some(zone) = same_name.or_else(same_city) {
        return Some((*zone).to_string());
    }

    let lower: Vec<String> = names.iter().map(|z| z.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    let found = closest(&trimmed.to_ascii_lowercase(), &lower)?;
    let index = lower.iter().position(|zone| *zone == found)?;
    Some(names[index].to_string())
}

/// Maps a whole-hour UTC offset (`+02:00`, `+2`, `UTC+2`, `GMT-05:00`) to its `Etc/GMT`
/// zone, whose sign is inverted by POSIX convention: UTC+2 is `Etc/GMT-2`.
fn offset_zone(name: &str) -> Option<String> {
    let upper = name.trim().to_ascii_uppercase();
    let rest = upper
        .strip_prefix("UTC")
        .or_else(|| upper.strip_prefix("GMT"))
        .unwrap_or(&upper);
    let (sign, digits) = match rest.chars().next()? {
        '+' => ('-', &rest[1..]),
        '-' => ('+', &rest[1..]),
        _ => return None,
    };
    let (hours, minutes) = match digits.split_once(':') {
        Some((hours, minutes)) => (hours, minutes),
        None if digits.len() == 4 => digits.split_at(2),
        None => (digits, "0"),
    };
    let hours: u32 = hours.parse().ok()?;
    let whole_hour = minutes.parse::<u32>().ok()? == 0 && (1..=14).contains(&hours);
    whole_hour.then(|| format!("Etc/GMT{sign}{hours}"))
}

#[cfg(test)]
mod tests {

    #[test]
    fn offsets_suggest_etc_zones_with_the_posix_sign() {
        assert_eq!(offset_zone("+02:00").as_deref(), Some("Etc/GMT-2"));
        assert_eq!(offset_zone("UTC-5").as_deref(), Some("Etc/GMT+5"));
        assert_eq!(offset_zone("gmt+0100").as_deref(), Some("Etc/GMT-1"));
        assert_eq!(offset_zone("+05:30"), None);
        assert_eq!(offset_zone("Europe/Berln"), None);
        assert_eq!(closest_time_zone("+02:00").as_deref(), Some("Etc/GMT-2"));
    }

    #[test]
    fn time_zone_hints_are_close_or_absent() {
        let hint = |name| closest_time_zone(name);
        assert_eq!(hint("Europe/Berln").as_deref(), Some("Europe/Berlin"));
        assert_eq!(hint("europe/berlin").as_deref(), Some("Europe/Berlin"));
        assert_eq!(hint("Berlin").as_deref(), Some("Europe/Berlin"));
        assert_eq!(hint("Local"), None);
        assert_eq!(hint("../../etc/passwd"), None);
    }
    use super::*;

    fn schedule(cron: &str, time_zone: &str) -> Schedule {
        Schedule::from_section(&section(Some(cron), Some(time_zone))).unwrap()
    }

    fn section(cron: Option<&str>, time_zone: Option<&str>) -> ScheduleSection {
        ScheduleSection {
            cron: cron.map(str::to_string),
            time_zone: time_zone.map(str::to_string),
            ..ScheduleSection::default()
        }
    }

    fn error(cron: Option<&str>, time_zone: Option<&str>) -> String {
        Schedule::from_section(&section(cron, time_zone))
            .unwrap_err()
            .to_string()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    /// Lists the next `n` due times after `start`, each as UTC text.
    fn due_times(schedule: &Schedule, start: &str, n: usize) -> Vec<String> {
        let mut at = utc(start);
        (0..n)
            .map(|_| {
                at = schedule.next_due_after(at).unwrap();
                at.format("%Y-%m-%dT%H:%MZ").to_string()
            })
            .collect()
    }

    #[test]
    fn daily_time_is_read_in_the_time_zone() {
        let berlin = schedule("0 3 * * *", "Europe/Berlin");
        // 03:00 CET is 02:00 UTC in winter, 03:00 CEST is 01:00 UTC in summer.
        assert_eq!(
            due_times(&berlin, "2026-01-10T12:00:00Z", 2),
            ["2026-01-11T02:00Z", "2026-01-12T02:00Z"]
        );
        assert_eq!(
            due_times(&berlin, "2026-07-10T12:00:00Z", 1),
            ["2026-07-11T01:00Z"]
        );
        let new_york = schedule("0 3 * * *", "America/New_York");
        assert_eq!(
            due_times(&new_york, "2026-01-10T12:00:00Z", 1),
            ["2026-01-11T08:00Z"]
        );
        let utc_zone = schedule("0 3 * * *", "UTC");
        assert_eq!(
            due_times(&utc_zone, "2026-01-10T03:00:00Z", 1),
            ["2026-01-11T03:00Z"],
            "strictly after: a due time is never returned twice"
        );
    }

    #[test]
    fn fixed_time_in_spring_gap() {
        // Berlin skips 02:00-03:00 on 2026-03-29; 02:30 does not exist that day.
        let berlin = schedule("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            due_times(&berlin, "2026-03-28T12:00:00Z", 3),
            [
                "2026-03-29T01:00Z", // 03:00 CEST, the first minute after the gap
                "2026-03-30T00:30Z", // 02:30 CEST
                "2026-03-31T00:30Z",
            ]
        );
    }

    #[test]
    fn fixed_time_in_fall_back_runs_once() {
        // Berlin repeats 02:00-03:00 on 2026-10-25: 02:30 CEST, then 02:30 CET.
        let berlin = schedule("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            due_times(&berlin, "2026-10-24T12:00:00Z", 2),
            [
                "2026-10-25T00:30Z", // 02:30 CEST, the first pass only
                "2026-10-26T01:30Z", // 02:30 CET the next day
            ]
        );
    }

    #[test]
    fn hourly_times_across_dst_changes() {
        let berlin = schedule("15 * * * *", "Europe/Berlin");
        assert_eq!(
            due_times(&berlin, "2026-03-29T00:00:00Z", 2),
            ["2026-03-29T00:15Z", "2026-03-29T01:15Z"], // 01:15 CET, then 03:15 CEST
        );
        assert_eq!(
            due_times(&berlin, "2026-10-25T00:00:00Z", 2),
            ["2026-10-25T00:15Z", "2026-10-25T01:15Z"], // 02:15 CEST, then 02:15 CET
        );
    }

    #[test]
    fn missed_due_times_make_one_catch_up_run() {
        let daily = schedule("0 3 * * *", "UTC");
        let now = utc("2026-01-10T12:00:00Z");
        assert_eq!(
            daily
                .first_due(Some(utc("2026-01-05T03:00:00Z")), now)
                .unwrap(),
            FirstDue::CatchUp {
                missed: utc("2026-01-06T03:00:00Z")
            }
        );
        assert_eq!(
            daily
                .first_due(Some(utc("2026-01-10T03:00:01Z")), now)
                .unwrap(),
            FirstDue::At(utc("2026-01-11T03:00:00Z")),
            "today's run happened"
        );
        assert_eq!(
            daily.first_due(None, now).unwrap(),
            FirstDue::At(utc("2026-01-11T03:00:00Z")),
            "no recorded run: wait for the next due time"
        );
    }

    #[test]
    fn bad_cron_expressions_are_named() {
        let message = error(Some("0 3 * *"), Some("UTC"));
        assert!(message.contains("schedule.cron = \"0 3 * *\""), "{message}");
        assert!(message.contains("it has 4 fields"), "{message}");
        let message = error(Some("0 3 * * * *"), Some("UTC"));
        assert!(message.contains("it has 6 fields"), "{message}");
        let message = error(Some("61 3 * * *"), Some("UTC"));
        assert!(message.contains("\"61 3 * * *\""), "{message}");
        assert!(message.contains("61 is outside 0-59"), "{message}");
        let message = error(Some("0 3 * * *"), Some(""));
        assert!(message.contains("missing or empty"), "{message}");
        let message = error(Some("0 0 30 2 *"), Some("UTC"));
        assert!(message.contains("never comes due"), "{message}");
        let message = error(None, Some("UTC"));
        assert!(message.contains("schedule.cron is missing"), "{message}");
    }

    #[test]
    fn time_zone_is_required_and_checked() {
        let message = error(Some("0 3 * * *"), None);
        assert!(
            message.contains("schedule.time_zone is missing"),
            "{message}"
        );
        assert!(message.contains("no implicit UTC"), "{message}");
        let message = error(Some("0 3 * * *"), Some("Europe/Berln"));
        assert!(
            message.contains(
                "\"Europe/Berln\" is not an IANA time zone name; did you mean \"Europe/Berlin\"?"
            ),
            "{message}"
        );
        let message = error(Some("0 3 * * *"), Some("europe/paris"));
        assert!(message.contains("\"Europe/Paris\""), "{message}");
    }
}
