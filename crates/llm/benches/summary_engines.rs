//! Side-by-side benchmark of the two summary engines on real abstracts: the in-process
//! Gemma 3 engine ([`Engine`]) and llama.cpp's `llama-server` in its `json_schema` mode,
//! with the same GGUF file, thread count, prompts and greedy sampling.
//!
//! For each abstract the two engines take turns going first. Each request records its wall
//! time (prompt processing included), prompt and output tokens, and whether the output is a
//! valid summary. The grammar's cost per output token is measured as follows:
//! - in-process: `grammar_wait_secs / output_tokens` from [`GenerationStats`] (the grammar
//!   time the decoder waited for; with a spare core the masks overlap the model), also as
//!   a share of one step, `(decode_secs + sampling_secs + grammar_wait_secs) / forwards`;
//! - llama-server: `predicted_ms / predicted_n` of the constrained request minus that of
//!   an unconstrained `/completion` of the same templated prompt for the same number of
//!   tokens (`ignore_eos`), also as a share of the unconstrained time per token.
//!
//! Run it through `benches/summaries.sh`, which records the machine first, or with
//! `cargo bench -p paperclip-llm --bench summary_engines -- --abstracts FILE`. `--help`
//! lists the options. Only 127.0.0.1 is contacted. Without the `--bench` argument that
//! `cargo bench` passes (as under `cargo test --benches`), it prints "skipping" and exits.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use paperclip_llm::{
    DEFAULT_MAX_POSITIONS, Engine, GenerationStats, Sampling, Stop, string_slices,
};
use serde_json::{Value, json};

const USAGE: &str = "\
usage: cargo bench -p paperclip-llm --bench summary_engines -- [OPTIONS]

  --abstracts PATH     abstracts file, one `Category: X.  <abstract>` per line
                       (or PAPERCLIP_ABSTRACTS); required
  --count N            number of abstracts, from the top of the file (default 20)
  --threads N          CPU threads of each engine (default 2)
  --model PATH         GGUF model (or PAPERCLIP_GGUF; default
                       ~/.cache/paperclip/models/gemma-3-270m-q4_k_m.gguf)
  --llama-server PATH  llama-server binary (or PAPERCLIP_LLAMA_SERVER; default
                       ~/.cache/paperclip/llama-server/0.3.36/llama-server)
  --prompt PATH        prompt template with one {{abstract}} (default: the repository's
                       prompts/summary-v1.txt)
  --schema PATH        JSON Schema of a summary (default: the repository's
                       schemas/summary.schema.json)
  --max-tokens N       output token limit of each request (default 4800)
  --warmup N           untimed requests per engine before the measured ones, on the first
                       abstract (default 1)
  --json PATH          also write the runs and the summary table to PATH as JSON

PAPERCLIP_CACHE replaces ~/.cache/paperclip in the defaults.";

