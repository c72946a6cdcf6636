//! The HTTP summary backend against OpenAI-compatible servers on 127.0.0.1: small scripted
//! axum servers for the retry, timeout, secret and concurrency rules, and a real
//! `llama-server` with the Gemma 3 270M model when both are in the cache
//! (`tools/build-llama-server.sh` and `tools/fetch-summary-model.sh`).

use std::collections::VecDeque;
use std::io::Write;
use std::net::TcpListener as StdTcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use paperclip::summaries::http::{HttpBackend, HttpBackendConfig, RetrySleep};
use paperclip::summaries::{
    BackendError, CompletionRequest, FinishReason, Sampling, SummaryBackend,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// A scripted OpenAI-compatible server
// ---------------------------------------------------------------------------------------

/// One scripted response of the mock server.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn ok(content: &str, finish_reason: &str) -> Self {
        let body = json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }],
            "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30},
        });
        Self::status(200, &body.to_string())
    }

    fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

const SUMMARY: &str = r#"{"objects_and_phenomena":["M31"],"science_use_cases":["stellar ages"]}"#;

/// What the server saw of one request.
#[derive(Clone, Debug)]
struct Received {
    authorization: Option<String>,
    body: Value,
}

#[derive(Clone)]
struct MockState {
    script: Arc<Mutex<VecDeque<Reply>>>,
    fallback: Reply,
    received: Arc<Mutex<Vec<Received>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

struct MockServer {
    base_url: String,
    state: MockState,
    _task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Starts a server that returns `script` in order, then `fallback` for every later
    /// request.
    async fn start(script: Vec<Reply>, fallback: Reply) -> Self {
        let state = MockState {
            script: Arc::new(Mutex::new(script.into())),
            fallback,
            received: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
        };
        let router = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(chat))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            base_url: format!("http://{addr}"),
            state,
            _task: task,
        }
    }

    async fn answering(reply: Reply) -> Self {
        Self::start(Vec::new(), reply).await
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    fn config(&self) -> HttpBackendConfig {
        let mut config = HttpBackendConfig::new(&self.base_url, "test-model");
        config.timeout_secs = 10;
        config.backoff_base_ms = 10;
        config.backoff_max_ms = 40;
        config
    }
}

async fn chat(State(state): State<MockState>, headers: HeaderMap, body: Bytes) -> Response {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    state.received.lock().unwrap().push(Received {
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| state.fallback.clone());
    tokio::time::sleep(reply.delay).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);

    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, axum::http::HeaderValue::from_str(&value).unwrap());
    }
    response
}

/// Records the delays that the backend requests and returns at once.
#[derive(Default)]
struct RecordingSleep(Mutex<Vec<Duration>>);

impl RecordingSleep {
    fn delays(&self) -> Vec<Duration> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl RetrySleep for RecordingSleep {
    async fn sleep(&self, delay: Duration) {
        self.0.lock().unwrap().push(delay);
    }
}

fn backend_with_recorder(config: HttpBackendConfig) -> (HttpBackend, Arc<RecordingSleep>) {
    let sleep = Arc::new(RecordingSleep::default());
    let backend = HttpBackend::with_env(config, |_| None)
        .unwrap()
        .with_sleep(sleep.clone());
    (backend, sleep)
}

fn summary_schema() -> Value {
    let list = json!({
        "type": "array",
        "minItems": 1,
        "maxItems": 5,
        "items": {"type": "string", "minLength": 1, "maxLength": 60},
    });
    json!({
        "type": "object",
        "properties": {"objects_and_phenomena": list, "science_use_cases": list},
        "required": ["objects_and_phenomena", "science_use_cases"],
        "additionalProperties": false,
    })
}

fn request(prompt: &str) -> CompletionRequest {
    CompletionRequest {
        prompt: prompt.to_owned(),
        schema: summary_schema(),
        schema_name: "proposal_summary".to_owned(),
        max_tokens: 256,
        sampling: Sampling {
            temperature: 0.0,
            seed: Some(7),
        },
    }
}

/// Captured log output of the current thread, every level.
#[derive(Clone, Default)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let capture = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || capture.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Scripted servers
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn success_returns_text_and_usage() {
    let server = MockServer::answering(Reply::ok(SUMMARY, "stop")).await;
    let (backend, sleep) = backend_with_recorder(server.config());

    let completion = backend.complete(&request("Abstract: M31.")).await.unwrap();

    assert_eq!(completion.text, SUMMARY);
    assert_eq!(completion.finish_reason, FinishReason::Stop);
    assert_eq!(completion.prompt_tokens, Some(21));
    assert_eq!(completion.completion_tokens, Some(9));
    assert!(completion.elapsed_secs > 0.0);
    assert_eq!(backend.stats().requests, 1);
    assert_eq!(backend.stats().retries, 0);
    assert!(sleep.delays().is_empty());
    assert_eq!(
        backend.model_id(),
        format!("http:{}#test-model", server.base_url)
    );
}

#[tokio::test]
async fn request_body_asks_for_the_schema() {
    let server = MockServer::answering(Reply::ok(SUMMARY, "stop")).await;
    let (backend, _) = backend_with_recorder(server.config());

    backend.complete(&request("Abstract: M31.")).await.unwrap();

    let received = server.received();
    assert_eq!(received.len(), 1);
    let body = &received[0].body;
    assert_eq!(body["model"], "test-model");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "Abstract: M31."}])
    );
    assert_eq!(
        body["response_format"],
        json!({
            "type": "json_schema",
            "json_schema": {
                "name": "proposal_summary",
                "schema": summary_schema(),
                "strict": true,
            },
        })
    );
    assert_eq!(body["max_tokens"], 256);
    assert_eq!(body["temperature"], 0.0);
    assert_eq!(body["seed"], 7);
    assert_eq!(received[0].authorization, None);
}

