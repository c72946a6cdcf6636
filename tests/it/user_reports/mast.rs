//! MAST queries, identifiers, paging, downloads and the blob cache, run through the
//! pipeline against small archives served on loopback.
//!
//! The archive builder and the query and shard readers at the top are shared with the
//! text, FITS and image cases of this suite.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::{Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use paperclip::dataset::shards::read_shard;
use paperclip::dataset::versions::{DatasetPaths, list_versions};
use paperclip::error::PipelineError;
use paperclip::pipeline::state::ArchiveState;
use paperclip::pipeline::{PipelineConfig, RunReport};
use paperclip_archive::{Row, RunningServer, ServeOptions, SnapshotWriter};
use serde_json::{Value, json};

use crate::support::{count_files, pipeline_path, run_config, run_options, serve_snapshot};

pub(super) const DATASET: &str = "hst-paperclip";

/// Release date of every observation the builder writes, MJD (2020-01-01).
const RELEASE_MJD: f64 = 58849.0;

/// A small archive that a test fills with catalog records, observations, products and
/// files, then writes as a snapshot and serves on loopback.
#[derive(Default)]
pub(super) struct TestArchive {
    catalog: Vec<u8>,
    observations: Vec<Row>,
    products: Vec<Row>,
    files: Vec<(String, Vec<u8>)>,
}

impl TestArchive {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Adds a cycle 25 record in the `abstracts.cat` layout. The PI is given as bytes so
    /// that a test can write Latin-1.
    pub(super) fn proposal(&mut self, id: u32, title: &str, pi: &[u8], abstract_text: &str) {
        let rule = "-".repeat(80);
        self.catalog.extend_from_slice(
            format!("{rule}\nProp. Type: GO\nCategory: GALAXIES\nID: {id}\nCycle: 25\n").as_bytes(),
        );
        self.catalog
            .extend_from_slice(format!("Title: {title}\nPI: ").as_bytes());
        self.catalog.extend_from_slice(pi);
        self.catalog
            .extend_from_slice(format!("\n\n{abstract_text}\n").as_bytes());
    }

    /// Adds a proposal with a plain title, PI and abstract.
    pub(super) fn plain_proposal(&mut self, id: u32) {
        self.proposal(
            id,
            &format!("Test program {id}"),
            b"Test Investigator",
            "A synthetic abstract written by the test suite, not a real proposal.",
        );
    }

    /// Returns the catalog bytes written so far, with the closing separator.
    pub(super) fn catalog_bytes(&self) -> Vec<u8> {
        let mut bytes = self.catalog.clone();
        bytes.extend_from_slice(format!("{}\n", "-".repeat(80)).as_bytes());
        bytes
    }

    /// Adds a public HST imaging observation with a position, and returns its row so the
    /// test can change it.
    pub(super) fn observation(&mut self, obsid: u64, proposal_id: u32) -> &mut Row {
        let value = json!({
            "obsid": obsid,
            "obs_id": format!("tst{obsid}"),
            "proposal_id": proposal_id.to_string(),
            "obs_collection": "HST",
            "instrument_name": "ACS/WFC",
            "target_name": "TEST-FIELD",
            "filters": "F606W",
            "dataproduct_type": "image",
            "dataRights": "PUBLIC",
            "calib_level": 3,
            "s_ra": 10.5,
            "s_dec": -20.25,
            "obs_title": "test observation",
            "t_obs_release": RELEASE_MJD,
        });
        self.observations.push(object(value));
        self.observations.last_mut().expect("a row was just added")
    }

    /// Adds a product row of observation `obsid`, with `bytes` as its file when given, and
    /// returns the row so the test can change it.
    pub(super) fn product(
        &mut self,
        obsid: u64,
        name: &str,
        product_type: &str,
        subgroup: &str,
        bytes: Option<Vec<u8>>,
    ) -> &mut Row {
        let uri = format!("mast:HST/product/{name}");
        let size = bytes.as_ref().map_or(0, Vec::len);
        let value = json!({
            "obsID": obsid,
            "parent_obsid": obsid,
            "obs_id": format!("tst{obsid}"),
            "obs_collection": "HST",
            "dataURI": uri,
            "productType": product_type,
            "productSubGroupDescription": subgroup,
            "productFilename": name,
            "size": size,
            "description": "test product",
        });
        if let Some(bytes) = bytes {
            self.files.push((uri, bytes));
        }
        self.products.push(object(value));
        self.products.last_mut().expect("a row was just added")
    }

