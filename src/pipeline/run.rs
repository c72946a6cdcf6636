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

use datafusion::arrow::array::{Array, RecordBatch};
use futures::StreamExt;
use paperclip_archive::{ClientConfig, MastClient, ObsId, Observation};
use paperclip_catalog::{Catalog, Proposal, parse_abstracts_cat, parse_phase2_pro};
use paperclip_images::PrepareOptions;
use serde::Serialize;
use url::Url;

use super::assemble::{AssembledSamples, ImageFacts, assemble, sample_key};
use super::config::PipelineConfig;
use super::materialize::{ImageRequest, Materializer, PreparedOutcome};
use super::model_output;
use super::skips::{Skip, count_by_reason};
use super::tables;
use crate::dataset::shards::{OwnedShardSample, ShardInfo, write_split};
use crate::dataset::versions::{DatasetLock, DatasetPaths, VersionRecord, list_versions, publish};
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
}

/// Summary of one run, printed by the CLI and stored under `<data dir>/runs/`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub dataset: String,
    /// The version this run published, if it published one.
    pub published_version: Option<u64>,
    /// The latest version when the run found nothing new to publish.
    pub unchanged_version: Option<u64>,
    pub counts: BTreeMap<String, u64>,
    pub skipped_by_reason: BTreeMap<String, usize>,
    pub archive_requests: u64,
    pub archive_retries: u64,
    pub elapsed_secs: f64,
    /// Every item the run could not use, with its detail; also kept when nothing is published.
    pub skips: Vec<Skip>,
}

/// Runs the pipeline once.
pub async fn run(config: &PipelineConfig, options: &RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let run_id = new_run_id();
    let span = tracing::info_span!("run", run_id = %run_id, dataset = %config.dataset.name);
    let _entered = span.enter();

    let paths = DatasetPaths::new(&options.data_dir, &config.dataset.name);
    let _lock = DatasetLock::acquire(&paths)?;
    remove_leftovers(&paths, &options.data_dir);
    let store = BlobStore::open(options.data_dir.join("blobs"))?;
    let client = Arc::new(MastClient::new(client_config(config, options)?)?);
    let mut counts = BTreeMap::new();
    let mut skips = Vec::new();

    let proposals = load_proposals(config, options, &client, &mut counts, &mut skips).await?;
    let observations = query_observations(&client, &proposals, &mut counts, &mut skips).await?;
    let products = query_products(&client, &observations, &mut counts, &mut skips).await?;

    let ctx = sql::new_session();
    sql::register_batch(&ctx, "proposals", tables::proposals_batch(&proposals))?;
    sql::register_batch(
        &ctx,
        "observations",
        tables::observations_batch(&observations),
    )?;
    sql::register_batch(&ctx, "products", tables::products_batch(&products))?;
    sql::register_batch(&ctx, "settings", tables::settings_batch(config))?;
    let model_paths: Vec<PathBuf> = config
        .sql
        .models
        .iter()
        .map(|m| config.resolve(m))
        .collect();
    sql::register_models(&ctx, &model_paths).await?;
    let model = config.sql.samples_model.as_str();
    let selected = sql::collect_one(&ctx, &format!("SELECT * FROM {model}")).await?;
    let selected = model_output::normalize(selected, model)?;
    counts.insert("selected_images".into(), selected.num_rows() as u64);
    record_proposals_without_images(&selected, model, &observations, &mut skips)?;

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
        &mut counts,
        &mut skips,
    )
    .await?;

    let captions = sql::string_column(&selected, model, "caption")?.clone();
    let assembled = assemble(
        &selected,
        model,
        facts,
        &captions,
        config.shards.samples_per_shard,
    )?;
    count_splits(&assembled, &mut counts);
    counts.insert("skipped".into(), skips.len() as u64);

    let stats = client.stats();
    counts.insert("archive_requests".into(), stats.requests);
    counts.insert("archive_retries".into(), stats.retries);
    counts.insert("bytes_downloaded".into(), stats.bytes_downloaded);
    let mut report = RunReport {
        run_id: run_id.clone(),
        dataset: config.dataset.name.clone(),
        published_version: None,
        unchanged_version: None,
        counts,
        skipped_by_reason: count_by_reason(&skips),
        archive_requests: stats.requests,
        archive_retries: stats.retries,
        elapsed_secs: 0.0,
        skips: Vec::new(),
    };

    let versions = list_versions(&paths).await?;
    match versions.last() {
        _ if assembled.rows.is_empty() => {
            tracing::warn!("the run produced no samples; nothing to publish");
        }
        Some(latest) if latest.fingerprint == assembled.fingerprint => {
            tracing::info!(
                version = latest.version,
                "samples unchanged; nothing to publish"
            );
            report.unchanged_version = Some(latest.version);
        }
        latest => {
            let version = latest.map_or(1, |v| v.version + 1);
            publish_version(
                config,
                &paths,
                &store,
                &run_id,
                version,
                assembled,
                &skips,
                &mut report,
            )
            .await?;
            report.published_version = Some(version);
        }
    }

    report.skips = skips;
    report.elapsed_secs = started.elapsed().as_secs_f64();
    save_report(&options.data_dir, &report)?;
    Ok(report)
}

