//! Turns a selected product into a prepared image: download into the blob store (or reuse
//! a verified blob), then decode, stretch and resize it (or reuse a cached result).
//!
//! Prepared results are cached under `<data dir>/prepared/<key>.json`, keyed by the source
//! blob's SHA-256 and the image settings, so a rerun with the same inputs decodes nothing.
//! Failures that depend only on the bytes (a truncated JPEG, a blank image) are cached too.

pub(crate) mod cluster;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::Semaphore;

use paperclip_archive::{ArchiveError, MastClient};
use paperclip_images::{PrepareOptions, prepare};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::assemble::{ImageFacts, sample_key};
use super::config::PipelineConfig;
use super::run::RunOptions;
use super::skips::Skip;
use crate::error::{PipelineError, Result};
use crate::sql;
use crate::store::blobs::{BlobStore, UriRecord, write_atomic};
use crate::store::remote_blobs::RemoteBlobs;

/// Version of the preparation rules; bump it when `prepare` output changes for equal input.
const PREPARE_CACHE_VERSION: &str = "2";

/// A product to fetch and prepare.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub row: usize,
    pub data_uri: String,
    pub expected_size_bytes: Option<u64>,
}

/// A prepared image (or the reason it could not be prepared), as cached on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedRecord {
    pub blob_sha256: String,
    pub blob_size_bytes: u64,
    pub outcome: PreparedOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PreparedOutcome {
    Ready {
        image_sha256: String,
        image_size_bytes: u64,
        source_format: String,
        source_width_px: u32,
        source_height_px: u32,
        masked_pixels: u64,
        stretch: Option<String>,
    },
    Rejected {
        reason: String,
        detail: String,
    },
}

/// Work a request still needs, as a plan sees it from the caches.
pub(super) enum CacheState {
    NeedsDownload,
    NeedsPreparation,
    Cached(PreparedRecord),
}

/// Result of one request: where the bytes came from and what preparing them gave.
#[derive(Debug, Clone)]
pub struct Materialized {
    pub row: usize,
    pub downloaded: bool,
    pub prepared_from_cache: bool,
    pub record: PreparedRecord,
}

/// Failure of one request that produced no image and no record. The run skips the row.
#[derive(Debug)]
pub struct FetchFailure {
    pub row: usize,
    /// True for failures unrelated to the file itself (timeout, reset, 5xx). The run then
    /// stops instead of publishing a version without the file.
    pub transient: bool,
    pub reason: String,
    pub detail: String,
}

pub struct Materializer {
    pub client: Arc<MastClient>,
    pub store: BlobStore,
    pub prepared_dir: PathBuf,
    pub options: PrepareOptions,
    /// One permit per image being prepared. The permits bound CPU use and decoded pixels
    /// in memory however many downloads are in flight.
    pub workers: Arc<Semaphore>,
    /// The copy of the store and the prepared cache on object storage (`[storage]`):
    /// looked up on a local miss, and given every new download and preparation.
    pub remote: Option<Arc<RemoteBlobs>>,
}

impl Materializer {
    /// Fetches and prepares one image. Archive failures for this file become a
    /// [`FetchFailure`]; local storage failures abort the run.
    #[tracing::instrument(name = "image", skip_all, fields(uri = %request.data_uri, row = request.row))]
    pub async fn materialize(
        &self,
        request: ImageRequest,
    ) -> Result<std::result::Result<Materialized, FetchFailure>> {
        let (mut blob, mut downloaded) = match self.fetch(&request).await? {
            Ok(found) => found,
            Err(failure) => return Ok(Err(failure)),
        };

        let cache_path = self.cache_path(&blob.sha256);
        let cached = match read_cached(&cache_path, &blob.sha256, &self.store) {
            Some(record) => Some(record),
            None => self.restore_prepared(&cache_path, &blob.sha256).await?,
        };
        if let Some(record) = cached {
            return Ok(Ok(Materialized {
                row: request.row,
                downloaded,
                prepared_from_cache: true,
                record,
            }));
        }

        let record = match self.prepare_blob(&blob).await {
            Err(PipelineError::CorruptBlob {
                sha256,
                path,
                detail,
            }) if sha256 == blob.sha256 => {
                // The stored bytes no longer match their hash: drop them and fetch again.
                tracing::warn!(uri = %request.data_uri, path = %path.display(), %detail, "stored download is corrupt; downloading again");
                std::fs::remove_file(&path).map_err(|e| PipelineError::io(&path, e))?;
                (blob, downloaded) = match self.fetch(&request).await? {
                    Ok(found) => found,
                    Err(failure) => return Ok(Err(failure)),
                };
                self.prepare_blob(&blob).await?
            }
            other => other?,
        };
        self.upload_prepared(&cache_path, &record).await?;
        Ok(Ok(Materialized {
            row: request.row,
            downloaded,
            prepared_from_cache: false,
            record,
        }))
    }

