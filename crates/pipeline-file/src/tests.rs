use proptest::prelude::*;

use super::*;

const MINIMAL: &str = r#"
[dataset]
name = "hst-paperclip"

[sql]
models = ["sql/samples.sql"]
samples_model = "samples"
"#;

fn parse(text: &str) -> Result<PipelineConfig, String> {
    PipelineConfig::parse(text.as_bytes(), PathBuf::from("/pipelines"))
}

#[test]
fn minimal_text_gets_defaults_and_a_hash() {
    let config = parse(MINIMAL).unwrap();

    assert_eq!(config.selection.max_images_per_proposal, 20);
    assert_eq!(config.file_sha256.len(), 64);
    assert_eq!(
        config.resolve(Path::new("sql/samples.sql")),
        PathBuf::from("/pipelines/sql/samples.sql")
    );
}

#[test]
fn misspelt_key_gets_the_closest_name() {
    let text = MINIMAL.replace("[sql]", "[selection]\nmax_image_per_proposal = 3\n\n[sql]");

    let error = parse(&text).unwrap_err();

    assert!(
        error.ends_with("did you mean `max_images_per_proposal`?"),
        "{error}"
    );
}

#[test]
fn text_that_is_not_utf8_is_named() {
    let error = PipelineConfig::parse(b"[dataset]\nname = \"\xff\"", PathBuf::new()).unwrap_err();

    assert!(error.contains("not valid UTF-8"), "{error}");
}

#[test]
fn out_of_range_values_name_the_setting() {
    let cases = [
        ("[images]\nsize_px = 8", "images.size_px = 8"),
        (
            "[images]\nmax_aspect_ratio = nan",
            "images.max_aspect_ratio = NaN",
        ),
        (
            "[refresh]\nlookback_days = -1.0",
            "refresh.lookback_days = -1",
        ),
        (
            "[archive]\nbase_url = \"ftp://x\"",
            "archive.base_url = \"ftp://x\"",
        ),
        (
            "[summaries]\nenabled = true\ntemperature = inf",
            "summaries.temperature = inf",
        ),
        (
            "[archive]\nmax_retries = 4000000000",
            "archive.max_retries = 4000000000",
        ),
        (
            "[schedule]\nretry_delay_secs = 10000000000000",
            "schedule.retry_delay_secs = 10000000000000",
        ),
        (
            "[schedule]\nmax_retries = 1000",
            "schedule.max_retries = 1000",
        ),
        (
            "[archive]\ncatalog = \"file:///data/abstracts.cat\"",
            "archive.catalog = \"file:///data/abstracts.cat\" is neither",
        ),
        (
            "[summaries]\nenabled = true\nbackend = \"local\"\nserver_url = \"http://127.0.0.1:9\"",
            "summaries.server_url = \"http://127.0.0.1:9\" is set, but summaries.backend = \"local\"",
        ),
        (
            "[summaries]\nbackend = \"bogus\"",
            "summaries.backend = \"bogus\" is unknown",
        ),
        (
            "[storage]\nurl = \"ftp://host/x\"",
            "storage.url = \"ftp://host/x\" is not an object store URL",
        ),
        (
            "[storage]\nurl = \"s3://AKID:secret@bucket/x\"",
            "storage.url carries credentials",
        ),
        (
            "[storage]\nurl = \"s3://mybucket//dbl\"",
            "storage.url = \"s3://mybucket//dbl\" has an empty",
        ),
        (
            "[storage]\nurl = \"s3://mybucket/../esc\"",
            "storage.url = \"s3://mybucket/../esc\" has an empty, '.' or '..'",
        ),
        (
            "[storage]\nurl = \"s3://mybucket/q?x=1\"",
            "has a query or a fragment",
        ),
        ("[storage]\nurl = \"s3://MyBucket/p\"", "names the bucket"),
        (
            "[storage]\nblobs_url = \"s3://mybucket//dbl\"",
            "storage.blobs_url = \"s3://mybucket//dbl\" has an empty",
        ),
        (
            "[storage]\nblobs_url = \"file:///tmp/blobs\"",
            "storage.blobs_url = \"file:///tmp/blobs\" is not an object store URL",
        ),
    ];
    for (section, expected) in cases {
        let text = MINIMAL.replace("[sql]", &format!("{section}\n\n[sql]"));

        let error = parse(&text).unwrap_err();

        assert!(error.contains(expected), "{section}: {error}");
    }
}

#[test]
fn written_back_text_reads_the_same() {
    let config = parse(MINIMAL).unwrap();

    let written = toml::to_string(&config).unwrap();
    let again = parse(&written).unwrap();

    assert_eq!(toml::to_string(&again).unwrap(), written);
}

proptest! {
    /// Any bytes give a config or a message, never a panic.
    #[test]
    fn any_bytes_are_answered(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = PipelineConfig::parse(&bytes, PathBuf::new());
    }

    /// A value of any TOML type under a known key is accepted or named in the message.
    #[test]
    fn any_value_of_a_known_key_is_accepted_or_explained(
        key in prop::sample::select(vec!["size_px", "jpeg_quality", "max_aspect_ratio", "threads", "stretch"]),
        value in prop_oneof![
            any::<i64>().prop_map(|v| v.to_string()),
            any::<f64>().prop_map(|v| format!("{v:?}")),
            "[a-z]{0,8}".prop_map(|v| format!("{v:?}")),
        ],
    ) {
        let text = MINIMAL.replace("[sql]", &format!("[images]\n{key} = {value}\n\n[sql]"));

        if let Err(error) = parse(&text) {
            prop_assert!(error.contains(key) || error.contains("invalid"), "{error}");
        }
    }
}
