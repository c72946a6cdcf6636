#!/usr/bin/env bash
# Compares one CLIP training step in the Rust crate on candle
# (crates/clip/benches/train_step.rs) with transformers.CLIPModel and torch.optim.AdamW
# (benches/clip_train_step.py). The step is forward, the symmetric InfoNCE loss on cosine
# similarities times the raw logit_scale (as the PAPERCLIP training code computed it),
# backward and AdamW. Both sides run in float32 with the same model config
# (benches/configs/NAME.json), batch size, thread count and optimizer settings, one after
# the other in this invocation.
#
#   benches/training.sh [--config small|vit-b-16|PATH] [--steps N] [--warmup N]
#                       [--batch N] [--threads N] [--seed N] [--device cpu|cuda]
#                       [--attention default|sdpa|eager] [--cargo-features LIST]
#
# `benches/training.sh --help` describes the options. The Markdown report (machine, date,
# command, versions, one row per side and the ratio of their samples per second) goes to
# stdout and to target/bench-training.md. The benchmark is built first. Then the script
# waits up to PAPERCLIP_IDLE_WAIT_SECS seconds (default 120) for the 1-minute load
# average to fall below 0.5, and the report warns when it does not.
#
# The PyTorch side runs in the reference environment, .venv-ref/bin/python, or the
# interpreter in PAPERCLIP_REF_PYTHON (tools/clip-reference-requirements.txt lists its
# packages). Nothing is downloaded. Results: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: benches/training.sh [OPTIONS]

  --config NAME|PATH   model config: small or vit-b-16 (files in benches/configs/), or the
                       path of a Hugging Face style CLIP config.json (default small)
  --steps N            timed steps per side (default 20 for small, 10 for other configs)
  --warmup N           untimed steps per side before the timed ones (default 3)
  --batch N            image-caption pairs per step (default 32)
  --threads N          CPU threads of each side (default: nproc)
  --seed N             seed of the weights and inputs (default 0)
  --device cpu|cuda    where both sides run (default cpu). The Rust side needs
                       --cargo-features cuda (and the CUDA toolkit to build it); without
                       it, the Rust row is reported as not run.
  --attention MODE     PyTorch attention: default (transformers' choice, sdpa in 5.25.0),
                       sdpa or eager (the plain matmul-softmax-matmul that candle computes)
  --cargo-features L   passed to `cargo bench --features`

vit-b-16 on CPU takes minutes per step per side. Environment: PAPERCLIP_REF_PYTHON
(PyTorch interpreter, default .venv-ref/bin/python), PAPERCLIP_IDLE_WAIT_SECS (default 120).
EOF
}

# Exit status of the Rust benchmark when it has no CUDA support (EXIT_NO_CUDA there).
readonly rust_no_cuda_status=3
idle_limit=0.5
idle_wait_secs=${PAPERCLIP_IDLE_WAIT_SECS:-120}
python=${PAPERCLIP_REF_PYTHON:-.venv-ref/bin/python}
report_path=target/bench-training.md
command_line="benches/training.sh"
if [ $# -gt 0 ]; then
  command_line+=$(printf ' %q' "$@")
fi

config=small
steps=""
warmup=3
batch=32
threads=$(nproc)
seed=0
device=cpu
attention=default
cargo_features=""

while [ "$#" -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --config | --steps | --warmup | --batch | --threads | --seed | --device | --attention | --cargo-features)
      if [ "$#" -lt 2 ]; then
        echo "error: $1 needs a value (--help lists the options)" >&2
        exit 2
      fi
      case "$1" in
        --config) config=$2 ;;
        --steps) steps=$2 ;;
        --warmup) warmup=$2 ;;
        --batch) batch=$2 ;;
        --threads) threads=$2 ;;
        --seed) seed=$2 ;;
        --device) device=$2 ;;
        --attention) attention=$2 ;;
        --cargo-features) cargo_features=$2 ;;
      esac
      shift 2
      ;;
    *)
      echo "error: unknown argument '$1' (--help lists the options)" >&2
      exit 2
      ;;
  esac
done

