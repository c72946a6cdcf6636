#!/usr/bin/env bash
# Fuzzes every parser of outside input with cargo-fuzz (libFuzzer) for SECONDS each and
# prints executions, corpus size and the result per target.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET ...]
#
# FUZZ_PROFILE=dev builds without optimization: about a minute instead of three on 2
# cores, but each input runs 10 to 100 times slower. CI uses it for its short runs;
# recorded campaigns use the default, an optimized build.
#
# Seeds come from the project's own generated inputs (`paperclip archive synth` with
# small previews and FITS files) and, when present, from the real files in
# ../shared/data. New inputs that reach new code go to fuzz/corpus/TARGET (not committed);
# a crash stops the script, leaves the input in fuzz/artifacts/TARGET and names it.
# Builds run with `-s none` (no sanitizer), which works on the stable toolchain; safe
# Rust needs no address sanitizer to catch out-of-bounds access, which panics.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-300}
shift || true

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install --quiet --locked cargo-fuzz --version 0.13.2
fi
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

seeds=target/seeds
# Seeds are built once; a target added since then rebuilds them all.
for target in "${targets[@]}"; do
  [ -d "$seeds/$target" ] || rm -f "$seeds/.complete"
done
if [ ! -f "$seeds/.complete" ]; then
  rm -rf "$seeds"
  mkdir -p "$seeds"/{catalog_abstracts,catalog_phase2,mast_response,fits_file,preview_image,summary_output,pipeline_file}
  (cd .. && cargo run --quiet -- archive synth "fuzz/$seeds/synth" --proposals 3 \
    --previews-per-proposal 6 --min-side-px 16 --max-side-px 96 --fits-per-proposal 1 \
    > /dev/null)
  cp "$seeds"/synth/catalog/*.cat "$seeds/catalog_abstracts/"
  find "$seeds/synth/files" -name '*.jpg' -exec cp {} "$seeds/preview_image/" \;
  find "$seeds/synth/files" -name '*.fits' -exec cp {} "$seeds/fits_file/" \;
  find "$seeds/synth" -name '*.json' -size -64k -exec cp --backup=numbered {} "$seeds/mast_response/" \;
  shared=../../shared/data
  if [ -d "$shared" ]; then
    cp "$shared"/abstracts/*.cat "$seeds/catalog_abstracts/"
    cp "$shared"/abstracts/*.pro "$seeds/catalog_phase2/"
    cp "$shared"/mast/*.json "$seeds/mast_response/"
    find "$shared/images" -name '*.fits' -size -300k -exec cp {} "$seeds/fits_file/" \;
    find "$shared/images" \( -name '*.png' -o -name '*.jpg' -o -name '*.fits' \) -size -120k \
      -exec cp {} "$seeds/preview_image/" \;
  else
    echo "note: $shared not found; fuzzing from the project's own seeds only" >&2
  fi
  rm -rf "$seeds/synth"
  # Model outputs: a valid summary, one with a repeated item, one cut short.
  printf '{"objects_and_phenomena": ["protoplanetary disks", "Orion Nebula"], "science_use_cases": ["count disks in a young cluster"]}' \
    > "$seeds/summary_output/valid.json"
  printf '{"objects_and_phenomena": ["quasar", "Quasar "], "science_use_cases": ["black hole masses", "x"]}' \
    > "$seeds/summary_output/repeated.json"
  printf '{"objects_and_phenomena": ["brown dwarfs"], "science_use_cases": ["measure ' \
    > "$seeds/summary_output/cut.json"
  # Pipeline files: the shipped ones and those of the SQL tests.
  for file in ../pipelines/*.toml ../tests/sql/*/pipeline.toml; do
    cp "$file" "$seeds/pipeline_file/$(echo "$file" | tr / _)"
  done
  touch "$seeds/.complete"
fi

profile=()
[ "${FUZZ_PROFILE:-release}" = dev ] && profile=(--dev)
cargo fuzz build -s none "${profile[@]}"
logs=target/fuzz-logs
mkdir -p "$logs"
printf '| target | seconds | executions | corpus inputs | result |\n|---|---:|---:|---:|---|\n' \
  > "$logs/summary.md"
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  status=0
  dict=()
  [ -f "dicts/$target.dict" ] && dict=(-dict="dicts/$target.dict")
  cargo fuzz run -s none "${profile[@]}" "$target" "corpus/$target" "$seeds/$target" -- \
    "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    > "$logs/$target.log" 2>&1 || status=$?
  executions=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$target.log" \
    | grep -o '[0-9]*$' || echo 0)
  inputs=$(find "corpus/$target" -type f | wc -l)
  result="no crash"
  [ "$status" -eq 0 ] || result="CRASH (exit $status), see fuzz/$logs/$target.log"
  printf '| %s | %s | %s | %s | %s |\n' "$target" "$seconds" "$executions" "$inputs" \
    "$result" >> "$logs/summary.md"
  if [ "$status" -ne 0 ]; then
    cat "$logs/summary.md"
    tail -40 "$logs/$target.log" >&2
    exit 1
  fi
done
cat "$logs/summary.md"
