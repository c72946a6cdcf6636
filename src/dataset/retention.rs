//! Version retention: which versions a policy keeps, where the policy is recorded, and the
//! durable record of versions that `paperclip datasets gc` removed.
//!
//! Files, under `<data dir>/datasets/<name>/`:
//! - `retention.json`: the `[retention]` section of the pipeline file that last ran for the
//!   dataset, written by `paperclip run`, so `datasets gc NAME` needs no pipeline file.
//! - `expired.json`: every version gc removed, with when and why. It is written (atomically)
//!   before any file is deleted, so an interrupted gc never leaves a half-deleted version
//!   that is still advertised, and a query of a removed version can report why it is gone.
//!
//! Invariants: the latest version is always kept; the kept versions are always the newest
//! ones (a suffix of the version list), so the oldest kept version bounds everything gc
//! may remove; a removed version never comes back.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::versions::{DatasetPaths, VersionRecord};
use crate::error::{PipelineError, Result};
use crate::store::blobs::write_atomic;

/// Rules for the versions gc keeps. A version is kept when either rule keeps it, and the
/// latest version always is. With neither rule set, every version is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep the newest `keep_last` versions.
    pub keep_last: Option<u64>,
    /// Keep versions created less than `keep_days` days ago.
    pub keep_days: Option<u64>,
}

impl RetentionPolicy {
    /// Returns true when the policy expires nothing.
    pub fn keeps_everything(&self) -> bool {
        self.keep_last.is_none() && self.keep_days.is_none()
    }

    /// Checks the values. `spelling` selects how the message names the settings.
    pub fn check(&self, spelling: Spelling) -> Result<(), String> {
        let (keep_last, keep_days, equals) = match spelling {
            Spelling::PipelineFile => ("retention.keep_last", "retention.keep_days", " = "),
            Spelling::Flags => ("--keep-last", "--keep-days", " "),
        };
        if self.keep_last == Some(0) {
            return Err(format!(
                "{keep_last}{equals}0 is invalid: the latest version is always kept; use 1 or more, or leave {keep_last} out to keep every version"
            ));
        }
        if self.keep_days == Some(0) {
            return Err(format!(
                "{keep_days}{equals}0 is invalid: it would keep no version by age; use 1 or more, or leave {keep_days} out"
            ));
        }
        Ok(())
    }

    /// The oldest version the policy keeps among `versions` (sorted oldest first), as of
    /// `now`; `None` when there are no versions. Every newer version is kept too.
    pub fn first_kept(&self, versions: &[VersionRecord], now: DateTime<Utc>) -> Option<u64> {
        let latest = versions.last()?.version;
        if self.keeps_everything() {
            return versions.first().map(|v| v.version);
        }
        let mut first = latest;
        if let Some(keep_last) = self.keep_last {
            let newest = usize::try_from(keep_last).unwrap_or(usize::MAX);
            let index = versions.len().saturating_sub(newest);
            first = first.min(versions[index].version);
        }
        if let Some(keep_days) = self.keep_days {
            let cutoff = i64::try_from(keep_days)
                .ok()
                .and_then(chrono::Duration::try_days)
                .and_then(|age| now.checked_sub_signed(age));
            let young = versions.iter().filter(|v| match cutoff {
                // A timestamp that does not parse counts as young: keeping is the safe side.
                Some(cutoff) => created_at(v).is_none_or(|created| created > cutoff),
                None => true,
            });
            if let Some(oldest_young) = young.map(|v| v.version).min() {
                first = first.min(oldest_young);
            }
        }
        Some(first)
    }
}

/// Names of the retention settings in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// `retention.keep_last = 0`
    PipelineFile,
    /// `--keep-last 0`
    Flags,
}

impl std::fmt::Display for RetentionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.keep_last, self.keep_days) {
            (None, None) => write!(f, "keep every version"),
            (Some(last), None) => write!(f, "keep_last = {last}"),
            (None, Some(days)) => write!(f, "keep_days = {days}"),
            (Some(last), Some(days)) => write!(f, "keep_last = {last}, keep_days = {days}"),
        }
    }
}

fn created_at(record: &VersionRecord) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&record.created_at)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A version that gc removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredVersion {
    pub version: u64,
    /// When the version was published; unknown when its Delta log was already gone.
    pub created_at: Option<String>,
    /// When gc removed it (RFC 3339).
    pub expired_at: String,
    /// Why, completing "removed by ...": e.g. `retention (keep_last = 3)`.
    pub reason: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpiredFile {
    versions: Vec<ExpiredVersion>,
}

fn policy_path(paths: &DatasetPaths) -> PathBuf {
    paths.root.join("retention.json")
}

fn expired_path(paths: &DatasetPaths) -> PathBuf {
    paths.root.join("expired.json")
}

/// Records the pipeline's retention policy for `datasets gc`; rewrites the file only when
/// the policy changed.
pub fn record_policy(paths: &DatasetPaths, policy: &RetentionPolicy) -> Result<()> {
    if recorded_policy(paths).ok().flatten().as_ref() == Some(policy) {
        return Ok(());
    }
    let bytes = serde_json::to_vec_pretty(policy).expect("RetentionPolicy serializes");
    write_atomic(&policy_path(paths), &bytes)
}

/// Reads the policy recorded by the last run of the dataset's pipeline, if any.
pub fn recorded_policy(paths: &DatasetPaths) -> Result<Option<RetentionPolicy>> {
    let path = policy_path(paths);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(PipelineError::io(&path, error)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|error| {
        PipelineError::Invalid(format!(
            "{} is not a retention policy ({error}); delete it and run the pipeline again, or pass --keep-last/--keep-days to gc",
            path.display()
        ))
    })
}

/// Loads the versions gc removed, oldest first. The list is empty when gc never removed one.
pub fn load_expired(paths: &DatasetPaths) -> Result<Vec<ExpiredVersion>> {
    let path = expired_path(paths);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(PipelineError::io(&path, error)),
    };
    let file: ExpiredFile = serde_json::from_slice(&bytes).map_err(|error| {
        PipelineError::Invalid(format!(
            "{} is not a list of expired versions ({error}); restore it from a backup, or delete it if the versions it listed are still published",
            path.display()
        ))
    })?;
    Ok(file.versions)
}