#[tokio::test]
async fn without_a_seed_none_is_sent() {
    let server = MockServer::answering(Reply::ok(SUMMARY, "stop")).await;
    let (backend, _) = backend_with_recorder(server.config());
    let mut request = request("Abstract.");
    request.sampling = Sampling {
        temperature: 0.5,
        seed: None,
    };

    backend.complete(&request).await.unwrap();

    let body = &server.received()[0].body;
    assert!(body.get("seed").is_none(), "{body}");
    assert_eq!(body["temperature"], 0.5);
}

#[tokio::test]
async fn unavailable_twice_then_success() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let server = MockServer::start(
        vec![
            Reply::status(503, r#"{"error":{"message":"Loading model"}}"#),
            Reply::status(503, r#"{"error":{"message":"Loading model"}}"#),
        ],
        Reply::ok(SUMMARY, "stop"),
    )
    .await;
    let (backend, sleep) = backend_with_recorder(server.config());

    let completion = backend.complete(&request("Abstract.")).await.unwrap();

    assert_eq!(completion.text, SUMMARY);
    assert_eq!(server.received().len(), 3);
    let stats = backend.stats();
    assert_eq!((stats.requests, stats.retries), (3, 2));
    // Backoff 10 ms, then 20 ms, each drawn from the upper half.
    let delays = sleep.delays();
    assert_eq!(delays.len(), 2);
    assert!((5..=10).contains(&delays[0].as_millis()), "{delays:?}");
    assert!((10..=20).contains(&delays[1].as_millis()), "{delays:?}");
    let text = logs.text();
    assert_eq!(
        text.matches("retrying summary request").count(),
        2,
        "{text}"
    );
    assert!(text.contains("HTTP 503: Loading model"), "{text}");
}

#[tokio::test]
async fn retries_exhausted_show_last_error() {
    let server = MockServer::answering(Reply::status(502, "bad gateway")).await;
    let mut config = server.config();
    config.max_retries = 2;
    let (backend, sleep) = backend_with_recorder(config);

    let error = backend.complete(&request("Abstract.")).await.unwrap_err();

    assert!(
        matches!(error, BackendError::RetriesExhausted { attempts: 3, .. }),
        "{error:?}"
    );
    assert_eq!(error.code(), "retries_exhausted");
    let message = error.to_string();
    assert!(message.contains("HTTP 502: bad gateway"), "{message}");
    assert!(message.contains(&server.base_url), "{message}");
    assert_eq!(server.received().len(), 3);
    assert_eq!(sleep.delays().len(), 2);
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after() {
    let server = MockServer::start(
        vec![Reply::status(429, r#"{"error":{"message":"slow down"}}"#).header("retry-after", "1")],
        Reply::ok(SUMMARY, "stop"),
    )
    .await;
    let (backend, sleep) = backend_with_recorder(server.config());

    backend.complete(&request("Abstract.")).await.unwrap();

    assert_eq!(sleep.delays(), vec![Duration::from_secs(1)]);
    let stats = backend.stats();
    assert_eq!((stats.retries, stats.retry_after_honoured), (1, 1));
}

#[tokio::test]
async fn retry_after_waits_on_the_real_clock() {
    let server = MockServer::start(
        vec![Reply::status(429, "busy").header("retry-after", "1")],
        Reply::ok(SUMMARY, "stop"),
    )
    .await;
    let backend = HttpBackend::with_env(server.config(), |_| None).unwrap();

    let started = Instant::now();
    backend.complete(&request("Abstract.")).await.unwrap();
    let elapsed = started.elapsed();

    assert!(elapsed >= Duration::from_millis(950), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[tokio::test]
async fn retry_after_http_date_and_cap() {
    let in_two_seconds = httpdate(std::time::SystemTime::now() + Duration::from_secs(2));
    let server = MockServer::start(
        vec![
            Reply::status(503, "busy").header("retry-after", &in_two_seconds),
            Reply::status(429, "busy").header("retry-after", "3600"),
        ],
        Reply::ok(SUMMARY, "stop"),
    )
    .await;
    let mut config = server.config();
    config.retry_after_max_secs = 5;
    let (backend, sleep) = backend_with_recorder(config);

    backend.complete(&request("Abstract.")).await.unwrap();

    let delays = sleep.delays();
    assert_eq!(delays.len(), 2);
    // The date has a resolution of one second.
    assert!(delays[0] <= Duration::from_secs(2), "{delays:?}");
    assert!(delays[0] >= Duration::from_millis(900), "{delays:?}");
    assert_eq!(delays[1], Duration::from_secs(5));
}

fn httpdate(at: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[tokio::test]
async fn bad_request_not_retried() {
    let server = MockServer::answering(Reply::status(
        400,
        r#"{"error":{"code":400,"message":"failed to parse grammar","type":"invalid_request_error"}}"#,
    ))
    .await;
    let (backend, sleep) = backend_with_recorder(server.config());

    let error = backend.complete(&request("Abstract.")).await.unwrap_err();

    match &error {
        BackendError::Http {
            status,
            body_excerpt,
            url,
        } => {
            assert_eq!(*status, 400);
            assert_eq!(body_excerpt, "failed to parse grammar");
            assert_eq!(url, &format!("{}/v1/chat/completions", server.base_url));
        }
        other => panic!("expected an HTTP error, got {other:?}"),
    }
    assert!(error.to_string().contains("failed to parse grammar"));
    assert_eq!(server.received().len(), 1);
    assert!(sleep.delays().is_empty());
    assert_eq!(backend.stats().retries, 0);
}

#[tokio::test]
async fn timeout_is_reported_and_not_retried() {
    let server =
        MockServer::answering(Reply::ok(SUMMARY, "stop").after(Duration::from_secs(4))).await;
    let mut config = server.config();
    config.timeout_secs = 1;
    let (backend, sleep) = backend_with_recorder(config);

    let started = Instant::now();
    let error = backend.complete(&request("Abstract.")).await.unwrap_err();

    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(error, BackendError::Timeout { secs: 1, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("within 1 s"), "{error}");
    assert_eq!(server.received().len(), 1);
    assert!(sleep.delays().is_empty());
}

#[tokio::test]
async fn connection_refused_retried() {
    let port = free_port();
    let mut config = HttpBackendConfig::new(format!("http://127.0.0.1:{port}"), "m");
    config.max_retries = 2;
    config.backoff_base_ms = 1;
    config.backoff_max_ms = 2;
    let (backend, sleep) = backend_with_recorder(config);

    let error = backend.complete(&request("Abstract.")).await.unwrap_err();

    // Still a connect error after the retries, so the stage can stop calling the server.
    assert!(matches!(error, BackendError::Connect { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("cannot reach"), "{message}");
    assert!(message.contains("after 3 attempts"), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert_eq!(sleep.delays().len(), 2);
}

#[tokio::test]
async fn finish_reason_length_is_mapped() {
    let server =
        MockServer::answering(Reply::ok(r#"{"objects_and_phenomena":["M3"#, "length")).await;
    let (backend, _) = backend_with_recorder(server.config());

    let completion = backend.complete(&request("Abstract.")).await.unwrap();

    assert_eq!(completion.finish_reason, FinishReason::Length);
    assert_eq!(completion.text, r#"{"objects_and_phenomena":["M3"#);
}

#[tokio::test]
async fn prose_returned_unchanged() {
    let prose = "Sure! This proposal studies M31.";
    let server = MockServer::answering(Reply::ok(prose, "stop")).await;
    let (backend, _) = backend_with_recorder(server.config());

    let completion = backend.complete(&request("Abstract.")).await.unwrap();

    assert_eq!(completion.text, prose);
}

#[tokio::test]
async fn unreadable_body_invalid_response() {
    let server = MockServer::answering(Reply::status(200, "<html>proxy login</html>")).await;
    let (backend, sleep) = backend_with_recorder(server.config());

    let error = backend.complete(&request("Abstract.")).await.unwrap_err();

    assert_eq!(error.code(), "invalid_response");
    assert!(
        error.to_string().contains("<html>proxy login</html>"),
        "{error}"
    );
    assert!(sleep.delays().is_empty());
}

#[tokio::test]
async fn api_key_sent_never_shown() {
    const KEY: &str = "sk-paperclip-test-5b1e0c9d";
    let logs = LogCapture::default();
    let _guard = logs.install();
    let server = MockServer::start(
        vec![
            Reply::status(503, &format!("upstream rejected {KEY}")),
            Reply::ok(SUMMARY, "stop"),
        ],
        Reply::status(
            401,
            &json!({"error": {"message": format!("Incorrect API key provided: {KEY}")}})
                .to_string(),
        ),
    )
    .await;
    let mut config = server.config();
    config.api_key_env = Some("PAPERCLIP_TEST_LLM_KEY".to_owned());
    let lookups = Mutex::new(Vec::new());
    let backend = HttpBackend::with_env(config.clone(), |name| {
        lookups.lock().unwrap().push(name.to_owned());
        (name == "PAPERCLIP_TEST_LLM_KEY").then(|| KEY.to_owned())
    })
    .unwrap()
    .with_sleep(Arc::new(RecordingSleep::default()));
    assert_eq!(*lookups.lock().unwrap(), ["PAPERCLIP_TEST_LLM_KEY"]);

    // First call: a 503 whose body echoes the key, then a success.
    backend.complete(&request("Abstract.")).await.unwrap();
    // Second call: a 401 that echoes the key.
    let error = backend.complete(&request("Abstract.")).await.unwrap_err();

    for received in server.received() {
        assert_eq!(
            received.authorization.as_deref(),
            Some(format!("Bearer {KEY}").as_str())
        );
    }
    assert!(
        matches!(error, BackendError::Http { status: 401, .. }),
        "{error:?}"
    );
    let shown = [
        format!("{backend:?}"),
        format!("{config:?}"),
        backend.model_id(),
        error.to_string(),
        format!("{error:?}"),
        logs.text(),
    ];
    for text in &shown {
        assert!(!text.contains(KEY), "the key leaked into: {text}");
    }
    assert!(
        shown[4].contains("Incorrect API key provided: [redacted]"),
        "{}",
        shown[4]
    );
    assert!(
        shown[5].contains("upstream rejected [redacted]"),
        "{}",
        shown[5]
    );
    assert!(shown[0].contains("PAPERCLIP_TEST_LLM_KEY"), "{}", shown[0]);
}

#[tokio::test]
async fn missing_api_key_variable_is_named() {
    let mut config = HttpBackendConfig::new("http://127.0.0.1:9", "m");
    config.api_key_env = Some("PAPERCLIP_TEST_UNSET_KEY".to_owned());

    let error = HttpBackend::with_env(config, |_| None).unwrap_err();

    assert_eq!(error.code(), "config");
    let message = error.to_string();
    assert!(message.contains("PAPERCLIP_TEST_UNSET_KEY"), "{message}");
    assert!(message.contains("is not set"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_is_honoured() {
    let server =
        MockServer::answering(Reply::ok(SUMMARY, "stop").after(Duration::from_millis(150))).await;
    let mut config = server.config();
    config.max_concurrency = 2;
    let backend = Arc::new(HttpBackend::with_env(config, |_| None).unwrap());

    let calls = (0..6).map(|i| {
        let backend = backend.clone();
        tokio::spawn(async move { backend.complete(&request(&format!("Abstract {i}."))).await })
    });
    for result in futures::future::join_all(calls).await {
        result.unwrap().unwrap();
    }

    assert_eq!(server.received().len(), 6);
    assert_eq!(server.state.max_in_flight.load(Ordering::SeqCst), 2);
}

pub(crate) fn free_port() -> u16 {
    let listener = StdTcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------
// A real llama-server
// ---------------------------------------------------------------------------------------

const GEMMA_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

fn cache_root() -> PathBuf {
    match std::env::var_os("PAPERCLIP_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/paperclip")
        }
    }
}

/// The llama-cpp-python version `tools/build-llama-server.sh` builds.
fn llama_version() -> String {
    let script = crate::support::repo_root().join("tools/build-llama-server.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("VERSION=\""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no VERSION=\"…\" line in {}", script.display()))
        .to_owned()
}

/// Finds the `llama-server` binary and the Gemma model. When one is missing, prints why and
/// returns `None`, or panics when `PAPERCLIP_REQUIRE_LLAMA=1`.
pub(crate) fn llama_inputs() -> Option<(PathBuf, PathBuf)> {
    let binary = std::env::var_os("PAPERCLIP_LLAMA_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            cache_root()
                .join("llama-server")
                .join(llama_version())
                .join("llama-server")
        });
    let model = std::env::var_os("PAPERCLIP_LLAMA_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_root().join("models").join(GEMMA_FILE));
    let mut missing = Vec::new();
    if !binary.is_file() {
        missing.push(format!(
            "llama-server not found at {} (run tools/build-llama-server.sh)",
            binary.display()
        ));
    }
    if !model.is_file() {
        missing.push(format!(
            "model not found at {} (run tools/fetch-summary-model.sh)",
            model.display()
        ));
    }
    if missing.is_empty() {
        return Some((binary, model));
    }
    let missing = missing.join("; ");
    if std::env::var("PAPERCLIP_REQUIRE_LLAMA").as_deref() == Ok("1") {
        panic!("PAPERCLIP_REQUIRE_LLAMA=1 but {missing}");
    }
    eprintln!("skipping: {missing}");
    None
}

/// A running `llama-server`, killed when dropped. Its log is printed when the test fails.
pub(crate) struct LlamaServer {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LlamaServer {
    pub(crate) fn start(binary: &PathBuf, model: &PathBuf, port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("llama-server.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .arg("-m")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-t", "2", "-c", "2048", "-np", "1"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until `/health` returns 200. Panics when the process exits or `limit` passes.
    pub(crate) async fn wait_healthy(&mut self, base_url: &str, limit: Duration) {
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("llama-server exited with {status}:\n{}", self.log_tail());
            }
            let health = client
                .get(format!("{base_url}/health"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(&health, Ok(response) if response.status().is_success()) {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "llama-server not healthy after {limit:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("llama-server log (last lines):\n{}", self.log_tail());
        }
    }
}

/// Checks `value` against [`summary_schema`] by hand.
fn check_summary(value: &Value) -> Result<(), String> {
    let object = value.as_object().ok_or("not an object")?;
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["objects_and_phenomena", "science_use_cases"] {
        return Err(format!("keys {keys:?}"));
    }
    for (key, list) in object {
        let items = list.as_array().ok_or(format!("{key} is not an array"))?;
        if !(1..=5).contains(&items.len()) {
            return Err(format!("{key} has {} items", items.len()));
        }
        for item in items {
            let text = item.as_str().ok_or(format!("{key} holds {item}"))?;
            if !(1..=60).contains(&text.chars().count()) {
                return Err(format!("{key} item {text:?} has a bad length"));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_llama_server_follows_schema() {
    let Some((binary, model)) = llama_inputs() else {
        return;
    };
    let port = free_port();
    let base_url = format!("http://127.0.0.1:{port}");
    let mut server = LlamaServer::start(&binary, &model, port);
    server
        .wait_healthy(&base_url, Duration::from_secs(120))
        .await;

    let mut config = HttpBackendConfig::new(&base_url, "gemma-3-270m");
    // Two threads on a shared 2-core machine can drop to a few tokens per second.
    config.timeout_secs = 300;
    config.max_concurrency = 1;
    config.max_retries = 0;
    let backend = HttpBackend::new(config).unwrap();
    let mut request = request(
        "Summarize this Hubble proposal abstract as JSON with keys objects_and_phenomena \
         and science_use_cases. Abstract: We propose deep imaging of the Andromeda galaxy \
         to measure the ages of its halo stars and trace its merger history.",
    );
    request.max_tokens = 1024;
    request.sampling.seed = Some(42);

    let completion = backend.complete(&request).await.unwrap();

    eprintln!(
        "llama-server: {} prompt + {:?} completion tokens in {:.1} s: {}",
        completion.prompt_tokens.unwrap_or_default(),
        completion.completion_tokens,
        completion.elapsed_secs,
        completion.text
    );
    assert_eq!(
        completion.finish_reason,
        FinishReason::Stop,
        "{}",
        completion.text
    );
    let value: Value = serde_json::from_str(&completion.text)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", completion.text));
    if let Err(problem) = check_summary(&value) {
        panic!(
            "the output breaks the schema ({problem}): {}",
            completion.text
        );
    }
    assert!(completion.completion_tokens.unwrap_or_default() > 0);
}