    /// Adds a total-detection preview, the kind the image rules select.
    pub(super) fn preview(&mut self, obsid: u64, name: &str, bytes: Vec<u8>) -> &mut Row {
        self.product(obsid, name, "PREVIEW", "TOTAL", Some(bytes))
    }

    /// Writes the snapshot into `dir`.
    pub(super) fn write(&self, dir: &Path) {
        let mut writer = SnapshotWriter::create(dir, "user report test archive").unwrap();
        writer.set_catalog(&self.catalog_bytes()).unwrap();
        for (uri, bytes) in &self.files {
            writer.add_file(uri, bytes).unwrap();
        }
        writer.add_observations(self.observations.clone()).unwrap();
        writer.add_products(self.products.clone()).unwrap();
        writer.finish().unwrap();
    }

    /// Writes the snapshot into `dir` and serves it with `options`.
    pub(super) async fn serve(&self, dir: &Path, options: ServeOptions) -> RunningServer {
        self.write(dir);
        serve_snapshot(dir, options).await
    }
}

fn object(value: Value) -> Row {
    value.as_object().expect("object literal").clone()
}

/// Returns the project's pipeline.
pub(super) fn pipeline() -> PipelineConfig {
    paperclip::pipeline::config::load(&pipeline_path()).unwrap()
}

/// Runs `config` against `archive`, returning the error of a failed run.
pub(super) async fn try_run(
    config: &PipelineConfig,
    data_dir: &Path,
    archive: url::Url,
) -> Result<RunReport, PipelineError> {
    paperclip::pipeline::run(config, &run_options(data_dir, archive)).await
}

/// Runs one SQL query over the datasets and run log under `data_dir` and returns its
/// first column as text, NULL as `None`.
pub(super) async fn query_column(data_dir: &Path, sql: &str) -> Vec<Option<String>> {
    let ctx = paperclip::sql::new_session();
    paperclip::dataset::catalog::register_datasets(&ctx, data_dir)
        .await
        .unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut values = Vec::new();
    for batch in batches {
        let column = datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8).unwrap();
        let text = column.as_any().downcast_ref::<StringArray>().unwrap();
        values.extend(
            (0..text.len()).map(|row| text.is_valid(row).then(|| text.value(row).to_string())),
        );
    }
    values
}

/// One sample as the latest version's shards store it.
pub(super) struct ShardSample {
    pub json: Value,
    pub caption: Vec<u8>,
    pub jpeg: Vec<u8>,
}

/// Reads every sample of the latest version's shards, keyed by product file name.
pub(super) async fn shard_samples(data_dir: &Path) -> BTreeMap<String, ShardSample> {
    let paths = DatasetPaths::new(data_dir, DATASET);
    let record = list_versions(&paths)
        .await
        .unwrap()
        .pop()
        .expect("a published version");
    let mut samples = BTreeMap::new();
    for shard in &record.shards {
        let path = paths
            .version_dir(record.version)
            .join("shards")
            .join(&shard.name);
        for sample in read_shard(&path).unwrap() {
            let member = |extension: &str| {
                sample
                    .members
                    .iter()
                    .find(|(name, _)| name == extension)
                    .map(|(_, bytes)| bytes.clone())
                    .unwrap_or_else(|| panic!("{} has no {extension} member", sample.key))
            };
            let json: Value = serde_json::from_slice(&member("json")).unwrap();
            let name = json["product_filename"].as_str().unwrap().to_string();
            let sample = ShardSample {
                caption: member("txt"),
                jpeg: member("jpg"),
                json,
            };
            samples.insert(name, sample);
        }
    }
    samples
}

/// Returns the skips of a run with `stage/reason`, as (item, detail).
pub(super) fn skips_with(report: &RunReport, stage_reason: &str) -> Vec<(String, String)> {
    report
        .skips
        .iter()
        .filter(|skip| format!("{}/{}", skip.stage, skip.reason) == stage_reason)
        .map(|skip| (skip.item.clone(), skip.detail.clone()))
        .collect()
}

fn archive_state(data_dir: &Path) -> ArchiveState {
    ArchiveState::load(&DatasetPaths::new(data_dir, DATASET)).unwrap()
}