/// Adds versions to `expired.json` (atomically), keeping it sorted and free of duplicates.
pub fn save_expired(paths: &DatasetPaths, added: &[ExpiredVersion]) -> Result<()> {
    let mut versions = load_expired(paths)?;
    for version in added {
        if !versions.iter().any(|v| v.version == version.version) {
            versions.push(version.clone());
        }
    }
    versions.sort_by_key(|v| v.version);
    let bytes = serde_json::to_vec_pretty(&ExpiredFile { versions }).expect("expired serializes");
    write_atomic(&expired_path(paths), &bytes)
}

/// Formats version numbers as ranges: `v4..v6`, `v1, v3..v5`, or `none`.
pub fn format_versions(versions: &[u64]) -> String {
    let mut sorted = versions.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for version in sorted {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == version => *end = version,
            _ => ranges.push((version, version)),
        }
    }
    if ranges.is_empty() {
        return "none".to_string();
    }
    ranges
        .iter()
        .map(|&(start, end)| {
            if start == end {
                format!("v{start}")
            } else {
                format!("v{start}..v{end}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The error for a version that cannot be opened: removed by gc, lost with its Delta log,
/// or never published. `available` lists the versions that can be read.
pub fn unavailable_version(
    paths: &DatasetPaths,
    version: u64,
    expired: &[ExpiredVersion],
    available: &[u64],
) -> PipelineError {
    let known = format_versions(available);
    let why = if let Some(entry) = expired.iter().find(|e| e.version == version) {
        format!("was removed by {}", entry.reason)
    } else if available.first().is_some_and(|&oldest| version < oldest) && version > 0 {
        "can no longer be read: its Delta log entries were removed outside paperclip (run `paperclip datasets gc` to remove its files)".to_string()
    } else {
        return PipelineError::VersionNotFound {
            name: paths.name.clone(),
            version: version.to_string(),
            known,
        };
    };
    PipelineError::VersionUnavailable {
        name: paths.name.clone(),
        version,
        why,
        available: known,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: u64, created_at: &str) -> VersionRecord {
        serde_json::from_value(serde_json::json!({
            "dataset": "d",
            "version": version,
            "created_at": created_at,
            "run_id": "",
            "pipeline_sha256": "",
            "fingerprint": "",
            "counts": {},
            "skips_by_reason": {},
            "shards": [],
        }))
        .unwrap()
    }

    fn day(n: u32) -> String {
        format!("2030-01-{n:02}T00:00:00+00:00")
    }

    fn versions() -> Vec<VersionRecord> {
        (1..=6).map(|v| record(v, &day(v as u32))).collect()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&day(7))
            .unwrap()
            .with_timezone(&Utc)
    }

    fn policy(keep_last: Option<u64>, keep_days: Option<u64>) -> RetentionPolicy {
        RetentionPolicy {
            keep_last,
            keep_days,
        }
    }

    #[test]
    fn no_rule_keeps_everything() {
        assert_eq!(policy(None, None).first_kept(&versions(), now()), Some(1));
    }

    #[test]
    fn keep_last_keeps_the_newest() {
        assert_eq!(
            policy(Some(3), None).first_kept(&versions(), now()),
            Some(4)
        );
        assert_eq!(
            policy(Some(1), None).first_kept(&versions(), now()),
            Some(6)
        );
        assert_eq!(
            policy(Some(99), None).first_kept(&versions(), now()),
            Some(1)
        );
    }

    #[test]
    fn keep_days_keeps_younger_versions() {
        // Versions of days 5 and 6 are younger than 3 days on day 7.
        assert_eq!(
            policy(None, Some(3)).first_kept(&versions(), now()),
            Some(5)
        );
    }

    #[test]
    fn either_rule_keeps_a_version() {
        assert_eq!(
            policy(Some(1), Some(3)).first_kept(&versions(), now()),
            Some(5)
        );
        assert_eq!(
            policy(Some(4), Some(1)).first_kept(&versions(), now()),
            Some(3)
        );
    }

    #[test]
    fn latest_is_kept_even_when_old() {
        assert_eq!(
            policy(None, Some(1)).first_kept(&versions(), now() + chrono::Duration::days(30)),
            Some(6)
        );
    }

    #[test]
    fn zero_values_name_the_fix() {
        let message = policy(Some(0), None)
            .check(Spelling::PipelineFile)
            .unwrap_err();
        assert!(
            message.contains("retention.keep_last = 0 is invalid"),
            "{message}"
        );
        assert!(message.contains("use 1 or more"), "{message}");
        let message = policy(None, Some(0)).check(Spelling::Flags).unwrap_err();
        assert!(message.contains("--keep-days 0 is invalid"), "{message}");
        assert!(policy(Some(2), Some(7)).check(Spelling::Flags).is_ok());
    }

    #[test]
    fn versions_format_as_ranges() {
        assert_eq!(format_versions(&[4, 5, 6]), "v4..v6");
        assert_eq!(format_versions(&[1, 3, 4, 5]), "v1, v3..v5");
        assert_eq!(format_versions(&[7]), "v7");
        assert_eq!(format_versions(&[]), "none");
    }
}