/// The placeholder of the prompt template that the abstract replaces.
const ABSTRACT_PLACEHOLDER: &str = "{{abstract}}";
/// The two keys of a summary, as `schemas/summary.schema.json` requires them.
const SUMMARY_KEYS: [&str; 2] = ["objects_and_phenomena", "science_use_cases"];
/// Context of the llama-server slot, in tokens. The prompts of the 112 catalog abstracts
/// are 458 to 827 tokens long, so at least 3,200 tokens remain for the output.
// NOTE: with the default `--max-tokens 4800`, the slot's context runs out first. A runaway
// llama-server output would end there, not at 4,800 tokens; no run so far came close.
const SERVER_CONTEXT: usize = 4096;
/// Maximum wait for llama-server's `/health` after start.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(120);
/// Read timeout of one HTTP exchange. A request that runs to `--max-tokens` on a busy
/// machine can take many minutes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1800);
/// Pause between requests. Worker threads of both engines busy-wait for a while after
/// their work ends (rayon, and llama-server's `--poll 50` default), and the pause keeps
/// that from overlapping the next request.
const SETTLE: Duration = Duration::from_millis(250);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|arg| arg == "--bench") {
        println!("skipping: summary_engines runs only under `cargo bench`");
        return ExitCode::SUCCESS;
    }
    let options = match parse_options(&args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message} (--help lists the options)");
            return ExitCode::from(2);
        }
    };
    match run_benchmark(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// Options

struct Options {
    abstracts: PathBuf,
    count: usize,
    threads: usize,
    model: PathBuf,
    server: PathBuf,
    prompt: PathBuf,
    schema: PathBuf,
    max_tokens: usize,
    warmup: usize,
    json: Option<PathBuf>,
}

/// Parses the command line, with environment variables and defaults below it. Returns
/// `None` for `--help`.
fn parse_options(args: &[String]) -> Result<Option<Options>, String> {
    let cache = cache_dir();
    let repo_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let repo_root = repo_root.canonicalize().unwrap_or(repo_root);
    let mut abstracts = std::env::var_os("PAPERCLIP_ABSTRACTS").map(PathBuf::from);
    let mut model = std::env::var_os("PAPERCLIP_GGUF")
        .map(PathBuf::from)
        .or_else(|| {
            cache
                .as_ref()
                .map(|c| c.join("models/gemma-3-270m-q4_k_m.gguf"))
        });
    let mut server = std::env::var_os("PAPERCLIP_LLAMA_SERVER")
        .map(PathBuf::from)
        .or_else(|| {
            cache
                .as_ref()
                .map(|c| c.join("llama-server/0.3.36/llama-server"))
        });
    let mut options = Options {
        abstracts: PathBuf::new(),
        count: 20,
        threads: 2,
        model: PathBuf::new(),
        server: PathBuf::new(),
        prompt: repo_root.join("prompts/summary-v1.txt"),
        schema: repo_root.join("schemas/summary.schema.json"),
        max_tokens: 4800,
        warmup: 1,
        json: None,
    };

    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (name, inline_value) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline_value
                .clone()
                .or_else(|| iter.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name {
            "--bench" => {}
            "-h" | "--help" => return Ok(None),
            "--abstracts" => abstracts = Some(PathBuf::from(value()?)),
            "--count" => options.count = parse_positive(name, &value()?)?,
            "--threads" => options.threads = parse_positive(name, &value()?)?,
            "--model" => model = Some(PathBuf::from(value()?)),
            "--llama-server" => server = Some(PathBuf::from(value()?)),
            "--prompt" => options.prompt = PathBuf::from(value()?),
            "--schema" => options.schema = PathBuf::from(value()?),
            "--max-tokens" => options.max_tokens = parse_positive(name, &value()?)?,
            "--warmup" => {
                let text = value()?;
                options.warmup = text
                    .parse()
                    .map_err(|_| format!("--warmup {text:?} is not a whole number"))?;
            }
            "--json" => options.json = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }

    options.abstracts =
        abstracts.ok_or("no abstracts file: pass --abstracts PATH or set PAPERCLIP_ABSTRACTS")?;
    options.model =
        model.ok_or("no model path: pass --model PATH, set PAPERCLIP_GGUF or set HOME")?;
    options.server = server.ok_or(
        "no llama-server path: pass --llama-server PATH, set PAPERCLIP_LLAMA_SERVER or set HOME",
    )?;
    for (what, path) in [
        ("abstracts file", &options.abstracts),
        ("model", &options.model),
        ("llama-server", &options.server),
        ("prompt template", &options.prompt),
        ("schema", &options.schema),
    ] {
        if !path.is_file() {
            return Err(format!("{what} not found: {}", path.display()));
        }
    }
    Ok(Some(options))
}

fn parse_positive(name: &str, text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{name} {text:?} is not a positive whole number")),
    }
}

/// `$PAPERCLIP_CACHE`, else `~/.cache/paperclip`, as in `tools/build-llama-server.sh`.
fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PAPERCLIP_CACHE") {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/paperclip"))
}

/// Reads the first `count` abstracts, each line without its `Category: X.  ` prefix.
fn read_abstracts(path: &Path, count: usize) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("failed to read abstracts file {}: {e}", path.display()))?;
    let mut abstracts = Vec::with_capacity(count);
    for (index, line) in text.lines().enumerate() {
        if abstracts.len() == count {
            break;
        }
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let abstract_text = line
            .split_once(".  ")
            .filter(|(prefix, _)| prefix.starts_with("Category: "))
            .map(|(_, rest)| rest)
            .ok_or_else(|| {
                format!(
                    "{} line {}: expected `Category: X.  <abstract>`",
                    path.display(),
                    index + 1
                )
            })?;
        abstracts.push(abstract_text.to_string());
    }
    if abstracts.len() < count {
        return Err(format!(
            "{} has {} abstracts, fewer than --count {count}",
            path.display(),
            abstracts.len()
        ));
    }
    Ok(abstracts)
}

fn read_template(path: &Path) -> Result<String, String> {
    let template = std::fs::read_to_string(path)
        .map_err(|e| format!("failed to read prompt template {}: {e}", path.display()))?;
    match template.matches(ABSTRACT_PLACEHOLDER).count() {
        1 => Ok(template),
        n => Err(format!(
            "prompt template {} contains {ABSTRACT_PLACEHOLDER} {n} times, expected once",
            path.display()
        )),
    }
}

