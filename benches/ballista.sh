#!/usr/bin/env bash
# The local engine against a Ballista cluster (one scheduler, two executors, all on
# 127.0.0.1), three tries each, in two parts:
# - the SQL models: `paperclip plan` over a synthetic archive of small previews, which
#   queries the archive and runs the models but downloads nothing;
# - the image stage: `paperclip run` into an empty data directory over a second synthetic
#   archive of full-size previews, which downloads and prepares every image.
# Prints each try's stage seconds and the median ratio Ballista / local per stage.
#
#   benches/ballista.sh [PROPOSALS] [PREVIEWS_PER_PROPOSAL] [IMAGE_PROPOSALS]
#
# PAPERCLIP_BIN names a release binary to use instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
proposals=${1:-2000}
previews=${2:-10}
image_proposals=${3:-100}

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
images_archive="target/ballista-archive/images-p${image_proposals}x4"
if [ ! -f "$images_archive/.complete" ]; then
  rm -rf "$images_archive"
  "$binary" archive synth "$images_archive" --proposals "$image_proposals" \
    --previews-per-proposal 4 --min-side-px 512 --max-side-px 1024 > /dev/null
  touch "$images_archive/.complete"
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

serve() { # ARCHIVE NAME: starts a server; its URL is then in $served_url
  "$binary" archive serve "$1" --port 0 > /dev/null 2> "$work/serve-$2.log" &
  pids+=($!)
  wait_for "$work/serve-$2.log" 'http://127.0.0.1:'
  served_url=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/serve-$2.log" | head -1)
}
serve "$archive" models
url=$served_url
serve "$images_archive" images
images_url=$served_url

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
echo "input: models $proposals proposals x $previews previews; images $image_proposals proposals x 4 previews of 512-1024 px"
echo "cluster: 1 scheduler, 2 executors on 127.0.0.1"

sed -e "s|\"\\.\\./sql/|\"$PWD/sql/|g" pipelines/hst-paperclip.toml > "$work/pipeline.toml"
# COMMAND ARCHIVE_URL STAGE: three tries per engine, each into a new data directory.
measure() {
  for engine in local "ballista://127.0.0.1:$scheduler_port"; do
    for try in 1 2 3; do
      data="$work/data-$3-$try-${engine%%:*}"
      if ! "$binary" --json --data-dir "$data" "$1" "$work/pipeline.toml" --archive "$2" \
        --engine "$engine" > "$work/report.json" 2> "$work/$1.log"; then
        tail -20 "$work/$1.log" >&2
        exit 1
      fi
      python3 - "$work/report.json" "${engine%%:*}" "$3" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
stage = next(s for s in report["stages"] if s["stage"] == sys.argv[3])
print(f"{sys.argv[3]} {sys.argv[2]} {stage['elapsed_secs']:.3f} {report['counts']['selected_images']}")
PY
    done
  done
}
{
  measure plan "$url" models
  measure run "$images_url" images
} > "$work/times.txt"

python3 - "$work/times.txt" <<'PY'
import statistics, sys
by_stage = {}
for line in open(sys.argv[1]):
    stage, engine, secs, selected = line.split()
    by_stage.setdefault(stage, {}).setdefault(engine, []).append((float(secs), selected))
print("\n| stage | engine | seconds (3 tries) | median s | selected images |")
print("|---|---|---|---:|---:|")
for stage, by_engine in by_stage.items():
    for engine, tries in by_engine.items():
        secs = [s for s, _ in tries]
        print(f"| {stage} | {engine} | {', '.join(f'{s:.2f}' for s in secs)} | "
              f"{statistics.median(secs):.2f} | {tries[0][1]} |")
for stage, by_engine in by_stage.items():
    selected = {sel for tries in by_engine.values() for _, sel in tries}
    assert len(selected) == 1, f"{stage}: the engines selected different counts: {selected}"
    local = statistics.median(s for s, _ in by_engine["local"])
    ballista = statistics.median(s for s, _ in by_engine["ballista"])
    print(f"{stage}: ratio Ballista / local (median): {ballista / local:.2f}")
PY
