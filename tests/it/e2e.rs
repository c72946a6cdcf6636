//! End-to-end runs of the main job against archives served on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use paperclip::dataset::shards::read_shard;
use paperclip::dataset::versions::{DatasetPaths, list_versions};
use paperclip::pipeline::{Progress, RunOptions};
use paperclip_archive::server::ServeOptions;

use crate::support::{
    count_files, pipeline_path, query, run_config, run_options, run_pipeline, serve_snapshot,
};

const DATASET: &str = "hst-paperclip";

/// Writes the fixture snapshot and serves it with the given options.
async fn serve_fixtures(
    dir: &std::path::Path,
    options: ServeOptions,
) -> (paperclip_archive::RunningServer, url::Url) {
    let snapshot_dir = dir.join("snapshot");
    paperclip::snapshots::fixtures::build(&snapshot_dir).unwrap();
    let server = serve_snapshot(&snapshot_dir, options).await;
    let url = server.base_url();
    (server, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_run_publishes_then_reuses() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;

    let first = run_pipeline(&data_dir, url.clone()).await;
    assert_eq!(first.published_version, Some(1));
    assert_eq!(first.counts["samples"], 7);
    assert_eq!(first.counts["downloads_fetched"], 9);
    let reasons: Vec<&str> = first.skipped_by_reason.keys().map(String::as_str).collect();
    assert_eq!(
        reasons,
        [
            "archive/no_public_observations",
            "catalog/cycle_out_of_range",
            "catalog/missing_cycle",
            "image/blank",
            "image/truncated",
            "products/parent_obsid_zero",
        ]
    );

    // Nothing changed, so the second run stops after the archive refresh: no SQL, no
    // image work, no version.
    let second = run_pipeline(&data_dir, url).await;
    assert_eq!(second.published_version, None);
    assert_eq!(second.unchanged_version, Some(1));
    assert_eq!(second.counts.get("downloads_fetched"), None);
    assert_eq!(second.counts.get("selected_images"), None);
    let statuses: Vec<(&str, &str)> = second
        .stages
        .iter()
        .map(|s| (s.stage.as_str(), s.status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("catalog", "ran"),
            ("archive", "ran"),
            ("models", "fresh"),
            ("images", "fresh"),
            ("publish", "fresh"),
        ]
    );
    let versions = list_versions(&DatasetPaths::new(&data_dir, DATASET))
        .await
        .unwrap();
    assert_eq!(versions.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_match_metadata_table() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;
    run_pipeline(&data_dir, url).await;

    let paths = DatasetPaths::new(&data_dir, DATASET);
    let record = list_versions(&paths).await.unwrap().pop().unwrap();
    let mut shard_keys = Vec::new();
    for shard in &record.shards {
        let path = paths.version_dir(1).join("shards").join(&shard.name);
        let (sha256, size_bytes) = paperclip::store::blobs::hash_file(&path).unwrap();
        assert_eq!(sha256, shard.sha256, "{}", shard.name);
        assert_eq!(size_bytes, shard.size_bytes);

        let samples = read_shard(&path).unwrap();
        assert_eq!(samples.len(), shard.samples);
        for sample in samples {
            let extensions: Vec<&str> = sample.members.iter().map(|(e, _)| e.as_str()).collect();
            assert_eq!(extensions, ["jpg", "txt", "json"], "{}", sample.key);
            let image = image::load_from_memory(&sample.members[0].1).unwrap();
            assert_eq!((image.width(), image.height()), (512, 512));
            let metadata: serde_json::Value = serde_json::from_slice(&sample.members[2].1).unwrap();
            assert_eq!(metadata["key"], sample.key.as_str());
            assert_eq!(
                metadata["caption"].as_str().unwrap().as_bytes(),
                sample.members[1].1.as_slice()
            );
            assert!(
                !metadata.as_object().unwrap().contains_key("shard"),
                "the layout stays out of the sample's JSON: {metadata}"
            );
            assert!(metadata["s_ra"].is_null(), "{metadata}");
            assert!(
                metadata.as_object().unwrap().contains_key("s_ra"),
                "NULL is written, not dropped"
            );
            shard_keys.push(sample.key);
        }
    }
    shard_keys.sort();

    let table = query(
        &data_dir,
        r#"SELECT key FROM "hst-paperclip".latest.samples ORDER BY key"#,
    )
    .await;
    for key in &shard_keys {
        assert!(table.contains(key.as_str()), "{key} missing from\n{table}");
    }
    assert_eq!(shard_keys.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_round_trips_through_sql_and_shards() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;
    run_pipeline(&data_dir, url).await;

    let table = query(
        &data_dir,
        r#"SELECT DISTINCT pi, title, text_repairs IS NOT NULL AS repaired
           FROM "hst-paperclip".latest.samples WHERE proposal_id = 90002"#,
    )
    .await;
    assert!(table.contains("Jürgen Müller"), "{table}");
    assert!(
        table.contains("dark cloud \u{2013} a test title"),
        "{table}"
    );
    assert!(table.contains("true"), "{table}");

    let nulls = query(
        &data_dir,
        r#"SELECT count(*) AS n FROM "hst-paperclip".latest.samples
           WHERE s_ra IS NULL AND NOT isnan(coalesce(s_ra, 0.0))"#,
    )
    .await;
    assert!(
        nulls.contains("| 7 |"),
        "NULL positions must stay NULL:\n{nulls}"
    );
}

/// Signals once a given number of images are done, so a test can cut a run off there.
struct CutAfter {
    done: AtomicU64,
    limit: u64,
    reached: tokio::sync::Notify,
}

impl Progress for CutAfter {
    fn advance(&self, _stage: &'static str, count: u64) {
        if self.done.fetch_add(count, Ordering::SeqCst) + count == self.limit {
            self.reached.notify_one();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_run_completes_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;
    let mut config = paperclip::pipeline::config::load(&pipeline_path()).unwrap();
    config.archive.download_concurrency = 1;

    let cut = Arc::new(CutAfter {
        done: AtomicU64::new(0),
        limit: 4,
        reached: tokio::sync::Notify::new(),
    });
    let options = RunOptions {
        data_dir: data_dir.clone(),
        archive_override: Some(url.clone()),
        progress: cut.clone(),
        plan_only: false,
        now: None,
        started_at: None,
        full_refresh: false,
        run_id: None,
        saved_plan: None,
        engine: Default::default(),
    };
    tokio::select! {
        result = paperclip::pipeline::run(&config, &options) => panic!("the run was not cut off: {result:?}"),
        () = cut.reached.notified() => {}
    }
    let paths = DatasetPaths::new(&data_dir, DATASET);
    assert!(list_versions(&paths).await.unwrap().is_empty());
    assert!(count_files(&data_dir.join("blobs/sha256")) >= 4);

    let completed = run_config(&config, &data_dir, url).await;
    assert_eq!(completed.published_version, Some(1));
    assert_eq!(completed.counts["samples"], 7);
    let fetched = completed
        .counts
        .get("downloads_fetched")
        .copied()
        .unwrap_or(0);
    let reused = completed
        .counts
        .get("downloads_reused")
        .copied()
        .unwrap_or(0);
    assert_eq!(fetched + reused, 9);
    assert!(
        reused >= 4,
        "downloads finished before the cut are reused, got {reused}"
    );

    let keys = query(
        &data_dir,
        r#"SELECT count(*) AS n, count(DISTINCT key) AS k FROM "hst-paperclip".v1.samples"#,
    )
    .await;
    assert!(keys.contains("| 7 | 7 |"), "{keys}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_settings_publish_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;
    let mut config = paperclip::pipeline::config::load(&pipeline_path()).unwrap();
    run_config(&config, &data_dir, url.clone()).await;

    config.selection.max_images_per_proposal = 1;
    let server_url = url.clone();
    let second = run_config(&config, &data_dir, url).await;
    assert_eq!(second.published_version, Some(2));
    assert_eq!(second.counts.get("downloads_fetched"), None);

    let per_version = query(
        &data_dir,
        r#"SELECT 'v1' AS version, count(*) AS n FROM "hst-paperclip".v1.samples
           UNION ALL SELECT 'v2', count(*) FROM "hst-paperclip".v2.samples
           UNION ALL SELECT 'latest', count(*) FROM "hst-paperclip".latest.samples
           ORDER BY version"#,
    )
    .await;
    assert!(per_version.contains("| v1      | 7 |"), "{per_version}");
    assert!(per_version.contains("| v2      | 3 |"), "{per_version}");
    assert!(per_version.contains("| latest  | 3 |"), "{per_version}");

    let diff = paperclip::dataset::diff::diff_versions(&data_dir, DATASET, 1, 2)
        .await
        .unwrap();
    assert_eq!(diff.totals["added"], 0);
    assert_eq!(diff.totals["removed"], 4);
    assert_eq!(diff.totals["changed"] + diff.totals["unchanged"], 3);

    // A new seed re-ranks the images: the same keys with other `sample_rank` values count
    // as changed, since the rank is part of each sample's JSON.
    config.selection.max_images_per_proposal = 20;
    config.selection.seed = 7;
    let third = run_config(&config, &data_dir, server_url.clone()).await;
    assert_eq!(third.published_version, Some(3));
    let reseeded = paperclip::dataset::diff::diff_versions(&data_dir, DATASET, 1, 3)
        .await
        .unwrap();
    assert!(reseeded.totals["changed"] > 0, "{:?}", reseeded.totals);
    let paths = DatasetPaths::new(&data_dir, DATASET);
    assert_eq!(
        paperclip::dataset::versions::latest_version(&paths)
            .await
            .unwrap(),
        list_versions(&paths).await.unwrap().pop()
    );
    let removed: u64 = diff
        .by_proposal
        .iter()
        .filter(|c| c.change == "removed")
        .map(|c| c.samples)
        .sum();
    assert_eq!(removed, 4);

    let paths = DatasetPaths::new(&data_dir, DATASET);
    let v1 = &list_versions(&paths).await.unwrap()[0];
    for shard in &v1.shards {
        let path = paths.version_dir(1).join("shards").join(&shard.name);
        let (sha256, _) = paperclip::store::blobs::hash_file(&path).unwrap();
        assert_eq!(sha256, shard.sha256, "v1 shard {} changed", shard.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_downloads_are_skipped_not_published() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let truncating = ServeOptions {
        truncate_downloads_to_bytes: Some(1000),
        ..ServeOptions::default()
    };
    let (_server, url) = serve_fixtures(dir.path(), truncating).await;
    let mut config = paperclip::pipeline::config::load(&pipeline_path()).unwrap();
    config.archive.max_retries = 1;

    let report = run_config(&config, &data_dir, url).await;
    assert_eq!(
        report.skipped_by_reason.get("download/size_mismatch"),
        Some(&9)
    );
    assert_eq!(report.counts["samples"], 0);
    assert_eq!(report.published_version, None);
    assert_eq!(count_files(&data_dir.join("blobs/sha256")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_blobs_are_not_downloaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (first_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;
    run_pipeline(&data_dir, url).await;
    drop(first_server);

    // Every download from this server would come back truncated and be rejected, so a
    // clean second run proves no file was requested.
    let broken_downloads = ServeOptions {
        truncate_downloads_to_bytes: Some(0),
        ..ServeOptions::default()
    };
    let server = serve_snapshot(&dir.path().join("snapshot"), broken_downloads).await;
    // A new image setting makes the image stage run again over the stored downloads.
    let mut config = paperclip::pipeline::config::load(&pipeline_path()).unwrap();
    config.images.max_source_pixels += 1;
    let second = run_config(&config, &data_dir, server.base_url()).await;
    assert_eq!(second.unchanged_version, Some(1));
    assert_eq!(second.counts["downloads_reused"], 9);
    assert!(
        !second
            .skipped_by_reason
            .keys()
            .any(|k| k.starts_with("download/"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_input_gives_same_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;
    let mut fingerprints = Vec::new();
    for name in ["a", "b"] {
        let data_dir = dir.path().join(name);
        run_pipeline(&data_dir, url.clone()).await;
        let record = list_versions(&DatasetPaths::new(&data_dir, DATASET))
            .await
            .unwrap()
            .pop()
            .unwrap();
        let shards: Vec<_> = record
            .shards
            .iter()
            .map(|s| (s.name.clone(), s.sha256.clone()))
            .collect();
        fingerprints.push((record.fingerprint, shards));
    }
    assert_eq!(fingerprints[0], fingerprints[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_damaged_shards() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;
    run_pipeline(&data_dir, url).await;
    let paths = DatasetPaths::new(&data_dir, DATASET);
    assert!(
        paperclip::dataset::verify::verify_dataset(&paths)
            .await
            .unwrap()
            .is_empty()
    );

    let shard = paths.version_dir(1).join("shards/train-00000.tar");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(paths.version_dir(1).join("shards/train-00009.tar"), b"").unwrap();

    let problems = paperclip::dataset::verify::verify_dataset(&paths)
        .await
        .unwrap();
    let items: Vec<&str> = problems.iter().map(|p| p.item.as_str()).collect();
    assert_eq!(
        items,
        ["train-00000.tar", "train-00009.tar"],
        "{problems:?}"
    );
    assert!(
        problems[0].detail.contains("the manifest says"),
        "{}",
        problems[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_decodes_every_column_of_the_data_files() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;
    run_pipeline(&data_dir, url).await;
    let paths = DatasetPaths::new(&data_dir, DATASET);
    let data_file = std::fs::read_dir(paths.samples_table())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|e| e == "parquet"))
        .unwrap();

    // Four bytes inside a column other than the key; the size and the footer stay intact.
    let mut bytes = std::fs::read(&data_file).unwrap();
    bytes[2000..2004].copy_from_slice(&[0xff; 4]);
    std::fs::write(&data_file, &bytes).unwrap();

    let problems = paperclip::dataset::verify::verify_dataset(&paths)
        .await
        .unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        (problems[0].version, problems[0].item.as_str()),
        (1, "samples table")
    );
    assert!(
        problems[0]
            .detail
            .starts_with("cannot be read at this version"),
        "{}",
        problems[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_publishes_again_when_the_latest_version_lost_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;
    run_pipeline(&data_dir, url.clone()).await;
    let paths = DatasetPaths::new(&data_dir, DATASET);
    for entry in std::fs::read_dir(paths.samples_table()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "parquet") {
            std::fs::remove_file(path).unwrap();
        }
    }

    let report = run_pipeline(&data_dir, url).await;

    assert_eq!(report.published_version, Some(2), "{:?}", report.stages);
    let publish = report.stages.iter().find(|s| s.stage == "publish").unwrap();
    assert!(
        publish.reasons.iter().any(|r| r.contains("Delta data file")
            && r.ends_with("is missing or has the wrong size; publishing again")),
        "{:?}",
        publish.reasons
    );
    let versions = list_versions(&paths).await.unwrap();
    assert_eq!(versions[0].fingerprint, versions[1].fingerprint);
    let problems = paperclip::dataset::verify::verify_dataset(&paths)
        .await
        .unwrap();
    let damaged: Vec<u64> = problems.iter().map(|p| p.version).collect();
    assert_eq!(
        damaged,
        [1],
        "only the damaged version is reported: {problems:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_data_files_are_reported_and_new_ones_removed() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;
    run_pipeline(&data_dir, url.clone()).await;
    let paths = DatasetPaths::new(&data_dir, DATASET);
    let committed = std::fs::read_dir(paths.samples_table())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    // What a commit that failed after writing its data file leaves.
    let stray = paths
        .samples_table()
        .join("part-00001-0c8a4a65-2b1e-4f0e-9a51-3d3c1f0e0001-c000.snappy.parquet");
    std::fs::copy(&committed, &stray).unwrap();
    // A file older than the latest commit, as a version whose log entries were removed
    // leaves: reported, but left to gc.
    let old_name = "part-00000-5d1e3f7a-8c2b-4a6e-b0f9-7e4d2c1a0002-c000.snappy.parquet";
    let old = paths.samples_table().join(old_name);
    std::fs::copy(&committed, &old).unwrap();
    let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(day_ago)
        .unwrap();

    // A file someone put there by hand, with a name no commit writes.
    let by_hand = paths.samples_table().join("mycopy.parquet");
    std::fs::copy(&committed, &by_hand).unwrap();

    let problems = paperclip::dataset::verify::verify_dataset(&paths)
        .await
        .unwrap();
    let mut items: Vec<&str> = problems.iter().map(|p| p.item.as_str()).collect();
    items.sort();
    assert_eq!(
        items,
        [
            "samples/mycopy.parquet".to_string(),
            format!("samples/{old_name}"),
            "samples/part-00001-0c8a4a65-2b1e-4f0e-9a51-3d3c1f0e0001-c000.snappy.parquet"
                .to_string()
        ],
        "{problems:?}"
    );
    assert!(problems.iter().all(|p| p.version == 0), "{problems:?}");
    assert!(
        problems[0].detail.contains("datasets gc"),
        "{}",
        problems[0]
    );

    run_pipeline(&data_dir, url).await;
    assert!(!stray.exists(), "the next run removes the stray data file");
    assert!(
        old.exists(),
        "the next run leaves an older unreferenced file to gc"
    );
    assert!(
        by_hand.exists(),
        "the next run leaves a file it did not write"
    );
    assert!(committed.exists(), "a referenced data file stays");
    let problems = paperclip::dataset::verify::verify_dataset(&paths)
        .await
        .unwrap();
    let mut items: Vec<&str> = problems.iter().map(|p| p.item.as_str()).collect();
    items.sort();
    assert_eq!(
        items,
        [
            "samples/mycopy.parquet".to_string(),
            format!("samples/{old_name}")
        ],
        "{problems:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_split_values_stop_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;

    let models = dir.path().join("sql");
    std::fs::create_dir_all(&models).unwrap();
    let root = crate::support::repo_root();
    std::fs::copy(
        root.join("sql/candidate_images.sql"),
        models.join("candidate_images.sql"),
    )
    .unwrap();
    let samples = std::fs::read_to_string(root.join("sql/samples.sql")).unwrap();
    std::fs::write(
        models.join("samples.sql"),
        samples.replace("ELSE 'train'", "ELSE 'test'"),
    )
    .unwrap();
    let mut config = paperclip::pipeline::config::load(&pipeline_path()).unwrap();
    config.sql.models = vec![
        models.join("candidate_images.sql"),
        models.join("samples.sql"),
    ];

    let options = RunOptions {
        data_dir: data_dir.clone(),
        archive_override: Some(url),
        progress: Arc::new(paperclip::pipeline::NoProgress),
        plan_only: false,
        now: None,
        started_at: None,
        full_refresh: false,
        run_id: None,
        saved_plan: None,
        engine: Default::default(),
    };
    let error = paperclip::pipeline::run(&config, &options)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains(r#"value(s) "test""#), "{error}");
    assert!(
        list_versions(&DatasetPaths::new(&data_dir, DATASET))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_archive_file_is_downloaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;
    run_pipeline(&data_dir, url.clone()).await;

    // The archive reprocesses one preview: new bytes under the same URI, new size listed.
    let name = "hst_90001_01_acs_wfc_total_fx9a01_drc.jpg";
    let snapshot = dir.path().join("snapshot");
    let new_bytes = paperclip_images::synth::sky_jpeg(99, 640, 480, false, 90);
    std::fs::write(snapshot.join("files/HST/product").join(name), &new_bytes).unwrap();
    for entry in std::fs::read_dir(snapshot.join("caom/products")).unwrap() {
        let path = entry.unwrap().path();
        let mut envelope: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for row in envelope["data"].as_array_mut().unwrap() {
            if row["productFilename"] == name {
                row["size"] = serde_json::json!(new_bytes.len());
            }
        }
        std::fs::write(&path, serde_json::to_vec(&envelope).unwrap()).unwrap();
    }
    let server = serve_snapshot(&snapshot, ServeOptions::default()).await;

    // Products of known observations are queried again by a full refresh.
    let config = paperclip::pipeline::config::load(&pipeline_path()).unwrap();
    let mut options = run_options(&data_dir, server.base_url());
    options.full_refresh = true;
    let second = paperclip::pipeline::run(&config, &options).await.unwrap();
    assert_eq!(second.counts["downloads_fetched"], 1);
    assert_eq!(second.published_version, Some(2));
    let sizes = query(
        &data_dir,
        &format!(
            r#"SELECT size_bytes = blob_size_bytes AS consistent FROM "hst-paperclip".v2.samples
               WHERE product_filename = '{name}'"#
        ),
    )
    .await;
    assert!(sizes.contains("true"), "{sizes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_shared_by_two_proposals_is_fetched_once() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot_dir = dir.path().join("snapshot");
    paperclip::snapshots::fixtures::build(&snapshot_dir).unwrap();

    // List proposal 90001's first preview under an observation of proposal 90004 as well.
    let mut writer =
        paperclip_archive::SnapshotWriter::create(&snapshot_dir, "fixtures plus a shared file")
            .unwrap();
    let row = serde_json::json!({
        "obsID": 8_000_000_401u64, "parent_obsid": 8_000_000_401u64, "obs_id": "fx9d01010",
        "obs_collection": "HST", "productType": "PREVIEW",
        "dataURI": "mast:HST/product/hst_90001_01_acs_wfc_total_fx9a01_drc.jpg",
        "productFilename": "hst_90001_01_acs_wfc_total_fx9a01_drc.jpg",
    });
    writer
        .add_products(vec![row.as_object().unwrap().clone()])
        .unwrap();
    writer.finish().unwrap();
    let server = serve_snapshot(&snapshot_dir, ServeOptions::default()).await;

    let report = run_pipeline(&dir.path().join("data"), server.base_url()).await;
    assert_eq!(report.counts["selected_images"], 10);
    assert_eq!(report.counts["samples"], 8);
    assert_eq!(
        report.counts["downloads_fetched"], 9,
        "the shared file is fetched once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_run_is_in_the_run_log() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut config = paperclip::pipeline::config::load(&pipeline_path()).unwrap();
    config.archive.max_retries = 0;
    let options = RunOptions {
        data_dir: data_dir.clone(),
        // Nothing listens on the discard port of loopback, so every request fails.
        archive_override: Some(url::Url::parse("http://127.0.0.1:9/").unwrap()),
        progress: Arc::new(paperclip::pipeline::NoProgress),
        plan_only: false,
        now: None,
        started_at: None,
        full_refresh: false,
        run_id: None,
        saved_plan: None,
        engine: Default::default(),
    };
    assert!(paperclip::pipeline::run(&config, &options).await.is_err());

    let (_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;
    run_pipeline(&data_dir, url).await;
    let runs = query(
        &data_dir,
        "SELECT published_version, error IS NOT NULL AS failed, cardinality(skips) AS skips
         FROM paperclip.runs ORDER BY run_id",
    )
    .await;
    assert!(
        runs.contains("|                   | true   | 0     |"),
        "{runs}"
    );
    assert!(
        runs.contains("| 1                 | false  | 6     |"),
        "{runs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_manifest_and_skips_files() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;
    run_pipeline(&data_dir, url).await;
    let paths = DatasetPaths::new(&data_dir, DATASET);
    std::fs::write(paths.version_dir(1).join("manifest.json"), b"{garbage").unwrap();
    std::fs::write(paths.version_dir(1).join("skips.parquet"), b"junk").unwrap();

    let problems = paperclip::dataset::verify::verify_dataset(&paths)
        .await
        .unwrap();
    let items: Vec<&str> = problems.iter().map(|p| p.item.as_str()).collect();
    assert_eq!(items, ["manifest.json", "skips.parquet"], "{problems:?}");

    let count = query(
        &data_dir,
        r#"SELECT count(*) AS n FROM "hst-paperclip".v1.samples"#,
    )
    .await;
    assert!(
        count.contains("| 7 |"),
        "a damaged skips file must not break queries:\n{count}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_pipeline_needs_only_toml_and_sql() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;
    let path = crate::support::repo_root().join("pipelines/hst-acs-enriched.toml");
    let config = paperclip::pipeline::config::load(&path).unwrap();

    let report = run_config(&config, &data_dir, url).await;
    assert_eq!(report.published_version, Some(1));
    assert_eq!(report.counts["samples"], 4);
    let captions = query(
        &data_dir,
        r#"SELECT count(*) AS n FROM "hst-acs-enriched".latest.samples
           WHERE instrument_name LIKE 'ACS/%' AND caption_form = 'enriched'
             AND starts_with(caption, concat('Target: ', target_name, '. Instrument: ACS/WFC. Filters: F606W. '))"#,
    )
    .await;
    assert!(captions.contains("| 4 |"), "{captions}");
}

#[test]
fn models_ordered_whatever_the_listing() {
    let dir = tempfile::tempdir().unwrap();
    let root = crate::support::repo_root();
    let original = std::fs::read_to_string(root.join("pipelines/hst-acs-enriched.toml")).unwrap();

    // List the models in reverse dependency order, with absolute paths.
    let listed = "models = [\n    \"../sql/candidate_images.sql\",\n    \"../sql/samples.sql\",\n    \"../sql/enriched/acs_samples.sql\",\n]";
    let reversed_list = format!(
        "models = [\"{}\", \"{}\", \"{}\"]",
        root.join("sql/enriched/acs_samples.sql").display(),
        root.join("sql/samples.sql").display(),
        root.join("sql/candidate_images.sql").display()
    );
    let reversed = original.replace(listed, &reversed_list);
    assert_ne!(reversed, original, "the models list was rewritten");
    let path = dir.path().join("p.toml");
    std::fs::write(&path, reversed).unwrap();

    let config = paperclip::pipeline::config::load(&path).unwrap();
    let paths: Vec<_> = config
        .sql
        .models
        .iter()
        .map(|m| config.resolve(m))
        .collect();
    let models =
        paperclip::sql::graph::load_models(&paths, &paperclip::pipeline::INPUT_TABLES).unwrap();
    let order: Vec<String> = models.into_iter().map(|m| m.name).collect();
    assert_eq!(order, ["candidate_images", "samples", "acs_samples"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_predicts_the_run_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (_server, url) = serve_fixtures(dir.path(), ServeOptions::default()).await;
    let config = paperclip::pipeline::config::load(&pipeline_path()).unwrap();
    let plan = |data_dir: std::path::PathBuf, url: url::Url| RunOptions {
        data_dir,
        archive_override: Some(url),
        progress: Arc::new(paperclip::pipeline::NoProgress),
        plan_only: true,
        now: None,
        started_at: None,
        full_refresh: false,
        run_id: None,
        saved_plan: None,
        engine: Default::default(),
    };

    let before = paperclip::pipeline::run(&config, &plan(data_dir.clone(), url.clone()))
        .await
        .unwrap();
    let predicted = before.plan.unwrap();
    assert_eq!(predicted.would_publish_version, Some(1));
    assert_eq!(predicted.pending_images, 9);
    assert_eq!(before.counts["downloads_needed"], 9);
    assert_eq!(
        count_files(&data_dir.join("blobs")),
        0,
        "a plan downloads nothing"
    );
    assert!(
        list_versions(&DatasetPaths::new(&data_dir, DATASET))
            .await
            .unwrap()
            .is_empty()
    );

    run_pipeline(&data_dir, url.clone()).await;
    let after = paperclip::pipeline::run(&config, &plan(data_dir.clone(), url.clone()))
        .await
        .unwrap();
    let predicted = after.plan.unwrap();
    assert_eq!(
        predicted.would_publish_version, None,
        "{}",
        predicted.summary
    );
    assert!(
        predicted.summary.starts_with("up to date"),
        "{}",
        predicted.summary
    );
    let stale: Vec<&str> = after
        .stages
        .iter()
        .filter(|s| s.status != "fresh")
        .map(|s| s.stage.as_str())
        .collect();
    assert_eq!(stale, ["catalog", "archive"], "{:?}", after.stages);

    // A changed SQL model makes the models stage stale, with the file named as the reason.
    let mut edited = config.clone();
    let sql_dir = dir.path().join("sql");
    std::fs::create_dir_all(&sql_dir).unwrap();
    for model in &mut edited.sql.models {
        let source = config.resolve(model);
        let copy = sql_dir.join(source.file_name().unwrap());
        let text = std::fs::read_to_string(&source).unwrap();
        std::fs::write(&copy, format!("{text}\n-- edited\n")).unwrap();
        *model = copy;
    }
    let edited_plan = paperclip::pipeline::run(&edited, &plan(data_dir.clone(), url))
        .await
        .unwrap();
    let models = edited_plan
        .stages
        .iter()
        .find(|s| s.stage == "models")
        .unwrap();
    assert_eq!(models.status, "would_run");
    assert!(
        models
            .reasons
            .iter()
            .any(|r| r == "sql model samples changed since v1"),
        "{:?}",
        models.reasons
    );
    assert_eq!(edited_plan.counts["images_cached"], 9);
}