fn read_schema(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("failed to read schema {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("schema {} is not JSON: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// llama-server

/// A `llama-server` child process, killed by its PID when dropped, also on panic.
struct LlamaServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl LlamaServer {
    /// Starts the server on a free loopback port and waits for `/health`.
    ///
    /// `--no-jinja --chat-template gemma` selects llama.cpp's built-in Gemma turn format,
    /// the one [`Engine::chat_prompt`] writes. The Gemma 3 270M base GGUF carries no chat
    /// template, and without one llama-server (commit 0c1e570) falls back to ChatML
    /// (`<|im_start|>user`). With Jinja on, its default, the server reads `gemma` as the
    /// template text itself.
    ///
    /// That template trims the message and [`Engine::chat_prompt`] does not, so for a
    /// prompt that ends in a newline, as `prompts/summary-v1.txt` does, the server's prompt
    /// is one token shorter. [`Bench::check_prompts`] reports it for each abstract.
    fn start(binary: &Path, model: &Path, threads: usize) -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let log = std::env::temp_dir().join(format!(
            "paperclip-summary-engines-{}-llama-server.log",
            std::process::id()
        ));
        let log_file = std::fs::File::create(&log)
            .map_err(|e| format!("failed to create {}: {e}", log.display()))?;
        let log_file_for_stderr = log_file.try_clone().map_err(|e| {
            format!(
                "failed to duplicate the file handle of {}: {e}",
                log.display()
            )
        })?;
        let threads = threads.to_string();
        let child = Command::new(binary)
            .arg("-m")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-t", &threads, "-tb", &threads])
            .args(["-c", &SERVER_CONTEXT.to_string(), "-np", "1"])
            .args(["--no-jinja", "--chat-template", "gemma"])
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_file_for_stderr)
            .spawn()
            .map_err(|e| format!("failed to start {}: {e}", binary.display()))?;
        let mut server = LlamaServer { child, port, log };

        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            if let Ok((200, _)) = server.request("GET", "/health", None) {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "llama-server exited during start-up with {status}; its log:\n{}",
                    server.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "llama-server on port {} not healthy after {} s; its log:\n{}",
                    server.port,
                    SERVER_START_TIMEOUT.as_secs(),
                    server.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Sends `body` as JSON to `path` and returns the JSON response of a 200 status.
    fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let (status, text) = self
            .request("POST", path, Some(&body.to_string()))
            .map_err(|e| format!("POST {path} failed: {e}"))?;
        if status != 200 {
            return Err(format!("POST {path} returned HTTP {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("POST {path}: response is not JSON: {e}"))
    }

    /// Minimal HTTP/1.1 client over loopback: returns (status, body).
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        let body = body.unwrap_or("");

        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;

        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);

        let mut chunked = false;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            if line.trim_end().is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }

        let mut raw = Vec::new();
        reader.read_to_end(&mut raw)?;
        if chunked {
            raw = dechunk(&raw);
        }
        Ok((status, String::from_utf8_lossy(&raw).into_owned()))
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("llama-server log (last lines):\n{}", self.log_tail());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_text.trim().split(';').next().unwrap_or(""), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&rest[start..(start + size).min(rest.len())]);
        rest = &rest[(start + size + 2).min(rest.len())..];
    }
    out
}

fn float_at(value: &Value, pointer: &str) -> Result<f64, String> {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("response has no number at {pointer}: {value}"))
}

fn count_at(value: &Value, pointer: &str) -> Result<usize, String> {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .map(|n| n as usize)
        .ok_or_else(|| format!("response has no count at {pointer}: {value}"))
}

// ---------------------------------------------------------------------------------------
// Measurements

#[derive(Clone, Copy, PartialEq, Eq)]
enum EngineKind {
    InProcess,
    LlamaServer,
}

impl EngineKind {
    fn name(self) -> &'static str {
        match self {
            EngineKind::InProcess => "in-process",
            EngineKind::LlamaServer => "llama-server",
        }
    }
}

/// One measured request.
struct Run {
    engine: EngineKind,
    /// 1-based position of the abstract in the file.
    abstract_number: usize,
    went_first: bool,
    /// Wall time of the request, from the call to the parsed output.
    wall_secs: f64,
    /// Set when the request itself failed; the other numbers are then zero.
    error: Option<String>,
    /// `complete`/`length` (in-process) or the server's `finish_reason`.
    stop: String,
    text: String,
    /// `Ok` for a valid summary, else why it is not one.
    verdict: Result<(), String>,
    prompt_tokens: usize,
    output_tokens: usize,
    /// Time of the prompt's evaluation.
    prefill_secs: f64,
    /// Time after the prompt's evaluation: evaluation, sampling and grammar of the output.
    generation_secs: f64,
    /// Time attributed to the grammar.
    grammar_secs: f64,
    /// Total time and count of the steps that a grammar share is taken of: the in-process
    /// decode, sampling and grammar time over its forwards, or llama-server's
    /// unconstrained `predicted_ms` over its `predicted_n`.
    step_secs: f64,
    steps: usize,
    /// Engine-specific raw figures, for the JSON output.
    details: Value,
}

