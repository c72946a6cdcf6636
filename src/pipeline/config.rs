//! The pipeline file: a TOML document naming the dataset, the archive, the selection rules,
//! the image geometry, the caption form, the shard size and the SQL models.
//!
//! Every table rejects unknown keys, so a misspelt setting fails at load time with the list
//! of valid names instead of being ignored. Relative paths (SQL models, a catalog path) are
//! resolved against the directory that contains the pipeline file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::PipelineError;

/// A parsed pipeline file with its paths resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub dataset: DatasetSection,
    #[serde(default)]
    pub archive: ArchiveSection,
    #[serde(default)]
    pub selection: SelectionSection,
    #[serde(default)]
    pub images: ImagesSection,
    #[serde(default)]
    pub captions: CaptionsSection,
    #[serde(default)]
    pub shards: ShardsSection,
    /// Which versions `paperclip datasets gc` keeps; by default every version.
    #[serde(default)]
    pub retention: RetentionSection,
    #[serde(default)]
    pub refresh: RefreshSection,
    pub sql: SqlSection,
    /// When `paperclip serve` refreshes the dataset; `None` for pipelines run by hand.
    #[serde(default)]
    pub schedule: Option<ScheduleSection>,
    /// Tables read from the curator's own files, by table name (`[sources.<name>]`).
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSection>,
    /// LLM summaries of the abstracts; off unless `enabled = true`.
    #[serde(default)]
    pub summaries: SummariesSection,
    /// Directory containing the pipeline file; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// SHA-256 of the pipeline file bytes, recorded in every published version.
    #[serde(skip)]
    pub file_sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSection {
    /// Dataset name, used as the SQL catalog name and the directory name.
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveSection {
    /// MAST Portal API base URL.
    pub base_url: String,
    /// Proposal abstracts catalog (`abstracts.cat` format), or one Phase II `.pro` file:
    /// an http(s) URL or a path relative to the pipeline file.
    pub catalog: String,
    pub request_timeout_secs: u64,
    pub max_retries: u32,
    pub page_size: u32,
    pub proposals_per_query: usize,
    pub products_batch_size: usize,
    pub download_concurrency: usize,
}

impl Default for ArchiveSection {
    fn default() -> Self {
        Self {
            base_url: "https://mast.stsci.edu".to_string(),
            catalog: "https://archive.stsci.edu/hst/abstracts.cat".to_string(),
            request_timeout_secs: 600,
            max_retries: 5,
            page_size: 50_000,
            proposals_per_query: 50,
            products_batch_size: 200,
            download_concurrency: 8,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectionSection {
    /// Lowest proposal cycle kept, inclusive.
    pub min_cycle: u32,
    /// Highest proposal cycle kept, inclusive.
    pub max_cycle: u32,
    /// Upper bound on images per proposal, sampled without replacement.
    pub max_images_per_proposal: u32,
    /// Seed of the per-proposal image sampling and of the train/validation split.
    pub seed: u64,
    /// Fraction of proposals assigned to the validation split.
    pub val_fraction: f64,
    /// Use science FITS images for proposals that have no matching preview.
    pub fits_fallback: bool,
}

impl Default for SelectionSection {
    fn default() -> Self {
        Self {
            min_cycle: 0,
            max_cycle: 31,
            max_images_per_proposal: 20,
            seed: 42,
            val_fraction: 0.1,
            fits_fallback: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesSection {
    /// Side of the square output image; the longest source side is scaled to it.
    pub size_px: u32,
    pub jpeg_quality: u8,
    /// Stretch applied to FITS pixel values: `asinh` or `zscale`.
    pub stretch: String,
    /// Sources whose shorter side is below this are skipped as too small.
    pub min_source_px: u32,
    /// Sources whose long side exceeds this many times the short side are skipped; unset
    /// keeps every aspect ratio, as the original method did.
    pub max_aspect_ratio: Option<f64>,
    /// Sources with more pixels than this are skipped before decoding, so a hostile header
    /// cannot exhaust memory.
    pub max_source_pixels: u64,
    /// Images decoded, resized and encoded at once, each on its own thread; unset uses
    /// one per CPU core. Downloads run beside them, up to `archive.download_concurrency`.
    /// It changes no output, so the image stage's inputs leave it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

/// Largest accepted `images.threads`.
pub const MAX_IMAGE_THREADS: usize = 1024;

impl ImagesSection {
    /// Returns how many preparations run at once: `threads`, or the CPU cores available.
    pub fn worker_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

impl Default for ImagesSection {
    fn default() -> Self {
        Self {
            size_px: 512,
            jpeg_quality: 95,
            stretch: "asinh".to_string(),
            min_source_px: 16,
            max_aspect_ratio: None,
            max_source_pixels: 200_000_000,
            threads: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptionsSection {
    /// `paper` (`Category: X. <abstract>` exactly as the original code built it), `clean`,
    /// or `summary` (the LLM summary "objects; use cases", which needs `[summaries]`; a
    /// proposal without one gets its `paper` caption).
    pub form: String,
}

/// The caption form that uses the LLM summaries.
pub const SUMMARY_CAPTION_FORM: &str = "summary";

/// `[summaries]`: LLM summaries of the selected proposals' abstracts, made before the SQL
/// models run and read by them as the `summaries` table. Checked at load time when
/// `enabled`; see [`crate::summaries`].
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
    fn check(&self) -> Result<(), String> {
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

impl Default for CaptionsSection {
    fn default() -> Self {
        Self {
            form: "paper".to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardsSection {
    pub samples_per_shard: usize,
}

impl Default for ShardsSection {
    fn default() -> Self {
        Self {
            samples_per_shard: 1000,
        }
    }
}

/// How a run on top of an earlier one decides what to query again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshSection {
    /// Days before the last covered release date that each refresh queries again, to
    /// catch observations the archive lists late.
    pub lookback_days: f64,
    /// Days after which a run queries every proposal again (a full refresh) so that
    /// observations withdrawn from the archive are noticed; 0 turns this off.
    pub full_refresh_every_days: f64,
}

impl Default for RefreshSection {
    fn default() -> Self {
        Self {
            lookback_days: 7.0,
            full_refresh_every_days: 30.0,
        }
    }
}

/// `[retention]`: which versions `paperclip datasets gc` keeps. A version is kept when
/// either rule keeps it, and the latest version always is; with neither rule set, every
/// version is kept. `paperclip run` records the section for gc (see
/// [`crate::dataset::retention`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Keep the newest `keep_last` versions.
    pub keep_last: Option<u64>,
    /// Keep versions created less than `keep_days` days ago.
    pub keep_days: Option<u64>,
}

impl RetentionSection {
    pub fn policy(&self) -> crate::dataset::retention::RetentionPolicy {
        crate::dataset::retention::RetentionPolicy {
            keep_last: self.keep_last,
            keep_days: self.keep_days,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSection {
    /// SQL model files run in order; each file's stem names the view it defines.
    pub models: Vec<PathBuf>,
    /// The model whose rows become the dataset's samples.
    pub samples_model: String,
}

/// `[sources.<name>]`: a CSV, Parquet or newline-delimited JSON file that models read as
/// the table `<name>`. Checked at load time and read by [`crate::sql::sources`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// The data file, relative to the pipeline file.
    pub path: PathBuf,
    pub format: SourceFormat,
    /// Columns in file order. Required for CSV; for Parquet and JSON the file's columns are
    /// checked against it and the table has exactly these columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<SourceColumn>>,
    /// CSV only: whether the first line names the columns (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_header: Option<bool>,
    /// CSV only: the field separator, one ASCII character (default `","`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
}

/// File format of a source table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    Csv,
    Parquet,
    /// Newline-delimited JSON: one object per line.
    Json,
}

/// One declared column of a source table, e.g. `{ name = "class", type = "VARCHAR" }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceColumn {
    pub name: String,
    /// SQL type name, e.g. `BIGINT`, `DOUBLE`, `VARCHAR`, `DATE`.
    #[serde(rename = "type")]
    pub sql_type: String,
}

/// `[schedule]`: when `paperclip serve` refreshes the dataset. Checked at load time by
/// [`crate::schedule::Schedule::from_section`], which also documents the DST rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSection {
    /// Standard 5-field cron expression (minute hour day-of-month month day-of-week),
    /// read in `time_zone`; e.g. `"0 3 * * *"` is 03:00 every day.
    pub cron: Option<String>,
    /// IANA time zone of `cron`, e.g. `"Europe/Berlin"` or `"UTC"`; required with `cron`.
    pub time_zone: Option<String>,
    /// Wait after a failed run before it is tried again.
    pub retry_delay_secs: u64,
    /// Retries of a failed run before the refresh waits for its next due time.
    pub max_retries: u32,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        Self {
            cron: None,
            time_zone: None,
            retry_delay_secs: 600,
            max_retries: 3,
        }
    }
}

impl PipelineConfig {
    /// Reads and validates a pipeline file.
    pub fn load(path: &Path) -> Result<Self, PipelineError> {
        let bytes = std::fs::read(path).map_err(|source| PipelineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes.clone()).map_err(|_| PipelineError::Config {
            path: path.to_path_buf(),
            message: "the file is not valid UTF-8; save it as UTF-8".to_string(),
        })?;
        let mut config: PipelineConfig =
            toml::from_str(&text).map_err(|error| PipelineError::Config {
                path: path.to_path_buf(),
                message: crate::error::suggest_known_field(&error.to_string()),
            })?;

        config.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        config.file_sha256 = hex::encode(Sha256::digest(&bytes));
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), PipelineError> {
        let invalid = |message: String| PipelineError::Config {
            path: path.to_path_buf(),
            message,
        };

        validate_dataset_name(&self.dataset.name).map_err(invalid)?;
        let selection = &self.selection;
        if selection.min_cycle > selection.max_cycle {
            return Err(invalid(format!(
                "selection.min_cycle ({}) is greater than selection.max_cycle ({}); swap them",
                selection.min_cycle, selection.max_cycle
            )));
        }
        if !(0.0..1.0).contains(&selection.val_fraction) {
            return Err(invalid(format!(
                "selection.val_fraction = {} is outside [0, 1); use e.g. 0.1 for 10% of proposals",
                selection.val_fraction
            )));
        }
        let refresh = &self.refresh;
        for (name, days) in [
            ("refresh.lookback_days", refresh.lookback_days),
            (
                "refresh.full_refresh_every_days",
                refresh.full_refresh_every_days,
            ),
        ] {
            if !(0.0..=36_500.0).contains(&days) {
                return Err(invalid(format!(
                    "{name} = {days} is outside 0..=36500 days; use e.g. 7 for lookback_days or 30 for full_refresh_every_days"
                )));
            }
        }
        if selection.max_images_per_proposal == 0 {
            return Err(invalid(
                "selection.max_images_per_proposal = 0 would select nothing; use 1 or more".into(),
            ));
        }
        if !(16..=4096).contains(&self.images.size_px) {
            return Err(invalid(format!(
                "images.size_px = {} is outside 16..=4096",
                self.images.size_px
            )));
        }
        if !(1..=100).contains(&self.images.jpeg_quality) {
            return Err(invalid(format!(
                "images.jpeg_quality = {} is outside 1..=100",
                self.images.jpeg_quality
            )));
        }
        if let Some(ratio) = self.images.max_aspect_ratio
            && (ratio.is_nan() || ratio < 1.0)
        {
            return Err(invalid(format!(
                "images.max_aspect_ratio = {ratio} must be at least 1 (e.g. 3 rejects 150x900 images)"
            )));
        }
        if let Some(threads) = self.images.threads
            && !(1..=MAX_IMAGE_THREADS).contains(&threads)
        {
            return Err(invalid(format!(
                "images.threads = {threads} must be in 1..={MAX_IMAGE_THREADS}; remove it to use one thread per CPU core"
            )));
        }
        self.images
            .stretch
            .parse::<paperclip_images::Stretch>()
            .map_err(|error| invalid(format!("images.stretch: {error}")))?;
        self.validate_captions_and_summaries().map_err(invalid)?;
        if self.shards.samples_per_shard == 0 {
            return Err(invalid(
                "shards.samples_per_shard must be at least 1".into(),
            ));
        }
        let archive = &self.archive;
        let positive = [
            ("archive.request_timeout_secs", archive.request_timeout_secs),
            ("archive.page_size", u64::from(archive.page_size)),
            (
                "archive.proposals_per_query",
                archive.proposals_per_query as u64,
            ),
            (
                "archive.products_batch_size",
                archive.products_batch_size as u64,
            ),
            (
                "archive.download_concurrency",
                archive.download_concurrency as u64,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(format!("{key} = 0 is invalid; use 1 or more")));
            }
        }
        let base_url = url::Url::parse(&archive.base_url).map_err(|e| {
            invalid(format!(
                "archive.base_url = {:?} is not a URL: {e}",
                archive.base_url
            ))
        })?;
        if !["http", "https"].contains(&base_url.scheme()) {
            return Err(invalid(format!(
                "archive.base_url = {:?} must be an http or https URL",
                archive.base_url
            )));
        }
        if archive.catalog.trim().is_empty() {
            return Err(invalid(
                "archive.catalog is empty; give the abstracts.cat URL or a path relative to the pipeline file".into(),
            ));
        }
        if let Some(schedule) = &self.schedule {
            crate::schedule::Schedule::from_section(schedule)
                .map_err(|error| invalid(error.to_string()))?;
        }
        crate::sql::sources::check_sources(self).map_err(invalid)?;
        self.retention
            .policy()
            .check(crate::dataset::retention::Spelling::PipelineFile)
            .map_err(invalid)?;
        self.validate_models().map_err(invalid)
    }

    /// Checks the caption form and, when enabled, the summaries settings.
    fn validate_captions_and_summaries(&self) -> Result<(), String> {
        let summaries = &self.summaries;
        if self.captions.form == SUMMARY_CAPTION_FORM {
            if !summaries.enabled {
                return Err(
                    "captions.form = \"summary\" needs summaries; add [summaries] with enabled = true (the in-process model by default, or server_url for a model server), or use form = \"paper\"".into(),
                );
            }
        } else if self
            .captions
            .form
            .parse::<paperclip_catalog::caption::CaptionForm>()
            .is_err()
        {
            return Err(format!(
                "captions.form = {:?} is unknown; use \"paper\", \"clean\" or \"summary\"",
                self.captions.form
            ));
        }
        if summaries.enabled {
            summaries.check()?;
            self.summary_prompt()?;
        }
        Ok(())
    }

    /// Returns the prompt template of `[summaries]`: the `prompt` file, else the built-in one.
    pub fn summary_prompt(&self) -> Result<crate::summaries::prompt::PromptTemplate, String> {
        use crate::summaries::prompt::PromptTemplate;
        let Some(path) = &self.summaries.prompt else {
            return Ok(PromptTemplate::current());
        };
        let full = self.resolve(path);
        let text = std::fs::read_to_string(&full).map_err(|e| {
            format!(
                "summaries.prompt = {:?}: cannot read {} ({e}); give a UTF-8 text file relative to the pipeline file",
                path.display().to_string(),
                full.display()
            )
        })?;
        PromptTemplate::parse(&path.display().to_string(), &text)
            .map_err(|e| format!("summaries.prompt = {:?}: {e}", path.display().to_string()))
    }

    /// Returns the GGUF file of the `local` summary backend, resolved against the pipeline
    /// file.
    pub fn summary_model_path(&self) -> PathBuf {
        match &self.summaries.model_path {
            Some(path) => self.resolve(path),
            None => default_model_path(),
        }
    }

    /// Checks that every model file exists and that `samples_model` names one of them.
    fn validate_models(&self) -> Result<(), String> {
        if self.sql.models.is_empty() {
            return Err("sql.models is empty; list at least one SQL file".into());
        }
        let mut names = Vec::new();
        for model in &self.sql.models {
            let path = self.resolve(model);
            if !path.is_file() {
                return Err(format!(
                    "sql.models lists {}, which resolves to {}, a file that does not exist; paths are relative to the pipeline file",
                    model.display(),
                    path.display()
                ));
            }
            let name = crate::sql::model_name(&path).map_err(|e| e.to_string())?;
            if super::tables::INPUT_TABLES.contains(&name.as_str()) {
                return Err(format!(
                    "sql.models lists {}, whose name {name} is an input table; rename the file",
                    model.display()
                ));
            }
            if names.contains(&name) {
                return Err(format!(
                    "sql.models lists two models named {name}; each model needs its own file name"
                ));
            }
            names.push(name);
        }
        let paths: Vec<PathBuf> = self.sql.models.iter().map(|m| self.resolve(m)).collect();
        crate::sql::graph::load_models(&paths, &crate::sql::sources::input_tables(self))
            .map_err(|e| e.to_string())?;
        if !names.contains(&self.sql.samples_model) {
            return Err(format!(
                "sql.samples_model = {:?} is not one of the models ({}); use the file stem of the model that returns the samples",
                self.sql.samples_model,
                names.join(", ")
            ));
        }
        Ok(())
    }

    /// Resolves a path written in the pipeline file against the file's directory.
    pub fn resolve(&self, relative: &Path) -> PathBuf {
        if relative.is_absolute() {
            relative.to_path_buf()
        } else {
            self.base_dir.join(relative)
        }
    }
}

/// Checks that a dataset name is usable as a directory name and a quoted SQL identifier.
pub fn validate_dataset_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "dataset name {name:?} is invalid; use 1-64 characters a-z, 0-9, '-' or '_', starting with a letter"
        ))
    }
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod summaries_tests;
#[cfg(test)]
mod tests;
