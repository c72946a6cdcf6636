//! HTTP client for the MAST Portal API: configuration, statistics and the
//! shared retry policy.
//!
//! Retry policy, applied to every request the client sends:
//! - 5xx responses, connection failures, connections closed before the
//!   response was complete, body read errors, timeouts and size mismatches
//!   of downloads are retried up to `max_retries` times.
//! - The delay before retry `n` is `backoff_base_ms * 2^(n-1)`, capped at
//!   `backoff_max_ms`, with jitter: the delay is drawn uniformly from the
//!   upper half of that value.
//! - 4xx responses are never retried.
//! - Queries that can be split (several proposals or obsids) are not retried
//!   on a timeout or a closed connection, and the caller splits them instead.
//!   MAST closes the connection when a result exceeds its memory cap, so a
//!   repeated identical request would fail the same way.
//!
//! Every retry is logged at `warn` with the service, params, attempt and
//! cause, and counted in [`ClientStats::retries`].

use std::error::Error as StdError;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tracing::Instrument;
use url::Url;

use crate::error::ArchiveError;

/// Settings of a [`MastClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Root of the MAST service; `/api/v0/invoke` and
    /// `/api/v0.1/Download/file` are resolved against it.
    pub base_url: Url,
    /// Limit for one HTTP request including its body, in seconds.
    pub request_timeout_secs: u64,
    /// Retries after the first attempt of a request.
    pub max_retries: u32,
    /// First backoff delay, in milliseconds.
    pub backoff_base_ms: u64,
    /// Largest backoff delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// Rows requested per page (`pagesize`).
    pub page_size: u32,
    /// Obsids per `Mast.Caom.Products` request.
    pub products_batch_size: usize,
    /// Proposal ids per `Mast.Caom.Filtered` request.
    pub proposals_per_query: usize,
    /// Delay before re-sending a request whose response status was
    /// `EXECUTING`, in milliseconds.
    pub poll_interval_ms: u64,
    /// `EXECUTING` responses tolerated per request before the request fails
    /// with [`ArchiveError::StillExecuting`].
    pub max_polls: u32,
    /// Request field `timeout`: seconds MAST may compute before it returns
    /// status `EXECUTING`.
    pub server_wait_secs: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            base_url: Url::parse("https://mast.stsci.edu").expect("static URL is valid"),
            request_timeout_secs: 600,
            max_retries: 5,
            backoff_base_ms: 1_000,
            backoff_max_ms: 60_000,
            page_size: 50_000,
            products_batch_size: 500,
            proposals_per_query: 50,
            poll_interval_ms: 2_000,
            max_polls: 150,
            // NOTE: MAST documents a `timeout` request field; 30 s is the value
            // its examples use, not a measured optimum.
            server_wait_secs: 30,
        }
    }
}

impl ClientConfig {
    /// Returns a config for `base_url` with every other field at its default.
    pub fn for_base_url(base_url: Url) -> Self {
        Self {
            base_url,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), ArchiveError> {
        let reason = if !matches!(self.base_url.scheme(), "http" | "https") {
            Some(format!("base_url {} must use http or https", self.base_url))
        } else if self.request_timeout_secs == 0 {
            Some("request_timeout_secs must be at least 1".to_owned())
        } else if self.page_size == 0 {
            Some("page_size must be at least 1".to_owned())
        } else if self.products_batch_size == 0 {
            Some("products_batch_size must be at least 1".to_owned())
        } else if self.proposals_per_query == 0 {
            Some("proposals_per_query must be at least 1".to_owned())
        } else {
            None
        };
        match reason {
            Some(reason) => Err(ArchiveError::InvalidConfig { reason }),
            None => Ok(()),
        }
    }
}

/// Counters of a client and all its clones since creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent, including retries and `EXECUTING` polls.
    pub requests: u64,
    /// Retries after failed attempts.
    pub retries: u64,
    /// `EXECUTING` responses received.
    pub polls: u64,
    /// Queries split in halves after a timeout or a closed connection.
    pub splits: u64,
    /// Body bytes received by downloads (failed attempts included) and by
    /// successful text fetches.
    pub bytes_downloaded: u64,
    /// Observation rows dropped because `obs_collection` was not HST.
    pub non_hst_rows_dropped: u64,
    /// HST observation rows returned without `s_ra` or `s_dec`.
    pub observations_without_position: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub polls: AtomicU64,
    pub splits: AtomicU64,
    pub bytes_downloaded: AtomicU64,
    pub non_hst_rows_dropped: AtomicU64,
    pub observations_without_position: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }
}

/// Client for the MAST Portal API and download endpoint. Clones share the
/// connection pool and the counters.
#[derive(Debug, Clone)]
pub struct MastClient {
    pub(crate) http: reqwest::Client,
    pub(crate) config: ClientConfig,
    pub(crate) counters: Arc<Counters>,
}