impl Run {
    /// Creates a run of `wall` seconds with no output yet.
    fn new(engine: EngineKind, abstract_number: usize, went_first: bool, wall: f64) -> Self {
        Run {
            engine,
            abstract_number,
            went_first,
            wall_secs: wall,
            error: None,
            stop: String::new(),
            text: String::new(),
            verdict: Err("no output".to_string()),
            prompt_tokens: 0,
            output_tokens: 0,
            prefill_secs: 0.0,
            generation_secs: 0.0,
            grammar_secs: 0.0,
            step_secs: 0.0,
            steps: 0,
            details: Value::Null,
        }
    }

    fn grammar_ms_per_token(&self) -> Option<f64> {
        // Without a reference run (`steps == 0`), llama-server's grammar time is unknown.
        (self.output_tokens > 0 && self.steps > 0)
            .then(|| self.grammar_secs * 1e3 / self.output_tokens as f64)
    }

    fn grammar_share_of_step(&self) -> Option<f64> {
        if self.output_tokens == 0 || self.steps == 0 || self.step_secs <= 0.0 {
            return None;
        }
        let per_token = self.grammar_secs / self.output_tokens as f64;
        Some(per_token / (self.step_secs / self.steps as f64))
    }

    fn to_json(&self) -> Value {
        json!({
            "engine": self.engine.name(),
            "abstract": self.abstract_number,
            "went_first": self.went_first,
            "wall_secs": self.wall_secs,
            "error": self.error,
            "stop": self.stop,
            "valid": self.verdict.is_ok(),
            "invalid_because": self.verdict.as_ref().err(),
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "prefill_secs": self.prefill_secs,
            "generation_secs": self.generation_secs,
            "grammar_secs": self.grammar_secs,
            "grammar_ms_per_token": self.grammar_ms_per_token(),
            "grammar_share_of_step": self.grammar_share_of_step(),
            "text": self.text,
            "details": self.details,
        })
    }
}

/// The prompts the two engines saw for one abstract.
struct PromptCheck {
    abstract_number: usize,
    in_process_tokens: usize,
    server_tokens: usize,
    /// Position and context of the first difference between the two templated texts;
    /// `None` when they are equal.
    text_difference: Option<String>,
}

/// Everything the two engines share during a run.
struct Bench<'a> {
    engine: Engine,
    server: LlamaServer,
    schema: &'a Value,
    max_tokens: usize,
}

