#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (CPU, Release) from the llama.cpp source vendored in the
# llama-cpp-python sdist on PyPI, and install the binary into a cache outside the repository.
#
# usage: tools/build-llama-server.sh        prints the path of the binary on stdout
#
# The binary lands in ${PAPERCLIP_CACHE:-$HOME/.cache/paperclip}/llama-server/<version>/.
# Nothing is built when a working binary is already there, so CI can call this every time.
#
# Environment:
#   PAPERCLIP_CACHE         cache root (default: $HOME/.cache/paperclip)
#   PAPERCLIP_PYPI_SIMPLE   PyPI simple index (default: https://pypi.org/simple)
#   LLAMA_BUILD_JOBS        parallel compile jobs (default: 2)
#   LLAMA_NATIVE            ON tunes for this CPU (default), OFF builds a portable binary
#
# Needs: cmake >= 3.18, a C++17 compiler, make, tar, and curl or python3. On Debian and
# Ubuntu: apt-get install cmake g++ make curl
#
# Measured 2026-12-05 on 2 cores of an Intel Xeon (Debian 12, g++ 12.2, otherwise idle):
# 245-249 s from download to installed binary. Other builds running at the same time
# slow it down.
set -euo pipefail

# llama-cpp-python 0.3.36 vendors llama.cpp at commit 0c1e570. The SHA-256 is PyPI's digest
# of the sdist, and a download that does not match it is never built.
VERSION="0.3.36"
SDIST="llama_cpp_python-${VERSION}.tar.gz"
SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"

cache_root="${PAPERCLIP_CACHE:-${HOME}/.cache/paperclip}"
dest="${cache_root%/}/llama-server/${VERSION}"
binary="${dest}/llama-server"
index="${PAPERCLIP_PYPI_SIMPLE:-https://pypi.org/simple}"
jobs="${LLAMA_BUILD_JOBS:-2}"
native="${LLAMA_NATIVE:-ON}"

log() { echo "build-llama-server: $*" >&2; }
die() {
  log "$*"
  exit 1
}

if [[ -x "$binary" ]] && "$binary" --version >/dev/null 2>&1; then
  echo "$binary"
  exit 0
fi

# --- tools ---------------------------------------------------------------------------------
missing=()
command -v cmake >/dev/null 2>&1 || missing+=("cmake (apt-get install cmake)")
cxx="${CXX:-}"
if [[ -z "$cxx" ]]; then
  for candidate in c++ g++ clang++; do
    if command -v "$candidate" >/dev/null 2>&1; then
      cxx="$candidate"
      break
    fi
  done
fi
[[ -n "$cxx" ]] || missing+=("a C++17 compiler (apt-get install g++)")
command -v make >/dev/null 2>&1 || missing+=("make (apt-get install make)")
command -v tar >/dev/null 2>&1 || missing+=("tar (apt-get install tar)")
if ! command -v curl >/dev/null 2>&1 && ! command -v python3 >/dev/null 2>&1; then
  missing+=("curl or python3 (apt-get install curl)")
fi
if ((${#missing[@]})); then
  die "missing tools: ${missing[*]}"
fi
cmake_version="$(cmake --version | head -n1 | awk '{print $3}')"
if [[ "$(printf '%s\n%s\n' 3.18 "$cmake_version" | sort -V | head -n1)" != "3.18" ]]; then
  die "cmake ${cmake_version} is too old; llama.cpp needs 3.18 or newer (apt-get install cmake, or pip install cmake)"
fi

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  else
    python3 -c 'import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())' "$1"
  fi
}

fetch() { # URL FILE
  if command -v curl >/dev/null 2>&1; then
    curl --fail --silent --show-error --location --retry 3 --output "$2" "$1"
  else
    python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"
  fi
}

# --- source --------------------------------------------------------------------------------
mkdir -p "${cache_root%/}/llama-server"
work="$(mktemp -d "${cache_root%/}/llama-server/.build-${VERSION}.XXXXXX")"
trap 'rm -rf "$work"' EXIT
started=$SECONDS

# The simple index lists each file with its URL; the project's JSON API is not used because
# mirrors may rewrite its URLs to relative ones.
log "looking up ${SDIST} in ${index}"
fetch "${index%/}/llama-cpp-python/" "$work/index.html"
url="$(grep -o "href=\"[^\"]*/${SDIST}[^\"]*\"" "$work/index.html" | head -n1 | sed -e 's/^href="//' -e 's/"$//' -e 's/#.*$//' -e 's/&amp;/\&/g')"
[[ -n "$url" ]] || die "${index%/}/llama-cpp-python/ does not list ${SDIST}. Set PAPERCLIP_PYPI_SIMPLE to an index that has it"
case "$url" in
  http://* | https://*) ;;
  *) url="${index%/}/llama-cpp-python/${url}" ;;
esac

log "downloading ${SDIST} (about 77 MB)"
fetch "$url" "$work/${SDIST}"
got="$(sha256_of "$work/${SDIST}")"
[[ "$got" == "$SHA256" ]] || die "sha256 of ${SDIST} is ${got}, expected ${SHA256}. The download is damaged or the index serves a different file"

tar -xzf "$work/${SDIST}" -C "$work"
src="$work/llama_cpp_python-${VERSION}/vendor/llama.cpp"
[[ -f "$src/CMakeLists.txt" ]] || die "${SDIST} has no vendor/llama.cpp/CMakeLists.txt, so the sdist layout changed. Pin another version"

# --- build ---------------------------------------------------------------------------------
# Only the server target, statically linked, without the web UI (which would be downloaded
# from Hugging Face), without HTTPS (it serves loopback only) and without tests or examples.
# GGML_NATIVE compiles for this CPU with -march=native, which turns on AMX where the CPU
# reports it. In the Firecracker VMs we build on, the CPU reports AMX but the first AMX
# instruction (ldtilecfg) kills the server with SIGSEGV while it loads the model, so AMX is
# always left out. AVX-512 and VNNI stay on.
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
log "configuring (GGML_NATIVE=${native} without AMX, compiler ${cxx})"
cmake -S "$src" -B "$work/build" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_C_FLAGS="$no_amx" \
  -DCMAKE_CXX_FLAGS="$no_amx" \
  -DGGML_AMX_TILE=OFF \
  -DGGML_AMX_INT8=OFF \
  -DGGML_AMX_BF16=OFF \
  -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE="$native" \
  -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_OPENSSL=OFF \
  >"$work/configure.log" 2>&1 || {
  tail -n 40 "$work/configure.log" >&2
  die "cmake configure failed (log above)"
}

log "building llama-server with ${jobs} jobs"
cmake --build "$work/build" --target llama-server --config Release -j "$jobs" \
  >"$work/build.log" 2>&1 || {
  tail -n 40 "$work/build.log" >&2
  die "build failed (log above)"
}

built="$work/build/bin/llama-server"
[[ -x "$built" ]] || die "the build finished but ${built} is missing"
"$built" --version >/dev/null 2>&1 || die "${built} --version failed, so the binary does not run on this machine"

mkdir -p "$dest"
cp "$built" "$dest/.llama-server.tmp"
mv -f "$dest/.llama-server.tmp" "$binary"
{
  echo "llama-cpp-python ${VERSION} sdist sha256 ${SHA256}"
  echo "GGML_NATIVE=${native} C/C++ flags: ${no_amx} compiler=$("$cxx" --version | head -n1)"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - started)) s with ${jobs} jobs"
  "$binary" --version 2>&1 | head -n 4
} >"$dest/BUILD-INFO"

log "built in $((SECONDS - started)) s"
echo "$binary"