    async fn fetch(
        &self,
        request: &ImageRequest,
    ) -> Result<std::result::Result<(UriRecord, bool), FetchFailure>> {
        if let Some(record) = self.store.lookup_uri(&request.data_uri) {
            match request.expected_size_bytes {
                Some(expected) if expected != record.size_bytes => {
                    tracing::info!(
                        uri = %request.data_uri,
                        stored_bytes = record.size_bytes,
                        archive_bytes = expected,
                        "the archive lists a different size than the stored file; downloading again"
                    );
                }
                _ => {
                    tracing::debug!(uri = %request.data_uri, sha256 = %record.sha256, "blob cache hit");
                    return Ok(Ok((record, false)));
                }
            }
        } else if let Some(remote) = &self.remote
            && let Some(record) = remote.restore_uri(&self.store, &request.data_uri).await?
            && request
                .expected_size_bytes
                .is_none_or(|expected| expected == record.size_bytes)
        {
            tracing::debug!(uri = %request.data_uri, sha256 = %record.sha256, "blob restored from object storage");
            return Ok(Ok((record, false)));
        }

        let download = match self
            .client
            .download(
                &request.data_uri,
                &self.store.tmp_dir(),
                request.expected_size_bytes,
            )
            .await
        {
            Ok(download) => download,
            // Storing the download failed on this machine, for example on a full disk or
            // an unwritable folder. The archive is not at fault, so the run stops here.
            Err(ArchiveError::Io { path, source, .. }) => {
                return Err(PipelineError::io(path, source));
            }
            Err(error) => {
                tracing::warn!(uri = %request.data_uri, %error, "download failed");
                return Ok(Err(FetchFailure {
                    row: request.row,
                    transient: is_transient(&error),
                    reason: error.code().to_string(),
                    detail: error.to_string(),
                }));
            }
        };

        self.store.put_file(
            &download.temp_path,
            &download.sha256_hex,
            download.size_bytes,
        )?;
        let record = UriRecord {
            uri: request.data_uri.clone(),
            sha256: download.sha256_hex,
            size_bytes: download.size_bytes,
        };
        self.store.record_uri(&record)?;
        if let Some(remote) = &self.remote {
            remote.upload_blob(&self.store, &record.sha256).await?;
            remote.upload_uri(&record).await?;
        }
        Ok(Ok((record, true)))
    }

