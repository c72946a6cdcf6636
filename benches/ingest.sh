#!/usr/bin/env bash
# Ingest speed: paperclip's pipeline against img2dataset on the same preview URLs, in
# one run on this machine. Generates a synthetic archive of PROPOSALS x PREVIEWS sky
# previews of 512 to 4,500 pixels and keeps it under target/ingest-archive/. Serves it
# with `paperclip archive serve` on 127.0.0.1. Feeds every preview URL to img2dataset
# (webdataset output, 512-pixel squares with a white border, JPEG quality 95, one
# process per core) and to `paperclip run` (the same geometry and quality).
# Prints images per second, CPU seconds per image, peak memory (summed over each tool's
# processes) and output bytes of both, and the ratios. Then prints the per-stage rates of
# `cargo bench -p paperclip-images --bench stages` and of img2dataset's OpenCV steps
# (`benches/opencv_stages.py`) on 60 of the same previews. The machine, the date and the
# commit come first.
#
#   benches/ingest.sh [PROPOSALS] [PREVIEWS_PER_PROPOSAL]
#
# Results: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
proposals=${1:-1000}
previews=${2:-10}
cores=$(nproc)

venv=target/ingest-venv
if [ ! -x "$venv/bin/img2dataset" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "img2dataset==1.47.0"
fi
cargo build --quiet --release --bin paperclip
binary=target/release/paperclip

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

find "$archive/files" -name '*.jpg' -printf '%f\n' | sort \
  | sed "s|^|$url/api/v0.1/Download/file?uri=mast:HST/product/|" > "$work/urls.txt"
images=$(wc -l < "$work/urls.txt")

echo "machine: $cores cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)"
echo "input: $images previews ($(du -sh "$archive/files" | cut -f1)) from $proposals proposals"

/usr/bin/time -v -o "$work/img2dataset.time" \
  python3 benches/measure.py "$work/img2dataset.measured" -- "$venv/bin/img2dataset" \
  --url_list "$work/urls.txt" --output_folder "$work/img2dataset" \
  --output_format webdataset --image_size 512 --resize_mode border \
  --encode_quality 95 --processes_count "$cores" --thread_count 16 --timeout 60 \
  --number_sample_per_shard 1000 --extract_exif False --compute_hash None \
  > "$work/img2dataset.log" 2>&1

sed -e 's/^download_concurrency = .*/download_concurrency = 16/' \
    -e 's/^size_px = .*/size_px = 512/' -e 's/^jpeg_quality = .*/jpeg_quality = 95/' \
    -e "s|\"\\.\\./sql/|\"$PWD/sql/|g" \
    pipelines/hst-paperclip.toml > "$work/pipeline.toml"
/usr/bin/time -v -o "$work/paperclip.time" \
  python3 benches/measure.py "$work/paperclip.measured" -- "$binary" --data-dir "$work/data" \
  run "$work/pipeline.toml" --archive "$url" > "$work/paperclip.log" 2>&1

"$venv/bin/python" - "$work" <<'PY'
import glob, json, os, re, sys

work = sys.argv[1]

def measure(name):
    text = open(f"{work}/{name}.time").read()
    field = lambda label: re.search(rf"{re.escape(label)}: (.+)", text).group(1).strip()
    clock = [float(part) for part in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
    wall = sum(value * 60 ** power for power, value in enumerate(reversed(clock)))
    measured = dict(line.split() for line in open(f"{work}/{name}.measured"))
    cpu = float(measured.get("cpu_secs", 0)) or (
        float(field("User time (seconds)")) + float(field("System time (seconds)")))
    return wall, cpu, int(measured["rss_kib"])

def tree_bytes(root, pattern="*"):
    return sum(os.path.getsize(p) for p in glob.glob(f"{root}/**/{pattern}", recursive=True)
               if os.path.isfile(p))

stats = [json.load(open(p)) for p in glob.glob(f"{work}/img2dataset/*_stats.json")]
theirs_images = sum(s["successes"] for s in stats)
report = open(f"{work}/paperclip.log").read()
ours_images = int(re.search(r"\n\s*samples\s+(\d+)", report).group(1))
rows = {
    "img2dataset 1.47.0": (theirs_images, *measure("img2dataset"),
                           tree_bytes(f"{work}/img2dataset", "*.tar")),
    "paperclip run": (ours_images, *measure("paperclip"),
                      tree_bytes(f"{work}/data/datasets", "*.tar")),
}
print("| tool | images | wall (s) | images/s | CPU s per image | peak RSS (MiB) | shard bytes |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name, (images, wall, cpu, rss_kib, out) in rows.items():
    print(f"| {name} | {images} | {wall:.1f} | {images / wall:.1f} | {cpu / images:.3f} | "
          f"{rss_kib / 1024:.0f} | {out} |")
(i_t, w_t, c_t, r_t, o_t), (i_o, w_o, c_o, r_o, o_o) = rows.values()
print(f"\nimages/s, paperclip / img2dataset: {(i_o / w_o) / (i_t / w_t):.2f}; "
      f"CPU per image, img2dataset / paperclip: {(c_t / i_t) / (c_o / i_o):.2f}")
print("Peak RSS: the largest sum over each tool's process tree, sampled every 100 ms. "
      "CPU seconds: every process of the tool (a cpuacct cgroup, where writable; else time -v).")
PY

echo
echo "Per-stage rates on the first 60 previews of the same archive:"
cargo bench --quiet -p paperclip-images --bench stages -- "$PWD/$archive/files/HST/product" 60
"$venv/bin/python" benches/opencv_stages.py "$archive/files/HST/product" 60