fn int64_values(batch: &datafusion::arrow::array::RecordBatch, column: &str) -> Vec<i64> {
    let array = batch
        .column_by_name(column)
        .unwrap_or_else(|| panic!("no column {column}"))
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap_or_else(|| panic!("column {column} is not Int64"));
    array.iter().flatten().collect()
}

/// A loopback port that accepts connections and never sends a byte.
struct SilentServer {
    url: url::Url,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentServer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            let mut open_sockets = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                open_sockets.push(socket);
            }
        });
        Self {
            url,
            accepted,
            task,
        }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sky(seed: u64) -> Vec<u8> {
    paperclip_images::synth::sky_jpeg(seed, 320, 240, false, 90)
}

/// Writes an archive with one preview per proposal, one observation each.
fn one_preview_each(proposals: &[u32]) -> TestArchive {
    let mut archive = TestArchive::new();
    for (index, &id) in proposals.iter().enumerate() {
        let obsid = u64::from(id) * 10;
        archive.plain_proposal(id);
        archive.observation(obsid, id);
        archive.preview(
            obsid,
            &format!("hst_{id}_01_acs_wfc_total_tst{obsid}_drc.jpg"),
            sky(index as u64 + 1),
        );
    }
    archive
}

// https://github.com/astropy/astroquery/issues/2473
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_queries_split_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let archive = one_preview_each(&[70001, 70002]);
    // Results of two rows or more arrive after 1.5 s, one row at once.
    let slow = ServeOptions {
        latency_ms: 1_500,
        latency_min_rows: 2,
        ..ServeOptions::default()
    };
    let server = archive.serve(&dir.path().join("snapshot"), slow).await;
    let mut config = pipeline();
    config.archive.request_timeout_secs = 1;

    let report = run_config(&config, &dir.path().join("data"), server.base_url()).await;

    assert_eq!(report.counts["samples"], 2);
    assert_eq!(report.archive_retries, 0, "a split query is not retried");
    // The catalog, 1 + 2 observation queries, 1 + 2 product queries and 2 downloads.
    assert_eq!(report.archive_requests, 9);
}

// https://github.com/astropy/astroquery/issues/2473
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_unsplittable_query_error_names_request() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut archive = one_preview_each(&[70003]);
    archive.preview(
        700030,
        "hst_70003_02_acs_wfc_total_tst700030_drc.jpg",
        sky(9),
    );
    let slow = ServeOptions {
        latency_ms: 1_500,
        latency_min_rows: 2,
        ..ServeOptions::default()
    };
    let server = archive.serve(&dir.path().join("snapshot"), slow).await;
    let mut config = pipeline();
    config.archive.request_timeout_secs = 1;
    config.archive.max_retries = 0;

    let error = try_run(&config, &data_dir, server.base_url())
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("Mast.Caom.Products"), "{error}");
    assert!(error.contains(r#""obsid":"700030""#), "{error}");
    assert!(error.contains("timed out after 1 s"), "{error}");
    assert!(error.contains("raise request_timeout_secs"), "{error}");
    let recorded = query_column(&data_dir, "SELECT error FROM paperclip.runs").await;
    assert_eq!(recorded, [Some(error)]);
}

// https://github.com/astropy/astroquery/issues/2180
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_503_then_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = one_preview_each(&[70011]);
    let flaky = ServeOptions {
        fail_first_n: 2,
        fail_status: 503,
        ..ServeOptions::default()
    };
    let server = archive.serve(&dir.path().join("snapshot"), flaky).await;
    // A local catalog, so the first request of the run, which gets the 503s, is a query.
    let catalog = dir.path().join("abstracts.cat");
    std::fs::write(&catalog, archive.catalog_bytes()).unwrap();
    let mut config = pipeline();
    config.archive.catalog = catalog.display().to_string();

    let report = run_config(&config, &data_dir, server.base_url()).await;

    assert_eq!(report.counts["samples"], 1);
    assert_eq!(report.archive_retries, 2);
    // 2 failed and 1 successful observation query, 1 product query, 1 download.
    assert_eq!(report.archive_requests, 5);
    let logged = query_column(&data_dir, "SELECT archive_retries FROM paperclip.runs").await;
    assert_eq!(logged, [Some("2".to_string())]);
}