    /// Reads, prepares and stores one blob on a blocking thread once a worker permit is
    /// free, then caches the result.
    async fn prepare_blob(&self, blob: &UriRecord) -> Result<PreparedRecord> {
        let _permit = self.workers.acquire().await.map_err(|e| {
            PipelineError::Invalid(format!(
                "the image worker pool was closed before this image ran: {e}"
            ))
        })?;
        let store = self.store.clone();
        let options = self.options.clone();
        let cache_path = self.cache_path(&blob.sha256);
        let blob = blob.clone();
        let span = tracing::Span::current();

        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let record = prepare_and_store(&store, &blob, &options)?;
            let json = serde_json::to_vec_pretty(&record).expect("PreparedRecord serializes");
            write_atomic(&cache_path, &json)?;
            Ok(record)
        })
        .await
        .map_err(|e| PipelineError::Invalid(format!("image task failed: {e}")))?
    }

    /// Returns the prepared result cached on object storage, with its image restored
    /// locally and the result cached locally, or `None`.
    async fn restore_prepared(
        &self,
        cache_path: &std::path::Path,
        blob_sha256: &str,
    ) -> Result<Option<PreparedRecord>> {
        let Some(remote) = &self.remote else {
            return Ok(None);
        };
        let Some(json) = remote.prepared(&cache_file_name(cache_path)).await? else {
            return Ok(None);
        };
        let Ok(record) = serde_json::from_slice::<PreparedRecord>(&json) else {
            return Ok(None);
        };
        if record.blob_sha256 != blob_sha256 {
            return Ok(None);
        }
        if let PreparedOutcome::Ready { image_sha256, .. } = &record.outcome
            && !remote.restore_blob(&self.store, image_sha256).await?
        {
            return Ok(None);
        }
        write_atomic(cache_path, &json)?;
        Ok(Some(record))
    }

    /// Uploads a new prepared result and its image to object storage, image first.
    async fn upload_prepared(
        &self,
        cache_path: &std::path::Path,
        record: &PreparedRecord,
    ) -> Result<()> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        if let PreparedOutcome::Ready { image_sha256, .. } = &record.outcome {
            remote.upload_blob(&self.store, image_sha256).await?;
        }
        let json = serde_json::to_vec_pretty(record).expect("PreparedRecord serializes");
        remote
            .upload_prepared(&cache_file_name(cache_path), json)
            .await
    }

    /// Looks up what a request would need without any network access or decoding: a
    /// download, a preparation, or nothing (the cached result).
    pub(super) fn cache_state(&self, request: &ImageRequest) -> CacheState {
        let Some(blob) = self.store.lookup_uri(&request.data_uri) else {
            return CacheState::NeedsDownload;
        };
        if request
            .expected_size_bytes
            .is_some_and(|expected| expected != blob.size_bytes)
        {
            return CacheState::NeedsDownload;
        }
        match read_cached(&self.cache_path(&blob.sha256), &blob.sha256, &self.store) {
            Some(record) => CacheState::Cached(record),
            None => CacheState::NeedsPreparation,
        }
    }

    fn cache_path(&self, blob_sha256: &str) -> PathBuf {
        let options = &self.options;
        let key_material = format!(
            "{PREPARE_CACHE_VERSION}:{blob_sha256}:{}:{}:{}:{}:{:?}:{}",
            options.size_px,
            options.jpeg_quality,
            options.stretch.as_str(),
            options.min_source_px,
            options.max_aspect_ratio,
            options.max_source_pixels
        );
        let key = hex::encode(Sha256::digest(key_material.as_bytes()));
        self.prepared_dir.join(format!("{key}.json"))
    }
}

