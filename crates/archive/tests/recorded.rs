//! Tests against real MAST responses recorded by astroquery 0.4.11
//! (`astroquery/mast/tests/data/`), kept in the shared data directory. When
//! the directory is absent the tests print a note and pass, unless
//! `PAPERCLIP_REQUIRE_SHARED_DATA=1`.

mod support;

use std::path::{Path, PathBuf};

use paperclip_archive::envelope::RowReader;
use paperclip_archive::model::{
    OBSERVATION_REQUIRED_COLUMNS, PRODUCT_REQUIRED_COLUMNS, is_hst_row,
};
use paperclip_archive::{
    ArchiveError, DataUri, Envelope, MastClient, ObsId, Observation, Product, ServeOptions,
    SnapshotWriter, TableKind,
};
use support::{FixedServer, fast_config, loopback};

/// Returns the recorded MAST directory, or `None` (after printing why) when
/// the shared data is absent and not required.
fn mast_data_dir() -> Option<PathBuf> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if data.join("mast").is_dir() {
        return Some(data.join("mast"));
    }
    if std::env::var("PAPERCLIP_REQUIRE_SHARED_DATA").as_deref() == Ok("1") {
        panic!("shared data not found at {}", data.display());
    }
    println!("skipping: shared data not found at {}", data.display());
    None
}

fn read_recorded(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|err| panic!("cannot read {name}: {err}"))
}

fn parse_recorded(dir: &Path, name: &str) -> Envelope {
    Envelope::from_slice(&read_recorded(dir, name))
        .unwrap_or_else(|reason| panic!("{name}: {reason}"))
}

#[test]
fn adv_search_parses_three_observations() {
    let Some(dir) = mast_data_dir() else { return };
    let envelope = parse_recorded(&dir, "advSearch.json");

    envelope
        .check_columns(OBSERVATION_REQUIRED_COLUMNS)
        .unwrap();
    let observations: Vec<Observation> = envelope
        .data
        .iter()
        .enumerate()
        .map(|(index, row)| Observation::from_row(row, index).unwrap())
        .collect();

    assert_eq!(observations.len(), 3);
    assert!(observations.iter().all(|obs| obs.proposal_id == 8880));
    assert_eq!(observations[0].obsid, ObsId(2003520266));
    assert_eq!(observations[0].obs_id.as_str(), "O6AU01MSQ");
    assert_eq!(observations[0].instrument_name.as_deref(), Some("STIS/CCD"));
    assert_eq!(
        observations[0].jpeg_url.as_deref(),
        Some("https://archive.stsci.edu/hst/previews/O6AU/O6AU01MSQ.jpg")
    );
    assert!(observations.iter().all(Observation::has_position));
}

#[test]
fn caom_cone_keeps_only_hst_rows() {
    let Some(dir) = mast_data_dir() else { return };
    let envelope = parse_recorded(&dir, "caom.json");

    envelope
        .check_columns(OBSERVATION_REQUIRED_COLUMNS)
        .unwrap();
    let hst: Vec<Observation> = envelope
        .data
        .iter()
        .enumerate()
        .filter(|(_, row)| is_hst_row(row))
        .map(|(index, row)| Observation::from_row(row, index).unwrap())
        .collect();

    assert_eq!(envelope.data.len(), 19);
    assert_eq!(hst.len(), 4);
    assert!(hst.iter().all(|obs| obs.obs_collection == "HST"));
    assert!(
        hst.iter()
            .all(|obs| [5371, 5092].contains(&obs.proposal_id))
    );
}

#[tokio::test]
async fn caom_cone_drops_non_hst_through_client() {
    let Some(dir) = mast_data_dir() else { return };
    let server = FixedServer::start(200, read_recorded(&dir, "caom.json")).await;
    let client = MastClient::new(fast_config(server.base_url.clone())).unwrap();

    let observations = client
        .observations_for_proposals(&[5371, 5092])
        .await
        .unwrap();

    assert_eq!(observations.len(), 4);
    assert_eq!(client.stats().non_hst_rows_dropped, 15);
}

