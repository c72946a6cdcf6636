#!/usr/bin/env bash
# Capacity figures for docs/scale.md: one `paperclip run` over a synthetic archive served
# on 127.0.0.1, with the time of each stage and the bytes each sample takes in every
# store (downloads, prepared images, shards, the Delta samples table, the archive state).
# The machine, the date and the commit come first.
#
#   benches/scale.sh [PROPOSALS] [PREVIEWS_PER_PROPOSAL]
#
# PAPERCLIP_BIN names a release binary to use instead of building one (the figures then
# belong to the commit it was built from), and PIPELINE a pipeline file that binary reads
# (default pipelines/hst-paperclip.toml). The archive is the one benches/ingest.sh
# generates, kept under target/ingest-archive/.
set -euo pipefail
cd "$(dirname "$0")/.."
proposals=${1:-1000}
previews=${2:-10}

binary=${PAPERCLIP_BIN:-}
if [ -z "$binary" ]; then
  cargo build --quiet --release --bin paperclip
  binary=target/release/paperclip
fi

archive="target/ingest-archive/p${proposals}x${previews}"
if [ ! -f "$archive/.complete" ]; then
  rm -rf "$archive"
  "$binary" archive synth "$archive" --proposals "$proposals" \
    --previews-per-proposal "$previews" > /dev/null
  touch "$archive/.complete"
fi

work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$binary" archive serve "$archive" --port 0 > /dev/null 2> "$work/serve.log" &
server_pid=$!
url=""
for _ in $(seq 100); do
  url=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/serve.log" | head -1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "the archive server did not start" >&2; exit 1; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), binary $binary"
echo "input: $(find "$archive/files" -name '*.jpg' | wc -l) previews ($(du -sh "$archive/files" | cut -f1)) from $proposals proposals"

sed -e 's/^download_concurrency = .*/download_concurrency = 16/' \
    -e "s|\"\\.\\./sql/|\"$PWD/sql/|g" \
    "${PIPELINE:-pipelines/hst-paperclip.toml}" > "$work/pipeline.toml"
if ! "$binary" --json --data-dir "$work/data" run "$work/pipeline.toml" --archive "$url" \
  > "$work/report.json" 2> "$work/run.log"; then
  tail -20 "$work/run.log" >&2
  exit 1
fi

python3 - "$work" <<'PY'
import glob, json, os, sys

work = sys.argv[1]
report = json.load(open(f"{work}/report.json"))
samples = report["counts"]["samples"]

print(f"\nsamples: {samples}; archive requests: {report['archive_requests']}; "
      f"whole run: {report['elapsed_secs']:.1f} s")
print("\n| stage | status | seconds |")
print("|---|---|---:|")
for stage in report["stages"]:
    print(f"| {stage['stage']} | {stage['status']} | {stage['elapsed_secs']:.2f} |")

def tree_bytes(root):
    return sum(os.path.getsize(p) for p in glob.glob(f"{root}/**/*", recursive=True)
               if os.path.isfile(p))

data = f"{work}/data"
dataset = f"{data}/datasets/{report['dataset']}"
stores = {
    "blobs (downloads and prepared images)": f"{data}/blobs",
    "prepared-image index": f"{data}/prepared",
    "shards": f"{dataset}/versions",
    "Delta samples table": f"{dataset}/samples",
    "archive state": f"{dataset}/state",
}
print("\n| store | bytes | bytes per sample |")
print("|---|---:|---:|")
for name, root in stores.items():
    size = tree_bytes(root)
    print(f"| {name} | {size:,} | {size / samples:,.0f} |")
PY
