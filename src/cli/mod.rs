//! Command-line interface: argument parsing, logging set-up, progress bars and output.
//! Everything else lives in the library; this layer only translates.

mod cluster;
mod commands;
mod eval;
mod gc;
mod judge;
mod llm;
mod progress;
mod runs;
mod serve;
mod sql_shell;
mod summarize;
mod train;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use paperclip::sql::engine::Engine;

/// Build versioned, SQL-queryable image-text datasets from telescope archives.
#[derive(Debug, Parser)]
#[command(name = "paperclip", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Directory holding downloads, prepared images, datasets and run records.
    #[arg(
        long,
        global = true,
        env = "PAPERCLIP_DATA_DIR",
        default_value = "paperclip-data"
    )]
    pub data_dir: PathBuf,
    /// Log level for developer logs on stderr (error, warn, info, debug, trace);
    /// `RUST_LOG` overrides it.
    #[arg(long, global = true, default_value = "warn")]
    pub log_level: String,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline and publish a new dataset version when its samples changed.
    Run(RunCommandArgs),
    /// Show what `run` would do and why, without downloading or publishing anything.
    ///
    /// Lists the stale stages with the inputs that changed, the archive queries, the
    /// downloads and preparations, and the version a run would publish.
    Plan(PlanArgs),
    /// Serve or build local archive snapshots.
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// List and inspect published datasets.
    #[command(subcommand)]
    Datasets(DatasetsCommand),
    /// Run SQL over every dataset version (`"<dataset>".<latest|vN>.samples`): one query,
    /// a script on standard input, or an interactive shell.
    Sql(SqlArgs),
    /// Run pipelines whenever their `[schedule]` comes due, until Ctrl-C or SIGTERM.
    ///
    /// Runs in the foreground and prints one line per start, finish, failure, retry, skip
    /// and wait (one JSON object per line with `--json`).
    Serve(ServePipelinesArgs),
    /// Run a process of an Apache Ballista cluster, for `run --engine ballista://HOST:PORT`.
    ///
    /// Start one scheduler and any number of executors. Each has paperclip's SQL functions
    /// and opens object stores with the credentials of its own environment. Ballista has no
    /// authentication, so keep these processes on loopback or a private network.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// List and inspect run records (runs that failed included).
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Summarize a catalog's abstracts with a language model, through the cache.
    ///
    /// Each abstract goes to a GGUF model run in this process (the default) or, with
    /// --server, to an OpenAI-compatible chat completions server, under the summary schema.
    /// Every output is checked, and every outcome is stored in the summary cache under the
    /// data directory, so a second run requests only what failed.
    /// Exits with status 1 when a proposal is left without a summary.
    Summarize(SummarizeArgs),
    /// Fine-tune CLIP on a published dataset version, as a training config file says.
    ///
    /// Writes checkpoints (Hugging Face model folders plus optimizer state) and a run record
    /// under <data dir>/training/<run id>/; `paperclip sql` shows them as
    /// paperclip.training_runs and paperclip.training_metrics.
    Train(TrainArgs),
    /// Score CLIP checkpoints on a dataset split: retrieval metrics, histograms and plots.
    ///
    /// Give one checkpoint, or two to compare them (a base model and a fine-tuned one).
    /// Writes eval.json, eval.md, report.html and the plots to --out (default
    /// <data dir>/evaluations/<dataset>-v<N>-<split>-<time>/) and prints the table.
    /// docs/evaluation.md defines every metric.
    Eval(EvalArgs),
    /// Write the image and caption embeddings of a dataset version to a Parquet table.
    ///
    /// The table, <data dir>/embeddings/<dataset>/v<N>/<weights hash>.parquet, contains the
    /// sample keys, proposal, target and caption next to both embeddings, and records the
    /// checkpoint, so `paperclip search` embeds its queries with the same model.
    Embed(EmbedArgs),
    /// Find the images nearest to a text query in a dataset version's embeddings.
    ///
    /// Exact search by cosine similarity over the table `paperclip embed` wrote. Prints
    /// rank, similarity, key, proposal, target and caption; --html writes a gallery.
    Search(SearchArgs),
    /// Score text-to-image retrieval with a language model as the judge of relevance.
    ///
    /// For each query (by default the ten of the PAPERCLIP paper), the judge gets the best
    /// k images of the split under each --checkpoint, embedded afresh without an `embed`
    /// table. It also gets the best k samples by TF-IDF similarity of their abstracts. It reads
    /// each image's proposal abstract and decides whether the observations could be
    /// relevant to the query. A method's score is the fraction of its judged pairs found
    /// relevant. Use an instruction-tuned judge (--server or --model-path): the default
    /// Gemma 3 270M base model of the tests cannot judge relevance. Writes the JSON report
    /// to --out (default <data dir>/evaluations/judge-<dataset>-v<N>-<time>.json) and
    /// Markdown next to it, and prints the tables. Exits with status 1 when a pair is left
    /// unjudged.
    Judge(JudgeArgs),
}

