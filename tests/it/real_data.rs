//! The main job on real archive data: a snapshot built from the recorded MAST responses,
//! real HST FITS and preview files and the real proposal catalog sample next to the
//! repository (skipped with a message when that data is absent).

use paperclip::snapshots::files::{SnapshotSources, build};
use paperclip_archive::server::ServeOptions;

use crate::support::{query, run_pipeline, serve_snapshot, shared_data};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_snapshot_pairs_uranus_with_its_abstract() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let snapshot_dir = dir.path().join("snapshot");
    let summary = build(&SnapshotSources {
        out: snapshot_dir.clone(),
        catalog: Some(data.join("abstracts/abstracts-sample.cat")),
        recorded: [
            "advSearch.json",
            "caom.json",
            "products.json",
            "countsResp.json",
        ]
        .iter()
        .map(|name| data.join("mast").join(name))
        .collect(),
        image_dirs: vec![data.join("images")],
    })
    .unwrap();
    assert_eq!(summary.recorded_observation_files, 2);
    assert_eq!(summary.recorded_product_files, 1);
    assert!(
        summary
            .ignored
            .iter()
            .any(|i| i.path.ends_with("n4wl01xdq_raw.fits"))
    );

    let server = serve_snapshot(&snapshot_dir, ServeOptions::default()).await;
    let data_dir = dir.path().join("data");
    let report = run_pipeline(&data_dir, server.base_url()).await;
    assert_eq!(report.published_version, Some(1));

    let table = query(
        &data_dir,
        r#"SELECT proposal_id, obs_id, instrument_name, target_name, source_format,
                  source_width_px, strpos(caption, 'Uranus aurorae') > 0 AS mentions_uranus,
                  substr(caption, 1, 26) AS caption_start
           FROM "hst-paperclip".latest.samples WHERE proposal_id = 13012"#,
    )
    .await;
    assert!(
        table.contains("| 13012       | jbz504eoq | ACS/SBC"),
        "{table}"
    );
    assert!(table.contains("URANUS"), "{table}");
    assert!(table.contains("| fits "), "{table}");
    assert!(table.contains("| 1024 "), "{table}");
    assert!(table.contains("true"), "{table}");
    assert!(
        table.contains("Category: SOLAR SYSTEM.  A"),
        "double space of the paper caption:\n{table}"
    );

    let again = run_pipeline(&data_dir, server.base_url()).await;
    assert_eq!(again.unchanged_version, Some(1));
    assert_eq!(again.counts.get("downloads_fetched"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phase2_file_works_as_catalog() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let snapshot_dir = dir.path().join("snapshot");
    build(&SnapshotSources {
        out: snapshot_dir.clone(),
        catalog: None,
        recorded: Vec::new(),
        image_dirs: vec![data.join("images/fits/seti")],
    })
    .unwrap();
    let server = serve_snapshot(&snapshot_dir, ServeOptions::default()).await;

    let mut config = paperclip::pipeline::config::load(&crate::support::pipeline_path()).unwrap();
    config.archive.catalog = data.join("abstracts/13012.pro").display().to_string();
    let data_dir = dir.path().join("data");
    let report = crate::support::run_config(&config, &data_dir, server.base_url()).await;
    assert_eq!(report.published_version, Some(1));
    assert_eq!(report.counts["samples"], 1);

    let table = query(
        &data_dir,
        r#"SELECT proposal_id, cycle, pi, substr(caption, 1, 40) AS caption_start
           FROM "hst-paperclip".latest.samples"#,
    )
    .await;
    assert!(
        table.contains("| 13012       | 20    | Laurent Lamy"),
        "{table}"
    );
}