// https://github.com/astropy/astroquery/issues/2180
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_error_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = one_preview_each(&[70012]);
    let rejecting = ServeOptions {
        fail_first_n: 1,
        fail_status: 400,
        ..ServeOptions::default()
    };
    let server = archive.serve(&dir.path().join("snapshot"), rejecting).await;

    let error = try_run(&pipeline(), &data_dir, server.base_url())
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("HTTP 400"), "{error}");
    assert!(error.contains("retrying will not help"), "{error}");
    let counts = query_column(
        &data_dir,
        "SELECT concat(archive_requests, '/', archive_retries) FROM paperclip.runs",
    )
    .await;
    assert_eq!(counts, [Some("1/0".to_string())]);
}

// https://github.com/astropy/astroquery/issues/2852
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mission_obs_id_in_obsid_column_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut archive = one_preview_each(&[70021]);
    let mission_name = "jw01234001001_02101_00001_nrca1";
    archive
        .observation(1, 70021)
        .insert("obsid".into(), json!(mission_name));
    let server = archive
        .serve(&dir.path().join("snapshot"), ServeOptions::default())
        .await;

    let report = run_config(&pipeline(), &data_dir, server.base_url()).await;

    let rejected = skips_with(&report, "archive/unreadable_row");
    assert_eq!(rejected.len(), 1, "{:?}", report.skips);
    let detail = &rejected[0].1;
    assert!(detail.contains(mission_name), "{detail}");
    assert!(detail.contains("mission obs_id"), "{detail}");
    assert!(detail.contains("numeric obsid"), "{detail}");
    // Only the numeric obsid reached the product query.
    let state = archive_state(&data_dir);
    assert_eq!(int64_values(&state.observations, "obsid"), [700210]);
    assert_eq!(report.counts["samples"], 1);
}

// https://github.com/astropy/astroquery/issues/1797
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_obsid_zero_rows_are_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut archive = one_preview_each(&[70031]);
    archive.observation(700311, 70031);
    for (index, name) in ["a", "b", "c"].iter().enumerate() {
        let file = format!("hst_70031_0{index}_acs_wfc_total_orphan{name}_drc.jpg");
        let row = archive.preview(700311, &file, sky(20 + index as u64));
        row.insert("parent_obsid".into(), json!(0));
    }
    let server = archive
        .serve(&dir.path().join("snapshot"), ServeOptions::default())
        .await;

    let report = run_config(&pipeline(), &data_dir, server.base_url()).await;

    let quarantined = skips_with(&report, "products/parent_obsid_zero");
    assert_eq!(quarantined.len(), 3, "{:?}", report.skips);
    assert!(
        quarantined[0].1.contains("parent_obsid 0"),
        "{quarantined:?}"
    );
    assert_eq!(report.counts["samples"], 1);
    let state = archive_state(&data_dir);
    assert!(!int64_values(&state.products, "parent_obsid").contains(&0));
    let joined = query_column(
        &data_dir,
        r#"SELECT count(*) FROM "hst-paperclip".v1.samples
           WHERE obsid = 0 OR product_filename LIKE '%orphan%'"#,
    )
    .await;
    assert_eq!(joined, [Some("0".to_string())]);
    let stored = query_column(
        &data_dir,
        r#"SELECT count(*) FROM "hst-paperclip".v1.skips WHERE reason = 'parent_obsid_zero'"#,
    )
    .await;
    assert_eq!(stored, [Some("3".to_string())]);
}

// https://github.com/astropy/astroquery/pull/2915
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_result_has_no_gaps_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut archive = TestArchive::new();
    archive.plain_proposal(70041);
    for obsid in 1..=2_500 {
        archive.observation(obsid, 70041);
    }
    let server = archive
        .serve(&dir.path().join("snapshot"), ServeOptions::default())
        .await;
    let mut config = pipeline();
    config.archive.page_size = 1_000;

    let report = run_config(&config, &data_dir, server.base_url()).await;

    assert_eq!(report.counts["observations"], 2_500);
    let mut obsids = int64_values(&archive_state(&data_dir).observations, "obsid");
    obsids.sort_unstable();
    assert_eq!(obsids, (1..=2_500).collect::<Vec<i64>>());
    // The catalog, 3 pages of observations and 13 product batches of at most 200 obsids.
    assert_eq!(report.archive_requests, 17);
}