/// Settings `eval` and `embed` use to run a checkpoint.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// CLIP vocabulary (bpe_simple_vocab_16e6.txt.gz or merges.txt); by default found
    /// next to the weights, in the training run's settings or in the paperclip cache.
    #[arg(long, value_name = "FILE")]
    pub vocabulary: Option<PathBuf>,
    /// Resize the stored images to this side before the centre crop; by default the
    /// training run's training.resize_px, else no resize.
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u64).range(1..=8192))]
    pub resize_px: Option<u64>,
    /// Pairs per forward pass.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch_size: u64,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Checkpoint: a model folder, a safetensors file or a Hugging Face hub name in the
    /// local cache.
    #[arg(long, value_name = "CHECKPOINT")]
    pub checkpoint: String,
    /// Dataset version to embed, `NAME` (latest) or `NAME@N`.
    #[arg(long, value_name = "NAME[@N]")]
    pub dataset: String,
    /// Split to embed; repeat for several. Default: every split.
    #[arg(long)]
    pub split: Vec<String>,
    /// Sample field embedded as the caption.
    #[arg(long, default_value = "caption")]
    pub caption_field: String,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The text to search for, for example "strong lensing".
    pub query: String,
    /// Dataset version to search, `NAME` (latest) or `NAME@N`.
    #[arg(long, value_name = "NAME[@N]")]
    pub dataset: String,
    /// Number of images to return.
    #[arg(short, long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=10000))]
    pub k: u64,
    /// Use the embeddings of this checkpoint when the version has several tables.
    #[arg(long, value_name = "CHECKPOINT")]
    pub checkpoint: Option<String>,
    /// Only search images of this split.
    #[arg(long)]
    pub split: Option<String>,
    /// Also write an HTML gallery of the hits with thumbnails to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// The checkpoints `eval` and `judge` compare, with their names in the report.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// Checkpoint: a model folder (config.json and model.safetensors), a safetensors file
    /// or a Hugging Face hub name in the local cache. Repeat it to compare models, for
    /// example the base model and a fine-tuned checkpoint. `judge` also runs with none,
    /// for its TF-IDF baseline alone.
    #[arg(long, value_name = "CHECKPOINT", num_args = 1)]
    pub checkpoint: Vec<String>,
    /// Name of each checkpoint in the report, in the order of --checkpoint.
    #[arg(long, value_name = "NAME")]
    pub label: Vec<String>,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub checkpoints: CheckpointArgs,
    /// Dataset version to score, `NAME` (latest) or `NAME@N`.
    #[arg(long, value_name = "NAME[@N]")]
    pub dataset: String,
    /// Split to score.
    #[arg(long, default_value = "val")]
    pub split: String,
    /// Sample field used as the caption, for example `caption` or a summary field.
    #[arg(long, default_value = "caption")]
    pub caption_field: String,
    /// Folder for the report files.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Seed of the in-batch order, the shuffled pairs and the example images.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Label file of the description retrieval, one label per line; by default the
    /// paper's 77 labels (configs/labels/paperclip.txt).
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Example images shown with their best labels in the report.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub examples: u64,
}

