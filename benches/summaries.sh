#!/usr/bin/env bash
# Compares the two summary engines on real abstracts: the in-process Gemma 3 engine and
# llama-server's json_schema mode, with the same model, threads, prompts and greedy
# sampling. Measures seconds per valid summary and the grammar's cost per token
# (crates/llm/benches/summary_engines.rs). Prints the machine, the date and the commit
# first, so that the output is a complete record.
#
#   benches/summaries.sh --abstracts FILE [--count N] [--threads N] [--json PATH] ...
#
# The arguments go to the benchmark unchanged; `benches/summaries.sh --help` lists them.
# The benchmark is built first. Then the script waits up to PAPERCLIP_IDLE_WAIT_SECS
# seconds (default 120) for the 1-minute load average to fall below 0.5, and prints a
# warning with the load average when it does not. Uses llama-server on 127.0.0.1 only.
# Results: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

idle_limit=0.5
idle_wait_secs=${PAPERCLIP_IDLE_WAIT_SECS:-120}

for arg in "$@"; do
  if [ "$arg" = "--help" ] || [ "$arg" = "-h" ]; then
    exec cargo bench -p paperclip-llm --bench summary_engines --locked -- --help
  fi
done

cargo bench -p paperclip-llm --bench summary_engines --locked --no-run

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

cpu_model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
commit=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  commit="$commit (with uncommitted changes)"
fi

echo "== machine"
echo "date (UTC):   $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "uname -a:     $(uname -a)"
echo "nproc:        $(nproc)"
echo "CPU model:    ${cpu_model:-unknown}"
echo "git commit:   $commit"
echo "load average: $(load_averages) (1, 5 and 15 minutes) before the run, after ${waited} s of waiting"
if ! is_idle; then
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  echo "WARNING: the machine is busy: the 1-minute load average is $(cut -d' ' -f1 /proc/loadavg),"
  echo "not below ${idle_limit}. Other processes share the CPUs, so these timings are not a"
  echo "clean comparison; do not publish them."
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
fi

echo "== benchmark"
cargo bench -p paperclip-llm --bench summary_engines --locked -- "$@"
echo "load average: $(load_averages) (1, 5 and 15 minutes) after the run"