// https://mast.stsci.edu/api/v0/
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_above_row_cap_splits_to_same_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let mut archive = TestArchive::new();
    for id in [70051u32, 70052, 70053] {
        archive.plain_proposal(id);
        for offset in 0..2 {
            let obsid = u64::from(id) * 10 + offset;
            archive.observation(obsid, id);
            let name = format!("hst_{id}_0{offset}_acs_wfc_total_tst{obsid}_drc.jpg");
            archive.preview(obsid, &name, sky(obsid));
        }
    }
    archive.write(&dir.path().join("snapshot"));
    let capped = ServeOptions {
        max_rows_before_reset: Some(3),
        ..ServeOptions::default()
    };
    let capped_server = serve_snapshot(&dir.path().join("snapshot"), capped).await;
    let plain_server = serve_snapshot(&dir.path().join("snapshot"), ServeOptions::default()).await;

    let capped_report = run_config(
        &pipeline(),
        &dir.path().join("capped"),
        capped_server.base_url(),
    )
    .await;
    let plain_report = run_config(
        &pipeline(),
        &dir.path().join("plain"),
        plain_server.base_url(),
    )
    .await;

    assert_eq!(capped_report.counts["samples"], 6);
    assert_eq!(capped_report.counts["observations"], 6);
    assert_eq!(capped_report.counts["products_queried"], 6);
    assert!(capped_report.archive_requests > plain_report.archive_requests);
    let mut fingerprints = Vec::new();
    for name in ["capped", "plain"] {
        let paths = DatasetPaths::new(&dir.path().join(name), DATASET);
        fingerprints.push(list_versions(&paths).await.unwrap()[0].fingerprint.clone());
    }
    assert_eq!(fingerprints[0], fingerprints[1]);
}

// https://mast.stsci.edu/api/v0/
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_on_one_proposal_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut archive = TestArchive::new();
    archive.plain_proposal(70054);
    for obsid in 700540..700544 {
        archive.observation(obsid, 70054);
    }
    let capped = ServeOptions {
        max_rows_before_reset: Some(3),
        ..ServeOptions::default()
    };
    let server = archive.serve(&dir.path().join("snapshot"), capped).await;
    let mut config = pipeline();
    config.archive.max_retries = 0;

    let error = try_run(&config, &data_dir, server.base_url())
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("Mast.Caom.Filtered"), "{error}");
    assert!(error.contains("connection was reset"), "{error}");
    assert!(error.contains("70054"), "{error}");
    assert_eq!(archive_state(&data_dir).observations.num_rows(), 0);
    let paths = DatasetPaths::new(&data_dir, DATASET);
    assert!(list_versions(&paths).await.unwrap().is_empty());
}

// https://github.com/astropy/astroquery/pull/2497
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_data_uri_is_one_blob() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut archive = one_preview_each(&[70061]);
    archive.plain_proposal(70062);
    archive.observation(700620, 70062);
    // The second observation lists the first one's preview: same URI, same file.
    let shared = "hst_70061_01_acs_wfc_total_tst700610_drc.jpg";
    let size = archive.products[0]["size"].clone();
    archive.product(700620, shared, "PREVIEW", "TOTAL", None)["size"] = size;
    let server = archive
        .serve(&dir.path().join("snapshot"), ServeOptions::default())
        .await;

    let report = run_config(&pipeline(), &data_dir, server.base_url()).await;

    assert_eq!(report.counts["samples"], 2);
    assert_eq!(report.counts["downloads_fetched"], 1);
    let blobs = query_column(
        &data_dir,
        r#"SELECT DISTINCT blob_sha256 FROM "hst-paperclip".v1.samples"#,
    )
    .await;
    assert_eq!(blobs.len(), 1, "both samples name one blob: {blobs:?}");
    let parents = query_column(
        &data_dir,
        r#"SELECT count(DISTINCT obsid) FROM "hst-paperclip".v1.samples"#,
    )
    .await;
    assert_eq!(parents, [Some("2".to_string())]);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            DatasetPaths::new(&data_dir, DATASET)
                .version_dir(1)
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["counts"]["downloads_fetched"],
        json!(1),
        "{manifest}"
    );
    assert_eq!(manifest["counts"]["samples"], json!(2), "{manifest}");
}