#[derive(Debug, Args)]
pub struct JudgeArgs {
    #[command(flatten)]
    pub checkpoints: CheckpointArgs,
    /// Dataset version to retrieve from, `NAME` (latest) or `NAME@N`.
    #[arg(long, value_name = "NAME[@N]")]
    pub dataset: String,
    /// Split to retrieve from.
    #[arg(long, default_value = "val")]
    pub split: String,
    /// Sample field holding the proposal abstract that the judge reads and TF-IDF ranks.
    #[arg(long, default_value = "caption_paper")]
    pub abstract_field: String,
    /// Query file, one query per line, `#` starting a comment; by default the ten queries
    /// of the PAPERCLIP relevance test.
    #[arg(long, value_name = "FILE")]
    pub queries: Option<PathBuf>,
    /// Images retrieved and judged per query and method.
    #[arg(short, long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub k: u64,
    /// Leave out the TF-IDF baseline, which ranks the samples by their abstracts alone.
    #[arg(long)]
    pub no_tfidf: bool,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub llm: LlmArgs,
    /// Seed sent with each judge request. Decoding is greedy, so it matters only to
    /// servers that sample anyway.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// JSON report file; the Markdown report goes next to it with the extension .md.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training config (TOML), for example configs/paperclip-vit-b16.toml.
    pub config: PathBuf,
    /// Dataset to train on, `NAME` or `NAME@N`, instead of the config's data.dataset.
    #[arg(long, value_name = "NAME[@N]")]
    pub dataset: Option<String>,
    /// Total steps instead of the config's training.steps.
    #[arg(long, value_name = "N")]
    pub steps: Option<u64>,
    /// Continue a run from one of its checkpoint folders, at that checkpoint's step.
    #[arg(long, value_name = "CHECKPOINT_DIR")]
    pub resume: Option<PathBuf>,
    /// Stop after this step; the run stays resumable with --resume.
    #[arg(long, value_name = "STEP", value_parser = clap::value_parser!(u64).range(1..))]
    pub stop_after: Option<u64>,
}

