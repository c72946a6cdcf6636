//! [`HttpBackend`]: summaries from an OpenAI-compatible chat completions server (vLLM,
//! llama.cpp's `llama-server`, Ollama, OpenAI).
//!
//! Each request is one `POST {base}/v1/chat/completions` with a single user message (the
//! prompt), `response_format: {"type": "json_schema", "json_schema": {name, schema, strict:
//! true}}`, `max_tokens`, `temperature` and, when set, `seed`. The answer's text is returned
//! as it is: a server that ignores the schema and writes prose is caught by the stage's
//! validation, not here.
//!
//! Retry policy, per request:
//! - HTTP 429, every 5xx status and failures to connect or to send the request (refused,
//!   reset, closed before the response) are retried up to `max_retries` times. A server
//!   responds this way while it starts, restarts, is overloaded or limits the request rate.
//! - The delay before retry `n` is `backoff_base_ms * 2^(n-1)`, capped at `backoff_max_ms`,
//!   with jitter: it is drawn uniformly from the upper half of that value.
//! - A `Retry-After` header on a retried status (delay in seconds, or an HTTP date) replaces
//!   that delay, capped at `retry_after_max_secs`.
//! - Other 4xx statuses are never retried: the request itself is wrong (bad schema, unknown
//!   model, bad key), and the error carries the server's message.
//! - A request that runs past `timeout_secs` is not retried. The same prompt and token
//!   budget would most likely run past it again, and every retry would cost the whole
//!   timeout; raise the timeout instead.
//! - An unreadable success body is not retried.
//!
//! Each retry is logged at `warn` and counted in [`HttpBackendStats::retries`].
//!
//! Secrets: the API key is read once, from the environment variable named in
//! [`HttpBackendConfig::api_key_env`], and sent as `Authorization: Bearer`. Credentials in
//! the base URL (`http://user:password@host`) are taken out of the URL and sent as HTTP
//! basic authentication. Neither ever appears in `Debug` output, logs, errors or
//! [`SummaryBackend::model_id`]; server messages that echo the key have it replaced.
//!
//! At most `max_concurrency` requests are in flight at once; further calls wait for a
//! slot. A slot is held for one attempt only, not during the backoff before a retry.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tracing::Instrument;
use url::Url;

use super::backend::{BackendError, Completion, CompletionRequest, FinishReason, SummaryBackend};

mod secrets;

#[cfg(test)]
use secrets::mask_fragments;
pub use secrets::shown_env_name;
use secrets::{Auth, Secret, redact_url_credentials};

/// Maximum length of a server message kept in an error, in characters.
const MAX_MESSAGE_CHARS: usize = 500;

/// Settings of an [`HttpBackend`]. The defaults suit a local server, and a hosted API
/// usually needs a higher `timeout_secs` and a lower `max_concurrency`. `Debug` hides
/// credentials in `base_url`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpBackendConfig {
    /// Root of the server, e.g. `http://127.0.0.1:8080`. `/v1/chat/completions` is
    /// appended, or only `/chat/completions` when the URL already ends in `/v1`.
    pub base_url: String,
    /// Model name sent in every request (`model`). Servers with one model ignore it.
    pub model: String,
    /// Name of the environment variable that contains the API key, e.g. `OPENAI_API_KEY`.
    /// The key is read when the backend is built. `None` sends no key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Limit for one HTTP exchange, including generation, in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Requests in flight at once.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Retries after the first attempt of a request.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff delay, in milliseconds.
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// Maximum backoff delay, in milliseconds.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Maximum delay taken from a `Retry-After` header, in seconds.
    #[serde(default = "default_retry_after_max_secs")]
    pub retry_after_max_secs: u64,
}

fn default_timeout_secs() -> u64 {
    120
}
fn default_max_concurrency() -> usize {
    4
}
fn default_max_retries() -> u32 {
    3
}
fn default_backoff_base_ms() -> u64 {
    500
}
fn default_backoff_max_ms() -> u64 {
    30_000
}
fn default_retry_after_max_secs() -> u64 {
    60
}