impl MastClient {
    /// Creates a client; fails on an invalid config.
    pub fn new(config: ClientConfig) -> Result<Self, ArchiveError> {
        config.validate()?;
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("paperclip-archive/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&config.base_url) {
            // A system proxy must never see requests meant for a local server.
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|err| ArchiveError::InvalidConfig {
            reason: format!("failed to build the HTTP client: {}", error_chain(&err)),
        })?;
        Ok(Self {
            http,
            config,
            counters: Arc::new(Counters::default()),
        })
    }

    /// Returns the configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Returns a client that shares connections and counters with this one
    /// but uses another per-request timeout.
    pub fn with_request_timeout_secs(
        &self,
        request_timeout_secs: u64,
    ) -> Result<Self, ArchiveError> {
        let config = ClientConfig {
            request_timeout_secs,
            ..self.config.clone()
        };
        config.validate()?;
        Ok(Self {
            http: self.http.clone(),
            config,
            counters: Arc::clone(&self.counters),
        })
    }

    /// Returns a snapshot of the counters.
    pub fn stats(&self) -> ClientStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &self.counters;
        ClientStats {
            requests: load(&counters.requests),
            retries: load(&counters.retries),
            polls: load(&counters.polls),
            splits: load(&counters.splits),
            bytes_downloaded: load(&counters.bytes_downloaded),
            non_hst_rows_dropped: load(&counters.non_hst_rows_dropped),
            observations_without_position: load(&counters.observations_without_position),
        }
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.config.request_timeout_secs)
    }

    /// Resolves `path` against the base URL, keeping any base path prefix.
    pub(crate) fn endpoint(&self, path: &str) -> Url {
        let mut url = self.config.base_url.clone();
        let joined = format!(
            "{}/{}",
            url.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url.set_path(&joined);
        url
    }

    /// Fetches `url` with GET and the retry policy, returning the body.
    pub async fn fetch_text(&self, url: &Url) -> Result<Vec<u8>, ArchiveError> {
        let context = RequestContext::transfer("GET", url.as_str());
        let span = tracing::info_span!("archive_fetch", url = %url);
        let body = self
            .with_retries(&context, RetryMode::Retry, || self.get_once(url))
            .instrument(span)
            .await?;
        Counters::add(&self.counters.bytes_downloaded, body.len() as u64);
        Ok(body.to_vec())
    }

    async fn get_once(&self, url: &Url) -> Result<Bytes, Failure> {
        Counters::add(&self.counters.requests, 1);
        let response = self
            .http
            .get(url.clone())
            .timeout(self.request_timeout())
            .send()
            .await
            .map_err(Failure::from_reqwest)?;
        read_success_body(response).await
    }

    /// Runs `attempt` until it succeeds, a failure is final, or retries are
    /// used up.
    pub(crate) async fn with_retries<T, F, Fut>(
        &self,
        context: &RequestContext,
        mode: RetryMode,
        mut attempt: F,
    ) -> Result<T, ArchiveError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut attempt_number: u32 = 1;
        loop {
            let failure = match attempt().await {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            let splittable = mode == RetryMode::SplitOnOverload && failure.is_overload();
            if !failure.is_retryable() || splittable || attempt_number > self.config.max_retries {
                return Err(failure.into_error(
                    context,
                    attempt_number,
                    self.config.request_timeout_secs,
                ));
            }
            tracing::warn!(
                service = %context.service,
                params = %context.params,
                attempt = attempt_number,
                max_retries = self.config.max_retries,
                cause = %failure,
                "retrying archive request"
            );
            Counters::add(&self.counters.retries, 1);
            tokio::time::sleep(self.backoff_delay(attempt_number)).await;
            attempt_number += 1;
        }
    }

    fn backoff_delay(&self, attempt_number: u32) -> Duration {
        let exponent = attempt_number.saturating_sub(1).min(30);
        let ceiling_ms = self
            .config
            .backoff_base_ms
            .saturating_mul(1u64 << exponent)
            .min(self.config.backoff_max_ms);
        let delay_ms = if ceiling_ms == 0 {
            0
        } else {
            rand::random_range(ceiling_ms / 2..=ceiling_ms)
        };
        Duration::from_millis(delay_ms)
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Service name and params of a request, for logs and errors.
#[derive(Debug, Clone)]
pub(crate) struct RequestContext {
    pub service: String,
    pub params: String,
    /// True for a file transfer (a download or a fetched catalog). It cannot be split,
    /// and a connection closed during it does not point to a result size cap.
    pub transfer: bool,
}

impl RequestContext {
    /// Context of a query.
    pub fn new(service: &str, params: &str) -> Self {
        Self {
            service: service.to_owned(),
            params: params.to_owned(),
            transfer: false,
        }
    }

    /// Context of a file transfer.
    pub fn transfer(service: &str, params: &str) -> Self {
        Self {
            transfer: true,
            ..Self::new(service, params)
        }
    }
}

/// Whether a timeout or closed connection ends the retry loop so that the
/// caller can split the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryMode {
    Retry,
    SplitOnOverload,
}

/// Outcome of one failed attempt.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Non-success HTTP status with an excerpt of the body.
    Status { status: u16, body_excerpt: String },
    /// The request exceeded `request_timeout_secs`.
    Timeout,
    /// The connection closed before a complete response arrived.
    ConnectionClosed(String),
    /// The connection could not be established.
    Connect(String),
    /// A download delivered another size than announced or expected.
    SizeMismatch {
        expected_bytes: u64,
        actual_bytes: u64,
        source_of_expectation: &'static str,
    },
    /// A failure that retrying cannot fix (local I/O, invalid input).
    Fatal(ArchiveError),
}

