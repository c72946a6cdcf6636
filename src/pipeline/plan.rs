//! Plans and stage freshness: what a run would do, the inputs it would publish a version
//! from, and the checks that make `run --plan` run exactly a saved plan.

use std::collections::BTreeMap;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use super::assemble::AssembledSamples;
use super::config::PipelineConfig;
use super::report::RunReport;
use super::stages::{self, ConfirmedInputs, StageInputs};
use super::state::ArchiveState;
use crate::dataset::versions::{Lineage, VersionRecord};
use crate::error::{PipelineError, Result};

/// Prediction of what a run would do, made with [`super::RunOptions::plan_only`]. Saved
/// as JSON, it can be handed back through [`super::RunOptions::saved_plan`] to run exactly
/// this plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// The version a run would publish; `None` when it would publish nothing.
    pub would_publish_version: Option<u64>,
    /// Downloads and preparations a run needs before the final samples are known.
    pub pending_images: u64,
    pub summary: String,
    pub basis: PlanBasis,
}

/// What a plan was computed from. A run of a saved plan refuses to go on when any of it
/// differs, instead of doing something the plan did not show.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanBasis {
    pub dataset: String,
    /// SHA-256 of the pipeline file.
    pub pipeline_sha256: String,
    /// The time the plan treated as now: the end of its release window.
    pub now: chrono::DateTime<chrono::Utc>,
    pub full_refresh: bool,
    /// The latest version when the plan was made.
    pub base_version: Option<u64>,
    /// Inputs of the `models`, `images` and `publish` stages.
    pub stage_inputs: BTreeMap<String, StageInputs>,
}

/// Skip reason of a download whose size differed from the expected size on every try.
const INCOMPLETE_DOWNLOAD_SKIP: &str = "download/size_mismatch";

/// Stage inputs of the version a run would publish, compared with the latest version.
pub(super) struct VersionInputs {
    pub(super) by_stage: BTreeMap<String, StageInputs>,
    reasons: BTreeMap<String, Vec<String>>,
    /// The version the inputs are compared with, for messages.
    since: String,
    /// What is missing from the latest version's files; a damaged version is published
    /// again even when no input changed.
    pub(super) latest_damage: Option<String>,
}

impl VersionInputs {
    pub(super) fn new(
        config: &PipelineConfig,
        proposals: &RecordBatch,
        state: &ArchiveState,
        summary_inputs: Vec<(String, String)>,
    ) -> Result<Self> {
        let models = stages::models_inputs(
            config,
            &stages::batch_sha256(proposals)?,
            &state.content_sha256()?,
        )?
        .with_parts(summary_inputs);
        let images = stages::images_inputs(config, &models);
        let publish = stages::publish_inputs(config, &images);
        let by_stage = BTreeMap::from([
            ("models".to_string(), models),
            ("images".to_string(), images),
            ("publish".to_string(), publish),
        ]);
        Ok(Self {
            by_stage,
            reasons: BTreeMap::new(),
            since: String::new(),
            latest_damage: None,
        })
    }

    /// Compares with the latest version; records every stage as fresh and returns true
    /// when nothing changed.
    pub(super) fn all_fresh(
        &mut self,
        latest: Option<&VersionRecord>,
        confirmed: Option<ConfirmedInputs>,
        report: &mut RunReport,
    ) -> bool {
        let since = latest.map_or("the first version".to_string(), |v| {
            format!("v{}", v.version)
        });
        self.since = since.clone();
        // Inputs a later run confirmed to give the latest version's samples count as its own.
        let reference = confirmed
            .filter(|c| Some(c.version) == latest.map(|v| v.version))
            .map(|c| c.stage_inputs)
            .or_else(|| latest.map(|v| v.stage_inputs.clone()));
        for (stage, inputs) in &self.by_stage {
            let previous = reference.as_ref().and_then(|r| r.get(stage));
            self.reasons
                .insert(stage.clone(), inputs.changes_since(previous, &since));
        }
        // A file the archive sent incomplete may arrive whole now, so the images stage
        // tries it again instead of keeping the skip until another input changes.
        let incomplete = latest
            .and_then(|v| v.skips_by_reason.get(INCOMPLETE_DOWNLOAD_SKIP))
            .copied()
            .unwrap_or(0);
        if incomplete > 0 {
            self.reasons
                .entry("images".to_string())
                .or_default()
                .push(format!(
                    "{since} skipped {incomplete} incomplete download(s); trying them again"
                ));
        }
        if let Some(damage) = &self.latest_damage {
            self.reasons
                .entry("publish".to_string())
                .or_default()
                .push(format!("{since}: {damage}; publishing again"));
        }
        let fresh = latest.is_some() && self.reasons.values().all(Vec::is_empty);
        if fresh {
            for stage in stages::VERSIONED_STAGES {
                let reason = format!("inputs unchanged since {since}");
                let sha = self.by_stage[stage].sha256();
                report.stage_done(stage, "fresh", vec![reason], &sha, Instant::now());
            }
        }
        fresh
    }

