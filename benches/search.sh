#!/usr/bin/env bash
# Exact text-to-image search over 100,000 unit vectors of width 512: paperclip's
# top_k_dot against NumPy (matrix-vector product plus argpartition), in one run on the
# same machine, on every core and on one. Usage: benches/search.sh [ROWS] [DIM]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-100000}
dim=${2:-512}

venv=target/bench-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "numpy==2.3.5"
fi

# The dev profile builds the clip crate at opt-level 3 (see Cargo.toml). A release build
# gives the same kernel but builds the whole stack again.
cargo bench --quiet --profile dev -p paperclip-clip --bench search -- "$rows" "$dim"
"$venv/bin/python" benches/search_numpy.py "$rows" "$dim"
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$venv/bin/python" benches/search_numpy.py "$rows" "$dim"
