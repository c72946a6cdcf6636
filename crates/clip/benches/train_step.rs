//! Training-step benchmark of the candle CLIP: forward through both towers, the symmetric
//! InfoNCE loss with [`ScaleMode::Paper`] (cosine similarities times the raw stored
//! `logit_scale`, as the PAPERCLIP training code did), backward, and one AdamW step
//! (lr 1e-5, weight decay 1e-3, betas 0.9 and 0.999, eps 1e-8), all in f32.
//!
//! `benches/clip_train_step.py` times the same step with `transformers.CLIPModel` and
//! `torch.optim.AdamW`, and `benches/training.sh` runs both and writes the comparison.
//! Both read the model geometry from the same Hugging Face style JSON file
//! (`benches/configs/NAME.json`) and build inputs of the same shapes: random pixels
//! `[batch, 3, image_size, image_size]` and token rows of the start id 49406, random ids
//! below it, the end id 49407 at a random position and zeros after it. The values differ
//! between the two sides, because this measures speed, not parity.
//!
//! Progress goes to stderr, and the result is one JSON line on stdout. The step loop reads
//! the loss value every step, as a training loop does to log it, and stops with an error
//! when the loss is not finite. Without the `--bench` argument that `cargo bench` passes
//! (as under `cargo test --benches`), it prints "skipping" and exits.
//!
//! Threads: candle's matrix products and CPU kernels size their pools from
//! `RAYON_NUM_THREADS` (or `CANDLE_NUM_THREADS`), read once at start, so the thread count
//! is set in the environment, not by an option. The JSON line records the count in use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use candle_core::{Device, Tensor};
use paperclip_clip::loss::{Positives, ScaleMode, contrastive_loss};
use paperclip_clip::optim::{AdamW, AdamWConfig};
use paperclip_clip::rng::Rng;
use paperclip_clip::{ClipConfig, ClipModel};
use serde_json::json;

/// The allocator of the `paperclip` binary, so the bench measures what training runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: cargo bench -p paperclip-clip --bench train_step -- [OPTIONS]

  --config NAME|PATH  model geometry: a name in benches/configs/ (small, vit-b-16) or the
                      path of a Hugging Face style CLIP config.json (default small);
                      cargo bench runs in crates/clip, so give an absolute path
  --batch N           image-caption pairs per step (default 32)
  --warmup N          untimed steps before the timed ones (default 3)
  --steps N           timed steps (default 20)
  --seed N            seed of the weights and inputs (default 0)
  --device cpu|cuda   where the model runs (default cpu); cuda needs a build with the
                      crate's `cuda` feature (`--features cuda`, needs the CUDA toolkit)

The thread count comes from RAYON_NUM_THREADS (or CANDLE_NUM_THREADS); without either,
candle uses one thread per physical core. benches/training.sh sets both.";