#[derive(Debug, Args)]
pub struct SummarizeArgs {
    /// Proposal catalog in STScI's abstracts.cat format, or one Phase II `.pro` file.
    #[arg(long, value_name = "FILE")]
    pub catalog: PathBuf,
    #[command(flatten)]
    pub llm: LlmArgs,
    /// Prompt template file with `{{abstract}}` once; defaults to the built-in
    /// prompts/summary-v1.txt (the paper's prompt).
    #[arg(long, value_name = "FILE")]
    pub prompt: Option<PathBuf>,
    /// Summarize only the first N proposals of the catalog.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Requests per abstract before its outcome is recorded as rejected or failed.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub max_attempts: u32,
    /// Sampling temperature; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Seed of the server's sampler.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// The language model of `summarize` and `judge`: a GGUF model run in this process, or an
/// OpenAI-compatible server.
#[derive(Debug, Args)]
pub struct LlmArgs {
    /// Backend: `local` runs a GGUF model in this process, `http` calls an
    /// OpenAI-compatible server. Defaults to `http` when --server is given, else `local`.
    #[arg(long, value_parser = ["local", "http"])]
    pub backend: Option<String>,
    /// GGUF model file of the local backend; defaults to where
    /// tools/fetch-summary-model.sh puts Gemma 3 270M.
    #[arg(long, value_name = "FILE")]
    pub model_path: Option<PathBuf>,
    /// CPU threads of the local backend; defaults to every core.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub threads: Option<u64>,
    /// Root URL of the server, e.g. http://127.0.0.1:8080 for llama-server.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Model name sent with each request; llama-server ignores it, vLLM and Ollama need it.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub model: String,
    /// Name of the environment variable that contains the server's API key.
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// Requests in flight at once; match the server's parallel slots.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub concurrency: u64,
    /// Maximum time one request may take, generation included, in seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,
}

/// Largest SQL memory limit accepted, in MiB (1 PiB).
const MAX_SQL_MEMORY_MIB: u64 = 1 << 30;

/// The password variable `serve` reads unless `--sql-password-env` names another.
pub const DEFAULT_SQL_PASSWORD_ENV: &str = "PAPERCLIP_SQL_PASSWORD";

#[derive(Debug, Args)]
pub struct ServePipelinesArgs {
    /// Pipeline files (TOML), each with a `[schedule]` section.
    #[arg(required_unless_present = "sql_listen")]
    pub pipelines: Vec<PathBuf>,
    /// Also serve the SQL catalog over the PostgreSQL protocol, read-only, at this
    /// address; 127.0.0.1:5433 when given without one (`psql -h 127.0.0.1 -p 5433`). An
    /// address other than loopback is reachable from other machines.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        num_args = 0..=1,
        default_missing_value = "127.0.0.1:5433"
    )]
    pub sql_listen: Option<std::net::SocketAddr>,
    /// Serve the versions uploaded to this object store URL (a pipeline's `storage.url`)
    /// instead of the data directory's. Credentials come from the environment.
    #[arg(long, value_name = "URL", requires = "sql_listen")]
    pub sql_storage: Option<String>,
    /// Most SQL connections at once; 0 for no limit.
    #[arg(long, default_value_t = 64)]
    pub sql_max_connections: usize,
    /// Memory one SQL query may hold, in MiB; a query that needs more fails with an
    /// error naming this limit.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(16..=MAX_SQL_MEMORY_MIB))]
    pub sql_memory_limit_mib: u64,
    /// Memory all running SQL queries may hold together, in MiB; at least
    /// --sql-memory-limit-mib.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(16..=MAX_SQL_MEMORY_MIB))]
    pub sql_memory_total_mib: u64,
    /// Maximum time an SQL query may take, rows included, in seconds; 0 for no limit.
    /// A query that takes longer fails with SQLSTATE 57014.
    #[arg(long, default_value_t = 300)]
    pub sql_query_timeout_secs: u64,
    /// User name SQL clients log in with when a password is set.
    #[arg(long, default_value = "analyst")]
    pub sql_user: String,
    /// PEM certificate chain for TLS on the SQL server; give --sql-tls-key with it.
    #[arg(long, value_name = "FILE", requires = "sql_tls_key")]
    pub sql_tls_cert: Option<PathBuf>,
    /// PKCS#8 private key (BEGIN PRIVATE KEY) of --sql-tls-cert.
    #[arg(long, value_name = "FILE", requires = "sql_tls_cert")]
    pub sql_tls_key: Option<PathBuf>,
    /// Name of the environment variable that contains the SQL password (SCRAM-SHA-256).
    /// Without it, any client may connect, which is allowed on loopback only. A variable
    /// that this flag names but that is not set, or a password variable set but empty, is
    /// an error.
    #[arg(long, value_name = "VAR", default_value = DEFAULT_SQL_PASSWORD_ENV)]
    pub sql_password_env: String,
    /// Archive base URL replacing every pipeline's, or `embedded` for the built-in fixture
    /// archive on loopback (started once for the whole serve).
    #[arg(long)]
    pub archive: Option<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start a scheduler, which plans the queries of clients and hands tasks to executors.
    /// Runs until Ctrl-C or SIGTERM.
    Scheduler(SchedulerArgs),
    /// Start an executor, which runs the tasks its scheduler hands it. Runs until Ctrl-C or
    /// SIGTERM.
    Executor(ExecutorArgs),
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on; an address other than loopback is reachable from other
    /// machines.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:50050")]
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler to serve.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
    pub scheduler: String,
    /// Address of the executor's data service (Arrow Flight), from which other executors
    /// and clients fetch results; other than loopback, other machines can reach it.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:50051")]
    pub listen: std::net::SocketAddr,
    /// Port of the executor's task service, on the --listen address.
    #[arg(long, default_value_t = 50052)]
    pub grpc_port: u16,
    /// Folder for shuffle files; a new temporary folder when not given.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Tasks to run at once; the number of CPU cores when not given.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrent_tasks: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List run records, newest first: run id, dataset, status, start time, elapsed time
    /// and error.
    List {
        /// Only the runs of this dataset.
        #[arg(long)]
        dataset: Option<String>,
        /// Show at most this many runs.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Show one run record: status, error, counts and skipped items by reason.
    Show {
        /// Run id, as `runs list` prints it.
        run_id: String,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Pipeline file (TOML).
    pub pipeline: PathBuf,
    /// Archive base URL replacing the pipeline's, e.g. http://127.0.0.1:8765 for
    /// `paperclip archive serve`; `embedded` starts a built-in fixture archive on loopback.
    #[arg(long)]
    pub archive: Option<String>,
    /// Query every proposal's observations again instead of only what was released since
    /// the last run, so observations withdrawn from the archive are noticed.
    #[arg(long)]
    pub full_refresh: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct EngineArgs {
    /// The engine of the SQL models: `local` (this process) or ballista://HOST:PORT, the
    /// scheduler of an Apache Ballista cluster started with `paperclip cluster`. On
    /// Ballista the input tables are staged under `[storage]`'s object store, or under the
    /// data directory when the pipeline has none (then every executor must share it).
    #[arg(
        long,
        env = "PAPERCLIP_ENGINE",
        default_value = "local",
        value_name = "ENGINE"
    )]
    pub engine: String,
}