/// Downloads and prepares every selected image with bounded concurrency, in this
/// process or, given `cluster`, on the executors of a Ballista cluster.
#[allow(clippy::too_many_arguments)]
pub(super) async fn materialize_all(
    config: &PipelineConfig,
    options: &RunOptions,
    materializer: &Materializer,
    cluster: Option<&cluster::ClusterImages>,
    selected: &RecordBatch,
    model: &str,
    counts: &mut BTreeMap<String, u64>,
    skips: &mut Vec<Skip>,
) -> Result<Vec<ImageFacts>> {
    let columns = SelectedColumns::read(selected, model)?;

    // One request per data URI: a file listed under several proposals is fetched and
    // prepared once, and its result applies to every row that lists it.
    let mut rows_by_uri: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for row in 0..selected.num_rows() {
        rows_by_uri
            .entry(columns.uris.value(row))
            .or_default()
            .push(row);
    }
    let requests: Vec<ImageRequest> = rows_by_uri
        .iter()
        .map(|(uri, rows)| ImageRequest {
            row: rows[0],
            data_uri: uri.to_string(),
            expected_size_bytes: columns.expected_size_bytes(rows[0]),
        })
        .collect();

    if options.plan_only {
        return Ok(plan_images(
            materializer,
            &requests,
            &rows_by_uri,
            &columns,
            counts,
            skips,
        ));
    }

    let progress = options.progress.clone();
    progress.begin("images", requests.len() as u64);
    type Outcome = Result<std::result::Result<Materialized, FetchFailure>>;
    let mut results: BoxStream<'_, Outcome> = match cluster {
        Some(cluster) if !requests.is_empty() => {
            let done = cluster::materialize_on_cluster(
                cluster,
                &materializer.store,
                materializer.remote.as_deref(),
                &requests,
            )
            .await?;
            futures::stream::iter(done.into_iter().map(Ok)).boxed()
        }
        _ => futures::stream::iter(requests)
            .map(|request| materializer.materialize(request))
            .buffer_unordered(config.archive.download_concurrency)
            .boxed(),
    };

    let mut facts = Vec::new();
    let mut transient_failures = Vec::new();
    let mut fetched_bytes = 0;
    let mut tally = |name: &str| *counts.entry(name.to_string()).or_insert(0) += 1;
    while let Some(result) = results.next().await {
        progress.advance("images", 1);
        match result? {
            Err(failure) => {
                tally("downloads_failed");
                let uri = columns.uris.value(failure.row);
                if failure.transient {
                    transient_failures.push(format!("{uri}: {}", failure.detail));
                    continue;
                }
                for &row in &rows_by_uri[uri] {
                    skips.push(columns.skip(row, "download", &failure.reason, &failure.detail));
                }
            }
            Ok(done) => {
                tally(if done.downloaded {
                    "downloads_fetched"
                } else {
                    "downloads_reused"
                });
                if done.downloaded {
                    fetched_bytes += done.record.blob_size_bytes;
                }
                tally(if done.prepared_from_cache {
                    "images_reused"
                } else {
                    "images_prepared"
                });
                let uri = columns.uris.value(done.row);
                for &row in &rows_by_uri[uri] {
                    match &done.record.outcome {
                        PreparedOutcome::Rejected { reason, detail } => {
                            skips.push(columns.skip(row, "image", reason, detail));
                        }
                        ready => facts.extend(columns.facts(row, &done.record, ready)),
                    }
                }
            }
        }
    }
    progress.end("images");
    if cluster.is_some() {
        // The executors' archive clients are not this process's, so their downloads are
        // counted from the results.
        counts.insert("bytes_downloaded_by_executors".into(), fetched_bytes);
    }

    if let Some(first) = transient_failures.first() {
        return Err(PipelineError::Invalid(format!(
            "{} download(s) failed with errors that may pass (first: {first}); finished downloads are kept, run again to complete the version",
            transient_failures.len()
        )));
    }
    Ok(facts)
}

/// Counts the downloads and preparations a run would do, and returns the facts of the
/// images whose prepared result is already cached.
fn plan_images(
    materializer: &Materializer,
    requests: &[ImageRequest],
    rows_by_uri: &BTreeMap<&str, Vec<usize>>,
    columns: &SelectedColumns<'_>,
    counts: &mut BTreeMap<String, u64>,
    skips: &mut Vec<Skip>,
) -> Vec<ImageFacts> {
    let mut facts = Vec::new();
    let mut tally = |name: &str| *counts.entry(name.to_string()).or_insert(0) += 1;
    for request in requests {
        let record = match materializer.cache_state(request) {
            CacheState::NeedsDownload => {
                tally("downloads_needed");
                continue;
            }
            CacheState::NeedsPreparation => {
                tally("preparations_needed");
                continue;
            }
            CacheState::Cached(record) => record,
        };
        tally("images_cached");
        for &row in &rows_by_uri[request.data_uri.as_str()] {
            match &record.outcome {
                PreparedOutcome::Rejected { reason, detail } => {
                    skips.push(columns.skip(row, "image", reason, detail));
                }
                ready => facts.extend(columns.facts(row, &record, ready)),
            }
        }
    }
    facts
}

/// The samples model's columns that the image stage reads.
struct SelectedColumns<'a> {
    proposal_ids: &'a datafusion::arrow::array::Int64Array,
    obs_ids: &'a datafusion::arrow::array::StringArray,
    uris: &'a datafusion::arrow::array::StringArray,
    splits: &'a datafusion::arrow::array::StringArray,
    sizes: Option<&'a datafusion::arrow::array::Int64Array>,
}

