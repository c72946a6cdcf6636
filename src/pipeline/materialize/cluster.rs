//! The image stage on a Ballista cluster: the executors download and prepare the images,
//! each a partition of the requests. With `[storage]`, each executor works in a cache of
//! its own and shares blobs and results through the blob store's copy on object storage
//! ([`RemoteBlobs`]). The client then restores the prepared images it publishes.
//! Without it, the executors work in the data directory's blob store and prepared cache,
//! which they must see at the same path on a shared file system.
//!
//! The client stages the requests as Parquet files, one per partition, and runs
//! `SELECT row, paperclip_prepare_image(data_uri, expected_size_bytes, job)` over them.
//! The function runs the same [`Materializer`] as a local run, so the caches are keyed
//! and written the same way. A partition that runs twice finds its finished work cached,
//! for example on a second executor after the first was lost, or in a rerun after a crash. Each result comes back as a line of JSON that
//! the client tallies exactly like a local result.
//!
//! Invariants: without `[storage]`, an executor works only in a blob store that contains
//! the id the client read from it ([`BlobStore::open_shared`]). An executor that does not
//! see the client's data directory therefore fails the task instead of filling a folder
//! of its own.
//! The client publishes only images that are in its own store. In each executor
//! process, downloads and preparations are bounded by the pipeline's
//! `archive.download_concurrency` and `images.threads`, as in a local run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::{SessionContext, col, lit};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use url::Url;

use paperclip_archive::{ClientConfig, MastClient};
use paperclip_images::PrepareOptions;

use super::{FetchFailure, ImageRequest, Materialized, Materializer, PreparedOutcome};
use super::{PreparedRecord, Result};
use crate::error::PipelineError;
use crate::sql::engine::{Engine, InputTable, ModelSession};
use crate::store::blobs::BlobStore;
use crate::store::remote_blobs::RemoteBlobs;

/// The name of the function the executors run.
pub const FUNCTION_NAME: &str = "paperclip_prepare_image";

/// The staged table of requests.
const REQUESTS_TABLE: &str = "image_requests";

/// Requests per partition; more requests than `MIN_PARTITIONS` times this give more
/// partitions, so each task stays a few minutes of work at most.
const ROWS_PER_PARTITION: usize = 1_000;

/// Partitions of a stage with few requests, so that every executor gets some.
const MIN_PARTITIONS: usize = 64;

/// The settings an executor needs to fetch and prepare images as the client would: the
/// archive, the shared caches and the image settings. Sent to the executors as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageJob {
    store_id: String,
    blobs_dir: PathBuf,
    prepared_dir: PathBuf,
    /// `storage.url`: when set, executors exchange blobs through it instead of sharing
    /// `blobs_dir` and `prepared_dir`.
    storage_url: Option<String>,
    archive_url: String,
    request_timeout_secs: u64,
    max_retries: u32,
    download_concurrency: usize,
    /// Preparations at once per executor; `None` uses each executor's cores.
    threads: Option<usize>,
    size_px: u32,
    jpeg_quality: u8,
    stretch: String,
    min_source_px: u32,
    max_aspect_ratio: Option<f64>,
    max_source_pixels: u64,
}

impl ImageJob {
    /// Describes the work of `materializer`, whose store and caches the executors must
    /// see at the same absolute paths.
    pub fn new(
        materializer: &Materializer,
        download_concurrency: usize,
        threads: Option<usize>,
    ) -> Result<Self> {
        let absolute = |path: &std::path::Path| {
            std::path::absolute(path).map_err(|e| PipelineError::io(path, e))
        };
        let client = materializer.client.config();
        let options = &materializer.options;
        Ok(Self {
            store_id: materializer.store.store_id()?,
            blobs_dir: absolute(materializer.store.root())?,
            prepared_dir: absolute(&materializer.prepared_dir)?,
            storage_url: materializer
                .remote
                .as_ref()
                .map(|remote| remote.url().to_string()),
            archive_url: client.base_url.to_string(),
            request_timeout_secs: client.request_timeout_secs,
            max_retries: client.max_retries,
            download_concurrency,
            threads,
            size_px: options.size_px,
            jpeg_quality: options.jpeg_quality,
            stretch: options.stretch.as_str().to_string(),
            min_source_px: options.min_source_px,
            max_aspect_ratio: options.max_aspect_ratio,
            max_source_pixels: options.max_source_pixels,
        })
    }