impl Bench<'_> {
    /// Generates a summary of `message` (a rendered prompt) in process, greedily.
    fn run_in_process(&mut self, message: &str, number: usize, went_first: bool) -> Run {
        let prompt = self.engine.chat_prompt(message);
        let sampling = Sampling {
            temperature: 0.0,
            seed: 0,
        };

        let started = Instant::now();
        let result = self
            .engine
            .generate(&prompt, self.schema, self.max_tokens, sampling);
        let wall = started.elapsed().as_secs_f64();

        let mut run = Run::new(EngineKind::InProcess, number, went_first, wall);
        let generation = match result {
            Ok(generation) => generation,
            Err(error) => {
                run.error = Some(format!("Engine::generate failed: {error}"));
                return run;
            }
        };
        let GenerationStats {
            prompt_tokens,
            output_tokens,
            forced_tokens,
            forwards,
            prefill_secs,
            decode_secs,
            grammar_secs,
            grammar_wait_secs,
            sampling_secs,
        } = generation.stats;

        run.stop = match generation.stop {
            Stop::Complete => "complete",
            Stop::Length => "length",
        }
        .to_string();
        run.verdict = match generation.stop {
            Stop::Complete => check_summary(&generation.text),
            Stop::Length => Err(format!(
                "stopped at the limit of {} tokens",
                self.max_tokens
            )),
        };
        run.text = generation.text;
        run.prompt_tokens = prompt_tokens;
        run.output_tokens = output_tokens;
        run.prefill_secs = prefill_secs;
        run.generation_secs = decode_secs + sampling_secs + grammar_wait_secs;
        run.grammar_secs = grammar_wait_secs;
        run.step_secs = decode_secs + sampling_secs + grammar_wait_secs;
        run.steps = forwards;
        run.details = json!({
            "forced_tokens": forced_tokens,
            "forwards": forwards,
            "prefill_secs": prefill_secs,
            "decode_secs": decode_secs,
            "grammar_secs": grammar_secs,
            "grammar_wait_secs": grammar_wait_secs,
            "sampling_secs": sampling_secs,
        });
        run
    }

    /// Runs the constrained chat completion and, when `templated` (the server's rendering
    /// of the chat prompt) is given, an unconstrained completion of it with as many output
    /// tokens, for the grammar's cost. Only the first counts as the summary's wall time.
    fn run_server(
        &self,
        message: &str,
        templated: Option<&str>,
        number: usize,
        went_first: bool,
    ) -> Run {
        let body = json!({
            "messages": [{"role": "user", "content": message}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "summary", "schema": self.schema, "strict": true},
            },
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
            "cache_prompt": false,
        });
        let started = Instant::now();
        let result = self.server.post("/v1/chat/completions", &body);
        let wall = started.elapsed().as_secs_f64();
        let mut run = Run::new(EngineKind::LlamaServer, number, went_first, wall);
        let response = match result.and_then(|r| parse_chat_response(&r)) {
            Ok(response) => response,
            Err(error) => {
                run.error = Some(error);
                return run;
            }
        };
        run.verdict = match response.finish_reason.as_str() {
            "stop" => check_summary(&response.content),
            reason => Err(format!("finish_reason {reason:?}")),
        };
        run.stop = response.finish_reason;
        run.text = response.content;
        run.prompt_tokens = response.prompt_n;
        run.output_tokens = response.predicted_n;
        run.prefill_secs = response.prompt_ms / 1e3;
        run.generation_secs = response.predicted_ms / 1e3;
        run.details = json!({"constrained_timings": response.timings});
        let Some(templated) = templated.filter(|_| response.predicted_n > 0) else {
            return run;
        };

        std::thread::sleep(SETTLE);
        let reference = json!({
            "prompt": templated,
            "n_predict": response.predicted_n,
            "ignore_eos": true,
            "temperature": 0.0,
            "cache_prompt": false,
        });
        let unconstrained = self.server.post("/completion", &reference).and_then(|r| {
            let n = count_at(&r, "/timings/predicted_n")?;
            let ms = float_at(&r, "/timings/predicted_ms")?;
            Ok((n, ms, r["timings"].clone()))
        });
        match unconstrained {
            Ok((n, ms, timings)) if n > 0 => {
                let unconstrained_per_token = ms / 1e3 / n as f64;
                run.grammar_secs =
                    run.generation_secs - unconstrained_per_token * response.predicted_n as f64;
                run.step_secs = ms / 1e3;
                run.steps = n;
                run.details["unconstrained_timings"] = timings;
            }
            Ok((_, _, timings)) => {
                run.details["unconstrained_error"] = json!("predicted_n is 0");
                run.details["unconstrained_timings"] = timings;
            }
            Err(error) => run.details["unconstrained_error"] = json!(error),
        }
        run
    }

    /// Compares the in-process chat prompt with the server's rendering of the same message:
    /// text and token count. Returns the check and the server's text.
    fn check_prompts(&self, message: &str, number: usize) -> Result<(PromptCheck, String), String> {
        let messages = json!({"messages": [{"role": "user", "content": message}]});
        let templated = self.server.post("/apply-template", &messages)?["prompt"]
            .as_str()
            .ok_or("POST /apply-template: no prompt in the response")?
            .to_string();
        let tokenize = json!({"content": templated, "add_special": true, "parse_special": true});
        let server_tokens = self.server.post("/tokenize", &tokenize)?["tokens"]
            .as_array()
            .ok_or("POST /tokenize: no tokens in the response")?
            .len();
        let ours = self.engine.chat_prompt(message);
        let check = PromptCheck {
            abstract_number: number,
            in_process_tokens: self.engine.encode_prompt(&ours).len(),
            server_tokens,
            text_difference: describe_difference(&ours, &templated),
        };
        Ok((check, templated))
    }
}

struct ChatResponse {
    content: String,
    finish_reason: String,
    prompt_n: usize,
    prompt_ms: f64,
    predicted_n: usize,
    predicted_ms: f64,
    timings: Value,
}

fn parse_chat_response(response: &Value) -> Result<ChatResponse, String> {
    let choice = &response["choices"][0];
    Ok(ChatResponse {
        content: choice["message"]["content"]
            .as_str()
            .ok_or_else(|| format!("no choices[0].message.content in {response}"))?
            .to_string(),
        finish_reason: choice["finish_reason"]
            .as_str()
            .unwrap_or("missing")
            .to_string(),
        prompt_n: count_at(response, "/timings/prompt_n")?,
        prompt_ms: float_at(response, "/timings/prompt_ms")?,
        predicted_n: count_at(response, "/timings/predicted_n")?,
        predicted_ms: float_at(response, "/timings/predicted_ms")?,
        timings: response["timings"].clone(),
    })
}

