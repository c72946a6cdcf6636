//! [`LocalBackend`]: summaries from a GGUF model run inside this process by
//! [`paperclip_llm::Engine`] (candle kernels, llguidance grammar).
//!
//! - The model is identified by the SHA-256 of its file (`gguf:<hex>`), computed when the
//!   backend is created. A plan needs only that, so the weights are loaded on the first
//!   request, not before.
//! - One engine serves every request, one at a time: a single sequence already uses all
//!   the threads it is given, so parallel requests would only compete for the same cores.
//! - Every output follows the request's schema by construction. The stage still checks
//!   it with the independent validator, like any backend's.
//! - Generation runs on tokio's blocking pool, so the async runtime keeps serving.
//! - Output depends only on the request (greedy, or sampling with the request's seed), so
//!   the stage retries a rejected output with seeded sampling instead of the same request.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use paperclip_llm::{DEFAULT_MAX_POSITIONS, Engine, ModelError, Stop, string_slices};
use sha2::{Digest, Sha256};

use super::backend::{BackendError, Completion, CompletionRequest, FinishReason, SummaryBackend};

/// Settings of a [`LocalBackend`].
#[derive(Debug, Clone, PartialEq)]
pub struct LocalBackendConfig {
    /// The GGUF model file.
    pub model_path: PathBuf,
    /// CPU threads of the model's computation.
    pub threads: usize,
}

/// An in-process model behind the [`SummaryBackend`] interface; see the module docs.
pub struct LocalBackend {
    config: LocalBackendConfig,
    model_sha256: String,
    engine: Arc<Mutex<Option<Engine>>>,
}

impl LocalBackend {
    /// Checks that the model file exists and is a Gemma 3 GGUF file (its header and
    /// metadata only), and hashes it. The weights load on first use.
    pub fn new(config: LocalBackendConfig) -> Result<Self, BackendError> {
        check_header(&config.model_path)?;
        let model_sha256 = sha256_file(&config.model_path)?;
        Ok(Self {
            config,
            model_sha256,
            engine: Arc::new(Mutex::new(None)),
        })
    }

    /// Returns the model file.
    pub fn model_path(&self) -> &Path {
        &self.config.model_path
    }
}

#[async_trait::async_trait]
impl SummaryBackend for LocalBackend {
    fn model_id(&self) -> String {
        format!("gguf:{}", self.model_sha256)
    }

    fn is_deterministic(&self) -> bool {
        true
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, BackendError> {
        let engine = self.engine.clone();
        let config = self.config.clone();
        let request = request.clone();
        tokio::task::spawn_blocking(move || {
            let mut slot = engine
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let engine = match slot.as_mut() {
                Some(engine) => engine,
                None => slot.insert(load(&config, &request.schema)?),
            };
            generate(engine, &request)
        })
        .await
        .map_err(|join| BackendError::Model {
            detail: format!("the generation thread stopped: {join}"),
        })?
    }
}

/// Loads the engine with grammar slices for the string patterns of `schema`, the schema
/// of the first request. Later requests with other schemas are slower, not wrong.
fn load(config: &LocalBackendConfig, schema: &serde_json::Value) -> Result<Engine, BackendError> {
    let started = Instant::now();
    let unavailable = |error: ModelError| BackendError::ModelUnavailable {
        path: config.model_path.display().to_string(),
        detail: error.to_string(),
    };
    let engine = Engine::load(&config.model_path, config.threads, DEFAULT_MAX_POSITIONS)
        .and_then(|engine| engine.with_slices(&string_slices(schema)))
        .map_err(unavailable)?;
    tracing::info!(
        model = %config.model_path.display(),
        threads = config.threads,
        load_secs = started.elapsed().as_secs_f64(),
        "in-process model loaded"
    );
    Ok(engine)
}

fn generate(engine: &mut Engine, request: &CompletionRequest) -> Result<Completion, BackendError> {
    let started = Instant::now();
    let prompt = engine.chat_prompt(&request.prompt);
    let sampling = paperclip_llm::Sampling {
        temperature: request.sampling.temperature,
        seed: request.sampling.seed.unwrap_or(0),
    };
    let generation = engine
        .generate(
            &prompt,
            &request.schema,
            request.max_tokens as usize,
            sampling,
        )
        .map_err(model_error)?;
    let stats = &generation.stats;
    tracing::debug!(
        prompt_tokens = stats.prompt_tokens,
        output_tokens = stats.output_tokens,
        forced_tokens = stats.forced_tokens,
        forwards = stats.forwards,
        prefill_secs = stats.prefill_secs,
        decode_secs = stats.decode_secs,
        grammar_secs = stats.grammar_secs,
        "in-process generation"
    );
    Ok(Completion {
        text: generation.text,
        finish_reason: match generation.stop {
            Stop::Complete => FinishReason::Stop,
            Stop::Length => FinishReason::Length,
        },
        prompt_tokens: u32::try_from(stats.prompt_tokens).ok(),
        completion_tokens: u32::try_from(stats.output_tokens).ok(),
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

fn model_error(error: ModelError) -> BackendError {
    BackendError::Model {
        detail: error.to_string(),
    }
}

/// Reads the GGUF header and metadata of `path` and checks the architecture, so a file
/// that is not a usable model fails before any request, like a missing one.
fn check_header(path: &Path) -> Result<(), BackendError> {
    let unavailable = |detail: String| BackendError::ModelUnavailable {
        path: path.display().to_string(),
        detail,
    };
    let gguf = paperclip_llm::Gguf::open(path).map_err(|e| unavailable(e.to_string()))?;
    let architecture = gguf
        .get("general.architecture")
        .and_then(|value| value.as_str())
        .unwrap_or("none");
    if architecture != "gemma3" {
        return Err(unavailable(format!(
            "its architecture is {architecture:?}, and the in-process backend runs gemma3 models only; use a Gemma 3 GGUF file, or an OpenAI-compatible server for other models"
        )));
    }
    Ok(())
}

/// SHA-256 of the model file, hex.
fn sha256_file(path: &Path) -> Result<String, BackendError> {
    let unavailable = |detail: String| BackendError::ModelUnavailable {
        path: path.display().to_string(),
        detail,
    };
    let mut file = std::fs::File::open(path).map_err(|e| unavailable(e.to_string()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| unavailable(e.to_string()))?;
        if read == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..read]);
    }
}
