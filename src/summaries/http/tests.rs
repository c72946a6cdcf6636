#[test]
fn echoed_key_fragments_are_masked() {
    let secret = "sk-TOPSECRET-123456789";
    let text = "your key was sk-TOPSECRET and full sk-TOPSECRET-123456789; ok";
    let masked = mask_fragments(&text.replace(secret, "[redacted]"), secret);
    assert_eq!(masked, "your key was [redacted] and full [redacted]; ok");
    assert_eq!(mask_fragments("short sk-TOP", secret), "short sk-TOP");
}

#[test]
fn key_like_variable_names_are_hidden() {
    assert_eq!(shown_env_name("OPENAI_API_KEY"), "OPENAI_API_KEY");
    assert!(!shown_env_name("sk_live_51HqLyjWDarjtT1zdp7dcXYZ").contains("sk_live"));
}
use super::*;

#[test]
fn backoff_within_upper_half() {
    for retry in 1..=8 {
        let ceiling = (100u64 << (retry - 1)).min(1_000);
        for _ in 0..50 {
            let delay = backoff_delay(100, 1_000, retry).as_millis() as u64;
            assert!(
                (ceiling / 2..=ceiling).contains(&delay),
                "retry {retry}: {delay} ms outside {}..={ceiling}",
                ceiling / 2
            );
        }
    }
    assert_eq!(backoff_delay(0, 0, 3), Duration::ZERO);
}

#[test]
fn retry_after_reads_seconds_and_http_dates() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 06 Nov 1994 08:49:37
    assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
    assert_eq!(
        parse_retry_after(" 120 ", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:40:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon", now), None);
    assert_eq!(parse_retry_after("-3", now), None);
}

#[test]
fn credentials_never_shown() {
    let config = HttpBackendConfig::new("https://alice:s3cr%40t@llm.example/v1/", "m");
    let backend = HttpBackend::with_env(config, |_| None).expect("valid config");
    assert_eq!(
        backend.endpoint().as_str(),
        "https://llm.example/v1/chat/completions"
    );
    assert_eq!(backend.model_id(), "http:https://llm.example/v1#m");
    let debug = format!("{backend:?}");
    assert_eq!(backend.config().base_url, "https://llm.example/v1");
    let config = HttpBackendConfig::new("https://alice:s3cr%40t@llm.example/v1/", "m");
    let config_debug = format!("{config:?}");
    assert!(
        config_debug.contains("https://redacted@llm.example/v1/"),
        "{config_debug}"
    );
    assert!(!config_debug.contains("s3cr"), "{config_debug}");
    assert!(
        !debug.contains("alice") && !debug.contains("s3cr"),
        "{debug}"
    );
    match &backend.auth {
        Auth::Basic { user, password } => {
            assert_eq!(user.0, "alice");
            assert_eq!(password.as_ref().map(|p| p.0.as_str()), Some("s3cr@t"));
        }
        other => panic!("expected basic auth, got {other:?}"),
    }
}

#[test]
fn base_without_v1_gets_the_full_path() {
    let config = HttpBackendConfig::new("http://127.0.0.1:8080", "m");
    let backend = HttpBackend::with_env(config, |_| None).expect("valid config");
    assert_eq!(
        backend.endpoint().as_str(),
        "http://127.0.0.1:8080/v1/chat/completions"
    );
    assert_eq!(backend.model_id(), "http:http://127.0.0.1:8080#m");
}

#[test]
fn bad_settings_name_value_and_fix() {
    let mut config = HttpBackendConfig::new("ftp://host", "m");
    let error = HttpBackend::with_env(config.clone(), |_| None).unwrap_err();
    assert!(error.to_string().contains("scheme ftp"), "{error}");

    config.base_url = "http://127.0.0.1:1".to_owned();
    config.api_key_env = Some("PAPERCLIP_TEST_MISSING_KEY".to_owned());
    let error = HttpBackend::with_env(config.clone(), |_| None).unwrap_err();
    assert!(
        error.to_string().contains("PAPERCLIP_TEST_MISSING_KEY"),
        "{error}"
    );

    config.api_key_env = None;
    config.max_concurrency = 0;
    let error = HttpBackend::with_env(config, |_| None).unwrap_err();
    assert!(
        error.to_string().contains("max_concurrency is 0"),
        "{error}"
    );

    let config = HttpBackendConfig::new("http://u:hunter22@host?key=1", "m");
    let error = HttpBackend::with_env(config, |_| None).unwrap_err();
    assert!(!error.to_string().contains("hunter22"), "{error}");
}

#[test]
fn finish_reasons_and_usage_are_mapped() {
    let body = br#"{"choices":[{"message":{"content":"{}"},"finish_reason":"length"}],
                    "usage":{"prompt_tokens":12,"completion_tokens":34}}"#;
    let completion = parse_completion(body).expect("parses");
    assert_eq!(completion.finish_reason, FinishReason::Length);
    assert_eq!(completion.prompt_tokens, Some(12));
    assert_eq!(completion.completion_tokens, Some(34));

    let body = br#"{"choices":[{"message":{"content":"x"},"finish_reason":"content_filter"}]}"#;
    let completion = parse_completion(body).expect("parses");
    assert_eq!(
        completion.finish_reason,
        FinishReason::Other("content_filter".to_owned())
    );
    assert_eq!(completion.prompt_tokens, None);

    let body =
        br#"{"choices":[{"message":{"content":null,"refusal":"no"},"finish_reason":"stop"}]}"#;
    let completion = parse_completion(body).expect("parses");
    assert_eq!(
        completion.finish_reason,
        FinishReason::Other("refusal".to_owned())
    );
    assert_eq!(completion.text, "");

    let error = parse_completion(b"<html>oops</html>").unwrap_err();
    assert!(error.contains("<html>oops</html>"), "{error}");
    let error = parse_completion(br#"{"error":{"message":"model not loaded"}}"#).unwrap_err();
    assert!(error.contains("model not loaded"), "{error}");
}

#[test]
fn server_message_from_error_body() {
    assert_eq!(
        server_message(br#"{"error":{"message":"bad schema","type":"invalid_request_error"}}"#),
        "bad schema"
    );
    assert_eq!(server_message(br#"{"error":"plain"}"#), "plain");
    assert_eq!(server_message(b"  gateway down \n"), "gateway down");
    assert_eq!(server_message(b""), "(empty body)");
    let long = "é".repeat(MAX_MESSAGE_CHARS + 10);
    assert_eq!(
        server_message(long.as_bytes()).chars().count(),
        MAX_MESSAGE_CHARS + 1
    );
}