impl fmt::Debug for HttpBackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBackendConfig")
            .field("base_url", &redact_url_credentials(&self.base_url))
            .field("model", &self.model)
            .field("api_key_env", &self.api_key_env)
            .field("timeout_secs", &self.timeout_secs)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_retries", &self.max_retries)
            .field("backoff_base_ms", &self.backoff_base_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field("retry_after_max_secs", &self.retry_after_max_secs)
            .finish()
    }
}

impl HttpBackendConfig {
    /// Settings for `model` at `base_url`, with no API key and the default limits.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key_env: None,
            timeout_secs: default_timeout_secs(),
            max_concurrency: default_max_concurrency(),
            max_retries: default_max_retries(),
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            retry_after_max_secs: default_retry_after_max_secs(),
        }
    }
}

/// Counters of an [`HttpBackend`] since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpBackendStats {
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Attempts that failed and were tried again.
    pub retries: u64,
    /// Retries whose delay came from a `Retry-After` header.
    pub retry_after_honoured: u64,
}

/// Waits between attempts. The default is tokio's timer. Tests substitute one that records
/// the delays and returns at once.
#[async_trait::async_trait]
pub trait RetrySleep: Send + Sync {
    /// Waits for `delay`.
    async fn sleep(&self, delay: Duration);
}

/// [`RetrySleep`] on tokio's timer.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSleep;

#[async_trait::async_trait]
impl RetrySleep for TokioSleep {
    async fn sleep(&self, delay: Duration) {
        tokio::time::sleep(delay).await;
    }
}

/// A [`SummaryBackend`] that calls an OpenAI-compatible chat completions endpoint.
pub struct HttpBackend {
    config: HttpBackendConfig,
    /// The chat completions URL, without credentials.
    endpoint: Url,
    /// The base URL without credentials, for [`SummaryBackend::model_id`].
    display_base: String,
    auth: Auth,
    http: reqwest::Client,
    slots: Arc<Semaphore>,
    sleep: Arc<dyn RetrySleep>,
    requests: AtomicU64,
    retries: AtomicU64,
    retry_after_honoured: AtomicU64,
}