for option in "steps=$steps" "warmup=$warmup" "batch=$batch" "threads=$threads" "seed=$seed"; do
  name=${option%%=*}
  value=${option#*=}
  if [ "$name" = steps ] && [ -z "$value" ]; then
    continue
  fi
  if ! [[ "$value" =~ ^[0-9]+$ ]]; then
    echo "error: --$name '$value' is not a whole number" >&2
    exit 2
  fi
done
if [ "$threads" -lt 1 ]; then
  echo "error: --threads must be at least 1" >&2
  exit 2
fi

if [ -f "$config" ]; then
  config_path=$(realpath "$config")
elif [ -f "benches/configs/$config.json" ]; then
  config_path=$(realpath "benches/configs/$config.json")
else
  echo "error: --config '$config' is neither a file nor a name in benches/configs/" >&2
  exit 2
fi
config_name=$(basename "$config_path" .json)
if [ -z "$steps" ]; then
  if [ "$config_name" = small ]; then steps=20; else steps=10; fi
fi
if [ ! -x "$python" ]; then
  echo "error: PyTorch interpreter '$python' not found; create the reference environment with" >&2
  echo "  python3 -m venv .venv-ref && .venv-ref/bin/pip install -r tools/clip-reference-requirements.txt" >&2
  echo "or set PAPERCLIP_REF_PYTHON" >&2
  exit 2
fi

cargo_args=(-p paperclip-clip --bench train_step --locked)
if [ -n "$cargo_features" ]; then
  cargo_args+=(--features "$cargo_features")
fi
bench_args=(--config "$config_path" --steps "$steps" --warmup "$warmup" --batch "$batch"
  --seed "$seed" --device "$device")

cargo bench "${cargo_args[@]}" --no-run

load_averages() { cut -d' ' -f1-3 /proc/loadavg; }
is_idle() {
  awk -v load="$(cut -d' ' -f1 /proc/loadavg)" -v limit="$idle_limit" \
    'BEGIN { exit !(load < limit) }'
}
waited=0
until is_idle || [ "$waited" -ge "$idle_wait_secs" ]; do
  sleep 5
  waited=$((waited + 5))
done
load_before=$(load_averages)

# candle sizes its thread pools from these variables when the process starts.
export RAYON_NUM_THREADS=$threads CANDLE_NUM_THREADS=$threads

echo "== rust-candle" >&2
rust_status=0
rust_json=$(cargo bench "${cargo_args[@]}" -- "${bench_args[@]}") || rust_status=$?
rust_note=""
if [ "$rust_status" -eq "$rust_no_cuda_status" ]; then
  rust_json=""
  rust_note="not run: this build of candle-core has no CUDA support (see --cargo-features)"
elif [ "$rust_status" -ne 0 ]; then
  echo "error: the Rust benchmark failed with status $rust_status" >&2
  exit 1
fi
rust_json=$(printf '%s\n' "$rust_json" | grep '^{' | tail -n 1 || true)

echo "== pytorch" >&2
python_json=$("$python" benches/clip_train_step.py "${bench_args[@]}" --threads "$threads" \
  --attention "$attention" | grep '^{' | tail -n 1) || {
  echo "error: the PyTorch benchmark failed" >&2
  exit 1
}
load_after=$(load_averages)

commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
  commit="$commit (with uncommitted changes)"
fi
candle_version=$(awk '/^name = "candle-core"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)

mkdir -p target
RUST_JSON=$rust_json RUST_NOTE=$rust_note PYTHON_JSON=$python_json \
  DATE_UTC=$(date -u +%Y-%m-%dT%H:%M:%SZ) COMMAND_LINE=$command_line COMMIT=$commit \
  CPU_MODEL=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1) CPUS=$(nproc) \
  MEMORY=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) \
  KERNEL=$(uname -sr) RUSTC=$(rustc --version) CANDLE_VERSION=$candle_version \
  LOAD_BEFORE="$load_before" LOAD_AFTER="$load_after" WAITED=$waited IDLE_LIMIT=$idle_limit \
  python3 - <<'EOF' | tee "$report_path"
import json
import os

env = os.environ
PHASES = ("forward", "backward", "optimizer")
rust = json.loads(env["RUST_JSON"]) if env["RUST_JSON"] else None
torch_side = json.loads(env["PYTHON_JSON"])


def fmt(value, digits):
    return "–" if value is None else f"{value:,.{digits}f}"


