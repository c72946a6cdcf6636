//! `[summaries]`: the settings of the LLM summaries and their checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[summaries]`: LLM summaries of the selected proposals' abstracts, made before the SQL
/// models run and read by them as the `summaries` table. Checked at load time when
/// `enabled`; see `paperclip::summaries`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SummariesSection {
    pub enabled: bool,
    /// Kind of backend: `local` (a GGUF model run in this process) or `http` (an
    /// OpenAI-compatible chat completions server). Unset, it is `http` when `server_url` is
    /// set and `local` otherwise; see [`SummariesSection::backend_kind`].
    pub backend: Option<String>,
    /// GGUF model file of the `local` backend; the default is where
    /// `tools/fetch-summary-model.sh` puts Gemma 3 270M.
    pub model_path: Option<PathBuf>,
    /// CPU threads of the `local` backend; the default is every core.
    pub threads: Option<usize>,
    /// Prompt template file, relative to the pipeline file, with `{{abstract}}` once; the
    /// default is the built-in `prompts/summary-v1.txt` (the paper's prompt).
    pub prompt: Option<PathBuf>,
    /// Root of the server, e.g. `http://127.0.0.1:8080` for llama-server (the default).
    pub server_url: Option<String>,
    /// Model name sent with each request; llama-server ignores it, vLLM and Ollama need it.
    pub model: String,
    /// Name of the environment variable that contains the API key (never the key itself).
    pub api_key_env: Option<String>,
    /// Requests in flight at once; match the server's parallel slots.
    pub concurrency: usize,
    /// Requests per abstract and run before its outcome is recorded as rejected or failed.
    pub max_attempts: u32,
    /// Sampling temperature; 0 is greedy decoding, which makes summaries reproducible.
    pub temperature: f32,
    /// Seed of the server's sampler, when it takes one.
    pub seed: Option<u64>,
    /// Maximum time of one request, generation included, in seconds.
    pub timeout_secs: u64,
}

impl Default for SummariesSection {
    fn default() -> Self {
        Self {
            enabled: false,
            backend: None,
            model_path: None,
            threads: None,
            prompt: None,
            server_url: None,
            model: "default".to_string(),
            api_key_env: None,
            concurrency: 1,
            max_attempts: 3,
            temperature: 0.0,
            seed: None,
            timeout_secs: 300,
        }
    }
}

/// `summaries.backend` of the in-process model.
pub const LOCAL_BACKEND: &str = "local";
/// `summaries.backend` of an OpenAI-compatible server.
pub const HTTP_BACKEND: &str = "http";
/// `summaries.server_url` when unset: llama-server's default address.
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:8080";

impl SummariesSection {
    /// Checks the settings of an enabled section.
    pub(crate) fn check(&self) -> Result<(), String> {
        match self.backend_kind() {
            LOCAL_BACKEND => self.check_local()?,
            HTTP_BACKEND => self.check_http()?,
            other => {
                return Err(format!(
                    "summaries.backend = {other:?} is unknown; use \"local\" (a GGUF model run in this process) or \"http\" (an OpenAI-compatible server such as llama-server or vLLM)"
                ));
            }
        }
        let bounded = [
            ("summaries.concurrency", self.concurrency as u64, 1, 64),
            (
                "summaries.max_attempts",
                u64::from(self.max_attempts),
                1,
                10,
            ),
            ("summaries.timeout_secs", self.timeout_secs, 1, 3600),
        ];
        for (key, value, low, high) in bounded {
            if !(low..=high).contains(&value) {
                return Err(format!("{key} = {value} is outside {low}..={high}"));
            }
        }
        if !(self.temperature.is_finite() && (0.0..=2.0).contains(&self.temperature)) {
            return Err(format!(
                "summaries.temperature = {} is outside 0..=2; use 0 for greedy decoding",
                self.temperature
            ));
        }
        Ok(())
    }

    /// `backend`, or when unset `http` with a `server_url` and `local` without.
    pub fn backend_kind(&self) -> &str {
        match (&self.backend, &self.server_url) {
            (Some(kind), _) => kind,
            (None, Some(_)) => HTTP_BACKEND,
            (None, None) => LOCAL_BACKEND,
        }
    }

    /// Root URL of the `http` backend: `server_url`, else llama-server's default address.
    pub fn server_url(&self) -> &str {
        self.server_url.as_deref().unwrap_or(DEFAULT_SERVER_URL)
    }

    /// Returns the GGUF file of the `local` backend: `model_path`, else the default.
    pub fn local_model_path(&self) -> PathBuf {
        self.model_path.clone().unwrap_or_else(default_model_path)
    }

    /// CPU threads of the `local` backend: `threads`, else every core.
    pub fn local_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        })
    }

    fn check_local(&self) -> Result<(), String> {
        if let Some(url) = &self.server_url {
            return Err(format!(
                "summaries.server_url = {url:?} is set, but summaries.backend = \"local\" runs the model in this process; remove server_url, or set backend = \"http\""
            ));
        }
        if let Some(threads) = self.threads
            && !(1..=256).contains(&threads)
        {
            return Err(format!(
                "summaries.threads = {threads} is outside 1..=256; leave it out to use every core"
            ));
        }
        Ok(())
    }

    fn check_http(&self) -> Result<(), String> {
        let url = url::Url::parse(self.server_url()).map_err(|e| {
            format!(
                "summaries.server_url = {:?} is not a URL ({e}); use e.g. \"http://127.0.0.1:8080\"",
                self.server_url()
            )
        })?;
        if !["http", "https"].contains(&url.scheme()) {
            return Err(format!(
                "summaries.server_url = {:?} must be an http or https URL",
                self.server_url()
            ));
        }
        if let Some(name) = &self.api_key_env
            && !is_env_var_name(name)
        {
            return Err("summaries.api_key_env is not an environment variable name (the value is not shown, since it may be a key); give the variable's name (e.g. \"OPENAI_API_KEY\"), never the key itself".to_string());
        }
        Ok(())
    }
}

/// Returns where `tools/fetch-summary-model.sh` puts the default summary model:
/// `$PAPERCLIP_CACHE/models/`, or `~/.cache/paperclip/models/` without that variable.
pub fn default_model_path() -> PathBuf {
    let cache = std::env::var_os("PAPERCLIP_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/paperclip"))
        })
        .unwrap_or_else(|| PathBuf::from(".cache/paperclip"));
    cache.join("models").join(DEFAULT_MODEL_FILE)
}

/// File name of the default summary model (Gemma 3 270M, a base model, Q4_K_M).
pub const DEFAULT_MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// Returns true when `name` is a valid environment variable name: letters, digits and
/// `_`, not starting with a digit.
fn is_env_var_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}
