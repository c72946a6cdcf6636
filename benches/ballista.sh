#!/usr/bin/env bash
# The SQL models on the local engine and on a Ballista cluster (one scheduler, two
# executors, all on 127.0.0.1), over the same synthetic archive: `paperclip plan`, which
# queries the archive and runs the models but downloads nothing, three times per engine.
# Prints the models stage's seconds of each try and the median ratio Ballista / local.
#
#   benches/ballista.sh [PROPOSALS] [PREVIEWS_PER_PROPOSAL]
#
# PAPERCLIP_BIN names a release binary to use instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
proposals=${1:-2000}
previews=${2:-10}

binary=${PAPERCLIP_BIN:-}
if [ -z "$binary" ]; then
  cargo build --quiet --release --bin paperclip
  binary=target/release/paperclip
fi

# Small previews: the plan never downloads them, only the archive lists them.
archive="target/ballista-archive/p${proposals}x${previews}"
if [ ! -f "$archive/.complete" ]; then
  rm -rf "$archive"
  "$binary" archive synth "$archive" --proposals "$proposals" \
    --previews-per-proposal "$previews" --min-side-px 64 --max-side-px 64 > /dev/null
  touch "$archive/.complete"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for() { # FILE PATTERN
  for _ in $(seq 300); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2
  exit 1
}

"$binary" archive serve "$archive" --port 0 > /dev/null 2> "$work/serve.log" &
pids+=($!)
wait_for "$work/serve.log" 'http://127.0.0.1:'
url=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/serve.log" | head -1)

scheduler_port=$(free_port)
"$binary" --log-level info cluster scheduler --listen "127.0.0.1:$scheduler_port" \
  > /dev/null 2> "$work/scheduler.log" &
pids+=($!)
for n in 1 2; do
  "$binary" --log-level warn cluster executor --scheduler "127.0.0.1:$scheduler_port" \
    --listen "127.0.0.1:$(free_port)" --grpc-port "$(free_port)" \
    > /dev/null 2> "$work/executor-$n.log" &
  pids+=($!)
done
for _ in $(seq 300); do
  [ "$(grep -c 'Received register executor request' "$work/scheduler.log")" = 2 ] && break
  sleep 0.1
done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), binary $binary"
echo "input: $proposals proposals x $previews previews; cluster: 1 scheduler, 2 executors on 127.0.0.1"

sed -e "s|\"\\.\\./sql/|\"$PWD/sql/|g" pipelines/hst-paperclip.toml > "$work/pipeline.toml"
for engine in local "ballista://127.0.0.1:$scheduler_port"; do
  for try in 1 2 3; do
    data="$work/data-$try-${engine%%:*}"
    if ! "$binary" --json --data-dir "$data" plan "$work/pipeline.toml" --archive "$url" \
      --engine "$engine" > "$work/report.json" 2> "$work/plan.log"; then
      tail -20 "$work/plan.log" >&2
      exit 1
    fi
    python3 - "$work/report.json" "${engine%%:*}" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
models = next(s for s in report["stages"] if s["stage"] == "models")
print(f"{sys.argv[2]} {models['elapsed_secs']:.3f} {report['counts']['selected_images']}")
PY
  done
done > "$work/times.txt"

python3 - "$work/times.txt" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
by_engine = {}
for engine, secs, selected in rows:
    by_engine.setdefault(engine, []).append((float(secs), selected))
print("\n| engine | models stage, s (3 tries) | median s | selected images |")
print("|---|---|---:|---:|")
for engine, tries in by_engine.items():
    secs = [s for s, _ in tries]
    print(f"| {engine} | {', '.join(f'{s:.2f}' for s in secs)} | "
          f"{statistics.median(secs):.2f} | {tries[0][1]} |")
selected = {sel for tries in by_engine.values() for _, sel in tries}
assert len(selected) == 1, f"the engines selected different counts: {selected}"
local = statistics.median(s for s, _ in by_engine["local"])
ballista = statistics.median(s for s, _ in by_engine["ballista"])
print(f"\nratio Ballista / local (median): {ballista / local:.2f}")
PY
