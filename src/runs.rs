//! The run log read back: one JSON record per run under `<data dir>/runs/`, written by
//! [`crate::pipeline::run`] (runs that failed included, plans excluded).
//!
//! Invariants:
//! - A file that is not a run record is left out with a warning, so one stray file cannot
//!   hide the others (as in the `paperclip.runs` SQL table).
//! - A run's start time is its record's `started_at` when present, else the UTC time that
//!   starts its run id (`20300101T030000.123Z-<pid>`).
//! - Listings are newest first by start time, then by run id.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RunLogError {
    #[error("cannot read the run log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("run {run_id:?} not found in {runs_dir}; {hint}")]
    NotFound {
        run_id: String,
        runs_dir: PathBuf,
        hint: String,
    },
}

/// The summary of one run record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub dataset: String,
    /// `published`, `unchanged`, `failed`, or `ok` for a run that neither published nor
    /// compared (a plan).
    pub status: String,
    /// The version published, or the latest version when nothing changed.
    pub version: Option<u64>,
    pub started_at: Option<DateTime<Utc>>,
    pub elapsed_secs: Option<f64>,
    pub error: Option<String>,
}

impl RunSummary {
    /// Summarizes a run record; `None` when it has no string `run_id`.
    pub fn from_record(record: &serde_json::Value) -> Option<Self> {
        let text = |key: &str| record.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let run_id = text("run_id")?;
        let error = text("error");
        let published = record.get("published_version").and_then(|v| v.as_u64());
        let unchanged = record.get("unchanged_version").and_then(|v| v.as_u64());
        let started_at = text("started_at")
            .and_then(|t| t.parse().ok())
            .or_else(|| started_at_from_run_id(&run_id));
        Some(Self {
            dataset: text("dataset").unwrap_or_default(),
            status: run_status(record).to_string(),
            version: published.or(unchanged),
            started_at,
            elapsed_secs: record.get("elapsed_secs").and_then(|v| v.as_f64()),
            error,
            run_id,
        })
    }
}

/// Returns the status of a run record: `failed` when it has an error, else `published` or
/// `unchanged`, else `ok`.
pub fn run_status(record: &serde_json::Value) -> &'static str {
    let has = |key: &str| record.get(key).is_some_and(|v| !v.is_null());
    if has("error") {
        "failed"
    } else if has("published_version") {
        "published"
    } else if has("unchanged_version") {
        "unchanged"
    } else {
        "ok"
    }
}

/// Reads the start time that opens a run id such as `20300101T030000.123Z-4242`.
pub fn started_at_from_run_id(run_id: &str) -> Option<DateTime<Utc>> {
    let stamp = run_id.split('-').next()?.strip_suffix('Z')?;
    NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// Lists the runs of the data directory, newest first; `dataset` keeps one dataset's runs.
pub fn list_runs(data_dir: &Path, dataset: Option<&str>) -> Result<Vec<RunSummary>, RunLogError> {
    let mut runs: Vec<RunSummary> = read_records(data_dir)?
        .iter()
        .filter_map(|(_, record)| RunSummary::from_record(record))
        .filter(|run| dataset.is_none_or(|name| run.dataset == name))
        .collect();
    runs.sort_by(|a, b| (b.started_at, &b.run_id).cmp(&(a.started_at, &a.run_id)));
    Ok(runs)
}

/// Reads the full record of one run, as written.
pub fn read_run(data_dir: &Path, run_id: &str) -> Result<serde_json::Value, RunLogError> {
    let records = read_records(data_dir)?;
    if let Some((_, record)) = records
        .iter()
        .find(|(_, record)| record.get("run_id").and_then(|v| v.as_str()) == Some(run_id))
    {
        return Ok(record.clone());
    }
    let similar: Vec<&str> = records
        .iter()
        .filter_map(|(_, record)| record.get("run_id").and_then(|v| v.as_str()))
        .filter(|id| id.starts_with(run_id) || run_id.starts_with(&id[..id.len().min(8)]))
        .take(5)
        .collect();
    let hint = if similar.is_empty() {
        "`paperclip runs list` shows the run ids".to_string()
    } else {
        format!("similar run ids: {}", similar.join(", "))
    };
    Err(RunLogError::NotFound {
        run_id: run_id.to_string(),
        runs_dir: data_dir.join("runs"),
        hint,
    })
}

/// Reads every JSON object with a string `run_id` in the runs folder, by file name. Other
/// files are left out with a warning, so one stray file cannot hide the run log.
pub fn read_records(data_dir: &Path) -> Result<Vec<(PathBuf, serde_json::Value)>, RunLogError> {
    let runs_dir = data_dir.join("runs");
    let entries = match std::fs::read_dir(&runs_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RunLogError::Io {
                path: runs_dir,
                source,
            });
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();

    let mut records = Vec::new();
    for path in paths {
        let record = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .filter(|value| value.get("run_id").is_some_and(|id| id.is_string()));
        match record {
            Some(record) => records.push((path, record)),
            None => tracing::warn!(path = %path.display(), "not a run record; left out"),
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, record: serde_json::Value) {
        let runs = dir.join("runs");
        std::fs::create_dir_all(&runs).unwrap();
        let id = record["run_id"].as_str().unwrap().to_string();
        std::fs::write(runs.join(format!("{id}.json")), record.to_string()).unwrap();
    }

    #[test]
    fn run_id_carries_the_start_time() {
        assert_eq!(
            started_at_from_run_id("20300102T030405.678Z-4242"),
            Some("2030-01-02T03:04:05.678Z".parse().unwrap())
        );
        assert_eq!(started_at_from_run_id("nope"), None);
    }

    #[test]
    fn runs_are_listed_newest_first_with_their_status() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            serde_json::json!({"run_id": "20300101T030000.000Z-1", "dataset": "a", "published_version": 1, "elapsed_secs": 2.5}),
        );
        write(
            dir.path(),
            serde_json::json!({"run_id": "20300102T030000.000Z-1", "dataset": "a", "error": "archive down"}),
        );
        write(
            dir.path(),
            serde_json::json!({"run_id": "20300103T030000.000Z-1", "dataset": "b", "unchanged_version": 4}),
        );
        std::fs::write(dir.path().join("runs/stray.json"), "[1]").unwrap();

        let runs = list_runs(dir.path(), None).unwrap();
        let statuses: Vec<&str> = runs.iter().map(|r| r.status.as_str()).collect();
        assert_eq!(statuses, ["unchanged", "failed", "published"]);
        let versions: Vec<Option<u64>> = runs.iter().map(|r| r.version).collect();
        assert_eq!(versions, [Some(4), None, Some(1)]);
        assert_eq!(runs[1].error.as_deref(), Some("archive down"));

        let only_a = list_runs(dir.path(), Some("a")).unwrap();
        assert_eq!(only_a.len(), 2);
        assert_eq!(only_a[1].elapsed_secs, Some(2.5));
    }

    #[test]
    fn unknown_run_id_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            serde_json::json!({"run_id": "20300101T030000.000Z-1", "dataset": "a"}),
        );
        let found = read_run(dir.path(), "20300101T030000.000Z-1").unwrap();
        assert_eq!(found["dataset"], "a");
        let message = read_run(dir.path(), "20300101T0300")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("run \"20300101T0300\" not found"),
            "{message}"
        );
        assert!(
            message.contains("similar run ids: 20300101T030000.000Z-1"),
            "{message}"
        );
    }
}
