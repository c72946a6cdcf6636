//! `paperclip run`: catalog → archive queries → SQL selection → downloads and images →
//! shards → a published dataset version.
//!
//! A run publishes a new version only when the assembled samples differ from the latest
//! version by fingerprint. A rerun over unchanged input reuses every download and prepared
//! image and publishes nothing. A run that stops midway leaves its finished downloads and
//! prepared images in the stores, so the next run only does the remaining work.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use paperclip_archive::{ClientConfig, MastClient};
use paperclip_catalog::Proposal;
use paperclip_images::PrepareOptions;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use url::Url;

use super::assemble::{AssembledSamples, assemble};
use super::config::PipelineConfig;
use super::ingest::{LoadedCatalog, load_proposals};
use super::materialize::{Materializer, materialize_all};
use super::model_output;
use super::publish::publish_version;
use super::refresh::{self, RefreshPlan, plan_refresh};
use super::skips::{Skip, StoredSkip, count_by_reason};
use super::stages::{self, ConfirmedInputs, StageInputs, StageRecord};
use super::state::{ArchiveState, id_set};
use super::summarize::{self, SummaryStage};
use super::tables;
use crate::dataset::versions::{
    DatasetLock, DatasetPaths, Lineage, VersionRecord, check_table_path, latest_version,
};
use crate::error::{PipelineError, Result};
use crate::sql;
use crate::store::blobs::{BlobStore, write_atomic};

