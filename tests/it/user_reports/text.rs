//! Text encoding and missing values from catalog to published version: non-ASCII names
//! and titles, Latin-1 bytes, and observations without a position.

use std::path::Path;

use paperclip_archive::ServeOptions;
use paperclip_clip::tokenizer::ClipTokenizer;
use serde_json::{Value, json};

use super::mast::{TestArchive, pipeline, query_column, shard_samples};
use crate::support::run_config;

/// Serves `archive` and runs the project's pipeline on it. Returns the temporary directory
/// that contains the data directory, and the run's report.
async fn publish(archive: &TestArchive) -> (tempfile::TempDir, paperclip::pipeline::RunReport) {
    let dir = tempfile::tempdir().unwrap();
    let server = archive
        .serve(&dir.path().join("snapshot"), ServeOptions::default())
        .await;
    let report = run_config(&pipeline(), &data_dir(&dir), server.base_url()).await;
    (dir, report)
}

fn data_dir(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("data")
}

/// Builds an archive with one proposal and one preview.
fn single_proposal(id: u32, title: &str, pi: &[u8], abstract_text: &str) -> TestArchive {
    let mut archive = TestArchive::new();
    archive.proposal(id, title, pi, abstract_text);
    let obsid = u64::from(id) * 10;
    archive.observation(obsid, id);
    let preview = paperclip_images::synth::sky_jpeg(u64::from(id), 320, 240, false, 90);
    archive.preview(
        obsid,
        &format!("hst_{id}_01_acs_wfc_total_tst{obsid}_drc.jpg"),
        preview,
    );
    archive
}

/// Returns the one value of a text column of the latest version.
async fn latest_text(data_dir: &Path, column: &str) -> String {
    let values = query_column(
        data_dir,
        &format!(r#"SELECT {column} FROM "hst-paperclip".latest.samples"#),
    )
    .await;
    assert_eq!(values.len(), 1, "{values:?}");
    values[0]
        .clone()
        .unwrap_or_else(|| panic!("{column} is NULL"))
}

// https://github.com/astropy/astroquery/issues/536
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pi_with_tilde_round_trips_byte_exact() {
    let name = "\u{c3}ngela Souza";
    let archive = single_proposal(
        70201,
        "Test program with a co-investigator",
        name.as_bytes(),
        &format!("Synthetic test abstract. Co-investigator: {name}."),
    );

    let (dir, report) = publish(&archive).await;
    let data_dir = data_dir(&dir);

    assert_eq!(report.counts["samples"], 1);
    let stored = latest_text(&data_dir, "pi").await;
    assert_eq!(stored.as_bytes(), name.as_bytes());
    let octets = latest_text(&data_dir, "octet_length(pi)").await;
    assert_eq!(octets, name.len().to_string());
    let repairs = query_column(
        &data_dir,
        r#"SELECT text_repairs FROM "hst-paperclip".latest.samples"#,
    )
    .await;
    assert_eq!(repairs, [None], "valid UTF-8 needs no repair");

    let samples = shard_samples(&data_dir).await;
    let sample = samples.values().next().unwrap();
    assert_eq!(sample.json["pi"], json!(name));
    let caption = String::from_utf8(sample.caption.clone()).unwrap();
    assert!(caption.contains(name), "{caption}");
    assert_eq!(sample.json["caption"], json!(caption));
}

// https://github.com/astropy/astropy/pull/4757
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn en_dash_title_survives_json_and_tokenizer() {
    let title = "Dark clouds \u{2013} a synthetic survey";
    let archive = single_proposal(
        70202,
        title,
        b"Test Investigator",
        "Synthetic test abstract about dark clouds \u{2013} and their jets.",
    );

    let (dir, _report) = publish(&archive).await;
    let data_dir = data_dir(&dir);

    assert_eq!(latest_text(&data_dir, "title").await, title);
    let samples = shard_samples(&data_dir).await;
    let sample = samples.values().next().unwrap();
    assert_eq!(sample.json["title"], json!(title));
    let caption = String::from_utf8(sample.caption.clone()).unwrap();
    assert!(caption.contains("clouds \u{2013} and"), "{caption}");

    // Byte-level BPE needs no merges to cover every byte, so two merges are enough.
    let tokenizer = ClipTokenizer::from_merges_text("#version: test\nd a\nr k</w>\n").unwrap();
    let ids = tokenizer.encode(&caption);
    let decoded = tokenizer.decode(&ids).unwrap();
    assert!(decoded.contains('\u{2013}'), "{decoded}");
    assert!(!decoded.contains('\u{fffd}'), "{decoded}");
}

// https://github.com/cxcsds/ciao-contrib/issues/695
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin1_pi_is_decoded_and_flagged() {
    let archive = single_proposal(
        70203,
        "Test program with a Latin-1 name",
        b"M\xfcller",
        "Synthetic test abstract in plain ASCII.",
    );

    let (dir, report) = publish(&archive).await;
    let data_dir = data_dir(&dir);

    assert_eq!(report.counts["samples"], 1);
    assert_eq!(latest_text(&data_dir, "pi").await, "M\u{fc}ller");
    let samples = shard_samples(&data_dir).await;
    let sample = samples.values().next().unwrap();
    assert_eq!(sample.json["pi"], json!("M\u{fc}ller"));
    let repairs = sample.json["text_repairs"].as_str().unwrap_or_default();
    assert!(repairs.starts_with("pi: latin1_fallback"), "{repairs}");
    assert!(!repairs.contains("title"), "{repairs}");
}

// https://github.com/sunpy/sunpy/pull/7960
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_positions_stay_null_and_are_counted() {
    let mut archive = TestArchive::new();
    archive.plain_proposal(70204);
    for offset in 0..3u64 {
        let obsid = 702040 + offset;
        let row = archive.observation(obsid, 70204);
        if offset == 1 {
            row.insert("s_ra".into(), Value::Null);
            row.insert("s_dec".into(), Value::Null);
        }
        let preview = paperclip_images::synth::sky_jpeg(obsid, 320, 240, false, 90);
        archive.preview(
            obsid,
            &format!("hst_70204_0{offset}_acs_wfc_total_tst{obsid}_drc.jpg"),
            preview,
        );
    }

    let (dir, report) = publish(&archive).await;
    let data_dir = data_dir(&dir);

    assert_eq!(report.counts["observations_without_position"], 1);
    assert_eq!(report.counts["samples"], 3, "no row is dropped");
    let positions = query_column(
        &data_dir,
        r#"SELECT concat(obsid, ':', coalesce(CAST(s_ra AS VARCHAR), 'NULL'), ':', coalesce(CAST(isnan(s_ra) AS VARCHAR), 'NULL'))
           FROM "hst-paperclip".latest.samples ORDER BY obsid"#,
    )
    .await;
    assert_eq!(
        positions,
        [
            Some("702040:10.5:false".to_string()),
            Some("702041:NULL:NULL".to_string()),
            Some("702042:10.5:false".to_string()),
        ]
    );
    let samples = shard_samples(&data_dir).await;
    let without = &samples["hst_70204_01_acs_wfc_total_tst702041_drc.jpg"].json;
    let fields = without.as_object().unwrap();
    assert_eq!(fields.get("s_ra"), Some(&Value::Null), "{without}");
    assert_eq!(fields.get("s_dec"), Some(&Value::Null), "{without}");
}