/// Describes where `a` and `b` first differ, with some context, or `None` when equal.
fn describe_difference(a: &str, b: &str) -> Option<String> {
    if a == b {
        return None;
    }
    let at = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i);
    let context = |text: &str| -> String {
        let start = text.floor_char_boundary(at.saturating_sub(20));
        let end = text.ceil_char_boundary((at + 30).min(text.len()));
        text[start..end].to_string()
    };
    Some(format!(
        "byte {at}: in-process {:?}, llama-server {:?} (lengths {} and {} bytes)",
        context(a),
        context(b),
        a.len(),
        b.len()
    ))
}

/// Checks a summary by hand against `schemas/summary.schema.json`: an object with exactly
/// the two keys, each a list of 1 to 5 strings of 1 to 100 characters. The characters the
/// schema's `pattern` excludes (control and invisible format characters, `"`, `;`, `\`)
/// are rejected too.
fn check_summary(text: &str) -> Result<(), String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    if object.len() != SUMMARY_KEYS.len() || SUMMARY_KEYS.iter().any(|k| !object.contains_key(*k)) {
        let keys: Vec<&String> = object.keys().collect();
        return Err(format!("keys {keys:?}, expected {SUMMARY_KEYS:?}"));
    }
    for key in SUMMARY_KEYS {
        let items = object[key]
            .as_array()
            .ok_or_else(|| format!("{key} is not a list"))?;
        if !(1..=5).contains(&items.len()) {
            return Err(format!("{key} has {} items, expected 1 to 5", items.len()));
        }
        for item in items {
            let item = item
                .as_str()
                .ok_or_else(|| format!("{key} has a non-string item {item}"))?;
            let chars = item.chars().count();
            if !(1..=100).contains(&chars) {
                return Err(format!(
                    "{key} item {item:?} has {chars} characters, expected 1 to 100"
                ));
            }
            if let Some(c) = item.chars().find(|&c| is_excluded_char(c)) {
                return Err(format!("{key} item {item:?} contains the excluded {c:?}"));
            }
        }
    }
    Ok(())
}

/// Tests whether `c` is in the character class that the schema's `pattern` excludes from
/// summary items.
fn is_excluded_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1F}' | '\u{7F}'..='\u{9F}' | '\u{AD}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '"' | ';' | '\\')
}

// ---------------------------------------------------------------------------------------
// The run

