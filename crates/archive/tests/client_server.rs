//! Tests of the MAST client against the local archive server, and against a
//! fixed-response server for malformed responses, all on 127.0.0.1.

mod support;

use std::collections::HashSet;

use paperclip_archive::{ArchiveError, MastClient, MastRequest, ObsId, ServeOptions};
use serde_json::json;
use sha2::{Digest, Sha256};
use support::{FixedServer, Harness, fast_config, observation_row, product_row};
use url::Url;

fn no_faults() -> ServeOptions {
    ServeOptions::default()
}

/// A client for a port where nothing listens; tests that must send no
/// request use it.
fn unreachable_client() -> MastClient {
    MastClient::new(fast_config(Url::parse("http://127.0.0.1:9/").unwrap())).unwrap()
}

#[tokio::test]
async fn long_poll_executing_then_complete() {
    let options = ServeOptions {
        executing_polls: 3,
        ..no_faults()
    };
    let harness = Harness::start(
        options,
        |writer| {
            writer
                .add_observations(vec![observation_row(1, 13012)])
                .unwrap();
        },
        |_| {},
    )
    .await;

    let observations = harness
        .client
        .observations_for_proposals(&[13012])
        .await
        .unwrap();

    assert_eq!(observations.len(), 1);
    let stats = harness.client.stats();
    assert_eq!(stats.polls, 3);
    assert_eq!(stats.requests, 4);
    assert_eq!(stats.retries, 0);
}