impl EngineArgs {
    /// Reads `--engine`. Parsed here rather than by clap, whose message would repeat the
    /// whole value, password included.
    pub(crate) fn parse(&self) -> anyhow::Result<Engine> {
        self.engine.parse().map_err(anyhow::Error::msg)
    }
}

#[derive(Debug, Args)]
pub struct RunCommandArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Run exactly a plan saved by `paperclip plan --out FILE`: the same release window,
    /// and an error instead of a run when the pipeline file, the latest version or any
    /// stage input changed since.
    #[arg(long, value_name = "FILE", conflicts_with = "full_refresh")]
    pub plan: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Also write the plan as JSON to FILE, for `paperclip run --plan FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Serve a snapshot directory through the MAST Portal API shapes the client uses.
    Serve(ServeArgs),
    /// Build a snapshot from a catalog, recorded MAST responses and image files.
    Snapshot(SnapshotArgs),
    /// Write the built-in fixture snapshot (synthetic proposals and sky images).
    Fixtures(FixturesArgs),
    /// Write a synthetic archive of any size for benchmarks: sky previews of 512 to 4,500
    /// pixels, greyscale and colour, and optionally FITS files.
    Synth(SynthArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Snapshot directory.
    pub dir: PathBuf,
    /// Address to bind; keep 127.0.0.1 unless other machines must reach it.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// TCP port; 0 picks a free one.
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// Delay before each response, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Maximum rate of each download, in megabytes per second; unlimited when absent.
    #[arg(long)]
    pub bandwidth_mb_per_sec: Option<f64>,
    /// Share of requests (0 to 1) that get HTTP 503 instead of their response, drawn at random.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Seed of the random failures; the same seed fails the same requests.
    #[arg(long, default_value_t = 0)]
    pub error_seed: u64,
    /// Send each download's full Content-Length, then close the connection after this
    /// many bytes of the body.
    #[arg(long, value_name = "BYTES")]
    pub cut_downloads_after_bytes: Option<u64>,
    /// Cut only the first N downloads, so that retries get the whole file. Without it,
    /// every download is cut.
    #[arg(long, value_name = "N", requires = "cut_downloads_after_bytes")]
    pub cut_downloads_first: Option<u32>,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Output directory (created; must be empty or absent).
    pub out: PathBuf,
    /// Proposal catalog in STScI's abstracts.cat format.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Recorded MAST response (Mast.Caom.Filtered or Mast.Caom.Products envelope); repeatable.
    #[arg(long = "recorded")]
    pub recorded: Vec<PathBuf>,
    /// Directory scanned recursively for FITS and HAP preview files; repeatable.
    #[arg(long = "images")]
    pub images: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FixturesArgs {
    /// Output directory (created; must be empty or absent).
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output directory (created; must be empty or absent).
    pub out: PathBuf,
    /// Number of proposals in the catalog.
    #[arg(long, default_value_t = 100)]
    pub proposals: usize,
    /// Preview JPEGs per proposal, one observation each (at most 999).
    #[arg(long, default_value_t = 10)]
    pub previews_per_proposal: usize,
    /// Seed of every random choice; the same seed writes the same archive.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Smallest preview side in pixels.
    #[arg(long, default_value_t = 512)]
    pub min_side_px: u32,
    /// Largest preview side in pixels; sides are drawn log-uniformly in between.
    #[arg(long, default_value_t = 4500)]
    pub max_side_px: u32,
    /// Share of previews in colour (0 to 1); the others are greyscale.
    #[arg(long, default_value_t = 0.5)]
    pub colour_fraction: f64,
    /// FITS files (256 x 256) per proposal.
    #[arg(long, default_value_t = 0)]
    pub fits_per_proposal: usize,
    /// JPEG quality of the previews (1 to 100); 75 is the quality of MAST's HAP previews.
    #[arg(long, default_value_t = 75, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: u8,
}

#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// List datasets and their latest version.
    List,
    /// Show a dataset's versions with counts and shards.
    Show {
        /// Dataset name.
        name: String,
    },
    /// Compare two versions: samples added, removed and changed, per split and proposal.
    Diff {
        /// Dataset name.
        name: String,
        /// Older version: `vN`, `N` or `latest`.
        from: String,
        /// Newer version: `vN`, `N` or `latest`.
        to: String,
    },
    /// Check every version's shards against its manifest (presence, size, SHA-256, samples)
    /// and its row count against the Delta table.
    Verify {
        /// Dataset name.
        name: String,
    },
    /// Remove the versions the retention policy expires (their shards, Delta data files and
    /// log entries); the kept versions stay readable. The policy is the pipeline's
    /// `[retention]` section, recorded by its last run, unless a flag is given.
    Gc {
        /// Dataset name.
        name: String,
        /// Print what would be removed and the bytes it would free; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep the newest N versions. With this flag or --keep-days, the flags are the whole
        /// policy and the recorded one is ignored.
        #[arg(long, value_name = "N")]
        keep_last: Option<u64>,
        /// Keep versions created less than D days ago.
        #[arg(long, value_name = "D")]
        keep_days: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// SQL query. Without one, statements are read from standard input: an interactive
    /// shell with history on a terminal, a script of `;`-separated statements otherwise.
    pub query: Option<String>,
    /// Query the versions uploaded to this object store URL (a pipeline's `storage.url`,
    /// e.g. s3://bucket/prefix) instead of the data directory. Credentials come from the
    /// environment, as for runs.
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
}

/// Parses arguments, runs the command and returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let json = cli.global.json;
    if let Err(message) = init_logging(&cli.global.log_level) {
        return report_error(&anyhow::anyhow!(message), json);
    }

    // Ballista plans are encoded and decoded recursively, and the scheduler overflowed the
    // default 2 MiB thread stack on the pipeline's models. Ballista's own scheduler binary
    // sets the same 32 MiB. The size is reserved, not committed.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK_BYTES)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            return report_error(
                &anyhow::anyhow!("cannot start the async runtime: {error}"),
                json,
            );
        }
    };
    let outcome = runtime.block_on(commands::dispatch(cli));
    // Tasks still running when the command is done (an SQL query a client left behind, a
    // download cut short) get a moment to finish, then the process exits regardless.
    runtime.shutdown_timeout(std::time::Duration::from_secs(SHUTDOWN_GRACE_SECS));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) if is_broken_pipe(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => report_error(&error, json),
    }
}

/// Stack of each runtime thread.
const THREAD_STACK_BYTES: usize = 32 * 1024 * 1024;

/// Seconds the runtime waits for tasks left running when a command is done.
const SHUTDOWN_GRACE_SECS: u64 = 5;

/// Prints an error on stderr, and with `--json` as `{"error": ...}` on stdout unless the
/// command already printed its JSON result there, so stdout is always one JSON document.
fn report_error(error: &anyhow::Error, json: bool) -> std::process::ExitCode {
    let message = error_message(error);
    eprintln!("error: {message}");
    if json && !commands::stdout_written() {
        println!("{}", serde_json::json!({ "error": message }));
    }
    std::process::ExitCode::FAILURE
}

/// Joins an error's chain, leaving out causes whose text the previous message already
/// contains (library errors often include their source in their own message).
fn error_message(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// Returns true when the error is a closed stdout (`paperclip sql ... | head`), which ends
/// the command quietly.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_logging(level: &str) -> Result<(), String> {
    use std::io::IsTerminal;

    let filter = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => {
            let valid = ["error", "warn", "info", "debug", "trace", "off"];
            if !valid.contains(&level) {
                return Err(format!(
                    "--log-level {level:?} is invalid; use one of {}",
                    valid.join(", ")
                ));
            }
            tracing_subscriber::EnvFilter::new(level)
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}