// https://github.com/astropy/astroquery/pull/1921
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_observations_send_no_product_query() {
    let dir = tempfile::tempdir().unwrap();
    let mut archive = TestArchive::new();
    archive.plain_proposal(70071);
    let server = archive
        .serve(&dir.path().join("snapshot"), ServeOptions::default())
        .await;

    let report = run_config(&pipeline(), &dir.path().join("data"), server.base_url()).await;

    assert_eq!(report.counts["products_queried"], 0);
    assert_eq!(report.counts["products"], 0);
    // The catalog and the observation query; no product query for an empty obsid list.
    assert_eq!(report.archive_requests, 2);
    assert_eq!(
        skips_with(&report, "archive/no_public_observations").len(),
        1
    );
}

// https://github.com/astropy/astroquery/pull/3232
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_stored_file_downloaded_once_again() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = one_preview_each(&[70081]);
    let original = archive.files[0].1.clone();
    assert!(original.len() > 5_000, "{} bytes", original.len());
    archive.write(&dir.path().join("snapshot"));
    let first_server = serve_snapshot(&dir.path().join("snapshot"), ServeOptions::default()).await;
    run_config(&pipeline(), &data_dir, first_server.base_url()).await;
    drop(first_server);

    // Only the first 1,000 bytes of the stored file are left.
    let blob = query_column(
        &data_dir,
        r#"SELECT blob_sha256 FROM "hst-paperclip".v1.samples"#,
    )
    .await[0]
        .clone()
        .unwrap();
    let blob_path = data_dir.join("blobs/sha256").join(&blob[..2]).join(&blob);
    std::fs::write(&blob_path, &original[..1_000]).unwrap();
    // Whole files without Content-Length, and no ranges.
    let no_length = ServeOptions {
        truncate_downloads_to_bytes: Some(u64::MAX),
        ..ServeOptions::default()
    };
    let server = serve_snapshot(&dir.path().join("snapshot"), no_length).await;
    let mut config = pipeline();
    config.images.max_source_pixels += 1;

    let report = run_config(&config, &data_dir, server.base_url()).await;

    assert_eq!(report.counts["downloads_fetched"], 1);
    let catalog_bytes = archive.catalog_bytes().len() as u64;
    assert_eq!(
        report.counts["bytes_downloaded"],
        catalog_bytes + original.len() as u64,
        "the file is downloaded once"
    );
    assert_eq!(std::fs::read(&blob_path).unwrap(), original);
    assert_eq!(count_files(&data_dir.join("blobs/tmp")), 0);
    assert_eq!(report.unchanged_version, Some(1));
}

// https://github.com/astropy/astroquery/issues/2820
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_file_used_while_archive_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let archive = one_preview_each(&[70091]);
    let catalog = dir.path().join("abstracts.cat");
    std::fs::write(&catalog, archive.catalog_bytes()).unwrap();
    let server = archive
        .serve(&dir.path().join("snapshot"), ServeOptions::default())
        .await;
    let mut config = pipeline();
    config.archive.catalog = catalog.display().to_string();
    config.refresh.full_refresh_every_days = 0.0;
    let now = chrono::Utc::now();
    let mut options = run_options(&data_dir, server.base_url());
    options.now = Some(now);
    paperclip::pipeline::run(&config, &options).await.unwrap();

    // The archive now accepts connections and never responds. A request would fail after
    // the timeout instead of hanging the test.
    let silent = SilentServer::start().await;
    config.archive.request_timeout_secs = 2;
    config.archive.max_retries = 0;
    config.images.max_source_pixels += 1;
    let mut options = run_options(&data_dir, silent.url.clone());
    options.now = Some(now);
    let report = paperclip::pipeline::run(&config, &options).await.unwrap();

    assert_eq!(report.counts["downloads_reused"], 1);
    assert_eq!(report.counts.get("downloads_fetched"), None);
    assert_eq!(report.archive_requests, 0);
    assert_eq!(silent.accepted.load(Ordering::SeqCst), 0);
    assert_eq!(report.unchanged_version, Some(1));
}

