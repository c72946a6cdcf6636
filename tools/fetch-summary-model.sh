#!/usr/bin/env bash
# Fetch the model the llama-server test uses (Gemma 3 270M, Q4_K_M GGUF, the pretrained base
# model under the Gemma Terms of Use) into the same cache as tools/build-llama-server.sh.
#
# usage: tools/fetch-summary-model.sh     prints the path of the GGUF file on stdout
#
# The model is ${PAPERCLIP_CACHE:-$HOME/.cache/paperclip}/models/gemma-3-270m-q4_k_m.gguf.
# The download and its SHA-256 check are done by fetch-gemma.sh in ../shared/tools, or by
# the copy that FETCH_GEMMA names. It does nothing when the file is already there with the
# right hash.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
fetch="${FETCH_GEMMA:-${repo}/../shared/tools/fetch-gemma.sh}"
cache_root="${PAPERCLIP_CACHE:-${HOME}/.cache/paperclip}"

if [[ ! -f "$fetch" ]]; then
  echo "fetch-summary-model: ${fetch} not found; set FETCH_GEMMA to the path of fetch-gemma.sh," \
    "or put any GGUF model at ${cache_root%/}/models/gemma-3-270m-q4_k_m.gguf" >&2
  exit 1
fi
exec bash "$fetch" "${cache_root%/}/models"