#[tokio::test]
async fn long_poll_gives_up_after_max_polls() {
    let options = ServeOptions {
        executing_polls: 5,
        ..no_faults()
    };
    let harness = Harness::start(
        options,
        |writer| {
            writer
                .add_observations(vec![observation_row(1, 13012)])
                .unwrap();
        },
        |config| config.max_polls = 2,
    )
    .await;

    let err = harness
        .client
        .observations_for_proposals(&[13012])
        .await
        .unwrap_err();

    assert!(
        matches!(err, ArchiveError::StillExecuting { polls: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("Mast.Caom.Filtered"), "{err}");
    assert!(err.to_string().contains("13012"), "{err}");
}

#[tokio::test]
async fn paging_2500_rows_in_three_pages() {
    let harness = Harness::start(
        no_faults(),
        |writer| {
            let rows = (1..=2_500)
                .map(|obsid| observation_row(obsid, 9482))
                .collect();
            writer.add_observations(rows).unwrap();
        },
        |config| config.page_size = 1_000,
    )
    .await;

    let observations = harness
        .client
        .observations_for_proposals(&[9482])
        .await
        .unwrap();

    assert_eq!(observations.len(), 2_500);
    assert_eq!(harness.client.stats().requests, 3);
    let unique: HashSet<ObsId> = observations.iter().map(|obs| obs.obsid).collect();
    assert_eq!(unique.len(), 2_500);
    let in_order: Vec<u64> = observations.iter().map(|obs| obs.obsid.get()).collect();
    assert_eq!(in_order, (1..=2_500).collect::<Vec<u64>>());
}

#[tokio::test]
async fn paging_page_two_holds_rows_1001_to_2000() {
    let harness = Harness::start(
        no_faults(),
        |writer| {
            let rows = (1..=2_500)
                .map(|obsid| observation_row(obsid, 9482))
                .collect();
            writer.add_observations(rows).unwrap();
        },
        |_| {},
    )
    .await;
    let mut request = MastRequest::new(
        "Mast.Caom.Filtered",
        json!({"columns": "*", "filters": [{"paramName": "proposal_id", "values": ["9482"]}]}),
    );
    request.page = Some(2);
    request.pagesize = Some(1_000);

    let envelope = harness.client.invoke_page(&request).await.unwrap();

    let paging = envelope.paging.unwrap();
    assert_eq!(paging.page, 2);
    assert_eq!(paging.pages_filtered, 3);
    assert_eq!(paging.rows, 1_000);
    assert_eq!(paging.rows_filtered, 2_500);
    assert_eq!(envelope.data.first().unwrap()["obsid"], json!(1_001));
    assert_eq!(envelope.data.last().unwrap()["obsid"], json!(2_000));
}

#[tokio::test]
async fn paging_gap_is_an_error() {
    let body = json!({
        "status": "COMPLETE", "msg": "",
        "fields": [{"name": "obsid", "type": "string"}, {"name": "obs_id", "type": "string"},
                   {"name": "proposal_id", "type": "string"}, {"name": "obs_collection", "type": "string"}],
        "data": [{"obsid": 1, "obs_id": "a", "proposal_id": "1", "obs_collection": "HST"}],
        "paging": {"page": 1, "pageSize": 1000, "pagesFiltered": 1, "rows": 1, "rowsFiltered": 2, "rowsTotal": 2}
    });
    let server = FixedServer::start(200, serde_json::to_vec(&body).unwrap()).await;
    let client = MastClient::new(fast_config(server.base_url.clone())).unwrap();

    let err = client.observations_for_proposals(&[1]).await.unwrap_err();

    assert!(
        matches!(err, ArchiveError::IncompletePaging { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("rowsFiltered is 2"), "{err}");
}

#[tokio::test]
async fn retries_exhausted_on_persistent_5xx() {
    let options = ServeOptions {
        fail_first_n: 100,
        fail_status: 500,
        ..no_faults()
    };
    let harness = Harness::start(options, |_| {}, |config| config.max_retries = 2).await;

    let err = harness
        .client
        .observations_for_proposals(&[13012])
        .await
        .unwrap_err();

    assert!(
        matches!(err, ArchiveError::RetriesExhausted { attempts: 3, .. }),
        "{err}"
    );
    assert_eq!(harness.client.stats().retries, 2);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    for status in [404u16, 400] {
        let options = ServeOptions {
            fail_first_n: 1,
            fail_status: status,
            ..no_faults()
        };
        let harness = Harness::start(options, |_| {}, |_| {}).await;

        let err = harness
            .client
            .observations_for_proposals(&[13012])
            .await
            .unwrap_err();

        match &err {
            ArchiveError::HttpStatus { status: got, .. } => assert_eq!(*got, status),
            other => panic!("expected HttpStatus {status}, got {other}"),
        }
        assert!(err.to_string().contains("Mast.Caom.Filtered"), "{err}");
        assert_eq!(harness.client.stats().requests, 1);
        assert_eq!(harness.client.stats().retries, 0);
    }
}

#[tokio::test]
async fn unknown_service_returns_service_error() {
    let harness = Harness::start(no_faults(), |_| {}, |_| {}).await;

    let err = harness
        .client
        .invoke("Mast.Nonexistent.Service", json!({}))
        .await
        .unwrap_err();

    assert!(matches!(err, ArchiveError::ServiceError { .. }), "{err}");
    assert!(err.to_string().contains("unknown service"), "{err}");
    assert_eq!(harness.client.stats().retries, 0);
}

#[tokio::test]
async fn connection_reset_splits_proposal_query() {
    let options = ServeOptions {
        max_rows_before_reset: Some(5),
        ..no_faults()
    };
    let harness = Harness::start(
        options,
        |writer| {
            let mut rows = Vec::new();
            for (index, proposal) in [5092u32, 5371, 8880, 13012].into_iter().enumerate() {
                for offset in 0..3 {
                    rows.push(observation_row((index * 10 + offset) as u64 + 1, proposal));
                }
            }
            writer.add_observations(rows).unwrap();
        },
        |_| {},
    )
    .await;

    let observations = harness
        .client
        .observations_for_proposals(&[5092, 5371, 8880, 13012])
        .await
        .unwrap();

    assert_eq!(observations.len(), 12);
    let unique: HashSet<ObsId> = observations.iter().map(|obs| obs.obsid).collect();
    assert_eq!(unique.len(), 12);
    let stats = harness.client.stats();
    assert_eq!(stats.splits, 3, "4 -> 2+2 -> 1+1+1+1");
    assert_eq!(stats.retries, 0);
}

#[tokio::test]
async fn connection_reset_on_one_proposal_fails() {
    let options = ServeOptions {
        max_rows_before_reset: Some(2),
        ..no_faults()
    };
    let harness = Harness::start(
        options,
        |writer| {
            let rows = (1..=3).map(|obsid| observation_row(obsid, 13012)).collect();
            writer.add_observations(rows).unwrap();
        },
        |config| config.max_retries = 1,
    )
    .await;

    let err = harness
        .client
        .observations_for_proposals(&[13012])
        .await
        .unwrap_err();

    assert!(
        matches!(err, ArchiveError::ConnectionReset { attempts: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("13012"), "{err}");
}

#[tokio::test]
async fn products_timeout_splits_batch() {
    let options = ServeOptions {
        latency_ms: 1_500,
        latency_min_rows: 2,
        ..no_faults()
    };
    let harness = Harness::start(
        options,
        |writer| {
            writer
                .add_products(vec![
                    product_row(11, None, "a_drz.fits"),
                    product_row(12, None, "b_drz.fits"),
                ])
                .unwrap();
        },
        |config| config.request_timeout_secs = 1,
    )
    .await;

    let list = harness
        .client
        .products(&[ObsId(11), ObsId(12)])
        .await
        .unwrap();

    assert_eq!(list.products.len(), 2);
    assert!(list.quarantined.is_empty());
    let stats = harness.client.stats();
    assert_eq!(stats.splits, 1);
    assert_eq!(stats.requests, 3);
}

#[tokio::test]
async fn products_timeout_on_one_obsid_names_params() {
    let options = ServeOptions {
        latency_ms: 1_500,
        ..no_faults()
    };
    let harness = Harness::start(
        options,
        |writer| {
            writer
                .add_products(vec![product_row(11, None, "a_drz.fits")])
                .unwrap();
        },
        |config| {
            config.request_timeout_secs = 1;
            config.max_retries = 0;
        },
    )
    .await;

    let err = harness.client.products(&[ObsId(11)]).await.unwrap_err();

    assert!(matches!(err, ArchiveError::Timeout { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("Mast.Caom.Products"), "{message}");
    assert!(message.contains("\"obsid\":\"11\""), "{message}");
    assert!(message.contains("request_timeout_secs"), "{message}");
}

#[tokio::test]
async fn ten_thousand_obsids_each_once() {
    let options = ServeOptions {
        max_rows_before_reset: Some(500),
        ..no_faults()
    };
    let harness = Harness::start(
        options,
        |writer| {
            let rows = (1..=10_000)
                .map(|obsid| product_row(obsid, None, &format!("p{obsid}_drz.fits")))
                .collect();
            writer.add_products(rows).unwrap();
        },
        |config| config.products_batch_size = 1_000,
    )
    .await;
    let mut obsids: Vec<ObsId> = (1..=10_000).map(ObsId).collect();
    obsids.push(ObsId(42));

    let list = harness.client.products(&obsids).await.unwrap();

    assert_eq!(list.products.len(), 10_000);
    let unique: HashSet<ObsId> = list.products.iter().map(|product| product.obsid).collect();
    assert_eq!(unique.len(), 10_000);
    let stats = harness.client.stats();
    assert_eq!(
        stats.splits, 10,
        "each 1,000-obsid batch splits once under the 500-row cap"
    );
    assert_eq!(stats.requests, 30);
}

#[tokio::test]
async fn empty_obsid_list_sends_nothing() {
    let client = unreachable_client();

    let list = client.products(&[]).await.unwrap();
    let observations = client.observations_for_proposals(&[]).await.unwrap();

    assert!(list.products.is_empty());
    assert!(list.quarantined.is_empty());
    assert!(observations.is_empty());
    assert_eq!(client.stats().requests, 0);
}

#[tokio::test]
async fn parent_obsid_zero_is_quarantined() {
    let harness = Harness::start(
        no_faults(),
        |writer| {
            writer
                .add_products(vec![
                    product_row(21, Some(0), "orphan1_drz.fits"),
                    product_row(21, Some(0), "orphan2_drz.fits"),
                    product_row(22, None, "kept_drz.fits"),
                ])
                .unwrap();
        },
        |_| {},
    )
    .await;

    let list = harness
        .client
        .products(&[ObsId(21), ObsId(22)])
        .await
        .unwrap();

    assert_eq!(list.products.len(), 1);
    assert_eq!(list.products[0].obsid, ObsId(22));
    assert_eq!(list.quarantined.len(), 2);
    for quarantined in &list.quarantined {
        assert_eq!(quarantined.reason.code(), "parent_obsid_zero");
    }
    assert!(
        list.products
            .iter()
            .all(|product| product.parent_obsid != ObsId(0))
    );
}

#[tokio::test]
async fn shared_data_uri_kept_under_both_parents() {
    let harness = Harness::start(
        no_faults(),
        |writer| {
            writer
                .add_products(vec![
                    product_row(31, None, "shared_drz.fits"),
                    product_row(32, None, "shared_drz.fits"),
                ])
                .unwrap();
        },
        |_| {},
    )
    .await;

    let list = harness
        .client
        .products(&[ObsId(31), ObsId(32)])
        .await
        .unwrap();

    assert_eq!(list.products.len(), 2);
    assert_eq!(list.products[0].data_uri, list.products[1].data_uri);
}

#[tokio::test]
async fn mission_obs_id_rejected_as_obsid() {
    let client = unreachable_client();

    let err = "jw01234001001_02101_00001_nrca1"
        .parse::<ObsId>()
        .unwrap_err();

    assert!(err.to_string().contains("mission obs_id"), "{err}");
    assert!(err.to_string().contains("numeric obsid"), "{err}");
    assert_eq!(client.stats().requests, 0);
}

fn envelope_body(fields: &[&str], rows: serde_json::Value) -> Vec<u8> {
    let fields: Vec<_> = fields
        .iter()
        .map(|name| json!({"name": name, "type": "string"}))
        .collect();
    let row_count = rows.as_array().unwrap().len();
    let body = json!({
        "status": "COMPLETE", "msg": "", "fields": fields, "data": rows,
        "paging": {"page": 1, "pageSize": 1000, "pagesFiltered": 1, "rows": row_count,
                   "rowsFiltered": row_count, "rowsTotal": row_count}
    });
    serde_json::to_vec(&body).unwrap()
}

#[tokio::test]
async fn duplicate_column_is_an_error() {
    let body = envelope_body(
        &[
            "obsid",
            "obs_id",
            "proposal_id",
            "obs_collection",
            "s_ra",
            "s_ra",
        ],
        json!([{"obsid": 1, "obs_id": "a", "proposal_id": "1", "obs_collection": "HST", "s_ra": 1.0}]),
    );
    let server = FixedServer::start(200, body).await;
    let client = MastClient::new(fast_config(server.base_url.clone())).unwrap();

    let err = client.observations_for_proposals(&[1]).await.unwrap_err();

    assert!(matches!(err, ArchiveError::InvalidResponse { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("\"s_ra\" appears more than once"),
        "{message}"
    );
    assert!(message.contains("Mast.Caom.Filtered"), "{message}");
}

#[tokio::test]
async fn missing_required_column_is_named() {
    let body = envelope_body(
        &["obsid", "obs_id", "proposal_id", "obs_collection"],
        json!([{"obsid": 1, "proposal_id": "1", "obs_collection": "HST"}]),
    );
    let server = FixedServer::start(200, body).await;
    let client = MastClient::new(fast_config(server.base_url.clone())).unwrap();

    let err = client.observations_for_proposals(&[1]).await.unwrap_err();

    let message = err.to_string();
    assert!(message.contains("\"obs_id\""), "{message}");
    assert!(message.contains("Mast.Caom.Filtered"), "{message}");
    assert_eq!(
        server.request_count(),
        1,
        "invalid responses are not retried"
    );
}

#[tokio::test]
async fn null_position_stays_none() {
    let harness = Harness::start(
        no_faults(),
        |writer| {
            let mut without_position = observation_row(2, 13012);
            without_position.insert("s_ra".to_owned(), serde_json::Value::Null);
            without_position.insert("s_dec".to_owned(), serde_json::Value::Null);
            writer
                .add_observations(vec![observation_row(1, 13012), without_position])
                .unwrap();
        },
        |_| {},
    )
    .await;

    let observations = harness
        .client
        .observations_for_proposals(&[13012])
        .await
        .unwrap();

    assert_eq!(observations.len(), 2);
    let missing = observations
        .iter()
        .find(|obs| obs.obsid == ObsId(2))
        .unwrap();
    assert_eq!(missing.s_ra, None);
    assert_eq!(missing.s_dec, None);
    assert!(
        observations
            .iter()
            .filter_map(|obs| obs.s_ra)
            .all(|ra| !ra.is_nan())
    );
    assert_eq!(harness.client.stats().observations_without_position, 1);
}

fn sample_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|index| (index * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn download_size_mismatch_retried_then_error() {
    let options = ServeOptions {
        truncate_downloads_to_bytes: Some(1_000),
        ..no_faults()
    };
    let harness = Harness::start(
        options,
        |writer| {
            writer
                .add_file("mast:HST/product/big_raw.fits", &sample_bytes(10_000))
                .unwrap();
        },
        |config| config.max_retries = 2,
    )
    .await;
    let dest = tempfile::tempdir().unwrap();

    let err = harness
        .client
        .download("mast:HST/product/big_raw.fits", dest.path(), Some(10_000))
        .await
        .unwrap_err();

    match &err {
        ArchiveError::SizeMismatch {
            uri,
            expected_bytes,
            actual_bytes,
            attempts,
            ..
        } => {
            assert_eq!(uri, "mast:HST/product/big_raw.fits");
            assert_eq!(*expected_bytes, 10_000);
            assert_eq!(*actual_bytes, 1_000);
            assert_eq!(*attempts, 3);
        }
        other => panic!("expected SizeMismatch, got {other}"),
    }
    assert_eq!(harness.client.stats().retries, 2);
    let leftovers = std::fs::read_dir(dest.path()).unwrap().count();
    assert_eq!(leftovers, 0, "partial downloads must be removed");
}

#[tokio::test]
async fn download_hash_and_size() {
    let bytes = sample_bytes(200_000);
    let harness = Harness::start(
        no_faults(),
        |writer| {
            writer
                .add_file("mast:HST/product/j6gp01mkq_raw.fits", &bytes)
                .unwrap();
        },
        |_| {},
    )
    .await;
    let dest = tempfile::tempdir().unwrap();

    let download = harness
        .client
        .download(
            "mast:HST/product/j6gp01mkq_raw.fits",
            dest.path(),
            Some(200_000),
        )
        .await
        .unwrap();

    assert_eq!(download.size_bytes, 200_000);
    assert_eq!(download.sha256_hex, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(std::fs::read(&download.temp_path).unwrap(), bytes);
    assert!(download.temp_path.starts_with(dest.path()));
    assert_eq!(harness.client.stats().bytes_downloaded, 200_000);
}

#[tokio::test]
async fn download_missing_file_not_retried() {
    let harness = Harness::start(no_faults(), |_| {}, |_| {}).await;
    let dest = tempfile::tempdir().unwrap();

    let err = harness
        .client
        .download("mast:HST/product/does_not_exist.fits", dest.path(), None)
        .await
        .unwrap_err();

    assert!(
        matches!(err, ArchiveError::HttpStatus { status: 404, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("not found"), "{err}");
    assert_eq!(harness.client.stats().requests, 1);
}

#[tokio::test]
async fn unsafe_data_uris_send_nothing() {
    let client = unreachable_client();
    let dest = tempfile::tempdir().unwrap();
    let cases = [
        "https://example.org/x.fits",
        "HST/product/x.fits",
        "mast:../../etc/passwd",
        "mast:/etc/passwd",
        "mast:HST\\product\\x.fits",
        "mast:HST/product/../../x.fits",
    ];

    for uri in cases {
        let err = client.download(uri, dest.path(), None).await.unwrap_err();
        assert!(
            matches!(err, ArchiveError::UnsafeDataUri { .. }),
            "{uri}: {err}"
        );
    }

    assert_eq!(client.stats().requests, 0);
}

#[tokio::test]
async fn server_rejects_path_traversal() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"SECRET-OUTSIDE").unwrap();
    let harness = Harness::start(
        no_faults(),
        |writer| {
            writer
                .add_file("mast:HST/product/ok.fits", b"inside")
                .unwrap();
            writer.set_catalog(b"catalog").unwrap();
        },
        |_| {},
    )
    .await;
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.path(), harness.dir.path().join("files/HST/escape"))
        .unwrap();
    let base = harness.server.base_url();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let download_paths = [
        "api/v0.1/Download/file?uri=mast:../snapshot.json",
        "api/v0.1/Download/file?uri=mast:HST/../../snapshot.json",
        "api/v0.1/Download/file?uri=mast:%2E%2E/snapshot.json",
        "api/v0.1/Download/file?uri=mast:/etc/passwd",
        "api/v0.1/Download/file?uri=mast:HST%5C..%5Csnapshot.json",
        "api/v0.1/Download/file?uri=mast:HST/escape/secret.txt",
        "api/v0.1/Download/file?uri=file:///etc/passwd",
        "catalog/..%2Fsnapshot.json",
        "catalog/.hidden",
    ];

    for path in download_paths {
        let response = http.get(base.join(path).unwrap()).send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert!(status == 400 || status == 404, "{path}: status {status}");
        assert!(!body.contains("SECRET-OUTSIDE"), "{path}: {body}");
        assert!(
            !body.contains("paperclip-archive-snapshot"),
            "{path}: {body}"
        );
    }

    let ok = http
        .get(
            base.join("api/v0.1/Download/file?uri=mast:HST/product/ok.fits")
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(ok.content_length(), Some(6));
}

#[tokio::test]
async fn fetch_text_reads_catalog() {
    let harness = Harness::start(
        no_faults(),
        |writer| {
            writer
                .set_catalog("ID: 13012\nTitle: Uranus\u{2013}rings\n".as_bytes())
                .unwrap();
        },
        |_| {},
    )
    .await;
    let url = harness
        .server
        .base_url()
        .join("catalog/abstracts.cat")
        .unwrap();

    let bytes = harness.client.fetch_text(&url).await.unwrap();

    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "ID: 13012\nTitle: Uranus\u{2013}rings\n"
    );
}

#[tokio::test]
async fn server_shutdown_and_join() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = paperclip_archive::SnapshotWriter::create(dir.path(), "empty")
        .unwrap()
        .finish()
        .unwrap();
    let mut server = paperclip_archive::bind(snapshot, support::loopback(), no_faults())
        .await
        .unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);

    server.shutdown();
    server.join().await.unwrap();

    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "server still accepts connections"
    );
}

#[tokio::test]
async fn unreadable_rows_are_rejected_not_fatal() {
    let body = envelope_body(
        &["obsid", "obs_id", "proposal_id", "obs_collection"],
        json!([
            {"obsid": 1, "obs_id": "j1", "proposal_id": "1", "obs_collection": "HST"},
            {"obsid": 2, "obs_id": "", "proposal_id": "1", "obs_collection": "HST"},
            {"obsid": "jw01234", "obs_id": "j3", "proposal_id": "1", "obs_collection": "HST"}
        ]),
    );
    let server = FixedServer::start(200, body).await;
    let client = MastClient::new(fast_config(server.base_url.clone())).unwrap();

    let list = client.observations_for_proposals(&[1]).await.unwrap();

    assert_eq!(list.observations.len(), 1);
    assert_eq!(list.rejected.len(), 2);
    assert_eq!(list.rejected[0].index, 1);
    assert!(
        list.rejected[0].reason.contains("obs_id"),
        "{:?}",
        list.rejected[0]
    );
    assert!(
        list.rejected[1].row_json.contains("jw01234"),
        "{:?}",
        list.rejected[1]
    );
}

/// Sends `count` plain downloads of `uri` and returns the HTTP status of each.
async fn download_statuses(base_url: &Url, uri: &str, count: usize) -> Vec<u16> {
    let http = reqwest::Client::new();
    let mut statuses = Vec::with_capacity(count);
    for _ in 0..count {
        let url = base_url
            .join(&format!("api/v0.1/Download/file?uri={uri}"))
            .unwrap();
        statuses.push(http.get(url).send().await.unwrap().status().as_u16());
    }
    statuses
}

#[tokio::test]
async fn random_failures_follow_rate_and_seed() {
    let options = ServeOptions {
        error_rate_ppm: 300_000,
        error_seed: 11,
        ..no_faults()
    };
    let uri = "mast:HST/product/a_drc.jpg";
    let add_file = |writer: &mut paperclip_archive::SnapshotWriter| {
        writer.add_file(uri, b"preview bytes").unwrap();
    };
    let first = Harness::start(options.clone(), add_file, |_| {}).await;
    let second = Harness::start(options, add_file, |_| {}).await;

    let statuses = download_statuses(&first.server.base_url(), uri, 200).await;
    let again = download_statuses(&second.server.base_url(), uri, 200).await;

    let failed = statuses.iter().filter(|status| **status == 503).count();
    assert!((35..=85).contains(&failed), "{failed} of 200 failed");
    assert!(statuses.iter().all(|status| [200, 503].contains(status)));
    assert_eq!(statuses, again, "the same seed fails the same requests");
}

#[tokio::test]
async fn bandwidth_limit_paces_downloads() {
    let options = ServeOptions {
        bandwidth_bytes_per_sec: Some(1_000_000),
        ..no_faults()
    };
    let uri = "mast:HST/product/large_drc.jpg";
    let harness = Harness::start(
        options,
        |writer| {
            writer.add_file(uri, &vec![7u8; 300_000]).unwrap();
        },
        |_| {},
    )
    .await;
    let url = harness
        .server
        .base_url()
        .join(&format!("api/v0.1/Download/file?uri={uri}"))
        .unwrap();

    let started = std::time::Instant::now();
    let body = reqwest::get(url).await.unwrap().bytes().await.unwrap();

    assert_eq!(body.len(), 300_000);
    // 300 kB at 1 MB/s: at least 0.3 s, whatever the machine.
    assert!(started.elapsed() >= std::time::Duration::from_millis(290));
}

const CUT_URI: &str = "mast:HST/product/cut_drc.jpg";
const CUT_FILE_BYTES: usize = 100_000;

/// Starts a server with one 100,000-byte file at [`CUT_URI`] and the given faults.
async fn cut_harness(options: ServeOptions, max_retries: u32) -> Harness {
    Harness::start(
        options,
        |writer| {
            writer
                .add_file(CUT_URI, &sample_bytes(CUT_FILE_BYTES))
                .unwrap();
        },
        |config| config.max_retries = max_retries,
    )
    .await
}

/// Sends one plain GET of [`CUT_URI`] and returns the declared length, the body bytes
/// received and whether the body ended with an error.
async fn raw_download(base_url: &Url) -> (Option<u64>, usize, bool) {
    let url = base_url
        .join(&format!("api/v0.1/Download/file?uri={CUT_URI}"))
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut response = http.get(url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let declared = response.content_length();
    let mut received = 0;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => return (declared, received, false),
            Err(_) => return (declared, received, true),
        }
    }
}

fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

#[tokio::test]
async fn server_cuts_download_mid_body_with_full_length() {
    let options = ServeOptions {
        cut_downloads_after_bytes: Some(30_000),
        download_faults_first_n: Some(1),
        ..no_faults()
    };
    let harness = cut_harness(options, 0).await;
    let base = harness.server.base_url();

    let (declared, received, failed) = raw_download(&base).await;
    assert_eq!(declared, Some(CUT_FILE_BYTES as u64));
    assert!(failed, "the body must end with an error, not look complete");
    assert_eq!(received, 30_000);

    let (declared, received, failed) = raw_download(&base).await;
    assert_eq!(
        (declared, received, failed),
        (Some(CUT_FILE_BYTES as u64), CUT_FILE_BYTES, false),
        "only the first download is cut"
    );
}

#[tokio::test]
async fn server_declares_wrong_content_length() {
    let size = CUT_FILE_BYTES as u64;
    let longer = cut_harness(
        ServeOptions {
            content_length_offset_bytes: 1_000,
            ..no_faults()
        },
        0,
    )
    .await;
    let (declared, received, failed) = raw_download(&longer.server.base_url()).await;
    assert_eq!(declared, Some(size + 1_000));
    assert_eq!(received, CUT_FILE_BYTES, "the whole file, then a close");
    assert!(failed, "a body shorter than its Content-Length must fail");

    // hyper sends no byte past the declared length, so the short response looks
    // complete: only the size the caller expects can reveal it.
    let shorter = cut_harness(
        ServeOptions {
            content_length_offset_bytes: -1_000,
            ..no_faults()
        },
        0,
    )
    .await;
    let (declared, received, failed) = raw_download(&shorter.server.base_url()).await;
    assert_eq!(
        (declared, received, failed),
        (Some(size - 1_000), CUT_FILE_BYTES - 1_000, false)
    );
}

#[tokio::test]
async fn download_cut_mid_body_retried_until_whole() {
    let options = ServeOptions {
        cut_downloads_after_bytes: Some(30_000),
        download_faults_first_n: Some(2),
        ..no_faults()
    };
    let harness = cut_harness(options, 3).await;
    let dest = tempfile::tempdir().unwrap();
    let bytes = sample_bytes(CUT_FILE_BYTES);

    let download = harness
        .client
        .download(CUT_URI, dest.path(), Some(CUT_FILE_BYTES as u64))
        .await
        .unwrap();

    assert_eq!(download.size_bytes, CUT_FILE_BYTES as u64);
    assert_eq!(download.sha256_hex, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(std::fs::read(&download.temp_path).unwrap(), bytes);
    let stats = harness.client.stats();
    assert_eq!((stats.requests, stats.retries), (3, 2));
    assert_eq!(
        files_in(dest.path()),
        [download.temp_path],
        "the cut attempts leave no file"
    );
}

#[tokio::test]
async fn download_cut_every_attempt_fails_transient() {
    let options = ServeOptions {
        cut_downloads_after_bytes: Some(30_000),
        ..no_faults()
    };
    let harness = cut_harness(options, 2).await;
    let dest = tempfile::tempdir().unwrap();

    let err = harness
        .client
        .download(CUT_URI, dest.path(), Some(CUT_FILE_BYTES as u64))
        .await
        .unwrap_err();

    assert!(
        matches!(err, ArchiveError::RetriesExhausted { attempts: 3, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(CUT_URI), "{message}");
    assert!(
        message.contains("connection closed before the response was complete"),
        "{message}"
    );
    assert!(
        !message.contains("query fewer"),
        "a download cannot be split: {message}"
    );
    assert_eq!(harness.client.stats().retries, 2);
    assert!(files_in(dest.path()).is_empty(), "no partial file is kept");
}

#[tokio::test]
async fn long_content_length_retried_until_whole() {
    let options = ServeOptions {
        content_length_offset_bytes: 1_000,
        download_faults_first_n: Some(1),
        ..no_faults()
    };
    let harness = cut_harness(options, 3).await;
    let dest = tempfile::tempdir().unwrap();

    let download = harness
        .client
        .download(CUT_URI, dest.path(), None)
        .await
        .unwrap();

    assert_eq!(download.size_bytes, CUT_FILE_BYTES as u64);
    assert_eq!(harness.client.stats().retries, 1);
    assert_eq!(files_in(dest.path()), [download.temp_path]);
}

#[tokio::test]
async fn short_content_length_is_size_mismatch() {
    let options = ServeOptions {
        content_length_offset_bytes: -1_000,
        ..no_faults()
    };
    let harness = cut_harness(options, 2).await;
    let dest = tempfile::tempdir().unwrap();

    let err = harness
        .client
        .download(CUT_URI, dest.path(), Some(CUT_FILE_BYTES as u64))
        .await
        .unwrap_err();

    match &err {
        ArchiveError::SizeMismatch {
            expected_bytes,
            actual_bytes,
            source_of_expectation,
            attempts,
            ..
        } => {
            assert_eq!(*expected_bytes, CUT_FILE_BYTES as u64);
            assert_eq!(*actual_bytes, CUT_FILE_BYTES as u64 - 1_000);
            assert_eq!(*source_of_expectation, "expected_size_bytes");
            assert_eq!(*attempts, 3);
        }
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains(CUT_URI), "{err}");
    assert_eq!(harness.client.stats().retries, 2);
    assert!(files_in(dest.path()).is_empty(), "no short file is kept");
}

#[tokio::test]
async fn short_content_length_retried_until_whole() {
    let options = ServeOptions {
        content_length_offset_bytes: -1_000,
        download_faults_first_n: Some(2),
        ..no_faults()
    };
    let harness = cut_harness(options, 3).await;
    let dest = tempfile::tempdir().unwrap();

    let download = harness
        .client
        .download(CUT_URI, dest.path(), Some(CUT_FILE_BYTES as u64))
        .await
        .unwrap();

    assert_eq!(download.size_bytes, CUT_FILE_BYTES as u64);
    assert_eq!(harness.client.stats().retries, 2);
    assert_eq!(files_in(dest.path()), [download.temp_path]);
}