    /// Builds the executor's side: a client of the archive and a materializer over the
    /// shared store.
    fn worker(&self) -> Result<Worker> {
        let invalid = |what: &str, error: String| {
            PipelineError::Invalid(format!("the image job's {what} is invalid: {error}"))
        };
        let base_url = Url::parse(&self.archive_url)
            .map_err(|e| invalid("archive URL", format!("{:?}: {e}", self.archive_url)))?;
        let client = MastClient::new(ClientConfig {
            request_timeout_secs: self.request_timeout_secs,
            max_retries: self.max_retries,
            ..ClientConfig::for_base_url(base_url)
        })
        .map_err(|e| invalid("archive settings", e.to_string()))?;
        let options = PrepareOptions {
            size_px: self.size_px,
            jpeg_quality: self.jpeg_quality,
            stretch: self
                .stretch
                .parse()
                .map_err(|e| invalid("stretch", format!("{e}")))?,
            min_source_px: self.min_source_px,
            max_aspect_ratio: self.max_aspect_ratio,
            max_source_pixels: self.max_source_pixels,
        };
        let threads = self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let concurrency = self.download_concurrency.max(1);
        let (store, prepared_dir, remote) = match &self.storage_url {
            Some(url) => {
                let cache = executor_cache_dir();
                let store = BlobStore::open(cache.join("blobs"))?;
                let remote = Arc::new(RemoteBlobs::open(url)?);
                (store, cache.join("prepared"), Some(remote))
            }
            None => {
                let store = BlobStore::open_shared(&self.blobs_dir, &self.store_id)?;
                (store, self.prepared_dir.clone(), None)
            }
        };
        Ok(Worker {
            materializer: Materializer {
                client: Arc::new(client),
                store,
                prepared_dir,
                options,
                workers: Arc::new(Semaphore::new(threads.max(1))),
                remote,
            },
            downloads: Arc::new(Semaphore::new(concurrency)),
            concurrency,
        })
    }
}

/// One result as it travels from an executor to the client.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
enum RemoteOutcome {
    Done {
        downloaded: bool,
        prepared_from_cache: bool,
        record: PreparedRecord,
    },
    Failed {
        transient: bool,
        reason: String,
        detail: String,
    },
}

/// The cluster that runs a run's image stage, with the staging folder and the job.
pub struct ClusterImages {
    pub engine: Engine,
    /// The folder the requests are staged under, as for the models.
    pub staging_url: Url,
    pub job: ImageJob,
}

/// Runs `requests` on the cluster and returns one result per request, in any order.
#[tracing::instrument(name = "images_on_cluster", skip_all, fields(engine = %cluster.engine, requests = requests.len()))]
pub async fn materialize_on_cluster(
    cluster: &ClusterImages,
    store: &BlobStore,
    remote: Option<&RemoteBlobs>,
    requests: &[ImageRequest],
) -> Result<Vec<std::result::Result<Materialized, FetchFailure>>> {
    let parts = request_partitions(requests)?;
    let partitions = parts.len();
    let table = InputTable::partitioned(REQUESTS_TABLE, parts);
    let session = ModelSession::open(&cluster.engine, &cluster.staging_url, vec![table]).await?;
    session
        .ctx
        .state_ref()
        .write()
        .config_mut()
        .options_mut()
        .execution
        .target_partitions = partitions;

    let query = run_requests(&session.ctx, &cluster.job);
    let batches = session.watch("the image stage", query).await;
    session.close().await;

    let results = decode(&batches?, requests.len())?;
    if let Some(remote) = remote {
        restore_images(remote, store, &results).await?;
    }
    check_images_visible(store, &results)?;
    tracing::info!(partitions, "images prepared on the cluster");
    Ok(results)
}

