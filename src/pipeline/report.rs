//! The record of one run: counts, skips, stages and outcome, printed by the CLI and stored
//! as one JSON line under `<data dir>/runs/`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::plan::Plan;
use super::refresh::RefreshPlan;
use super::skips::{Skip, count_by_reason};
use super::stages::StageRecord;
use crate::error::Result;
use crate::store::blobs::write_atomic;

/// Summary of one run, printed by the CLI and stored under `<data dir>/runs/`. A failed
/// run is recorded too, with `error` set and the counts it reached.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub dataset: String,
    /// Start time, RFC 3339 UTC (the wall clock, not an injected refresh time).
    pub started_at: String,
    /// The version this run published, if it published one.
    pub published_version: Option<u64>,
    /// The latest version when the run found nothing new to publish.
    pub unchanged_version: Option<u64>,
    /// Versions this run uploaded to `[storage]`'s object store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uploaded_versions: Vec<u64>,
    /// The object store of `[storage]`, when the pipeline has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_url: Option<String>,
    /// The Ballista scheduler the SQL models ran on; `None` when they ran in this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Error message of a failed run; `None` for a run that completed.
    pub error: Option<String>,
    pub counts: BTreeMap<String, u64>,
    pub skipped_by_reason: BTreeMap<String, usize>,
    pub archive_requests: u64,
    pub archive_retries: u64,
    pub elapsed_secs: f64,
    /// Every item the run could not use, with its detail; also kept when nothing is published.
    pub skips: Vec<Skip>,
    /// Set for a plan instead of a run.
    pub plan: Option<Plan>,
    /// What the archive refresh queried (or would query).
    pub refresh: Option<RefreshPlan>,
    /// Each stage in run order: ran, fresh or would run, and why.
    pub stages: Vec<StageRecord>,
    #[serde(skip)]
    pub(super) plan_only: bool,
}

impl RunReport {
    pub(super) fn new(
        run_id: String,
        dataset: String,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        Self {
            run_id,
            dataset,
            started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            published_version: None,
            unchanged_version: None,
            uploaded_versions: Vec::new(),
            storage_url: None,
            engine: None,
            error: None,
            counts: BTreeMap::new(),
            skipped_by_reason: BTreeMap::new(),
            archive_requests: 0,
            archive_retries: 0,
            elapsed_secs: 0.0,
            skips: Vec::new(),
            plan: None,
            refresh: None,
            stages: Vec::new(),
            plan_only: false,
        }
    }

    /// Records the first stage without a record as the one that failed, unless a stage
    /// already recorded its own failure.
    pub(super) fn record_failed_stage(&mut self, error: &str) {
        if self.stages.iter().any(|s| s.status == "failed") {
            return;
        }
        let failed = ["catalog", "archive", "models", "images", "publish"]
            .into_iter()
            .find(|stage| self.stages.iter().all(|s| s.stage != *stage));
        if let Some(stage) = failed {
            self.stage_done(stage, "failed", vec![error.to_string()], "", Instant::now());
        }
    }

    pub(super) fn stage_done(
        &mut self,
        stage: &str,
        status: &str,
        reasons: Vec<String>,
        input_sha256: &str,
        started: Instant,
    ) {
        tracing::info!(stage, status, reasons = ?reasons, "stage finished");
        self.stages.push(StageRecord {
            stage: stage.to_string(),
            status: status.to_string(),
            reasons,
            input_sha256: input_sha256.to_string(),
            elapsed_secs: started.elapsed().as_secs_f64(),
        });
    }

    /// Fills the totals that are known only at the end of a run, successful or not.
    pub(super) fn finish(&mut self, stats: &paperclip_archive::ClientStats, elapsed_secs: f64) {
        self.archive_requests = stats.requests;
        self.archive_retries = stats.retries;
        self.counts
            .insert("archive_requests".into(), stats.requests);
        self.counts.insert("archive_retries".into(), stats.retries);
        self.counts
            .insert("bytes_downloaded".into(), stats.bytes_downloaded);
        // Rows without a position stay in the tables with NULL s_ra and s_dec. The count
        // makes them visible before anyone joins on coordinates.
        self.counts.insert(
            "observations_without_position".into(),
            stats.observations_without_position,
        );
        self.counts
            .insert("skipped".into(), self.skips.len() as u64);
        self.skipped_by_reason = count_by_reason(&self.skips);
        self.elapsed_secs = elapsed_secs;
    }
}

pub(super) fn save_report(data_dir: &Path, report: &RunReport) -> Result<()> {
    let path = data_dir
        .join("runs")
        .join(format!("{}.json", report.run_id));
    // One JSON object per line, so the run log reads as newline-delimited JSON.
    let mut json = serde_json::to_vec(report).expect("RunReport serializes");
    json.push(b'\n');
    write_atomic(&path, &json)
}
