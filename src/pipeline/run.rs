//! `paperclip run`: catalog → archive queries → SQL selection → downloads and images →
//! shards → a published dataset version.
//!
//! The archive is refreshed incrementally (`refresh.rs`) and the merged state committed
//! before the models run. When the stage inputs equal those of the latest version
//! (`plan.rs`), the run stops there. Otherwise it publishes a new version only when the
//! assembled samples differ from the latest version by fingerprint, or the shard settings
//! changed. A run that stops midway leaves its finished downloads, prepared images and
//! archive state in the stores, so the next run only does the remaining work.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use paperclip_archive::{ClientConfig, MastClient};
use paperclip_catalog::Proposal;
use paperclip_images::PrepareOptions;
use tokio::sync::Semaphore;
use tracing::Instrument;
use url::Url;

use super::assemble::{AssembledSamples, assemble};
use super::config::PipelineConfig;
use super::ingest::{LoadedCatalog, load_proposals};
use super::leftovers::{remove_leftovers, remove_unreferenced_data_files};
use super::materialize::cluster::{ClusterImages, ImageJob};
use super::materialize::{Materializer, materialize_all};
use super::model_output;
use super::plan::{
    Plan, PlanBasis, VersionInputs, check_plan_inputs, check_plan_pipeline, plan_outcome,
};
use super::publish::publish_version;
use super::refresh::{self, plan_refresh};
use super::report::{RunReport, save_report};
use super::skips::{Skip, StoredSkip};
use super::stages::ConfirmedInputs;
use super::state::{ArchiveState, id_set};
use super::summarize::{self, SummaryStage};
use super::tables;
use super::unmatched;
use crate::dataset::versions::{DatasetLock, DatasetPaths, check_table_path, latest_version};
use crate::error::{PipelineError, Result};
use crate::sql;
use crate::sql::engine::{Engine, InputTable, ModelSession};
use crate::store::blobs::BlobStore;
use crate::store::remote_blobs::RemoteBlobs;

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
    /// The start time the run record gives; `None` reads the system clock. Schedulers set
    /// their clock's time, so that a restart under an injected clock sees the runs it made.
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
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
    /// The engine that runs the SQL models.
    pub engine: Engine,
}

