//! The interface between the summary stage and a language model: one constrained
//! completion per request. Backends: an OpenAI-compatible HTTP server (`http`), and later an
//! in-process model.
//!
//! A backend returns the raw text and why generation stopped; it never parses or repairs
//! the JSON. Checking the output against the schema is the stage's job, so every backend
//! is held to the same rules.

use serde::{Deserialize, Serialize};

/// Token sampling settings. `temperature == 0` is greedy decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    pub temperature: f32,
    /// Seed of the sampler; part of the cache key, so a seeded run is reproducible.
    pub seed: Option<u64>,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            seed: None,
        }
    }
}

/// One summary request.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    /// The user message: the prompt template filled in with one abstract.
    pub prompt: String,
    /// JSON Schema the output must satisfy.
    pub schema: serde_json::Value,
    /// Name of the schema, for servers that require one (`json_schema.name`).
    pub schema_name: String,
    /// Upper bound on generated tokens, derived from the schema's bounds.
    pub max_tokens: u32,
    pub sampling: Sampling,
}

pub use paperclip_summary::{Completion, FinishReason};

/// Error of a backend that produced no completion.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{url} answered HTTP {status}: {body_excerpt}")]
    Http {
        url: String,
        status: u16,
        body_excerpt: String,
    },
    #[error(
        "{url} timed out: no response within {secs} s; raise the timeout (summaries.timeout_secs in a pipeline, --timeout-secs on the command line) or check the server"
    )]
    Timeout { url: String, secs: u64 },
    #[error("cannot reach {url}: {detail}; check that the server is running and the URL is right")]
    Connect { url: String, detail: String },
    #[error("{attempts} attempts failed; last error: {last}")]
    RetriesExhausted { attempts: u32, last: String },
    #[error("the backend's answer is unreadable: {detail}")]
    InvalidResponse { detail: String },
    #[error("the backend is misconfigured: {detail}")]
    Config { detail: String },
    #[error(
        "cannot use the model file {path}: {detail}; fetch it with tools/fetch-summary-model.sh, or give another file (summaries.model_path in a pipeline, --model-path on the command line)"
    )]
    ModelUnavailable { path: String, detail: String },
    #[error("the in-process model failed: {detail}")]
    Model { detail: String },
}

impl BackendError {
    /// Stable reason code for skip records and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http_status",
            Self::Timeout { .. } => "timeout",
            Self::Connect { .. } => "connect",
            Self::RetriesExhausted { .. } => "retries_exhausted",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::Config { .. } => "config",
            Self::ModelUnavailable { .. } => "model_unavailable",
            Self::Model { .. } => "model_error",
        }
    }
}

/// A language model that completes one constrained request at a time. Implementations
/// must be safe to call concurrently; each bounds its own concurrency.
#[async_trait::async_trait]
pub trait SummaryBackend: Send + Sync {
    /// Identity of the model for cache keys and lineage, e.g. `gguf:<sha256 of the file>`
    /// or `http:<base url>#<model name>`. Never contains a secret.
    fn model_id(&self) -> String;

    /// Generates one completion for `request`.
    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, BackendError>;

    /// True when the same request always gets the same completion (greedy or seeded
    /// sampling on one machine). The stage then retries a rejected output with other
    /// sampling settings ([`crate::summaries::stage::retry_sampling`]), since the same
    /// request would be rejected again.
    fn is_deterministic(&self) -> bool {
        false
    }
}