// https://github.com/MultimodalUniverse/MultimodalUniverse/pull/126
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_obsids_resolved_once() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut archive = TestArchive::new();
    for proposal in 0..10u32 {
        let id = 70100 + proposal;
        archive.plain_proposal(id);
        for offset in 0..1_000u64 {
            let obsid = u64::from(id) * 10_000 + offset;
            archive.observation(obsid, id);
            archive.product(
                obsid,
                &format!("tst{obsid}_spt.fits"),
                "AUXILIARY",
                "SPT",
                None,
            );
        }
    }
    let capped = ServeOptions {
        max_rows_before_reset: Some(1_000),
        ..ServeOptions::default()
    };
    let server = archive.serve(&dir.path().join("snapshot"), capped).await;
    let mut config = pipeline();
    config.archive.products_batch_size = 10_000;

    let report = run_config(&config, &data_dir, server.base_url()).await;

    assert_eq!(report.counts["observations"], 10_000);
    let state = archive_state(&data_dir);
    let parents = int64_values(&state.products, "parent_obsid");
    assert_eq!(parents.len(), 10_000);
    let unique: HashSet<i64> = parents.iter().copied().collect();
    assert_eq!(unique.len(), 10_000, "every obsid once");
    let observed: HashSet<i64> = int64_values(&state.observations, "obsid")
        .into_iter()
        .collect();
    assert_eq!(unique, observed);
}

// https://github.com/astropy/astroquery/issues/1979
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_product_is_reported() {
    check_no_matching_product(&pipeline(), "tst701110").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_model_missing_a_sample_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let archive = one_preview_each(&[70113]);
    let server = archive
        .serve(&dir.path().join("snapshot"), ServeOptions::default())
        .await;
    let empty = dir.path().join("no_candidates.sql");
    std::fs::write(&empty, "SELECT obsid FROM observations WHERE obsid < 0").unwrap();
    let mut config = pipeline();
    config.sql.models.push(empty);
    config.sql.candidates_model = Some("no_candidates".to_string());

    let error = try_run(&config, &dir.path().join("data"), server.base_url())
        .await
        .unwrap_err()
        .to_string();

    assert!(
        error.contains(
            "sql.candidates_model = \"no_candidates\" does not return observation tst701130, which the samples model samples selected"
        ),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_product_is_per_proposal_without_candidates_model() {
    let mut config = pipeline();
    config.sql.candidates_model = None;
    check_no_matching_product(&config, "70111").await;
}

/// Runs a proposal whose only products match no image rule and checks the one
/// `no_matching_products` skip, named `item`, and that nothing is downloaded or published.
async fn check_no_matching_product(config: &PipelineConfig, item: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut archive = TestArchive::new();
    archive.plain_proposal(70111);
    archive.observation(701110, 70111);
    archive.product(
        701110,
        "tst701110_spt.fits",
        "AUXILIARY",
        "SPT",
        Some(vec![1; 64]),
    );
    archive.preview(
        701110,
        "hst_70111_01_acs_wfc_color_tst701110_drc.jpg",
        sky(3),
    );
    let server = archive
        .serve(&dir.path().join("snapshot"), ServeOptions::default())
        .await;

    let report = run_config(config, &data_dir, server.base_url()).await;

    let unmatched = skips_with(&report, "products/no_matching_products");
    assert_eq!(unmatched.len(), 1, "{:?}", report.skips);
    assert_eq!(unmatched[0].0, item);
    assert!(
        unmatched[0].1.contains("0 products matched"),
        "{unmatched:?}"
    );
    assert_eq!(report.counts["samples"], 0);
    assert_eq!(report.published_version, None);
    assert_eq!(count_files(&data_dir.join("blobs/sha256")), 0);
    let dataset_dir = DatasetPaths::new(&data_dir, DATASET).root;
    assert!(!dataset_dir.join("versions").exists(), "no version folder");
}

// https://github.com/astropy/astroquery/issues/1979
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_product_is_reported_per_observation() {
    let dir = tempfile::tempdir().unwrap();
    let mut archive = one_preview_each(&[70112]);
    archive.observation(701121, 70112);
    archive.product(
        701121,
        "tst701121_spt.fits",
        "AUXILIARY",
        "SPT",
        Some(vec![1; 64]),
    );
    let server = archive
        .serve(&dir.path().join("snapshot"), ServeOptions::default())
        .await;

    let report = run_config(&pipeline(), &dir.path().join("data"), server.base_url()).await;

    let unmatched = skips_with(&report, "products/no_matching_products");
    let items: Vec<&str> = unmatched.iter().map(|(item, _)| item.as_str()).collect();
    assert_eq!(items, ["tst701121"], "{:?}", report.skips);
    assert!(
        unmatched[0]
            .1
            .contains("0 products matched the image rules of model candidate_images, out of 1 products of observation 701121"),
        "{unmatched:?}"
    );
    assert_eq!(
        report.counts["samples"], 1,
        "the matching observation is kept"
    );
}