impl Failure {
    pub fn from_reqwest(err: reqwest::Error) -> Self {
        if err.is_timeout() {
            Self::Timeout
        } else if err.is_connect() {
            Self::Connect(error_chain(&err))
        } else {
            Self::ConnectionClosed(error_chain(&err))
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status >= 500,
            Self::Timeout
            | Self::ConnectionClosed(_)
            | Self::Connect(_)
            | Self::SizeMismatch { .. } => true,
            Self::Fatal(_) => false,
        }
    }

    fn is_overload(&self) -> bool {
        matches!(self, Self::Timeout | Self::ConnectionClosed(_))
    }

    fn into_error(
        self,
        context: &RequestContext,
        attempts: u32,
        timeout_secs: u64,
    ) -> ArchiveError {
        let service = context.service.clone();
        let params = context.params.clone();
        match self {
            Self::Status {
                status,
                body_excerpt,
            } if status < 500 => ArchiveError::HttpStatus {
                service,
                params,
                status,
                body_excerpt,
            },
            Self::Timeout => ArchiveError::Timeout {
                service,
                params,
                timeout_secs,
                attempts,
            },
            Self::ConnectionClosed(_) if !context.transfer => ArchiveError::ConnectionReset {
                service,
                params,
                attempts,
            },
            Self::SizeMismatch {
                expected_bytes,
                actual_bytes,
                source_of_expectation,
            } => ArchiveError::SizeMismatch {
                uri: params.trim_start_matches("uri=").to_owned(),
                expected_bytes,
                actual_bytes,
                source_of_expectation,
                attempts,
            },
            Self::Fatal(error) => error,
            other => ArchiveError::RetriesExhausted {
                service,
                params,
                attempts,
                cause: other.to_string(),
            },
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status {
                status,
                body_excerpt,
            } => write!(f, "HTTP {status}: {body_excerpt:?}"),
            Self::Timeout => f.write_str("request timed out"),
            Self::ConnectionClosed(cause) => write!(
                f,
                "connection closed before the response was complete: {cause}"
            ),
            Self::Connect(cause) => write!(f, "connection failed: {cause}"),
            Self::SizeMismatch {
                expected_bytes,
                actual_bytes,
                source_of_expectation,
            } => write!(
                f,
                "received {actual_bytes} bytes, expected {expected_bytes} bytes ({source_of_expectation})"
            ),
            Self::Fatal(error) => write!(f, "{error}"),
        }
    }
}

/// Maximum length of a body excerpt kept in errors, in bytes.
const BODY_EXCERPT_MAX_BYTES: usize = 300;

/// Reads the whole body of a 2xx response; other statuses become
/// [`Failure::Status`].
pub(crate) async fn read_success_body(response: reqwest::Response) -> Result<Bytes, Failure> {
    let status = response.status();
    if !status.is_success() {
        let body = response.bytes().await.unwrap_or_default();
        return Err(Failure::Status {
            status: status.as_u16(),
            body_excerpt: body_excerpt(&body),
        });
    }
    response.bytes().await.map_err(Failure::from_reqwest)
}

pub(crate) fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(BODY_EXCERPT_MAX_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Formats an error with all its sources, so that causes such as
/// "connection reset by peer" reach the log.
pub(crate) fn error_chain(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_targets_mast() {
        let config = ClientConfig::default();
        assert_eq!(config.base_url.as_str(), "https://mast.stsci.edu/");
        assert_eq!(config.request_timeout_secs, 600);
        assert_eq!(config.max_retries, 5);
    }

    #[test]
    fn invalid_config_is_rejected() {
        let config = ClientConfig {
            products_batch_size: 0,
            ..ClientConfig::default()
        };
        let err = MastClient::new(config).unwrap_err();
        assert!(err.to_string().contains("products_batch_size"), "{err}");
    }

    #[test]
    fn endpoint_keeps_base_path() {
        let config = ClientConfig::for_base_url(Url::parse("http://127.0.0.1:9/mirror/").unwrap());
        let client = MastClient::new(config).unwrap();
        assert_eq!(
            client.endpoint("/api/v0/invoke").as_str(),
            "http://127.0.0.1:9/mirror/api/v0/invoke"
        );
    }

    #[test]
    fn backoff_stays_within_bounds() {
        let config = ClientConfig {
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..ClientConfig::default()
        };
        let client = MastClient::new(config).unwrap();
        for attempt in 1..40 {
            let delay_ms = client.backoff_delay(attempt).as_millis() as u64;
            assert!(delay_ms <= 1_000, "attempt {attempt}: {delay_ms} ms");
        }
        let first_ms = client.backoff_delay(1).as_millis() as u64;
        assert!((50..=100).contains(&first_ms), "{first_ms}");
    }
}