/// Splits the requests into partitions of at most `ROWS_PER_PARTITION` rows, and at
/// least `MIN_PARTITIONS` partitions when there are that many requests.
fn request_partitions(requests: &[ImageRequest]) -> Result<Vec<RecordBatch>> {
    let partitions = requests
        .len()
        .div_ceil(ROWS_PER_PARTITION)
        .max(MIN_PARTITIONS)
        .min(requests.len())
        .max(1);
    let rows_per_partition = requests.len().div_ceil(partitions).max(1);
    let schema = Arc::new(Schema::new(vec![
        Field::new("row", DataType::Int64, false),
        Field::new("data_uri", DataType::Utf8, false),
        Field::new("expected_size_bytes", DataType::Int64, true),
    ]));

    let mut parts = Vec::with_capacity(partitions);
    for chunk in requests.chunks(rows_per_partition) {
        let rows: Int64Array = chunk.iter().map(|r| r.row as i64).collect();
        let uris: StringArray = chunk.iter().map(|r| Some(r.data_uri.as_str())).collect();
        let sizes: Int64Array = chunk
            .iter()
            .map(|r| r.expected_size_bytes.and_then(|s| i64::try_from(s).ok()))
            .collect();
        let columns: Vec<Arc<dyn Array>> = vec![Arc::new(rows), Arc::new(uris), Arc::new(sizes)];
        parts.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    if parts.is_empty() {
        parts.push(RecordBatch::new_empty(schema));
    }
    Ok(parts)
}

async fn run_requests(ctx: &SessionContext, job: &ImageJob) -> Result<Vec<RecordBatch>> {
    let job = serde_json::to_string(job).expect("an image job serializes");
    let outcome = image_udf()
        .call(vec![col("data_uri"), col("expected_size_bytes"), lit(job)])
        .alias("outcome");
    let frame = ctx
        .table(REQUESTS_TABLE)
        .await?
        .select(vec![col("row"), outcome])?;
    Ok(frame.collect().await?)
}

/// Reads the cluster's result rows back into one result per request.
fn decode(
    batches: &[RecordBatch],
    expected: usize,
) -> Result<Vec<std::result::Result<Materialized, FetchFailure>>> {
    let mut results = Vec::with_capacity(expected);
    for batch in batches {
        let rows = crate::sql::int64_column(batch, REQUESTS_TABLE, "row")?;
        let outcomes = crate::sql::string_column(batch, REQUESTS_TABLE, "outcome")?;
        for index in 0..batch.num_rows() {
            let row = usize::try_from(rows.value(index)).map_err(|_| {
                PipelineError::Invalid(format!(
                    "the cluster returned row {} for an image request",
                    rows.value(index)
                ))
            })?;
            let outcome: RemoteOutcome =
                serde_json::from_str(outcomes.value(index)).map_err(|error| {
                    PipelineError::Invalid(format!(
                        "the cluster returned an unreadable image result for row {row}: \
                         {error}; are the executors running this version of paperclip?"
                    ))
                })?;
            results.push(match outcome {
                RemoteOutcome::Done {
                    downloaded,
                    prepared_from_cache,
                    record,
                } => Ok(Materialized {
                    row,
                    downloaded,
                    prepared_from_cache,
                    record,
                }),
                RemoteOutcome::Failed {
                    transient,
                    reason,
                    detail,
                } => Err(FetchFailure {
                    row,
                    transient,
                    reason,
                    detail,
                }),
            });
        }
    }
    if results.len() != expected {
        return Err(PipelineError::Invalid(format!(
            "the cluster returned {} image results for {expected} requests",
            results.len()
        )));
    }
    Ok(results)
}

/// Copies the prepared images the executors uploaded into this process's store.
async fn restore_images(
    remote: &RemoteBlobs,
    store: &BlobStore,
    results: &[std::result::Result<Materialized, FetchFailure>],
) -> Result<()> {
    for done in results.iter().flatten() {
        if let PreparedOutcome::Ready { image_sha256, .. } = &done.record.outcome {
            remote.restore_blob(store, image_sha256).await?;
        }
    }
    Ok(())
}

/// Returns the folder where an executor keeps its own copies of blobs and prepared
/// results when it works through object storage: `$PAPERCLIP_CACHE/executor`, or
/// `~/.cache/paperclip/executor`.
fn executor_cache_dir() -> PathBuf {
    crate::store::cache_dir().join("executor")
}

/// Fails when a prepared image the executors reported is not in this process's store,
/// which happens when an executor wrote to another copy of the data directory.
fn check_images_visible(
    store: &BlobStore,
    results: &[std::result::Result<Materialized, FetchFailure>],
) -> Result<()> {
    let missing = results
        .iter()
        .flatten()
        .find_map(|done| match &done.record.outcome {
            PreparedOutcome::Ready { image_sha256, .. } if !store.contains(image_sha256) => {
                Some(image_sha256)
            }
            _ => None,
        });
    match missing {
        Some(sha256) => Err(PipelineError::Invalid(format!(
            "an executor prepared image {sha256}, but it is not in {}; every executor must \
             see the data directory at the same path (a shared file system)",
            store.root().display()
        ))),
        None => Ok(()),
    }
}

/// The executor's side of one image job: the materializer, and a bound on the downloads
/// of all tasks of this process.
struct Worker {
    materializer: Materializer,
    downloads: Arc<Semaphore>,
    concurrency: usize,
}

impl Worker {
    /// Returns the worker for `job_json`, built on first use and shared by the tasks of
    /// this process, so they share one connection pool and one bound.
    fn for_job(job_json: &str) -> Result<Arc<Self>> {
        static WORKERS: OnceLock<Mutex<HashMap<String, Arc<Worker>>>> = OnceLock::new();
        let workers = WORKERS.get_or_init(Default::default);
        let mut workers = workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(worker) = workers.get(job_json) {
            return Ok(worker.clone());
        }

        let job: ImageJob = serde_json::from_str(job_json).map_err(|error| {
            PipelineError::Invalid(format!(
                "unreadable image job: {error}; are the client and the executors the same \
                 version of paperclip?"
            ))
        })?;
        // Jobs of finished runs are not needed again; a handful is kept for runs at once.
        if workers.len() >= 8 {
            workers.clear();
        }
        let worker = Arc::new(job.worker()?);
        workers.insert(job_json.to_string(), worker.clone());
        Ok(worker)
    }

    /// Fetches and prepares `requests` and returns one JSON result each, in order.
    async fn run(&self, requests: Vec<ImageRequest>) -> Result<Vec<String>> {
        futures::stream::iter(requests)
            .map(|request| async move {
                let _permit = self.downloads.acquire().await.map_err(|e| {
                    PipelineError::Invalid(format!("the download bound was closed: {e}"))
                })?;
                let outcome = match self.materializer.materialize(request).await? {
                    Ok(done) => RemoteOutcome::Done {
                        downloaded: done.downloaded,
                        prepared_from_cache: done.prepared_from_cache,
                        record: done.record,
                    },
                    Err(failure) => RemoteOutcome::Failed {
                        transient: failure.transient,
                        reason: failure.reason,
                        detail: failure.detail,
                    },
                };
                Ok(serde_json::to_string(&outcome).expect("an image result serializes"))
            })
            .buffered(self.concurrency)
            .try_collect()
            .await
    }
}

/// The function the executors run: `paperclip_prepare_image(data_uri, expected_size_bytes,
/// job)` fetches and prepares each row's image and returns its result as JSON.
///
/// It is registered only on cluster sessions, never where analysts run SQL, since it
/// downloads files and writes to the data directory.
pub fn image_udf() -> ScalarUDF {
    create_udf(
        FUNCTION_NAME,
        vec![DataType::Utf8, DataType::Int64, DataType::Utf8],
        DataType::Utf8,
        Volatility::Volatile,
        Arc::new(|args: &[ColumnarValue]| prepare_rows(args).map(ColumnarValue::Array)),
    )
}

fn prepare_rows(args: &[ColumnarValue]) -> datafusion::error::Result<Arc<dyn Array>> {
    let [uris, sizes, job] = args else {
        return Err(DataFusionError::Plan(format!(
            "{FUNCTION_NAME} takes 3 arguments, got {}",
            args.len()
        )));
    };
    let ColumnarValue::Scalar(ScalarValue::Utf8(Some(job))) = job else {
        return Err(DataFusionError::Plan(format!(
            "{FUNCTION_NAME}'s third argument must be a text literal (the job)"
        )));
    };
    let arrays = ColumnarValue::values_to_arrays(&[uris.clone(), sizes.clone()])?;
    let uris = cast(&arrays[0], &DataType::Utf8)?;
    let sizes = cast(&arrays[1], &DataType::Int64)?;
    let (uris, sizes) = (uris.as_string::<i32>(), sizes.as_primitive::<Int64Type>());

    let mut requests = Vec::with_capacity(uris.len());
    for row in 0..uris.len() {
        if uris.is_null(row) {
            return Err(DataFusionError::Execution(format!(
                "{FUNCTION_NAME} got a NULL data_uri in row {row}"
            )));
        }
        requests.push(ImageRequest {
            row,
            data_uri: uris.value(row).to_string(),
            expected_size_bytes: sizes
                .is_valid(row)
                .then(|| u64::try_from(sizes.value(row)).ok())
                .flatten(),
        });
    }

    // Ballista sends a task's error to the client as text; the message reads best there.
    let external = |error: PipelineError| DataFusionError::Execution(error.to_string());
    let worker = Worker::for_job(job).map_err(external)?;
    let results = block_on_images(worker.run(requests)).map_err(external)?;
    Ok(Arc::new(StringArray::from(results)))
}

/// Runs `work` to completion on the runtime of the image work. The calling thread, a
/// task of the executor's runtime, waits outside that runtime's scheduler, so the
/// executor's other tasks keep running.
fn block_on_images<T: Send>(work: impl Future<Output = T> + Send) -> T {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("paperclip-images")
            .enable_all()
            .build()
            .expect("the image runtime starts")
    });
    let wait = || {
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(work))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(count: usize) -> Vec<ImageRequest> {
        (0..count)
            .map(|row| ImageRequest {
                row,
                data_uri: format!("mast:HST/product/{row}.jpg"),
                expected_size_bytes: (row % 2 == 0).then_some(100),
            })
            .collect()
    }

    #[test]
    fn requests_split_into_bounded_partitions() {
        let rows = |parts: &[RecordBatch]| parts.iter().map(RecordBatch::num_rows).sum::<usize>();

        let parts = request_partitions(&requests(9)).unwrap();
        assert_eq!(parts.len(), 9, "few requests: one partition each");

        let parts = request_partitions(&requests(200_000)).unwrap();
        assert_eq!(parts.len(), 200);
        assert_eq!(rows(&parts), 200_000);
        assert!(parts.iter().all(|p| p.num_rows() <= ROWS_PER_PARTITION));

        let parts = request_partitions(&requests(1_000)).unwrap();
        assert_eq!(
            parts.len(),
            63,
            "at most MIN_PARTITIONS partitions of 16 rows"
        );
        assert_eq!(rows(&parts), 1_000);

        assert_eq!(request_partitions(&[]).unwrap().len(), 1);
    }

    #[test]
    fn results_are_checked_against_the_requests() {
        let record = PreparedRecord {
            blob_sha256: "a".repeat(64),
            blob_size_bytes: 3,
            outcome: PreparedOutcome::Rejected {
                reason: "too_small".into(),
                detail: "2 px".into(),
            },
        };
        let outcomes = [
            serde_json::to_string(&RemoteOutcome::Done {
                downloaded: true,
                prepared_from_cache: false,
                record: record.clone(),
            })
            .unwrap(),
            serde_json::to_string(&RemoteOutcome::Failed {
                transient: true,
                reason: "http_status".into(),
                detail: "503".into(),
            })
            .unwrap(),
        ];
        let batch = RecordBatch::try_from_iter([
            (
                "row",
                Arc::new(Int64Array::from(vec![4, 7])) as Arc<dyn Array>,
            ),
            ("outcome", Arc::new(StringArray::from(outcomes.to_vec()))),
        ])
        .unwrap();

        let results = decode(std::slice::from_ref(&batch), 2).unwrap();
        let done = results[0].as_ref().unwrap();
        assert_eq!(
            (done.row, done.downloaded, &done.record),
            (4, true, &record)
        );
        let failed = results[1].as_ref().unwrap_err();
        assert_eq!((failed.row, failed.transient), (7, true));

        let error = decode(&[batch], 3).unwrap_err().to_string();
        assert!(error.contains("2 image results for 3 requests"), "{error}");
    }

    #[test]
    fn results_naming_images_this_store_lacks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let present = store.put_bytes(b"jpeg").unwrap();
        let result = |image_sha256: &str| {
            Ok(Materialized {
                row: 0,
                downloaded: true,
                prepared_from_cache: false,
                record: PreparedRecord {
                    blob_sha256: "b".repeat(64),
                    blob_size_bytes: 4,
                    outcome: PreparedOutcome::Ready {
                        image_sha256: image_sha256.to_string(),
                        image_size_bytes: 4,
                        source_format: "jpeg".into(),
                        source_width_px: 2,
                        source_height_px: 2,
                        masked_pixels: 0,
                        stretch: None,
                    },
                },
            })
        };

        assert!(check_images_visible(&store, &[result(&present)]).is_ok());
        let absent = "c".repeat(64);
        let error = check_images_visible(&store, &[result(&present), result(&absent)])
            .unwrap_err()
            .to_string();
        assert!(error.contains(&absent), "{error}");
        assert!(error.contains("shared file system"), "{error}");
    }

    #[test]
    fn prepare_rows_refuses_a_store_it_cannot_see() {
        let dir = tempfile::tempdir().unwrap();
        let job = ImageJob {
            store_id: "feedface".into(),
            blobs_dir: dir.path().join("blobs"),
            prepared_dir: dir.path().join("prepared"),
            storage_url: None,
            archive_url: "http://127.0.0.1:9".into(),
            request_timeout_secs: 1,
            max_retries: 0,
            download_concurrency: 2,
            threads: Some(1),
            size_px: 64,
            jpeg_quality: 90,
            stretch: "asinh".into(),
            min_source_px: 8,
            max_aspect_ratio: None,
            max_source_pixels: 1 << 20,
        };
        let args = [
            ColumnarValue::Array(Arc::new(StringArray::from(vec!["mast:HST/product/a.jpg"]))),
            ColumnarValue::Array(Arc::new(Int64Array::from(vec![Some(10)]))),
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                serde_json::to_string(&job).unwrap(),
            ))),
        ];
        let error = prepare_rows(&args).unwrap_err().to_string();
        assert!(error.contains("same path on every executor"), "{error}");
        assert!(!dir.path().join("blobs").exists());
    }
}