/// Runs the pipeline once and records the run (failed or not) in the run log.
pub async fn run(config: &PipelineConfig, options: &RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let paths = DatasetPaths::new(&options.data_dir, &config.dataset.name);
    // A data directory Delta cannot use is a wrong argument, not a run: nothing is written.
    check_table_path(&paths.samples_table())?;
    let run_id = options.run_id.clone().unwrap_or_else(new_run_id);
    let started_at = options.started_at.unwrap_or_else(chrono::Utc::now);
    let mut report = RunReport::new(run_id.clone(), config.dataset.name.clone(), started_at);
    report.plan_only = options.plan_only;
    let client = Arc::new(MastClient::new(client_config(config, options)?)?);

    // The checks before the stages are part of the run, so a model that fails to plan
    // leaves a failed run record like any other failure.
    let span = tracing::info_span!("run", run_id = %run_id, dataset = %config.dataset.name);
    let result = async {
        if let Some(plan) = &options.saved_plan {
            check_plan_pipeline(config, &plan.basis)?;
        }
        check_models(config).await?;
        if let Engine::Ballista { host, port } = &options.engine {
            // Before the archive queries, which can take minutes against the real service.
            crate::cluster::client::check_reachable(host, *port).await?;
        }
        run_stages(config, options, &paths, &client, &mut report).await?;
        if !options.plan_only {
            upload_versions(config, &paths, &mut report).await?;
        }
        Ok(())
    }
    .instrument(span)
    .await;

    report.finish(&client.stats(), started.elapsed().as_secs_f64());
    if options.plan_only {
        return result.map(|()| report);
    }
    match result {
        Ok(()) => {
            // Any version is published by now. The error states that, so a missing record
            // does not read as a failed publish.
            save_report(&options.data_dir, &report).map_err(|error| {
                PipelineError::RunNotRecorded {
                    outcome: run_outcome(&report),
                    source: Box::new(error),
                }
            })?;
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
        remove_unreferenced_data_files(paths).await;
        crate::dataset::retention::record_policy(
            paths,
            &crate::dataset::retention::RetentionPolicy::from(&config.retention),
        )?;
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
    if let Some(latest) = &latest {
        inputs.latest_damage = crate::dataset::verify::missing_files(paths, latest)
            .await
            .unwrap_or_else(|error| Some(format!("cannot be read ({error})")));
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
    let tables = model_inputs(config, proposals, &state, summaries).await?;
    let models_staging = staging_url(config, options, &report.run_id)?;
    let session = ModelSession::open(&options.engine, &models_staging, tables).await?;
    if options.engine != Engine::Local {
        report.engine = Some(options.engine.to_string());
    }
    let (selected, candidates) = select_samples(config, session).await?;
    report
        .counts
        .insert("selected_images".into(), selected.num_rows() as u64);
    match (&config.sql.candidates_model, candidates) {
        (Some(candidates_model), Some(obsids)) => unmatched::record_observations(
            &obsids,
            candidates_model,
            &unmatched::Selected {
                batch: &selected,
                model,
            },
            &state,
            &mut report.skips,
        )?,
        _ => unmatched::record_proposals(&selected, model, &state, &mut report.skips)?,
    }
    inputs.stage_ran("models", clock, report);

    let clock = Instant::now();
    let materializer = Materializer {
        client: client.clone(),
        store: store.clone(),
        prepared_dir: options.data_dir.join("prepared"),
        options: prepare_options(config)?,
        workers: Arc::new(Semaphore::new(config.images.worker_threads())),
        remote: match config.storage.blobs_url() {
            Some(url) if !options.plan_only => Some(Arc::new(RemoteBlobs::open(url)?)),
            _ => None,
        },
    };
    let cluster = match &options.engine {
        Engine::Ballista { .. } if !options.plan_only => Some(ClusterImages {
            engine: options.engine.clone(),
            staging_url: staging_url(config, options, &format!("{}-images", report.run_id))?,
            job: ImageJob::new(
                &materializer,
                config.archive.download_concurrency,
                config.images.threads,
            )?,
        }),
        _ => None,
    };
    let facts = materialize_all(
        config,
        options,
        &materializer,
        cluster.as_ref(),
        &selected,
        model,
        &mut report.counts,
        &mut report.skips,
    )
    .await?;
    inputs.stage_ran("images", clock, report);

    let clock = Instant::now();
    // Fails early, naming the model, when it returns no text caption column: shard
    // writing reads the captions from the published table.
    sql::string_column(&selected, model, "caption")?;
    let assembled = assemble(selected, model, facts, config.shards.samples_per_shard)?;
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
            if latest.fingerprint == assembled.fingerprint
                && !inputs.shard_settings_changed()
                && inputs.latest_damage.is_none() =>
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

/// Plans the models over empty input tables and checks the samples model's columns, so
/// an unknown column or a wrong type is reported before any archive request.
pub async fn check_models(config: &PipelineConfig) -> Result<()> {
    let empty = tables::proposals_batch(&[]);
    let no_summaries = summarize::empty_summaries_batch();
    let inputs = model_inputs(config, empty, &ArchiveState::empty(), no_summaries).await?;
    select_samples(config, ModelSession::local(inputs)?)
        .await
        .map(|_| ())
}

/// Collects the tables the models read: the ingested ones, the settings and the
/// pipeline's sources.
async fn model_inputs(
    config: &PipelineConfig,
    proposals: RecordBatch,
    state: &ArchiveState,
    summaries: RecordBatch,
) -> Result<Vec<InputTable>> {
    let mut inputs = vec![
        InputTable::new("proposals", proposals),
        InputTable::new("summaries", summaries),
        InputTable::new("observations", state.observations.clone()),
        InputTable::new("products", state.products.clone()),
        InputTable::new("settings", tables::settings_batch(config)),
    ];
    let reader = sql::new_session();
    inputs.extend(crate::sql::sources::read_sources(&reader, config).await?);
    Ok(inputs)
}

/// Returns the folder where a run on Ballista stages the models' input tables. With
/// `[storage]` it is in that object store, which every executor can reach. Otherwise it is
/// in the data directory, which only executors sharing this file system can read.
fn staging_url(config: &PipelineConfig, options: &RunOptions, run_id: &str) -> Result<Url> {
    if let Some(text) = &config.storage.url {
        let text = format!("{}/staging/{run_id}", text.trim_end_matches('/'));
        return Url::parse(&text).map_err(|e| {
            PipelineError::Invalid(format!("storage.url gives no staging URL {text}: {e}"))
        });
    }
    let dir = options.data_dir.join("staging").join(run_id);
    let dir = std::path::absolute(&dir).map_err(|source| PipelineError::Io {
        path: dir.clone(),
        source,
    })?;
    Url::from_directory_path(&dir).map_err(|()| {
        PipelineError::Invalid(format!(
            "the staging folder {} has no file URL; use a data directory whose path is valid UTF-8",
            dir.display()
        ))
    })
}

/// Runs the SQL models in `session` and returns the checked samples rows; the session's
/// staged inputs are deleted either way.
async fn select_samples(
    config: &PipelineConfig,
    session: ModelSession,
) -> Result<(RecordBatch, Option<HashSet<i64>>)> {
    let result = session
        .watch("the SQL models", run_models(config, &session.ctx))
        .await;
    session.close().await;
    result
}

async fn run_models(
    config: &PipelineConfig,
    ctx: &datafusion::prelude::SessionContext,
) -> Result<(RecordBatch, Option<HashSet<i64>>)> {
    let model_paths: Vec<PathBuf> = config
        .sql
        .models
        .iter()
        .map(|m| config.resolve(m))
        .collect();
    sql::register_models(
        ctx,
        &model_paths,
        &crate::sql::sources::input_tables(config),
    )
    .await?;
    let model = config.sql.samples_model.as_str();
    let selected = sql::collect_one(ctx, &format!("SELECT * FROM {model}")).await?;
    let candidates = match &config.sql.candidates_model {
        Some(candidates_model) => Some(unmatched::candidate_obsids(ctx, candidates_model).await?),
        None => None,
    };
    Ok((model_output::normalize(selected, model)?, candidates))
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

/// Describes what a finished run did: "version 2 of hst-paperclip was published".
fn run_outcome(report: &RunReport) -> String {
    let dataset = &report.dataset;
    match (report.published_version, report.unchanged_version) {
        (Some(version), _) => format!("version {version} of {dataset} was published"),
        (None, Some(version)) => format!("{dataset} is unchanged at version {version}"),
        (None, None) => format!("the run of {dataset} finished without publishing"),
    }
}

/// Makes a new run id from the UTC start time and the process id.
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

/// Records the selected proposals for which the archive state contains no observation.
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

/// Uploads the versions `[storage]`'s object store lacks, oldest first. The versions
/// stay published in the data directory when the upload fails, and the next run uploads
/// them again.
async fn upload_versions(
    config: &PipelineConfig,
    paths: &DatasetPaths,
    report: &mut RunReport,
) -> Result<()> {
    let Some(text) = &config.storage.url else {
        return Ok(());
    };
    let url = Url::parse(text)
        .map_err(|e| PipelineError::Invalid(format!("storage.url = {text:?} is not a URL: {e}")))?;
    report.storage_url = Some(url.to_string());
    let (store, prefix) =
        crate::store::remote::open(&url, &Default::default()).map_err(|source| {
            PipelineError::Upload {
                url: url.to_string(),
                source: Box::new(source),
            }
        })?;
    let mirror = crate::dataset::mirror::Mirror::new(store, &prefix, url.clone(), &paths.name);
    let uploaded = mirror
        .upload_missing(paths)
        .await
        .map_err(|source| PipelineError::Upload {
            url: url.to_string(),
            source: Box::new(source),
        })?;
    report.uploaded_versions = uploaded;
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
