#!/usr/bin/env bash
# The SQL server against DuckDB, and under load. Publishes the embedded archive, then a
# version of ROWS samples made from it (benches/sql_table.rs). Serves the data directory
# with `paperclip serve --sql-listen` on 127.0.0.1 and runs benches/sql_bench.py: query
# times through psycopg against DuckDB in process on the same Parquet files, then 32
# clients for LOAD_SECS seconds. Prints the machine, the date and the commit first.
#
#   benches/sql.sh [ROWS] [LOAD_SECS]
#
# Results: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-200000}
load_secs=${2:-60}

venv=target/bench-venv
if ! "$venv/bin/python" -c "import duckdb, psycopg" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "duckdb==2.0.1" "psycopg[binary]==3.3.9"
fi
cargo build --quiet --release --bin paperclip
binary=target/release/paperclip

work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$binary" --data-dir "$work/data" run pipelines/hst-paperclip.toml --archive embedded > /dev/null
cargo bench --quiet --bench sql_table -- "$work/data" hst-paperclip "$rows"

# The Parquet files of version 2: the files its Delta commit (number 1) added.
table="$work/data/datasets/hst-paperclip/samples"
mapfile -t parquet < <("$venv/bin/python" - "$table" <<'PY'
import json, sys
table = sys.argv[1]
with open(f"{table}/_delta_log/00000000000000000001.json") as log:
    for line in log:
        action = json.loads(line)
        if "add" in action:
            print(f"{table}/{action['add']['path']}")
PY
)

port=$("$venv/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$binary" --data-dir "$work/data" serve --sql-listen "127.0.0.1:$port" > "$work/serve.out" 2> "$work/serve.log" &
server_pid=$!
for _ in $(seq 100); do
  grep -q "SQL server listening" "$work/serve.out" && break
  sleep 0.1
done
sleep 0.5

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)"
"$venv/bin/python" benches/sql_bench.py compare --port "$port" \
  --table '"hst-paperclip".v2.samples' --parquet "${parquet[@]}"
echo
"$venv/bin/python" benches/sql_bench.py load --port "$port" \
  --table '"hst-paperclip".v2.samples' --clients 32 --seconds "$load_secs" --server-pid "$server_pid"