fn run_benchmark(options: &Options) -> Result<(), String> {
    let abstracts = read_abstracts(&options.abstracts, options.count)?;
    let template = read_template(&options.prompt)?;
    let schema = read_schema(&options.schema)?;
    let messages: Vec<String> = abstracts
        .iter()
        .map(|text| template.replacen(ABSTRACT_PLACEHOLDER, text, 1))
        .collect();

    println!("model:        {}", options.model.display());
    println!("llama-server: {}", options.server.display());
    println!(
        "abstracts:    first {} of {}",
        options.count,
        options.abstracts.display()
    );
    println!(
        "prompt:       {}; schema: {}",
        options.prompt.display(),
        options.schema.display()
    );
    println!(
        "threads:      {} per engine; greedy; max_tokens {}; llama-server -c {SERVER_CONTEXT} -np 1 --no-jinja --chat-template gemma",
        options.threads, options.max_tokens
    );

    let started = Instant::now();
    // The same grammar slices the product's local backend registers for this schema.
    let engine = Engine::load(&options.model, options.threads, DEFAULT_MAX_POSITIONS)
        .and_then(|engine| engine.with_slices(&string_slices(&schema)))
        .map_err(|e| format!("failed to load {}: {e}", options.model.display()))?;
    println!(
        "in-process engine loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let server = LlamaServer::start(&options.server, &options.model, options.threads)?;
    let build = server
        .request("GET", "/props", None)
        .ok()
        .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
        .and_then(|props| props["build_info"].as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string());
    println!(
        "llama-server (build {build}) healthy in {:.1} s on port {}",
        started.elapsed().as_secs_f64(),
        server.port
    );

    let mut bench = Bench {
        engine,
        server,
        schema: &schema,
        max_tokens: options.max_tokens,
    };

    for round in 1..=options.warmup {
        let ours = bench.run_in_process(&messages[0], 1, true);
        std::thread::sleep(SETTLE);
        let theirs = bench.run_server(&messages[0], None, 1, false);
        println!(
            "warm-up {round} (not counted): in-process {:.2} s, llama-server {:.2} s",
            ours.wall_secs, theirs.wall_secs
        );
        for run in [&ours, &theirs] {
            if let Some(error) = &run.error {
                println!("  {} failed: {error}", run.engine.name());
            }
        }
        std::thread::sleep(SETTLE);
    }

    println!();
    let mut runs = Vec::with_capacity(2 * messages.len());
    let mut prompt_checks = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        let number = index + 1;
        let (check, templated) = bench.check_prompts(message, number)?;
        if check.in_process_tokens != check.server_tokens || check.text_difference.is_some() {
            println!(
                "#{number:02} prompts differ: in-process {} tokens, llama-server {} tokens; text {}",
                check.in_process_tokens,
                check.server_tokens,
                check.text_difference.as_deref().unwrap_or("equal")
            );
        }
        prompt_checks.push(check);

        // The in-process engine goes first on odd-numbered abstracts.
        let order = if index % 2 == 0 {
            [EngineKind::InProcess, EngineKind::LlamaServer]
        } else {
            [EngineKind::LlamaServer, EngineKind::InProcess]
        };
        let mut pair = Vec::with_capacity(2);
        for (position, engine) in order.into_iter().enumerate() {
            let went_first = position == 0;
            let run = match engine {
                EngineKind::InProcess => bench.run_in_process(message, number, went_first),
                EngineKind::LlamaServer => {
                    bench.run_server(message, Some(&templated), number, went_first)
                }
            };
            pair.push(run);
            std::thread::sleep(SETTLE);
        }
        for run in &pair {
            println!("{}", describe_run(run));
        }
        runs.extend(pair);
    }
    drop(bench);

    let in_process = Summary::of(&runs, EngineKind::InProcess);
    let llama_server = Summary::of(&runs, EngineKind::LlamaServer);
    println!();
    print!("{}", summary_table(&[&in_process, &llama_server]));
    let ratio = llama_server.mean_secs / in_process.mean_secs;
    let ratio_valid = llama_server.secs_per_valid / in_process.secs_per_valid;
    println!(
        "llama-server / in-process: {ratio:.2}x the mean s/summary, {ratio_valid:.2}x the s per valid summary"
    );
    let differing = prompt_checks
        .iter()
        .filter(|c| c.in_process_tokens != c.server_tokens)
        .count();
    println!(
        "prompt token counts differ for {differing} of {} abstracts (in-process minus llama-server: {})",
        prompt_checks.len(),
        token_differences(&prompt_checks)
    );
    print!("{}", DEFINITIONS);

    if let Some(path) = &options.json {
        let report = json!({
            "config": {
                "model": options.model,
                "llama_server": options.server,
                "llama_server_build": build,
                "llama_server_args": format!("-t {0} -tb {0} -c {SERVER_CONTEXT} -np 1 --no-jinja --chat-template gemma", options.threads),
                "abstracts_file": options.abstracts,
                "abstracts": options.count,
                "threads": options.threads,
                "max_tokens": options.max_tokens,
                "warmup": options.warmup,
                "prompt_template": options.prompt,
                "schema": options.schema,
            },
            "summary": {
                "in_process": in_process.to_json(),
                "llama_server": llama_server.to_json(),
                "ratio_mean_secs_llama_server_over_in_process": ratio,
                "ratio_secs_per_valid_llama_server_over_in_process": ratio_valid,
            },
            "prompt_checks": prompt_checks.iter().map(|c| json!({
                "abstract": c.abstract_number,
                "in_process_tokens": c.in_process_tokens,
                "llama_server_tokens": c.server_tokens,
                "text_difference": c.text_difference,
            })).collect::<Vec<_>>(),
            "runs": runs.iter().map(Run::to_json).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&report).expect("the report serializes");
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}

const DEFINITIONS: &str = "\
s/summary: wall time of one request, prompt processing and HTTP included; per valid: total
  wall time over the number of valid summaries.
prefill: prompt tokens over the time of the prompt's evaluation; in-process, that first
  batch also holds the tokens the grammar forces at the start of the output.
decode: output tokens over the time after the prompt (evaluation, sampling and grammar);
  in-process, forced tokens come in batches.
grammar: in-process, the measured mask and forced-token time per output token, and its
  share of a step ((decode + sampling + grammar) / forwards); llama-server, the constrained
  minus the unconstrained time per output token, and its share of the unconstrained one.
  Rates and grammar figures are totals over all runs, not means of per-run ratios.
";

fn describe_run(run: &Run) -> String {
    let order = if run.went_first { "first " } else { "second" };
    let mut line = format!(
        "#{:02} {:<12} {order} {:>7.2} s",
        run.abstract_number,
        run.engine.name(),
        run.wall_secs
    );
    if let Some(error) = &run.error {
        let _ = write!(line, "  FAILED: {error}");
        return line;
    }
    let _ = write!(
        line,
        "  prompt {:>4}  output {:>4}  stop {:<8}",
        run.prompt_tokens, run.output_tokens, run.stop
    );
    match (run.grammar_ms_per_token(), run.grammar_share_of_step()) {
        (Some(ms), Some(share)) => {
            let _ = write!(
                line,
                "  grammar {ms:>6.2} ms/token ({:>5.1}%)",
                share * 100.0
            );
        }
        (Some(ms), None) => {
            let _ = write!(line, "  grammar {ms:>6.2} ms/token (no step time)");
        }
        _ => {}
    }
    match &run.verdict {
        Ok(()) => line.push_str("  valid"),
        Err(why) => {
            let _ = write!(line, "  INVALID: {why}");
        }
    }
    if let Some(error) = run.details.get("unconstrained_error") {
        let _ = write!(line, "  (unconstrained reference failed: {error})");
    }
    line
}

fn token_differences(checks: &[PromptCheck]) -> String {
    let differences: Vec<String> = checks
        .iter()
        .map(|c| (c.in_process_tokens as i64 - c.server_tokens as i64).to_string())
        .collect();
    differences.join(", ")
}

/// The summary table's row of one engine.
struct Summary {
    engine: EngineKind,
    runs: usize,
    failed: usize,
    valid: usize,
    mean_secs: f64,
    median_secs: f64,
    secs_per_valid: f64,
    mean_output_tokens: f64,
    prefill_tokens_per_sec: f64,
    decode_tokens_per_sec: f64,
    grammar_ms_per_token: f64,
    grammar_share_of_step: f64,
}

impl Summary {
    fn of(all: &[Run], engine: EngineKind) -> Self {
        let runs: Vec<&Run> = all.iter().filter(|r| r.engine == engine).collect();
        let measured: Vec<&Run> = runs.iter().copied().filter(|r| r.error.is_none()).collect();
        let with_reference: Vec<&Run> = measured.iter().copied().filter(|r| r.steps > 0).collect();
        let walls: Vec<f64> = runs.iter().map(|r| r.wall_secs).collect();
        let valid = runs.iter().filter(|r| r.verdict.is_ok()).count();
        let sum = |rs: &[&Run], f: fn(&Run) -> f64| rs.iter().map(|r| f(r)).sum::<f64>();
        let total_wall = walls.iter().sum::<f64>();
        let output_tokens = sum(&measured, |r| r.output_tokens as f64);
        let reference_output_tokens = sum(&with_reference, |r| r.output_tokens as f64);
        let grammar_per_token = sum(&with_reference, |r| r.grammar_secs) / reference_output_tokens;
        let step = sum(&with_reference, |r| r.step_secs) / sum(&with_reference, |r| r.steps as f64);
        Summary {
            engine,
            runs: runs.len(),
            failed: runs.len() - measured.len(),
            valid,
            mean_secs: total_wall / walls.len() as f64,
            median_secs: median(&walls),
            secs_per_valid: total_wall / valid as f64,
            mean_output_tokens: output_tokens / measured.len() as f64,
            prefill_tokens_per_sec: sum(&measured, |r| r.prompt_tokens as f64)
                / sum(&measured, |r| r.prefill_secs),
            decode_tokens_per_sec: output_tokens / sum(&measured, |r| r.generation_secs),
            grammar_ms_per_token: grammar_per_token * 1e3,
            grammar_share_of_step: grammar_per_token / step,
        }
    }

    fn to_json(&self) -> Value {
        // NaN (an empty denominator) becomes null.
        json!({
            "runs": self.runs,
            "failed_requests": self.failed,
            "valid": self.valid,
            "mean_secs": self.mean_secs,
            "median_secs": self.median_secs,
            "secs_per_valid_summary": self.secs_per_valid,
            "mean_output_tokens": self.mean_output_tokens,
            "prefill_tokens_per_sec": self.prefill_tokens_per_sec,
            "decode_tokens_per_sec": self.decode_tokens_per_sec,
            "grammar_ms_per_token": self.grammar_ms_per_token,
            "grammar_share_of_step": self.grammar_share_of_step,
        })
    }
}

fn summary_table(rows: &[&Summary]) -> String {
    let mut table = String::from(
        "| engine | valid | mean s/summary | median s/summary | s per valid summary | mean output tokens | prefill tok/s | decode tok/s | grammar ms/token | grammar % of a step |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let failed = if row.failed > 0 {
            format!(" ({} failed)", row.failed)
        } else {
            String::new()
        };
        let _ = writeln!(
            table,
            "| {} | {}/{}{failed} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} | {:.1} | {:.2} | {:.1} |",
            row.engine.name(),
            row.valid,
            row.runs,
            row.mean_secs,
            row.median_secs,
            row.secs_per_valid,
            row.mean_output_tokens,
            row.prefill_tokens_per_sec,
            row.decode_tokens_per_sec,
            row.grammar_ms_per_token,
            row.grammar_share_of_step * 100.0
        );
    }
    table
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