impl fmt::Debug for HttpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBackend")
            .field("endpoint", &self.endpoint.as_str())
            .field("config", &self.config)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl HttpBackend {
    /// Builds the backend, reading the API key from the process environment.
    pub fn new(config: HttpBackendConfig) -> Result<Self, BackendError> {
        Self::with_env(config, |name| std::env::var(name).ok())
    }

    /// Builds the backend, reading the API key through `env` (a lookup by variable name)
    /// instead of the process environment. The backend keeps `config` with any credentials
    /// taken out of `base_url`.
    pub fn with_env(
        mut config: HttpBackendConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, BackendError> {
        validate_limits(&config)?;
        let (mut base, basic) = parse_base_url(&config.base_url)?;
        let display_base = base.as_str().trim_end_matches('/').to_owned();
        let endpoint = chat_completions_url(&mut base);
        if basic.is_some() {
            config.base_url = display_base.clone();
        }

        let bearer = match &config.api_key_env {
            None => None,
            Some(name) => Some(read_api_key(name, &env)?),
        };
        let auth = match (bearer, basic) {
            (Some(_), Some(_)) => {
                return Err(config_error(format!(
                    "base_url {display_base} carries credentials and api_key_env is set to {}. \
                     Use one of them",
                    shown_env_name(config.api_key_env.as_deref().unwrap_or_default())
                )));
            }
            (Some(key), None) => Auth::Bearer(key),
            (None, Some((user, password))) => Auth::Basic { user, password },
            (None, None) => Auth::None,
        };

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .build()
            .map_err(|e| config_error(format!("cannot build the HTTP client: {e}")))?;

        Ok(Self {
            slots: Arc::new(Semaphore::new(config.max_concurrency)),
            config,
            endpoint,
            display_base,
            auth,
            http,
            sleep: Arc::new(TokioSleep),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            retry_after_honoured: AtomicU64::new(0),
        })
    }

    /// Replaces the timer used between attempts.
    pub fn with_sleep(mut self, sleep: Arc<dyn RetrySleep>) -> Self {
        self.sleep = sleep;
        self
    }

    /// Returns the settings the backend was built with.
    pub fn config(&self) -> &HttpBackendConfig {
        &self.config
    }

    /// Returns the URL that requests are sent to, without credentials.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// Returns a snapshot of the counters.
    pub fn stats(&self) -> HttpBackendStats {
        HttpBackendStats {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            retry_after_honoured: self.retry_after_honoured.load(Ordering::Relaxed),
        }
    }

    /// Builds the JSON body of the chat completions request for `request`.
    pub fn request_body(&self, request: &CompletionRequest) -> serde_json::Value {
        let mut body = serde_json::json!({
            "model": self.config.model,
            "messages": [{"role": "user", "content": request.prompt}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "schema": request.schema,
                    "strict": true,
                },
            },
            "max_tokens": request.max_tokens,
            "temperature": request.sampling.temperature,
            "stream": false,
        });
        if let Some(seed) = request.sampling.seed {
            body["seed"] = serde_json::json!(seed);
        }
        body
    }

    /// Sends one attempt and reads its response.
    async fn attempt(&self, body: &serde_json::Value) -> Result<Completion, Failure> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Failure::Invalid("the concurrency limiter was closed".to_owned()))?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();

        let mut builder = self.http.post(self.endpoint.clone()).json(body);
        builder = match &self.auth {
            Auth::None => builder,
            Auth::Bearer(key) => builder.bearer_auth(&key.0),
            Auth::Basic { user, password } => {
                builder.basic_auth(&user.0, password.as_ref().map(|p| &p.0))
            }
        };
        let response = builder.send().await.map_err(Failure::from_reqwest)?;

        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let bytes = response.bytes().await.map_err(Failure::from_reqwest)?;
        if !status.is_success() {
            return Err(Failure::Status {
                status: status.as_u16(),
                message: self.auth.redact(&server_message(&bytes)),
                retry_after,
            });
        }
        let mut completion = parse_completion(&bytes)
            .map_err(|detail| Failure::Invalid(self.auth.redact(&detail)))?;
        completion.elapsed_secs = started.elapsed().as_secs_f64();
        Ok(completion)
    }

    /// Computes the delay before retry number `retry` (1-based) after `failure`.
    fn delay_before(&self, retry: u32, failure: &Failure) -> Duration {
        if let Failure::Status {
            retry_after: Some(after),
            ..
        } = failure
        {
            self.retry_after_honoured.fetch_add(1, Ordering::Relaxed);
            return (*after).min(Duration::from_secs(self.config.retry_after_max_secs));
        }
        backoff_delay(
            self.config.backoff_base_ms,
            self.config.backoff_max_ms,
            retry,
        )
    }

    fn error_from(&self, failure: Failure) -> BackendError {
        let url = self.endpoint.to_string();
        match failure {
            Failure::Status {
                status, message, ..
            } => BackendError::Http {
                url,
                status,
                body_excerpt: message,
            },
            Failure::Timeout => BackendError::Timeout {
                url,
                secs: self.config.timeout_secs,
            },
            Failure::Connect(detail) => BackendError::Connect {
                url,
                detail: self.auth.redact(&detail),
            },
            Failure::Invalid(detail) => BackendError::InvalidResponse {
                detail: format!("{url}: {detail}"),
            },
        }
    }
}

