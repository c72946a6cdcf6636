//! Error type of the archive crate.
//!
//! Every variant carries the MAST service (or the URL or data URI) and the
//! request parameters involved, so a log line or an ingest-table row built
//! from the error is enough to repeat the failing request. [`ArchiveError::code`]
//! returns a stable, machine-readable reason code for each variant.

use std::path::PathBuf;

/// Errors returned by the MAST client, the snapshot reader and writer, and
/// the local archive server.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An identifier string could not be parsed into the requested type.
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidId {
        kind: &'static str,
        value: String,
        reason: String,
    },

    /// A data URI failed the safety check, so no request was sent.
    #[error(
        "invalid data URI {uri:?}: {reason}; expected the form mast:<collection>/<path> without '..', backslashes or absolute paths"
    )]
    UnsafeDataUri { uri: String, reason: String },

    /// The server returned a 4xx status. Requests are not retried on 4xx.
    #[error(
        "{service} failed with HTTP {status} for params {params}: {body_excerpt:?}; fix the request parameters, retrying will not help"
    )]
    HttpStatus {
        service: String,
        params: String,
        status: u16,
        body_excerpt: String,
    },

    /// Every attempt failed with a retryable cause (5xx, connection error,
    /// body read error).
    #[error(
        "{service} failed after {attempts} attempts for params {params}; last cause: {cause}; check the archive status or raise max_retries"
    )]
    RetriesExhausted {
        service: String,
        params: String,
        attempts: u32,
        cause: String,
    },

    /// Every attempt exceeded `request_timeout_secs`.
    #[error(
        "{service} timed out after {timeout_secs} s on each of {attempts} attempts for params {params}; raise request_timeout_secs or request fewer items per call"
    )]
    Timeout {
        service: String,
        params: String,
        timeout_secs: u64,
        attempts: u32,
    },

    /// The server closed the connection without a complete response to a
    /// query. MAST does this when a query exceeds its server-side memory cap.
    /// A download or catalog fetch cut short fails as
    /// [`ArchiveError::RetriesExhausted`] instead, since it cannot be split.
    #[error(
        "{service} connection was reset after {attempts} attempts for params {params}; the result is probably above the server's size cap, so query fewer proposals or observations"
    )]
    ConnectionReset {
        service: String,
        params: String,
        attempts: u32,
    },

    /// MAST returned `status: "ERROR"`.
    #[error(
        "{service} returned status ERROR for params {params}: {msg:?}; check the service name and params"
    )]
    ServiceError {
        service: String,
        params: String,
        msg: String,
    },

    /// MAST still returned `status: "EXECUTING"` after `max_polls` polls.
    #[error(
        "{service} was still EXECUTING after {polls} polls for params {params}; raise max_polls or poll_interval_ms, or split the query"
    )]
    StillExecuting {
        service: String,
        params: String,
        polls: u32,
    },

    /// The response envelope is malformed (invalid JSON, duplicate or
    /// missing columns, wrong value types).
    #[error("{service} returned an invalid response for params {params}: {reason}")]
    InvalidResponse {
        service: String,
        params: String,
        reason: String,
    },

    /// The pages of a paged result do not add up to the advertised row
    /// count, so the result would be truncated or contain duplicates.
    #[error(
        "{service} paging is inconsistent for params {params}: {reason}; the result was discarded instead of returning it incomplete, so retry the query"
    )]
    IncompletePaging {
        service: String,
        params: String,
        reason: String,
    },

    /// A downloaded file does not have the expected size.
    #[error(
        "download of {uri} returned {actual_bytes} bytes, expected {expected_bytes} bytes ({source_of_expectation}), after {attempts} attempts; the server sent an incomplete file, retry later"
    )]
    SizeMismatch {
        uri: String,
        expected_bytes: u64,
        actual_bytes: u64,
        source_of_expectation: &'static str,
        attempts: u32,
    },

    /// A local file operation failed.
    #[error("failed to {operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// A snapshot directory is missing a file or contains an invalid one.
    #[error("invalid archive snapshot at {path}: {reason}")]
    InvalidSnapshot { path: PathBuf, reason: String },

    /// The local archive server could not listen on the address.
    #[error(
        "failed to bind the archive server to {addr}: {source}; choose another address or port (port 0 picks a free one)"
    )]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },

    /// The local archive server stopped with an error.
    #[error("archive server at {addr} failed: {reason}; restart it")]
    ServerFailed {
        addr: std::net::SocketAddr,
        reason: String,
    },

    /// The client configuration is unusable.
    #[error("invalid archive client configuration: {reason}")]
    InvalidConfig { reason: String },
}

impl ArchiveError {
    /// Returns a stable reason code for ingest tables and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidId { .. } => "invalid_id",
            Self::UnsafeDataUri { .. } => "unsafe_data_uri",
            Self::HttpStatus { .. } => "http_status",
            Self::RetriesExhausted { .. } => "retries_exhausted",
            Self::Timeout { .. } => "timeout",
            Self::ConnectionReset { .. } => "connection_reset",
            Self::ServiceError { .. } => "service_error",
            Self::StillExecuting { .. } => "still_executing",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::IncompletePaging { .. } => "incomplete_paging",
            Self::SizeMismatch { .. } => "size_mismatch",
            Self::Io { .. } => "io",
            Self::InvalidSnapshot { .. } => "invalid_snapshot",
            Self::Bind { .. } => "bind",
            Self::ServerFailed { .. } => "server_failed",
            Self::InvalidConfig { .. } => "invalid_config",
        }
    }

    #[cfg(feature = "network")]
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}