#[test]
fn products_parse_twenty_two_rows() {
    let Some(dir) = mast_data_dir() else { return };
    let envelope = parse_recorded(&dir, "products.json");

    envelope.check_columns(PRODUCT_REQUIRED_COLUMNS).unwrap();
    let products: Vec<Product> = envelope
        .data
        .iter()
        .enumerate()
        .map(|(index, row)| Product::from_row(row, index).unwrap())
        .collect();

    assert_eq!(products.len(), 22);
    assert!(
        products
            .iter()
            .all(|product| product.obsid == ObsId(2003738726))
    );
    assert!(
        products
            .iter()
            .all(|product| product.parent_obsid == product.obsid)
    );
    assert!(
        products
            .iter()
            .all(|product| DataUri::parse(&product.data_uri).is_ok())
    );
    let drz = products
        .iter()
        .find(|product| product.product_subgroup.as_deref() == Some("DRZ"))
        .unwrap();
    assert_eq!(drz.size_bytes, Some(27_227_520));
    assert_eq!(drz.product_type, "SCIENCE");
}

#[test]
fn counts_response_reads_column1() {
    let Some(dir) = mast_data_dir() else { return };
    let envelope = parse_recorded(&dir, "countsResp.json");

    let reader = RowReader {
        row: &envelope.data[0],
        index: 0,
    };

    assert_eq!(reader.optional_i64("Column1").unwrap(), Some(599));
}

#[test]
fn relative_path_uris_are_valid() {
    let Some(dir) = mast_data_dir() else { return };
    let lookup: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&read_recorded(&dir, "mast_relative_path.json")).unwrap();

    assert_eq!(lookup.len(), 2);
    for uri in lookup.keys() {
        let parsed = DataUri::parse(uri).unwrap();
        assert!(parsed.relative_path().starts_with("HST/product/"), "{uri}");
    }
}

/// Builds a snapshot from the recorded envelopes, unchanged, and serves it.
async fn recorded_snapshot_server(
    dir: &Path,
) -> (tempfile::TempDir, paperclip_archive::RunningServer) {
    let snapshot_dir = tempfile::tempdir().unwrap();
    let writer =
        SnapshotWriter::create(snapshot_dir.path(), "recorded astroquery responses").unwrap();
    for name in ["advSearch.json", "caom.json"] {
        writer
            .add_recorded_response(TableKind::Observations, name, &read_recorded(dir, name))
            .unwrap();
    }
    writer
        .add_recorded_response(
            TableKind::Products,
            "products.json",
            &read_recorded(dir, "products.json"),
        )
        .unwrap();
    writer
        .add_file(
            "mast:HST/product/u9o40504m_c3m.fits",
            b"recorded-size-is-207360-bytes",
        )
        .unwrap();
    let snapshot = writer.finish().unwrap();
    let server = paperclip_archive::bind(snapshot, loopback(), ServeOptions::default())
        .await
        .unwrap();
    (snapshot_dir, server)
}

#[tokio::test]
async fn snapshot_serves_proposal_8880() {
    let Some(dir) = mast_data_dir() else { return };
    let (_snapshot_dir, server) = recorded_snapshot_server(&dir).await;
    let client = MastClient::new(fast_config(server.base_url())).unwrap();

    let observations = client.observations_for_proposals(&[8880]).await.unwrap();

    assert_eq!(observations.len(), 3);
    let mut obs_ids: Vec<&str> = observations.iter().map(|obs| obs.obs_id.as_str()).collect();
    obs_ids.sort_unstable();
    assert_eq!(obs_ids, ["O6AU01MSQ", "O6AU01MTQ", "O6AU01MUQ"]);
}

#[tokio::test]
async fn snapshot_serves_recorded_products() {
    let Some(dir) = mast_data_dir() else { return };
    let (_snapshot_dir, server) = recorded_snapshot_server(&dir).await;
    let client = MastClient::new(fast_config(server.base_url())).unwrap();

    let list = client.products(&[ObsId(2003738726)]).await.unwrap();

    assert_eq!(list.products.len(), 22);
    assert!(list.quarantined.is_empty());
    assert_eq!(client.stats().requests, 1);
}

#[tokio::test]
async fn snapshot_download_found_and_missing() {
    let Some(dir) = mast_data_dir() else { return };
    let (_snapshot_dir, server) = recorded_snapshot_server(&dir).await;
    let client = MastClient::new(fast_config(server.base_url())).unwrap();
    let dest = tempfile::tempdir().unwrap();

    let found = client
        .download("mast:HST/product/u9o40504m_c3m.fits", dest.path(), None)
        .await
        .unwrap();
    let missing = client
        .download("mast:HST/product/does_not_exist.fits", dest.path(), None)
        .await
        .unwrap_err();

    assert_eq!(found.size_bytes, 29);
    assert!(
        matches!(missing, ArchiveError::HttpStatus { status: 404, .. }),
        "{missing}"
    );
}