#[async_trait::async_trait]
impl SummaryBackend for HttpBackend {
    fn model_id(&self) -> String {
        format!("http:{}#{}", self.display_base, self.config.model)
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, BackendError> {
        let span = tracing::debug_span!(
            "llm_http_request",
            endpoint = %self.endpoint,
            model = %self.config.model,
            schema = %request.schema_name,
        );
        async {
            let body = self.request_body(request);
            let mut attempt: u32 = 1;
            loop {
                let failure = match self.attempt(&body).await {
                    Ok(completion) => {
                        tracing::debug!(
                            attempt,
                            finish_reason = ?completion.finish_reason,
                            completion_tokens = completion.completion_tokens,
                            elapsed_secs = completion.elapsed_secs,
                            "completion received"
                        );
                        return Ok(completion);
                    }
                    Err(failure) => failure,
                };
                if !failure.is_retryable() || attempt > self.config.max_retries {
                    let retried = failure.is_retryable() && attempt > 1;
                    let error = self.error_from(failure);
                    // An unreachable server stays a connect error, so callers can stop
                    // sending requests to it.
                    return Err(match error {
                        BackendError::Connect { url, detail } if retried => BackendError::Connect {
                            url,
                            detail: format!("{detail} (after {attempt} attempts)"),
                        },
                        error if retried => BackendError::RetriesExhausted {
                            attempts: attempt,
                            last: error.to_string(),
                        },
                        error => error,
                    });
                }
                let delay = self.delay_before(attempt, &failure);
                tracing::warn!(
                    attempt,
                    max_retries = self.config.max_retries,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    cause = %self.error_from(failure),
                    "retrying summary request"
                );
                self.retries.fetch_add(1, Ordering::Relaxed);
                self.sleep.sleep(delay).await;
                attempt += 1;
            }
        }
        .instrument(span)
        .await
    }
}

/// The failure of one attempt.
#[derive(Debug)]
enum Failure {
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    Timeout,
    Connect(String),
    Invalid(String),
}

impl Failure {
    fn from_reqwest(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            return Failure::Timeout;
        }
        if error.is_builder() {
            return Failure::Invalid(error_chain(&error.without_url()));
        }
        // Connect errors, requests that failed on the wire and bodies cut short all mean
        // that the connection broke, so the request is safe to send again.
        Failure::Connect(error_chain(&error.without_url()))
    }

    fn is_retryable(&self) -> bool {
        match self {
            Failure::Status { status, .. } => *status == 429 || (500..600).contains(status),
            Failure::Connect(_) => true,
            Failure::Timeout | Failure::Invalid(_) => false,
        }
    }
}

/// Formats the error and its sources, joined with `: `.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `base_url * 2^(retry-1)` capped at `max_ms`, drawn from the upper half of that value.
fn backoff_delay(base_ms: u64, max_ms: u64, retry: u32) -> Duration {
    let exponent = retry.saturating_sub(1).min(30);
    let ceiling_ms = base_ms.saturating_mul(1u64 << exponent).min(max_ms);
    if ceiling_ms == 0 {
        return Duration::ZERO;
    }
    let low = ceiling_ms / 2;
    let span = ceiling_ms - low + 1;
    let random = RandomState::new().hash_one(Instant::now());
    Duration::from_millis(low + random % span)
}

/// Parses a `Retry-After` value: whole seconds, or an HTTP date (delay until then, zero if
/// it has passed). Anything else is ignored.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::from(date);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Extracts the server's error message: `error.message` of an OpenAI-style error body,
/// else `error` when it is a string, else the body as text. The result is cut to
/// [`MAX_MESSAGE_CHARS`].
fn server_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = parsed.as_ref().and_then(|json| {
        let error = json.get("error")?;
        error
            .get("message")
            .and_then(|m| m.as_str())
            .or_else(|| error.as_str())
            .map(str::to_owned)
    });
    let text = message.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    truncate_chars(&text, MAX_MESSAGE_CHARS)
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<Message>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
}