def row(name, record, implementation):
    return (
        f"| {name} | {implementation} | {record['threads']} | {record['batch']} "
        f"| {record['warmup_steps']} + {record['timed_steps']} | {fmt(record['median_ms'], 1)} "
        f"| {fmt(record['mean_ms'], 1)} | {fmt(record['min_ms'], 1)}–{fmt(record['max_ms'], 1)} "
        f"| {fmt(record['samples_per_s'], 2)} "
        f"| {' / '.join(fmt(record['phase_median_ms'][p], 1) for p in PHASES)} "
        f"| {fmt(record['peak_rss_mib'], 0)} "
        f"| {record['first_loss']:.4f} → {record['last_loss']:.4f} |"
    )


problems = []
if rust is not None:
    if rust["threads"] != torch_side["threads"]:
        problems.append(
            f"the sides ran with different thread counts: Rust {rust['threads']}, "
            f"PyTorch {torch_side['threads']}"
        )
    if rust["parameters"] != torch_side["parameters"]:
        problems.append(
            f"the sides built different models: Rust {rust['parameters']:,} parameters, "
            f"PyTorch {torch_side['parameters']:,}"
        )

lines = [
    f"## CLIP training step: `{torch_side['config']}`, batch {torch_side['batch']}, "
    f"{torch_side['device']}",
    "",
    f"- Command: `{env['COMMAND_LINE']}`",
    f"- Date (UTC): {env['DATE_UTC']}",
    f"- Machine: {env['CPU_MODEL']}, {env['CPUS']} CPUs available (nproc), {env['MEMORY']}, "
    f"{env['KERNEL']}" + (f", {torch_side['cuda_device']}" if "cuda_device" in torch_side else ""),
    f"- Load average (1, 5, 15 minutes): {env['LOAD_BEFORE']} before, {env['LOAD_AFTER']} "
    f"after, after {env['WAITED']} s of waiting for the 1-minute value to fall below "
    f"{env['IDLE_LIMIT']}",
    f"- Commit: {env['COMMIT']}",
    f"- Versions: {env['RUSTC']}, candle-core {env['CANDLE_VERSION']}; "
    f"{torch_side['implementation']}",
    f"- Config: `{torch_side['config_file']}`, {torch_side['parameters']:,} parameters "
    f"(PyTorch count), seed {torch_side['seed']}; PyTorch attention: {torch_side['attention']}",
    "",
    "| side | implementation | threads | batch | steps (warm-up + timed) | median step (ms) "
    "| mean step (ms) | min–max step (ms) | samples/s (batch ÷ median) "
    "| median forward / backward / AdamW (ms) | peak RSS (MiB) | loss (first → last) |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]
if rust is not None:
    lines.append(row("Rust", rust, f"{rust['implementation']} on candle-core {env['CANDLE_VERSION']}"))
else:
    lines.append(f"| Rust | {env['RUST_NOTE']} |" + " |" * 10)
lines.append(row("PyTorch", torch_side, "transformers CLIPModel + torch.optim.AdamW"))
lines.append("")
if rust is not None:
    ratio = rust["samples_per_s"] / torch_side["samples_per_s"]
    lines.append(
        f"Rust samples/s ÷ PyTorch samples/s: **{ratio:.2f}** (above 1 means the Rust step "
        "is faster)."
    )
else:
    lines.append("Rust samples/s ÷ PyTorch samples/s: not available, because the Rust side did not run.")
if "peak_cuda_allocated_mib" in torch_side:
    lines.append(
        f"PyTorch peak CUDA memory allocated: {torch_side['peak_cuda_allocated_mib']:,.0f} MiB."
    )
lines.append(
    "Forward includes the loss and reading its value back. Peak RSS is each process's "
    "VmHWM, and the PyTorch figure includes the interpreter and the torch libraries."
)
load_1min = float(env["LOAD_BEFORE"].split()[0])
if load_1min >= float(env["IDLE_LIMIT"]):
    problems.append(
        f"the machine was busy (1-minute load average {load_1min} before the run), so other "
        "processes shared the CPUs and these timings are not a clean comparison"
    )
for problem in problems:
    lines.append("")
    lines.append(f"**WARNING:** {problem}.")
lines += ["", "Raw results:", "", "```"]
if rust is not None:
    lines.append(json.dumps(rust))
lines.append(json.dumps(torch_side))
lines.append("```")
print("\n".join(lines))
EOF
echo "report written to $report_path" >&2