/// Receives stage progress; the CLI draws progress bars from it, the library never does.
pub trait Progress: Send + Sync {
    fn begin(&self, _stage: &'static str, _total: u64) {}
    fn advance(&self, _stage: &'static str, _count: u64) {}
    fn end(&self, _stage: &'static str) {}
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

pub struct RunOptions {
    /// Root of blobs, prepared images, datasets and run records.
    pub data_dir: PathBuf,
    /// Replaces the pipeline's archive base URL. A catalog given as a URL is then read
    /// from `<archive>/catalog/abstracts.cat`; a catalog given as a path is kept.
    pub archive_override: Option<Url>,
    pub progress: Arc<dyn Progress>,
    /// Query the archive and run the SQL, but download, prepare and publish nothing. The
    /// report's `plan` then describes what a run would do.
    pub plan_only: bool,
    /// The time the refresh treats as now: the end of the release window it queries.
    /// `None` reads the system clock; schedulers and tests inject their own.
    pub now: Option<chrono::DateTime<chrono::Utc>>,
    /// Query every proposal's observations again instead of only the release window, so
    /// observations withdrawn from the archive are noticed.
    pub full_refresh: bool,
    /// Id to record the run under; `None` makes a new one. Schedulers set it so their
    /// events name the run before it ends.
    pub run_id: Option<String>,
    /// Run exactly this saved plan: its `now` and `full_refresh` are used, and the run stops
    /// with an error when the pipeline file, the latest version or any stage input differs
    /// from what the plan saw.
    pub saved_plan: Option<Plan>,
}

/// Prediction of what a run would do, made with [`RunOptions::plan_only`]. Saved as JSON,
/// it can be handed back through [`RunOptions::saved_plan`] to run exactly this plan.
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
    plan_only: bool,
}

impl RunReport {
    fn new(run_id: String, dataset: String) -> Self {
        Self {
            run_id,
            dataset,
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            published_version: None,
            unchanged_version: None,
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
    fn record_failed_stage(&mut self, error: &str) {
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

    fn stage_done(
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
    fn finish(&mut self, stats: &paperclip_archive::ClientStats, elapsed_secs: f64) {
        self.archive_requests = stats.requests;
        self.archive_retries = stats.retries;
        self.counts
            .insert("archive_requests".into(), stats.requests);
        self.counts.insert("archive_retries".into(), stats.retries);
        self.counts
            .insert("bytes_downloaded".into(), stats.bytes_downloaded);
        self.counts
            .insert("skipped".into(), self.skips.len() as u64);
        self.skipped_by_reason = count_by_reason(&self.skips);
        self.elapsed_secs = elapsed_secs;
    }
}

/// Runs the pipeline once and records the run (failed or not) in the run log.
pub async fn run(config: &PipelineConfig, options: &RunOptions) -> Result<RunReport> {
    let paths = DatasetPaths::new(&options.data_dir, &config.dataset.name);
    check_table_path(&paths.samples_table())?;
    if let Some(plan) = &options.saved_plan {
        check_plan_pipeline(config, &plan.basis)?;
    }
    check_models(config).await?;
    let client = Arc::new(MastClient::new(client_config(config, options)?)?);
    let run_id = options.run_id.clone().unwrap_or_else(new_run_id);
    let mut report = RunReport::new(run_id.clone(), config.dataset.name.clone());
    report.plan_only = options.plan_only;
    let started = Instant::now();

    let span = tracing::info_span!("run", run_id = %run_id, dataset = %config.dataset.name);
    let result = run_stages(config, options, &paths, &client, &mut report)
        .instrument(span)
        .await;

    report.finish(&client.stats(), started.elapsed().as_secs_f64());
    if options.plan_only {
        return result.map(|()| report);
    }
    match result {
        Ok(()) => {
            save_report(&options.data_dir, &report)?;
            Ok(report)
        }
        Err(error) => {
            report.error = Some(error.to_string());
            report.record_failed_stage(&error.to_string());
            if let Err(write_error) = save_report(&options.data_dir, &report) {
                tracing::warn!(%write_error, "cannot record the failed run");
            }
            Err(error)
        }
    }
}

async fn run_stages(
    config: &PipelineConfig,
    options: &RunOptions,
    paths: &DatasetPaths,
    client: &Arc<MastClient>,
    report: &mut RunReport,
) -> Result<()> {
    // A plan only reads, so it neither waits for the lock nor cleans up.
    let _lock = if options.plan_only {
        None
    } else {
        let lock = DatasetLock::acquire(paths)?;
        remove_leftovers(paths, &options.data_dir);
        crate::dataset::retention::record_policy(paths, &config.retention.policy())?;
        Some(lock)
    };
    let store = BlobStore::open(options.data_dir.join("blobs"))?;

    let now = match &options.saved_plan {
        Some(plan) => plan.basis.now,
        None => options.now.unwrap_or_else(chrono::Utc::now),
    };
    let full_refresh = options.full_refresh
        || options
            .saved_plan
            .as_ref()
            .is_some_and(|plan| plan.basis.full_refresh);
    let clock = Instant::now();
    let catalog = load_proposals(
        config,
        options,
        client,
        &mut report.counts,
        &mut report.skips,
    )
    .await?;
    report.stage_done("catalog", "ran", Vec::new(), &catalog.sha256, clock);

    let (mut state, refreshed) = refresh_archive(
        config,
        options,
        paths,
        client,
        &catalog,
        (now, full_refresh),
        report,
    )
    .await?;
    record_proposals_without_observations(&catalog.kept, &state, &mut report.skips)?;
    report
        .skips
        .extend(state.product_skips.iter().map(StoredSkip::to_skip));

    let proposals = tables::proposals_batch(&catalog.kept);
    let summary_stage = SummaryStage::prepare(
        config,
        &options.data_dir,
        &catalog.kept,
        &state,
        options.plan_only,
    )
    .await?;
    let summary_inputs = summary_stage
        .as_ref()
        .map_or_else(Vec::new, |stage| stage.input_parts(now));
    let mut inputs = VersionInputs::new(config, &proposals, &state, summary_inputs)?;
    let latest = latest_version(paths).await?;
    let basis = PlanBasis {
        dataset: config.dataset.name.clone(),
        pipeline_sha256: config.file_sha256.clone(),
        now,
        full_refresh,
        base_version: latest.as_ref().map(|v| v.version),
        stage_inputs: inputs.by_stage.clone(),
    };
    if let Some(plan) = &options.saved_plan {
        check_plan_inputs(&plan.basis, &basis)?;
    }
    // Committed before the models run: the archive rows are right whatever fails later.
    if refreshed && !options.plan_only {
        state.commit(paths, &report.run_id)?;
    }
    if inputs.all_fresh(latest.as_ref(), ConfirmedInputs::load(paths), report) {
        let latest = latest.as_ref().expect("fresh stages imply a version");
        tracing::info!(version = latest.version, "inputs unchanged; nothing to run");
        report.unchanged_version = Some(latest.version);
        if options.plan_only {
            report.plan = Some(Plan::up_to_date(latest.version, basis));
        }
        return Ok(());
    }

    let summaries = summaries_table(summary_stage, options.plan_only, report).await?;
    let clock = Instant::now();
    let model = config.sql.samples_model.as_str();
    let selected = select_samples(config, proposals, &state, summaries).await?;
    report
        .counts
        .insert("selected_images".into(), selected.num_rows() as u64);
    record_proposals_without_images(&selected, model, &state, &mut report.skips)?;
    inputs.stage_ran("models", clock, report);

    let clock = Instant::now();
    let materializer = Materializer {
        client: client.clone(),
        store: store.clone(),
        prepared_dir: options.data_dir.join("prepared"),
        options: prepare_options(config)?,
    };
    let facts = materialize_all(
        config,
        options,
        &materializer,
        &selected,
        model,
        &mut report.counts,
        &mut report.skips,
    )
    .await?;
    inputs.stage_ran("images", clock, report);

    let clock = Instant::now();
    let captions = sql::string_column(&selected, model, "caption")?.clone();
    let assembled = assemble(
        &selected,
        model,
        facts,
        &captions,
        config.shards.samples_per_shard,
    )?;
    count_splits(&assembled, &mut report.counts);

    if options.plan_only {
        report.plan = Some(plan_outcome(
            &assembled,
            latest.as_ref().map(|v| (v.version, v.fingerprint.as_str())),
            &report.counts,
            inputs.shard_settings_changed(),
            basis,
        ));
        inputs.stage_ran("publish", clock, report);
        return Ok(());
    }
    match latest.as_ref() {
        _ if assembled.rows.is_empty() => {
            tracing::warn!("the run produced no samples; nothing to publish");
        }
        Some(latest)
            if latest.fingerprint == assembled.fingerprint && !inputs.shard_settings_changed() =>
        {
            tracing::info!(
                version = latest.version,
                "samples unchanged; nothing to publish"
            );
            report.unchanged_version = Some(latest.version);
            let confirmed = ConfirmedInputs {
                version: latest.version,
                stage_inputs: inputs.by_stage.clone(),
            };
            confirmed.save(paths)?;
        }
        latest => {
            let version = latest.map_or(1, |v| v.version + 1);
            report.finish(&client.stats(), 0.0);
            let lineage = inputs.lineage(&state);
            publish_version(config, paths, &store, latest, assembled, lineage, report).await?;
            report.published_version = Some(version);
        }
    }
    inputs.stage_ran("publish", clock, report);
    Ok(())
}

/// Queries what is new in the archive and merges it into the state, or returns the state
/// unchanged (and `false`) when there is nothing to query. The caller commits it.
async fn refresh_archive(
    config: &PipelineConfig,
    options: &RunOptions,
    paths: &DatasetPaths,
    client: &MastClient,
    catalog: &LoadedCatalog,
    (now, full_refresh): (chrono::DateTime<chrono::Utc>, bool),
    report: &mut RunReport,
) -> Result<(ArchiveState, bool)> {
    let clock = Instant::now();
    let previous = match ArchiveState::load(paths) {
        Ok(state) => state,
        // A full refresh needs nothing from the old state, so a damaged one is rebuilt.
        Err(error) if full_refresh => {
            tracing::warn!(%error, "rebuilding an unreadable archive state with a full refresh");
            report.counts.insert("archive_state_rebuilt".into(), 1);
            ArchiveState::empty()
        }
        Err(error) => return Err(error),
    };
    if !full_refresh {
        refresh::check_coverage_not_ahead(&previous, refresh::mjd(now))?;
    }
    let plan = plan_refresh(
        &previous,
        &catalog.all_ids,
        &catalog.kept,
        refresh::mjd(now),
        &config.refresh,
        full_refresh,
    );
    let description = plan.describe();
    tracing::info!(refresh = %description, "archive refresh planned");
    report.refresh = Some(plan.clone());
    report
        .counts
        .insert("proposals_queried_by_id".into(), plan.by_id.len() as u64);
    report
        .counts
        .insert("proposals_withdrawn".into(), plan.withdrawn.len() as u64);

    let changes_nothing =
        plan.queries_nothing() && plan.withdrawn.is_empty() && plan.deselected.is_empty();
    if changes_nothing {
        report.stage_done("archive", "fresh", vec![description], "", clock);
        report.counts.insert(
            "observations".into(),
            previous.observations.num_rows() as u64,
        );
        report
            .counts
            .insert("products".into(), previous.products.num_rows() as u64);
        return Ok((previous, false));
    }
    let outcome = refresh::refresh(client, &plan, &previous, &catalog.kept, &report.run_id).await?;
    report.counts.extend(outcome.counts);
    report.skips.extend(outcome.skips);
    let status = if options.plan_only {
        "would_run"
    } else {
        "ran"
    };
    report.stage_done("archive", status, vec![description], "", clock);
    Ok((outcome.state, true))
}

/// Stage inputs of the version a run would publish, compared with the latest version.
struct VersionInputs {
    by_stage: BTreeMap<String, StageInputs>,
    reasons: BTreeMap<String, Vec<String>>,
    /// The version the inputs are compared with, for messages.
    since: String,
}

impl VersionInputs {
    fn new(
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
        })
    }

    /// Compares with the latest version; records every stage as fresh and returns true
    /// when nothing changed.
    fn all_fresh(
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

    fn stage_ran(&self, stage: &'static str, clock: Instant, report: &mut RunReport) {
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
    fn shard_settings_changed(&self) -> bool {
        self.reasons
            .get("publish")
            .is_some_and(|reasons| reasons.iter().any(|r| r.starts_with("settings.shards")))
    }

    fn lineage(&self, state: &ArchiveState) -> Lineage {
        Lineage {
            stage_inputs: self.by_stage.clone(),
            archive_state: state.id.clone(),
            released_before_mjd: state.coverage.released_before_mjd,
        }
    }
}

/// Age after which a partial download or temporary file counts as abandoned.
const ABANDONED_DOWNLOAD_SECS: u64 = 24 * 3600;

/// Deletes what interrupted runs left: this dataset's staging folders (safe, since the
/// dataset lock is held), embedded archives whose run has ended, and partial downloads and
/// temporary files old enough that no live run can still be writing them. Failures are
/// logged, never fatal.
fn remove_leftovers(paths: &DatasetPaths, data_dir: &Path) {
    let staging = paths.root.join("staging");
    if staging.is_dir()
        && let Err(error) = std::fs::remove_dir_all(&staging)
    {
        tracing::warn!(dir = %staging.display(), %error, "cannot remove staging files of an earlier run");
    }

    remove_old_files(&data_dir.join("blobs").join("tmp"), |_| true);
    // Atomic writes leave `.tmp*` siblings when a process dies between write and rename.
    let is_temporary = |name: &str| name.starts_with(".tmp");
    remove_old_files(&data_dir.join("prepared"), is_temporary);
    remove_old_files(&data_dir.join("runs"), is_temporary);
    remove_old_files(&paths.root, is_temporary);
    super::state::remove_unused_states(paths);
    crate::snapshots::embedded::remove_abandoned(data_dir);
}

/// Deletes files of `dir` whose name matches and that are older than
/// [`ABANDONED_DOWNLOAD_SECS`].
fn remove_old_files(dir: &Path, name_matches: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !name_matches(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let age_secs = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .map_or(0, |age| age.as_secs());
        if age_secs > ABANDONED_DOWNLOAD_SECS
            && let Err(error) = std::fs::remove_file(entry.path())
        {
            tracing::warn!(file = %entry.path().display(), %error, "cannot remove an abandoned temporary file");
        }
    }
}

impl Plan {
    fn up_to_date(version: u64, basis: PlanBasis) -> Self {
        Self {
            would_publish_version: None,
            pending_images: 0,
            summary: format!("up to date: the inputs of v{version} are unchanged"),
            basis,
        }
    }
}

/// Refuses a saved plan made for another dataset or another version of the pipeline file.
fn check_plan_pipeline(config: &PipelineConfig, planned: &PlanBasis) -> Result<()> {
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
    Ok(())
}

/// Refuses a saved plan when the latest version or a stage input differs from the plan's.
fn check_plan_inputs(planned: &PlanBasis, actual: &PlanBasis) -> Result<()> {
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
fn plan_outcome(
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

/// Plans the models over empty input tables and checks the samples model's columns, so
/// an unknown column or a wrong type is reported before any archive request.
pub async fn check_models(config: &PipelineConfig) -> Result<()> {
    let empty = tables::proposals_batch(&[]);
    let no_summaries = summarize::empty_summaries_batch();
    select_samples(config, empty, &ArchiveState::empty(), no_summaries)
        .await
        .map(|_| ())
}

/// Runs the SQL models over the ingested tables and returns the checked samples rows.
async fn select_samples(
    config: &PipelineConfig,
    proposals: RecordBatch,
    state: &ArchiveState,
    summaries: RecordBatch,
) -> Result<RecordBatch> {
    let ctx = sql::new_session();
    sql::register_batch(&ctx, "proposals", proposals)?;
    sql::register_batch(&ctx, "summaries", summaries)?;
    sql::register_batch(&ctx, "observations", state.observations.clone())?;
    sql::register_batch(&ctx, "products", state.products.clone())?;
    sql::register_batch(&ctx, "settings", tables::settings_batch(config))?;
    crate::sql::sources::register_sources(&ctx, config).await?;

    let model_paths: Vec<PathBuf> = config
        .sql
        .models
        .iter()
        .map(|m| config.resolve(m))
        .collect();
    sql::register_models(
        &ctx,
        &model_paths,
        &crate::sql::sources::input_tables(config),
    )
    .await?;
    let model = config.sql.samples_model.as_str();
    let selected = sql::collect_one(&ctx, &format!("SELECT * FROM {model}")).await?;
    model_output::normalize(selected, model)
}

/// Runs the summaries stage when `[summaries]` is on and returns the `summaries` table
/// for the models; without it, the table is empty.
async fn summaries_table(
    stage: Option<SummaryStage>,
    plan_only: bool,
    report: &mut RunReport,
) -> Result<RecordBatch> {
    let Some(stage) = stage else {
        return Ok(summarize::empty_summaries_batch());
    };
    let clock = Instant::now();
    let run_id = report.run_id.clone();
    match stage
        .run(plan_only, &run_id, &mut report.counts, &mut report.skips)
        .await
    {
        Ok((table, reasons)) => {
            let status = if plan_only { "would_run" } else { "ran" };
            report.stage_done("summaries", status, reasons, "", clock);
            Ok(table)
        }
        Err(error) => {
            report.stage_done("summaries", "failed", vec![error.to_string()], "", clock);
            Err(error)
        }
    }
}

/// A new run id: the UTC start time and the process id.
pub fn new_run_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id()
    )
}

fn client_config(config: &PipelineConfig, options: &RunOptions) -> Result<ClientConfig> {
    let base_url = match &options.archive_override {
        Some(url) => url.clone(),
        None => Url::parse(&config.archive.base_url).map_err(|e| PipelineError::Config {
            path: config.base_dir.clone(),
            message: format!(
                "archive.base_url {:?} is not a URL: {e}",
                config.archive.base_url
            ),
        })?,
    };
    let archive = &config.archive;
    Ok(ClientConfig {
        base_url,
        request_timeout_secs: archive.request_timeout_secs,
        max_retries: archive.max_retries,
        page_size: archive.page_size,
        products_batch_size: archive.products_batch_size,
        proposals_per_query: archive.proposals_per_query,
        ..ClientConfig::default()
    })
}

fn prepare_options(config: &PipelineConfig) -> Result<PrepareOptions> {
    let images = &config.images;
    Ok(PrepareOptions {
        size_px: images.size_px,
        jpeg_quality: images.jpeg_quality,
        stretch: images
            .stretch
            .parse()
            .map_err(|e| PipelineError::Invalid(format!("images.stretch: {e}")))?,
        min_source_px: images.min_source_px,
        max_aspect_ratio: images.max_aspect_ratio,
        max_source_pixels: images.max_source_pixels,
    })
}

/// Records the selected proposals for which the archive state holds no observation.
fn record_proposals_without_observations(
    kept: &[Proposal],
    state: &ArchiveState,
    skips: &mut Vec<Skip>,
) -> Result<()> {
    let observed = id_set(&state.observations, "proposal_id")?;
    for proposal in kept {
        if !observed.contains(&i64::from(proposal.id)) {
            skips.push(Skip::new(
                "archive",
                proposal.id.to_string(),
                Some(i64::from(proposal.id)),
                "no_public_observations",
                "the archive returned no public HST observation for this proposal",
            ));
        }
    }
    Ok(())
}

/// Records proposals that have observations but no product the selection accepted.
fn record_proposals_without_images(
    selected: &RecordBatch,
    model: &str,
    state: &ArchiveState,
    skips: &mut Vec<Skip>,
) -> Result<()> {
    let selected_ids = sql::int64_column(selected, model, "proposal_id")?;
    let with_images: HashSet<i64> = selected_ids.iter().flatten().collect();
    let observed: BTreeSet<i64> = id_set(&state.observations, "proposal_id")?
        .into_iter()
        .collect();
    for proposal_id in observed.difference(&with_images.into_iter().collect()) {
        skips.push(Skip::new(
            "products",
            proposal_id.to_string(),
            Some(*proposal_id),
            "no_matching_products",
            "0 products matched the image rules of the SQL models",
        ));
    }
    Ok(())
}

fn count_splits(assembled: &AssembledSamples, counts: &mut BTreeMap<String, u64>) {
    counts.insert("samples".into(), assembled.rows.len() as u64);
    for split in ["train", "val"] {
        let n = assembled.rows.iter().filter(|r| r.split == split).count();
        counts.insert(format!("samples_{split}"), n as u64);
    }
    let proposals: HashSet<&str> = assembled
        .rows
        .iter()
        .map(|r| r.key.split('_').next().unwrap_or_default())
        .collect();
    counts.insert("sample_proposals".into(), proposals.len() as u64);
}

fn save_report(data_dir: &Path, report: &RunReport) -> Result<()> {
    let path = data_dir
        .join("runs")
        .join(format!("{}.json", report.run_id));
    // One JSON object per line, so the run log reads as newline-delimited JSON.
    let mut json = serde_json::to_vec(report).expect("RunReport serializes");
    json.push(b'\n');
    write_atomic(&path, &json)
}