impl<'a> SelectedColumns<'a> {
    fn read(selected: &'a RecordBatch, model: &str) -> Result<Self> {
        Ok(Self {
            proposal_ids: sql::int64_column(selected, model, "proposal_id")?,
            obs_ids: sql::string_column(selected, model, "obs_id")?,
            uris: sql::string_column(selected, model, "data_uri")?,
            splits: sql::string_column(selected, model, "split")?,
            sizes: selected
                .column_by_name("size_bytes")
                .and_then(|c| c.as_any().downcast_ref()),
        })
    }

    fn expected_size_bytes(&self, row: usize) -> Option<u64> {
        self.sizes
            .filter(|s| s.is_valid(row))
            .and_then(|s| u64::try_from(s.value(row)).ok())
    }

    fn skip(&self, row: usize, stage: &'static str, reason: &str, detail: &str) -> Skip {
        Skip::new(
            stage,
            self.uris.value(row),
            Some(self.proposal_ids.value(row)),
            reason,
            detail,
        )
    }

    fn facts(
        &self,
        row: usize,
        record: &PreparedRecord,
        outcome: &PreparedOutcome,
    ) -> Option<ImageFacts> {
        let key = sample_key(
            self.proposal_ids.value(row),
            self.obs_ids.value(row),
            self.uris.value(row),
        );
        ImageFacts::from_outcome(
            row,
            key,
            self.splits.value(row).to_string(),
            &record.blob_sha256,
            record.blob_size_bytes,
            outcome,
        )
    }
}

/// Decodes, resizes and encodes a stored blob and stores the resulting JPEG. Failures
/// that depend only on the bytes become a `Rejected` record.
fn prepare_and_store(
    store: &BlobStore,
    blob: &UriRecord,
    options: &PrepareOptions,
) -> Result<PreparedRecord> {
    let bytes = store.read_verified(&blob.sha256)?;

    let outcome = match prepare(&bytes, options) {
        Ok(image) => PreparedOutcome::Ready {
            image_sha256: store.put_bytes(&image.jpeg)?,
            image_size_bytes: image.jpeg.len() as u64,
            source_format: image.source_format.as_str().to_string(),
            source_width_px: image.source_width_px,
            source_height_px: image.source_height_px,
            masked_pixels: image.masked_pixels,
            stretch: image.stretch.map(|s| s.as_str().to_string()),
        },
        Err(error) => PreparedOutcome::Rejected {
            reason: error.reason_code().to_string(),
            detail: error.to_string(),
        },
    };
    Ok(PreparedRecord {
        blob_sha256: blob.sha256.clone(),
        blob_size_bytes: blob.size_bytes,
        outcome,
    })
}

/// Returns the file name of a prepared cache entry, which is also its name on object
/// storage.
fn cache_file_name(cache_path: &std::path::Path) -> String {
    cache_path
        .file_name()
        .expect("a prepared cache path ends in its key")
        .to_string_lossy()
        .into_owned()
}

/// Returns true when a download failure may pass on a later run.
fn is_transient(error: &ArchiveError) -> bool {
    match error {
        ArchiveError::HttpStatus { status, .. } => *status >= 500,
        ArchiveError::SizeMismatch { .. }
        | ArchiveError::UnsafeDataUri { .. }
        | ArchiveError::InvalidId { .. } => false,
        _ => true,
    }
}

/// Reads a cached result; a result whose prepared image is no longer stored counts as absent.
fn read_cached(
    path: &std::path::Path,
    blob_sha256: &str,
    store: &BlobStore,
) -> Option<PreparedRecord> {
    let record: PreparedRecord = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let image_present = match &record.outcome {
        PreparedOutcome::Ready { image_sha256, .. } => store.contains(image_sha256),
        PreparedOutcome::Rejected { .. } => true,
    };
    (record.blob_sha256 == blob_sha256 && image_present).then_some(record)
}
