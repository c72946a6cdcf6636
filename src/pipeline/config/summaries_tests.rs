use super::*;

fn load(extra: &str) -> Result<PipelineConfig, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.sql"), "SELECT 1").unwrap();
    let path = dir.path().join("p.toml");
    let text = format!(
        "[dataset]\nname = \"d\"\n{extra}\n[sql]\nmodels = [\"a.sql\"]\nsamples_model = \"a\"\n"
    );
    std::fs::write(&path, text).unwrap();
    super::load(&path).map_err(|e| e.to_string())
}

#[test]
fn summaries_off_by_default() {
    assert!(!load("").unwrap().summaries.enabled);
    let config = load(
        "[captions]\nform = \"summary\"\n[summaries]\nenabled = true\nserver_url = \"http://127.0.0.1:8080\"\napi_key_env = \"LLM_KEY\"\nseed = 7",
    )
    .unwrap();
    assert_eq!(config.summaries.seed, Some(7));
    assert_eq!(config.summaries.api_key_env.as_deref(), Some("LLM_KEY"));
}

#[test]
fn summary_form_needs_summaries() {
    let message = load("[captions]\nform = \"summary\"").unwrap_err();
    assert!(
        message.contains("captions.form = \"summary\" needs summaries"),
        "{message}"
    );
    let message = load("[captions]\nform = \"summaries\"").unwrap_err();
    assert!(
        message.contains("use \"paper\", \"clean\" or \"summary\""),
        "{message}"
    );
}

#[test]
fn bad_summary_settings_rejected() {
    for (settings, expected) in [
        (
            "backend = \"grpc\"",
            "summaries.backend = \"grpc\" is unknown",
        ),
        ("server_url = \"127.0.0.1:8080\"", "summaries.server_url"),
        (
            "backend = \"http\"\napi_key_env = \"sk-123 secret\"",
            "never the key itself",
        ),
        ("threads = 0", "summaries.threads = 0 is outside 1..=256"),
        (
            "backend = \"local\"\nthreads = 300",
            "summaries.threads = 300 is outside 1..=256",
        ),
        (
            "concurrency = 0",
            "summaries.concurrency = 0 is outside 1..=64",
        ),
        (
            "max_attempts = 0",
            "summaries.max_attempts = 0 is outside 1..=10",
        ),
        (
            "temperature = -1.0",
            "summaries.temperature = -1 is outside 0..=2",
        ),
        ("max_attempt = 3", "max_attempts"),
    ] {
        let message = load(&format!("[summaries]\nenabled = true\n{settings}")).unwrap_err();
        assert!(message.contains(expected), "{settings}: {message}");
    }
}

#[test]
fn backend_default_follows_server_url() {
    let kind = |extra: &str| {
        let config = load(&format!("[summaries]\nenabled = true\n{extra}")).unwrap();
        config.summaries.backend_kind().to_string()
    };
    assert_eq!(kind(""), "local");
    assert_eq!(kind("server_url = \"http://127.0.0.1:9000\""), "http");
    assert_eq!(kind("backend = \"http\""), "http");
    assert_eq!(
        kind("backend = \"local\"\nmodel_path = \"/models/m.gguf\""),
        "local"
    );

    let config = load("[summaries]\nenabled = true\nbackend = \"http\"").unwrap();
    assert_eq!(config.summaries.server_url(), "http://127.0.0.1:8080");
    let config = load("[summaries]\nenabled = true\nthreads = 3").unwrap();
    assert_eq!(config.summaries.local_threads(), 3);
    assert!(
        config
            .summaries
            .local_model_path()
            .ends_with("models/gemma-3-270m-q4_k_m.gguf")
    );
}