/// Learning rate of every step; `benches/clip_train_step.py` uses the same.
const LEARNING_RATE: f64 = 1e-5;
/// Start-of-text id of the CLIP byte-pair vocabulary.
const START_OF_TEXT_ID: u32 = 49_406;
/// End-of-text id of the CLIP byte-pair vocabulary, the largest id in it, so that the
/// argmax pooling rule (`eos_token_id` 2) finds it.
const END_OF_TEXT_ID: u32 = 49_407;
/// Exit status when `--device cuda` is requested from a build without CUDA support, so that
/// `benches/training.sh` can report the Rust side as not run.
const EXIT_NO_CUDA: u8 = 3;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|arg| arg == "--bench") {
        println!("skipping: train_step runs only under `cargo bench`");
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
    let device = match open_device(&options.device) {
        Ok(device) => device,
        Err(DeviceError::NoCuda) => {
            eprintln!(
                "error: --device cuda needs a CUDA build, but this build of candle-core has no \
                 CUDA support. Build with `--features cuda` (needs the CUDA toolkit), or use \
                 --device cpu."
            );
            return ExitCode::from(EXIT_NO_CUDA);
        }
        Err(DeviceError::Other(message)) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    match run_benchmark(&options, &device) {
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
    config_path: PathBuf,
    batch: usize,
    warmup: usize,
    steps: usize,
    seed: u64,
    device: String,
}

/// Parses the command line. Returns `None` for `--help`.
fn parse_options(args: &[String]) -> Result<Option<Options>, String> {
    let mut config = "small".to_string();
    let mut options = Options {
        config_path: PathBuf::new(),
        batch: 32,
        warmup: 3,
        steps: 20,
        seed: 0,
        device: "cpu".to_string(),
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
            "--config" => config = value()?,
            "--batch" => options.batch = parse_count(name, &value()?, 1)?,
            "--warmup" => options.warmup = parse_count(name, &value()?, 0)?,
            "--steps" => options.steps = parse_count(name, &value()?, 1)?,
            "--seed" => {
                let text = value()?;
                options.seed = text
                    .parse()
                    .map_err(|_| format!("--seed {text:?} is not a whole number"))?;
            }
            "--device" => {
                let device = value()?;
                if device != "cpu" && device != "cuda" {
                    return Err(format!("--device {device:?} is invalid; use cpu or cuda"));
                }
                options.device = device;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    options.config_path = resolve_config(&config)?;
    Ok(Some(options))
}

/// Parses a whole number of at least `min`.
fn parse_count(name: &str, text: &str, min: usize) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!(
            "{name} {text:?} is not a whole number of at least {min}"
        )),
    }
}

/// Resolves `--config`: an existing file path, else the repository's
/// `benches/configs/{config}.json`.
fn resolve_config(config: &str) -> Result<PathBuf, String> {
    let as_path = PathBuf::from(config);
    if as_path.is_file() {
        return Ok(as_path);
    }
    let configs_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/configs");
    let named = configs_dir.join(format!("{config}.json"));
    if named.is_file() {
        return Ok(named.canonicalize().unwrap_or(named));
    }
    Err(format!(
        "--config {config:?} is neither a file nor a config name: {} not found",
        named.display()
    ))
}

enum DeviceError {
    NoCuda,
    Other(String),
}

fn open_device(name: &str) -> Result<Device, DeviceError> {
    match name {
        "cuda" if !candle_core::utils::cuda_is_available() => Err(DeviceError::NoCuda),
        "cuda" => Device::new_cuda(0)
            .map_err(|e| DeviceError::Other(format!("failed to open CUDA device 0: {e}"))),
        _ => Ok(Device::Cpu),
    }
}

// ---------------------------------------------------------------------------------------
// Benchmark

fn run_benchmark(options: &Options, device: &Device) -> Result<(), String> {
    let config = ClipConfig::from_json_file(&options.config_path).map_err(|e| e.to_string())?;
    let config_name = options
        .config_path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let threads = candle_core::utils::get_num_threads();
    let model = ClipModel::random(&config, options.seed, device).map_err(|e| e.to_string())?;
    let parameters = model.params().element_count();
    let optimizer = AdamW::new(
        model.params(),
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-3,
        },
    )
    .map_err(|e| e.to_string())?;
    let (pixels, ids) =
        make_inputs(&config, options.batch, options.seed, device).map_err(|e| e.to_string())?;
    eprintln!(
        "rust-candle: config {config_name} ({parameters} parameters), batch {}, {} threads, \
         device {}, {} warm-up and {} timed steps",
        options.batch, threads, options.device, options.warmup, options.steps
    );

    let mut trainer = Trainer {
        model,
        optimizer,
        pixels,
        ids,
        device: device.clone(),
    };
    let mut losses = Vec::with_capacity(options.warmup + options.steps);
    let mut step_ms = Vec::with_capacity(options.steps);
    let mut phase_ms: [Vec<f64>; 3] = Default::default();
    for step in 0..options.warmup + options.steps {
        let start = Instant::now();
        let timing = trainer.step().map_err(|e| format!("step {step}: {e}"))?;
        let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
        let loss = timing.loss;
        if !loss.is_finite() {
            return Err(format!("step {step}: the loss is {loss}, not finite"));
        }
        let kind = if step < options.warmup {
            "warm-up"
        } else {
            step_ms.push(elapsed_ms);
            for (samples, ms) in phase_ms.iter_mut().zip(timing.phase_ms) {
                samples.push(ms);
            }
            "timed"
        };
        losses.push(loss);
        let [forward, backward, optimizer] = timing.phase_ms;
        eprintln!(
            "rust-candle: step {step} ({kind}): {elapsed_ms:.1} ms (forward and loss \
             {forward:.1}, backward {backward:.1}, AdamW {optimizer:.1}), loss {loss:.6}"
        );
    }

    let stats = StepStats::from_samples(&step_ms);
    let samples_per_s = options.batch as f64 * 1000.0 / stats.median_ms;
    let record = json!({
        "side": "rust-candle",
        "config": config_name,
        "config_file": options.config_path.display().to_string(),
        "device": options.device,
        "batch": options.batch,
        "threads": threads,
        "seed": options.seed,
        "warmup_steps": options.warmup,
        "timed_steps": options.steps,
        "parameters": parameters,
        "median_ms": stats.median_ms,
        "mean_ms": stats.mean_ms,
        "min_ms": stats.min_ms,
        "max_ms": stats.max_ms,
        "samples_per_s": samples_per_s,
        "phase_median_ms": {
            "forward": StepStats::from_samples(&phase_ms[0]).median_ms,
            "backward": StepStats::from_samples(&phase_ms[1]).median_ms,
            "optimizer": StepStats::from_samples(&phase_ms[2]).median_ms,
        },
        "peak_rss_mib": peak_rss_mib(),
        "first_loss": losses.first(),
        "last_loss": losses.last(),
        "implementation": format!("paperclip-clip {}", env!("CARGO_PKG_VERSION")),
    });
    println!("{record}");
    Ok(())
}

