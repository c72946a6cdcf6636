#!/usr/bin/env bash
# Publishes N versions of the fixture dataset in a row (each with another sampling seed, so
# every run publishes) and prints how the run time grows with the number of versions.
#
#   benches/version_growth.sh [VERSIONS] [PAPERCLIP_BINARY]
#
# Uses a local archive on 127.0.0.1 only. Results: docs/benchmarks.md.
set -euo pipefail
versions=${1:-500}
binary=${2:-target/release/paperclip}
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'kill "$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

"$binary" archive fixtures "$work/snapshot" > /dev/null
"$binary" archive serve "$work/snapshot" --port 0 > "$work/serve.out" 2> "$work/serve.log" &
server_pid=$!
for _ in $(seq 50); do
  url=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/serve.log" || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "archive server did not start" >&2; exit 1; }

mkdir -p "$work/pipelines"
cp -r sql "$work/sql"
for i in $(seq "$versions"); do
  sed "s/^seed = 42/seed = $i/" pipelines/hst-paperclip.toml > "$work/pipelines/p.toml"
  "$binary" --data-dir "$work/data" run "$work/pipelines/p.toml" --archive "$url" > /dev/null
done

"$binary" --data-dir "$work/data" sql "
  SELECT
    (published_version - 1) / 50 * 50 + 1 AS from_version,
    count(*) AS runs,
    round(avg(elapsed_secs) * 1000) AS mean_run_ms,
    round(max(elapsed_secs) * 1000) AS max_run_ms
  FROM paperclip.runs
  WHERE published_version IS NOT NULL
  GROUP BY 1 ORDER BY 1"
"$binary" --data-dir "$work/data" sql "
  SELECT
    (r.published_version - 1) / 50 * 50 + 1 AS from_version,
    round(avg(s.elapsed_secs) * 1000) AS mean_publish_stage_ms,
    round(max(s.elapsed_secs) * 1000) AS max_publish_stage_ms
  FROM paperclip.runs r JOIN paperclip.stages s USING (run_id)
  WHERE r.published_version IS NOT NULL AND s.stage = 'publish'
  GROUP BY 1 ORDER BY 1"
"$binary" --data-dir "$work/data" sql "
  SELECT count(*) AS runs, count(published_version) AS published FROM paperclip.runs"
du -sh "$work/data/datasets/hst-paperclip/samples/_delta_log" | sed 's/^/delta log size: /'