    pub(super) fn stage_ran(&self, stage: &'static str, clock: Instant, report: &mut RunReport) {
        let status = if report.plan_only { "would_run" } else { "ran" };
        let mut reasons = self.reasons.get(stage).cloned().unwrap_or_default();
        if reasons.is_empty() {
            reasons.push(format!(
                "inputs unchanged since {}; runs because a later stage is stale",
                self.since
            ));
        }
        let sha = self.by_stage[stage].sha256();
        report.stage_done(stage, status, reasons, &sha, clock);
    }

    /// True when the shard settings differ from the latest version's: equal samples in a
    /// new layout are still published.
    pub(super) fn shard_settings_changed(&self) -> bool {
        self.reasons
            .get("publish")
            .is_some_and(|reasons| reasons.iter().any(|r| r.starts_with("settings.shards")))
    }

    pub(super) fn lineage(&self, state: &ArchiveState) -> Lineage {
        Lineage {
            stage_inputs: self.by_stage.clone(),
            archive_state: state.id.clone(),
            released_before_mjd: state.coverage.released_before_mjd,
        }
    }
}

impl Plan {
    pub(super) fn up_to_date(version: u64, basis: PlanBasis) -> Self {
        Self {
            would_publish_version: None,
            pending_images: 0,
            summary: format!("up to date: the inputs of v{version} are unchanged"),
            basis,
        }
    }
}

/// Refuses a saved plan made for another dataset or another version of the pipeline file.
pub(super) fn check_plan_pipeline(config: &PipelineConfig, planned: &PlanBasis) -> Result<()> {
    if planned.dataset != config.dataset.name {
        return Err(PipelineError::PlanOutdated(format!(
            "the plan is for dataset {:?}, this pipeline builds {:?}; plan this pipeline instead",
            planned.dataset, config.dataset.name
        )));
    }
    if planned.pipeline_sha256 != config.file_sha256 {
        return Err(PipelineError::PlanOutdated(
            "the pipeline file changed since the plan was made; run `paperclip plan` again".into(),
        ));
    }
    // A later `now` would move the archive coverage past the real date, which stops every
    // later incremental run; the same tolerance as for coverage ahead of the clock.
    let clock = chrono::Utc::now();
    if planned.now > clock + chrono::TimeDelta::days(1) {
        return Err(PipelineError::PlanOutdated(format!(
            "the plan's time {} is more than a day after this machine's clock ({}); check both clocks and run `paperclip plan` again",
            planned.now.to_rfc3339(),
            clock.to_rfc3339()
        )));
    }
    Ok(())
}

/// Refuses a saved plan when the latest version or a stage input differs from the plan's.
pub(super) fn check_plan_inputs(planned: &PlanBasis, actual: &PlanBasis) -> Result<()> {
    if planned.base_version != actual.base_version {
        let describe = |v: Option<u64>| v.map_or("no version".to_string(), |v| format!("v{v}"));
        return Err(PipelineError::PlanOutdated(format!(
            "the plan was made on {} but the latest version is now {}; run `paperclip plan` again",
            describe(planned.base_version),
            describe(actual.base_version)
        )));
    }
    let mut changes = Vec::new();
    for (stage, inputs) in &actual.stage_inputs {
        let reasons = inputs.changes_since(planned.stage_inputs.get(stage), "the plan");
        changes.extend(reasons.into_iter().map(|r| format!("{stage}: {r}")));
    }
    if changes.is_empty() {
        return Ok(());
    }
    Err(PipelineError::PlanOutdated(format!(
        "the inputs changed since the plan was made ({}); run `paperclip plan` again",
        changes.join("; ")
    )))
}

/// Decides what a run would publish, given the samples assembled from cached results.
pub(super) fn plan_outcome(
    assembled: &AssembledSamples,
    latest: Option<(u64, &str)>,
    counts: &BTreeMap<String, u64>,
    new_layout: bool,
    basis: PlanBasis,
) -> Plan {
    let pending_images = counts.get("downloads_needed").copied().unwrap_or(0)
        + counts.get("preparations_needed").copied().unwrap_or(0);
    let next = latest.map_or(1, |(version, _)| version + 1);
    let (would_publish_version, summary) = match latest {
        _ if pending_images > 0 => (
            Some(next),
            format!(
                "would download or prepare {pending_images} image(s), then publish v{next} unless the samples come out unchanged"
            ),
        ),
        _ if assembled.rows.is_empty() => (None, "would publish nothing: no samples".to_string()),
        Some((_, fingerprint)) if fingerprint == assembled.fingerprint && new_layout => (
            Some(next),
            format!("would publish v{next}: the same samples in the new shard layout"),
        ),
        Some((version, fingerprint)) if fingerprint == assembled.fingerprint => (
            None,
            format!(
                "up to date: v{version} already has these samples; a run records the new inputs so that later runs skip the models"
            ),
        ),
        _ => (
            Some(next),
            format!("would publish v{next} from cached images"),
        ),
    };
    Plan {
        would_publish_version,
        pending_images,
        summary,
        basis,
    }
}