/// The model, its optimizer and one fixed batch.
struct Trainer {
    model: ClipModel,
    optimizer: AdamW,
    pixels: Tensor,
    ids: Tensor,
    device: Device,
}

/// The loss of one step and the wall time of its phases in milliseconds: forward through
/// both towers with the loss (its value read back), backward, and the AdamW update.
struct StepTiming {
    loss: f64,
    phase_ms: [f64; 3],
}

impl Trainer {
    /// Runs one training step. On CUDA it waits for the queued kernels at the end of each
    /// phase, so the phase times add up to the whole step.
    fn step(&mut self) -> Result<StepTiming, Box<dyn std::error::Error>> {
        let start = Instant::now();
        let images = self.model.image_features(&self.pixels)?;
        let texts = self.model.text_features(&self.ids)?;
        let loss = contrastive_loss(
            &images,
            &texts,
            self.model.logit_scale(),
            ScaleMode::Paper,
            &Positives::Diagonal,
        )?;
        let loss_value = f64::from(loss.to_scalar::<f32>()?);
        let forward_done = Instant::now();

        let grads = loss.backward()?;
        self.device.synchronize()?;
        let backward_done = Instant::now();

        self.optimizer
            .step(self.model.params(), &grads, LEARNING_RATE)?;
        self.device.synchronize()?;
        let optimizer_done = Instant::now();

        let ms = |from: Instant, to: Instant| (to - from).as_secs_f64() * 1000.0;
        Ok(StepTiming {
            loss: loss_value,
            phase_ms: [
                ms(start, forward_done),
                ms(forward_done, backward_done),
                ms(backward_done, optimizer_done),
            ],
        })
    }
}

/// Builds seeded pixels `[batch, 3, size, size]` (standard normal, the scale of CLIP-normalized
/// pixels) and token ids `[batch, context]`: the start id, random ids in `1..START_OF_TEXT_ID`,
/// the end id at a random position in `1..context`, then zeros.
fn make_inputs(
    config: &ClipConfig,
    batch: usize,
    seed: u64,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let mut rng = Rng::derived(seed, "train_step inputs");
    let size = config.vision.image_size;
    let pixel_values: Vec<f32> = (0..batch * 3 * size * size)
        .map(|_| rng.normal() as f32)
        .collect();
    let pixels = Tensor::from_vec(pixel_values, (batch, 3, size, size), device)?;

    let context = config.text.max_position_embeddings;
    if context < 2 {
        return Err(candle_core::Error::Msg(format!(
            "max_position_embeddings is {context}; a caption needs at least 2 positions, \
             for the start and end ids"
        )));
    }
    let mut ids = vec![0u32; batch * context];
    for row in ids.chunks_mut(context) {
        let end = 1 + rng.below(context - 1);
        row[0] = START_OF_TEXT_ID;
        for id in &mut row[1..end] {
            *id = 1 + rng.below(START_OF_TEXT_ID as usize - 1) as u32;
        }
        row[end] = END_OF_TEXT_ID;
    }
    let ids = Tensor::from_vec(ids, (batch, context), device)?;
    Ok((pixels, ids))
}

/// Summary of the timed steps, in milliseconds.
struct StepStats {
    median_ms: f64,
    mean_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

impl StepStats {
    /// Summarizes `samples`, which must not be empty (`--steps` is at least 1).
    fn from_samples(samples: &[f64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median_ms = if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        Self {
            median_ms,
            mean_ms: sorted.iter().sum::<f64>() / sorted.len() as f64,
            min_ms: sorted[0],
            max_ms: sorted[sorted.len() - 1],
        }
    }
}

/// Reads the peak resident set size of this process (`VmHWM` in `/proc/self/status`), in MiB, or
/// `None` where that file does not exist (outside Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