/// Reads a chat completions response. The error is a description for
/// [`BackendError::InvalidResponse`].
fn parse_completion(body: &[u8]) -> Result<Completion, String> {
    let response: ChatResponse = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the body is not a chat completions answer ({e}): {}",
            truncate_chars(String::from_utf8_lossy(body).trim(), 200)
        )
    })?;
    let Some(choice) = response.choices.into_iter().next() else {
        let reason = match response.error {
            Some(error) => format!(
                "the server reported an error: {}",
                server_message(serde_json::json!({ "error": error }).to_string().as_bytes(),)
            ),
            None => "the answer has no choices".to_owned(),
        };
        return Err(reason);
    };
    let message = choice.message.ok_or("the first choice has no message")?;
    let refused = message.content.is_none() && message.refusal.is_some();
    let finish_reason = match choice.finish_reason.as_deref() {
        _ if refused => FinishReason::Other("refusal".to_owned()),
        Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some(other) => FinishReason::Other(other.to_owned()),
        None => FinishReason::Other("missing".to_owned()),
    };
    let usage = response.usage;
    Ok(Completion {
        text: message.content.unwrap_or_default(),
        finish_reason,
        prompt_tokens: usage.as_ref().and_then(|u| u.prompt_tokens),
        completion_tokens: usage.as_ref().and_then(|u| u.completion_tokens),
        elapsed_secs: 0.0,
    })
}

fn config_error(detail: String) -> BackendError {
    BackendError::Config { detail }
}

fn validate_limits(config: &HttpBackendConfig) -> Result<(), BackendError> {
    if config.model.trim().is_empty() {
        return Err(config_error(
            "the model name is empty; set model to the name the server serves".to_owned(),
        ));
    }
    if config.timeout_secs == 0 {
        return Err(config_error(
            "timeout_secs is 0; set it to the longest a completion may take, e.g. 120".to_owned(),
        ));
    }
    if config.max_concurrency == 0 {
        return Err(config_error(
            "max_concurrency is 0, so no request could ever be sent; set it to 1 or more"
                .to_owned(),
        ));
    }
    if config.backoff_base_ms > config.backoff_max_ms {
        return Err(config_error(format!(
            "backoff_base_ms {} must not exceed backoff_max_ms {}. Raise backoff_max_ms or \
             lower backoff_base_ms",
            config.backoff_base_ms, config.backoff_max_ms
        )));
    }
    Ok(())
}

type BasicCredentials = (Secret, Option<Secret>);

/// Parses the base URL and takes any credentials out of it.
fn parse_base_url(raw: &str) -> Result<(Url, Option<BasicCredentials>), BackendError> {
    let mut url = Url::parse(raw.trim()).map_err(|e| {
        // The raw text may contain credentials, so it is shown only when it has none.
        let shown = if raw.contains('@') {
            "(a URL with credentials)"
        } else {
            raw
        };
        config_error(format!(
            "base_url {shown} is not a URL ({e}); write it like http://127.0.0.1:8080"
        ))
    })?;
    let basic = if url.username().is_empty() && url.password().is_none() {
        None
    } else {
        let user = Secret(percent_decode(url.username()));
        let password = url.password().map(|p| Secret(percent_decode(p)));
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Some((user, password))
    };
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(config_error(format!(
            "base_url {url} has scheme {}; use http:// or https://",
            url.scheme()
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        url.set_query(None);
        url.set_fragment(None);
        return Err(config_error(format!(
            "base_url has a query or fragment; use {url} and put an API key in the \
             environment variable named by api_key_env"
        )));
    }
    Ok((url, basic))
}

/// Appends the chat completions path to `base`.
fn chat_completions_url(base: &mut Url) -> Url {
    let path = base.path().trim_end_matches('/');
    let joined = if path.ends_with("/v1") {
        format!("{path}/chat/completions")
    } else {
        format!("{path}/v1/chat/completions")
    };
    let mut endpoint = base.clone();
    endpoint.set_path(&joined);
    endpoint
}

fn read_api_key(name: &str, env: &impl Fn(&str) -> Option<String>) -> Result<Secret, BackendError> {
    let shown = shown_env_name(name);
    match env(name) {
        Some(key) if !key.trim().is_empty() => Ok(Secret(key.trim().to_owned())),
        Some(_) => Err(config_error(format!(
            "environment variable {shown} (api_key_env) is empty; put the API key in it"
        ))),
        None => Err(config_error(format!(
            "environment variable {shown} (api_key_env) is not set; export it with the API \
             key, or remove api_key_env for a server without keys"
        ))),
    }
}

/// Decodes `%XX` escapes of a URL component.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