/// Age after which a partial download in the shared blob store counts as abandoned.
const ABANDONED_DOWNLOAD_SECS: u64 = 24 * 3600;

/// Deletes what interrupted runs left: this dataset's staging folders (safe, since the
/// dataset lock is held) and partial downloads old enough that no live run of another
/// dataset can still be writing them. Failures are logged, never fatal.
fn remove_leftovers(paths: &DatasetPaths, data_dir: &Path) {
    let staging = paths.root.join("staging");
    if staging.is_dir()
        && let Err(error) = std::fs::remove_dir_all(&staging)
    {
        tracing::warn!(dir = %staging.display(), %error, "cannot remove staging files of an earlier run");
    }

    let tmp_dir = data_dir.join("blobs").join("tmp");
    let Ok(entries) = std::fs::read_dir(&tmp_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let age_secs = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .map_or(0, |age| age.as_secs());
        if age_secs > ABANDONED_DOWNLOAD_SECS
            && let Err(error) = std::fs::remove_file(entry.path())
        {
            tracing::warn!(file = %entry.path().display(), %error, "cannot remove abandoned download");
        }
    }
}

fn new_run_id() -> String {
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

/// Reads the catalog (URL or path), records skipped records, and keeps the cycle range.
async fn load_proposals(
    config: &PipelineConfig,
    options: &RunOptions,
    client: &MastClient,
    counts: &mut BTreeMap<String, u64>,
    skips: &mut Vec<Skip>,
) -> Result<Vec<Proposal>> {
    let (location, bytes) = read_catalog(config, options, client).await?;
    let Catalog { proposals, skipped } = if location.to_ascii_lowercase().ends_with(".pro") {
        let proposal = parse_phase2_pro(&bytes).map_err(|e| {
            PipelineError::Invalid(format!("Phase II file {location} is unreadable: {e}"))
        })?;
        Catalog {
            proposals: vec![proposal],
            skipped: Vec::new(),
        }
    } else {
        parse_abstracts_cat(&bytes)
    };
    counts.insert(
        "catalog_records".into(),
        (proposals.len() + skipped.len()) as u64,
    );
    for skip in skipped {
        let item = format!("catalog line {}", skip.line);
        let proposal_id = skip.id.as_deref().and_then(|id| id.trim().parse().ok());
        skips.push(Skip::new(
            "catalog",
            item,
            proposal_id,
            skip.reason.code(),
            skip.reason.to_string(),
        ));
    }

    let selection = &config.selection;
    let mut kept = Vec::new();
    for proposal in proposals {
        if (selection.min_cycle..=selection.max_cycle).contains(&proposal.cycle) {
            kept.push(proposal);
        } else {
            skips.push(Skip::new(
                "catalog",
                proposal.id.to_string(),
                Some(i64::from(proposal.id)),
                "cycle_out_of_range",
                format!(
                    "cycle {} is outside selection.min_cycle..=max_cycle ({}..={})",
                    proposal.cycle, selection.min_cycle, selection.max_cycle
                ),
            ));
        }
    }
    counts.insert("proposals".into(), kept.len() as u64);
    tracing::info!(proposals = kept.len(), "catalog read");
    Ok(kept)
}

/// Returns the catalog's location (URL or resolved path) and bytes.
async fn read_catalog(
    config: &PipelineConfig,
    options: &RunOptions,
    client: &MastClient,
) -> Result<(String, Vec<u8>)> {
    let configured = &config.archive.catalog;
    let is_url = |text: &str| text.starts_with("http://") || text.starts_with("https://");
    let location = match &options.archive_override {
        // A local catalog path stays in force; a catalog URL moves with the archive.
        Some(base) if is_url(configured) => base
            .join("catalog/abstracts.cat")
            .map_err(|e| {
                PipelineError::Invalid(format!(
                    "archive URL {base} cannot hold a catalog path: {e}"
                ))
            })?
            .to_string(),
        _ => configured.clone(),
    };
    if is_url(&location) {
        let url = Url::parse(&location).map_err(|e| {
            PipelineError::Invalid(format!("catalog URL {location:?} is invalid: {e}"))
        })?;
        let bytes = client.fetch_text(&url).await?;
        return Ok((location, bytes));
    }
    let path = config.resolve(Path::new(&location));
    let bytes = std::fs::read(&path).map_err(|e| PipelineError::io(&path, e))?;
    Ok((path.display().to_string(), bytes))
}

async fn query_observations(
    client: &MastClient,
    proposals: &[Proposal],
    counts: &mut BTreeMap<String, u64>,
    skips: &mut Vec<Skip>,
) -> Result<Vec<Observation>> {
    let ids: Vec<u32> = proposals.iter().map(|p| p.id).collect();
    let list = client.observations_for_proposals(&ids).await?;
    skips.extend(list.rejected.iter().map(rejected_row_skip));
    let mut observations = list.observations;

    let mut seen = HashSet::new();
    observations.retain(|o| seen.insert(o.obsid));
    let with_observations: HashSet<u32> = observations.iter().map(|o| o.proposal_id).collect();
    for proposal in proposals {
        if !with_observations.contains(&proposal.id) {
            skips.push(Skip::new(
                "archive",
                proposal.id.to_string(),
                Some(i64::from(proposal.id)),
                "no_public_observations",
                "the archive returned no public HST observation for this proposal",
            ));
        }
    }
    counts.insert(
        "proposals_with_observations".into(),
        with_observations.len() as u64,
    );
    counts.insert("observations".into(), observations.len() as u64);
    Ok(observations)
}

async fn query_products(
    client: &MastClient,
    observations: &[Observation],
    counts: &mut BTreeMap<String, u64>,
    skips: &mut Vec<Skip>,
) -> Result<Vec<paperclip_archive::Product>> {
    let obsids: Vec<ObsId> = observations.iter().map(|o| o.obsid).collect();
    let list = client.products(&obsids).await?;
    skips.extend(list.rejected.iter().map(rejected_row_skip));
    for quarantined in &list.quarantined {
        skips.push(Skip::new(
            "products",
            quarantined.product.data_uri.clone(),
            None,
            quarantined.reason.code(),
            format!(
                "product row of obsID {} has parent_obsid {}, which is not a requested observation",
                quarantined.product.obsid.get(),
                quarantined.product.parent_obsid.get()
            ),
        ));
    }
    counts.insert("products".into(), list.products.len() as u64);
    Ok(list.products)
}

fn rejected_row_skip(row: &paperclip_archive::RejectedRow) -> Skip {
    Skip::new(
        "archive",
        format!("{} row {}", row.service, row.index),
        None,
        "unreadable_row",
        format!("{}; row: {}", row.reason, row.row_json),
    )
}

/// Records proposals that have observations but no product the selection accepted.
fn record_proposals_without_images(
    selected: &RecordBatch,
    model: &str,
    observations: &[Observation],
    skips: &mut Vec<Skip>,
) -> Result<()> {
    let selected_ids = sql::int64_column(selected, model, "proposal_id")?;
    let with_images: HashSet<i64> = selected_ids.iter().flatten().collect();
    let observed: BTreeSet<i64> = observations
        .iter()
        .map(|o| i64::from(o.proposal_id))
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

/// Downloads and prepares every selected image with bounded concurrency.
#[allow(clippy::too_many_arguments)]
async fn materialize_all(
    config: &PipelineConfig,
    options: &RunOptions,
    materializer: &Materializer,
    selected: &RecordBatch,
    model: &str,
    counts: &mut BTreeMap<String, u64>,
    skips: &mut Vec<Skip>,
) -> Result<Vec<ImageFacts>> {
    let proposal_ids = sql::int64_column(selected, model, "proposal_id")?;
    let obs_ids = sql::string_column(selected, model, "obs_id")?;
    let uris = sql::string_column(selected, model, "data_uri")?;
    let splits = sql::string_column(selected, model, "split")?;
    let sizes = selected.column_by_name("size_bytes").and_then(|c| {
        c.as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
    });

    let requests: Vec<ImageRequest> = (0..selected.num_rows())
        .map(|row| ImageRequest {
            row,
            data_uri: uris.value(row).to_string(),
            expected_size_bytes: sizes
                .filter(|s| s.is_valid(row))
                .map(|s| s.value(row))
                .and_then(|s| u64::try_from(s).ok()),
        })
        .collect();

    let progress = options.progress.clone();
    progress.begin("images", requests.len() as u64);
    let mut results = futures::stream::iter(requests)
        .map(|request| materializer.materialize(request))
        .buffer_unordered(config.archive.download_concurrency);

    let mut facts = Vec::new();
    let mut transient_failures = Vec::new();
    let mut tally = |name: &str| *counts.entry(name.to_string()).or_insert(0) += 1;
    while let Some(result) = results.next().await {
        progress.advance("images", 1);
        match result? {
            Err(failure) if failure.transient => {
                tally("downloads_failed");
                transient_failures.push(format!("{}: {}", uris.value(failure.row), failure.detail));
            }
            Err(failure) => {
                tally("downloads_failed");
                skips.push(Skip::new(
                    "download",
                    uris.value(failure.row),
                    Some(proposal_ids.value(failure.row)),
                    failure.reason,
                    failure.detail,
                ));
            }
            Ok(done) => {
                tally(if done.downloaded {
                    "downloads_fetched"
                } else {
                    "downloads_reused"
                });
                tally(if done.prepared_from_cache {
                    "images_reused"
                } else {
                    "images_prepared"
                });
                let row = done.row;
                if let PreparedOutcome::Rejected { reason, detail } = &done.record.outcome {
                    skips.push(Skip::new(
                        "image",
                        uris.value(row),
                        Some(proposal_ids.value(row)),
                        reason.clone(),
                        detail.clone(),
                    ));
                    continue;
                }
                let key = sample_key(proposal_ids.value(row), obs_ids.value(row), uris.value(row));
                facts.extend(ImageFacts::from_outcome(
                    row,
                    key,
                    splits.value(row).to_string(),
                    &done.record.blob_sha256,
                    done.record.blob_size_bytes,
                    &done.record.outcome,
                ));
            }
        }
    }
    progress.end("images");

    if let Some(first) = transient_failures.first() {
        return Err(PipelineError::Invalid(format!(
            "{} download(s) failed with errors that may pass (first: {first}); finished downloads are kept, run again to complete the version",
            transient_failures.len()
        )));
    }
    Ok(facts)
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

/// Stages shards, skips and the manifest, then publishes them as `version`.
#[allow(clippy::too_many_arguments)]
async fn publish_version(
    config: &PipelineConfig,
    paths: &DatasetPaths,
    store: &BlobStore,
    run_id: &str,
    version: u64,
    assembled: AssembledSamples,
    skips: &[Skip],
    report: &mut RunReport,
) -> Result<()> {
    let staging = paths.staging_dir(run_id);
    let shards_dir = staging.join("shards");
    std::fs::create_dir_all(&shards_dir).map_err(|e| PipelineError::io(&shards_dir, e))?;

    let shards = write_shards(config, store, &shards_dir, &assembled)?;
    write_skips(&staging.join("skips.parquet"), skips)?;

    let record = VersionRecord {
        dataset: config.dataset.name.clone(),
        version,
        created_at: chrono::Utc::now().to_rfc3339(),
        run_id: run_id.to_string(),
        pipeline_sha256: config.file_sha256.clone(),
        fingerprint: assembled.fingerprint.clone(),
        counts: report.counts.clone(),
        skips_by_reason: report.skipped_by_reason.clone(),
        shards,
    };
    let manifest = serde_json::to_vec_pretty(&record).expect("VersionRecord serializes");
    write_atomic(&staging.join("manifest.json"), &manifest)?;

    publish(paths, &staging, assembled.batch, &record).await?;
    tracing::info!(version, samples = assembled.rows.len(), "published");
    Ok(())
}

fn write_shards(
    config: &PipelineConfig,
    store: &BlobStore,
    dir: &Path,
    assembled: &AssembledSamples,
) -> Result<Vec<ShardInfo>> {
    let mut shards = Vec::new();
    for split in ["train", "val"] {
        let mut samples = assembled
            .rows
            .iter()
            .filter(|row| row.split == split)
            .map(|row| {
                Ok(OwnedShardSample {
                    key: row.key.clone(),
                    jpeg: store.read_verified(&row.image_sha256)?,
                    caption: row.caption.clone(),
                    metadata_json: row.metadata_json.clone(),
                })
            });
        shards.extend(write_split(
            dir,
            split,
            &mut samples,
            config.shards.samples_per_shard,
        )?);
    }
    Ok(shards)
}

fn write_skips(path: &Path, skips: &[Skip]) -> Result<()> {
    let batch = tables::skips_batch(skips);
    let file = std::fs::File::create(path).map_err(|e| PipelineError::io(path, e))?;
    let mut writer =
        datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)
            .map_err(|e| PipelineError::Invalid(format!("cannot write {}: {e}", path.display())))?;
    writer
        .write(&batch)
        .and_then(|()| writer.close().map(|_| ()))
        .map_err(|e| PipelineError::Invalid(format!("cannot write {}: {e}", path.display())))?;
    Ok(())
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
