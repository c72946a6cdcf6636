#!/usr/bin/env python3
"""Record llama.cpp's greedy token ids for the Gemma 3 golden prompts.

The script starts the cached llama-server on 127.0.0.1 with the cached Gemma 3 GGUF. For
each case in crates/llm/tests/golden/prompts.json it tokenizes the text with POST /tokenize
(BOS added, special tokens such as <start_of_turn> parsed), generates from those ids with
POST /completion using greedy sampling (top-k 1, no penalties, end-of-generation tokens
masked so that every case yields the full count), and writes
crates/llm/tests/golden/greedy.json. The crate's greedy-parity test compares the in-process
Gemma 3 against that file token for token. The file also contains the two most probable
tokens at each step, so the test can tell a near-tie from a real mismatch.

Usage:
    python3 tools/llama-greedy-golden.py [--server PATH] [--model PATH]
                                         [--prompts PATH] [--output PATH]

Defaults, which PAPERCLIP_LLAMA_SERVER and PAPERCLIP_GGUF override and the flags override
in turn:
    server: ${PAPERCLIP_CACHE:-~/.cache/paperclip}/llama-server/0.3.36/llama-server
            (built by tools/build-llama-server.sh)
    model:  the only *.gguf in ${PAPERCLIP_CACHE:-~/.cache/paperclip}/models
            (downloaded by tools/fetch-summary-model.sh)

Only 127.0.0.1 is contacted, and HTTP proxy settings are ignored. The server is stopped by
its PID when the script ends, also after an error, Ctrl-C or SIGTERM. The script needs only
the Python 3 standard library. When a path is missing or a check or request fails, it prints
the reason and the fix and exits with status 1.
"""

import argparse
import hashlib
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROMPTS = REPO_ROOT / "crates/llm/tests/golden/prompts.json"
DEFAULT_OUTPUT = REPO_ROOT / "crates/llm/tests/golden/greedy.json"

SERVER_VERSION = "0.3.36"
LLAMA_CPP = "llama-cpp-python 0.3.36 sdist (llama.cpp 0c1e570)"
HOST = "127.0.0.1"
SERVER_ARGS = ["-t", "1", "-c", "4096", "-np", "1"]
CONTEXT_SIZE = 4096
N_PREDICT = 48
HEALTH_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 600.0

# llama.cpp's server reads these fields in params_from_json_cmpl() of
# tools/server/server-task.cpp and ignores unknown ones. The notes below come from that
# source at llama.cpp commit 00efb3e, not at 0c1e570 itself, so
# check_generation_settings() compares the settings that the server echoes back.
#
# * "samplers": ["top_k"] builds the sampler chain logit-bias -> top-k -> dist. With
#   top_k 1 that is argmax. Penalties, DRY, top-p, min-p and temperature are left out of
#   the chain, so "repeat_penalty" and "temperature" only document the intent.
# * "ignore_eos" adds a -inf logit bias to every end-of-generation token, so each step
#   takes the argmax over the other tokens. llama.cpp's vocabulary loader counts <eos>
#   and <end_of_turn> among those tokens for Gemma 3.
# * "n_probs" with "post_sampling_probs" false returns, per generated token, the top
#   tokens of a softmax over the raw logits, taken before that bias is applied.
COMPLETION_SETTINGS = {
    "n_predict": N_PREDICT,
    "temperature": 0,
    "top_k": 1,
    "samplers": ["top_k"],
    "repeat_penalty": 1.0,
    "ignore_eos": True,
    "cache_prompt": False,
    "n_probs": 2,
    "post_sampling_probs": False,
    "return_tokens": True,
    "stream": False,
}
TOKENIZE_SETTINGS = {"add_special": True, "parse_special": True}

# The empty ProxyHandler stops urllib from sending the loopback requests through a proxy
# named in http_proxy or similar variables.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class GoldenError(Exception):
    """A failure that ends the run with a message for the user."""


# --- inputs -----------------------------------------------------------------------------


def cache_root():
    return Path(os.environ.get("PAPERCLIP_CACHE") or Path.home() / ".cache/paperclip")


def find_server(flag):
    if flag:
        path, source = Path(flag), "--server"
    elif os.environ.get("PAPERCLIP_LLAMA_SERVER"):
        path, source = Path(os.environ["PAPERCLIP_LLAMA_SERVER"]), "PAPERCLIP_LLAMA_SERVER"
    else:
        path = cache_root() / "llama-server" / SERVER_VERSION / "llama-server"
        source = "the default path"
    if not path.is_file():
        raise GoldenError(
            f"llama-server not found at {path} ({source}). Run tools/build-llama-server.sh, "
            "or point PAPERCLIP_LLAMA_SERVER or --server at an existing binary."
        )
    if not os.access(path, os.X_OK):
        raise GoldenError(f"{path} ({source}) is not executable. Run chmod +x {path}.")
    return path


def find_model(flag):
    if flag or os.environ.get("PAPERCLIP_GGUF"):
        path = Path(flag or os.environ["PAPERCLIP_GGUF"])
        source = "--model" if flag else "PAPERCLIP_GGUF"
        if not path.is_file():
            raise GoldenError(
                f"model file {path} ({source}) not found. Run tools/fetch-summary-model.sh, "
                "or point PAPERCLIP_GGUF or --model at an existing GGUF file."
            )
        return path

    models_dir = cache_root() / "models"
    found = sorted(models_dir.glob("*.gguf")) if models_dir.is_dir() else []
    if not found:
        raise GoldenError(
            f"no *.gguf file in {models_dir}. Run tools/fetch-summary-model.sh, "
            "or set PAPERCLIP_GGUF or --model to the Gemma 3 GGUF."
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise GoldenError(
            f"{models_dir} contains {len(found)} GGUF files ({names}), so the model is "
            "ambiguous. Set PAPERCLIP_GGUF or --model to the Gemma 3 270M file."
        )
    return found[0]


def load_prompts(path):
    if not path.is_file():
        raise GoldenError(
            f"prompt file {path} not found. It is part of the repository; pass --prompts "
            "if you moved it."
        )
    try:
        cases = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GoldenError(f"failed to read {path} as UTF-8 JSON: {err}") from err

    if not isinstance(cases, list) or not cases:
        raise GoldenError(f"{path} must contain a non-empty JSON list of cases")
    names = set()
    for index, case in enumerate(cases):
        valid = (
            isinstance(case, dict)
            and isinstance(case.get("name"), str)
            and isinstance(case.get("text"), str)
            and case["name"]
            and case["text"]
        )
        if not valid:
            raise GoldenError(
                f"{path}: case {index} is invalid. Each case needs the non-empty string "
                'fields "name" and "text".'
            )
        if case["name"] in names:
            raise GoldenError(f"{path}: case name {case['name']!r} appears twice")
        names.add(case["name"])
    return cases


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- GGUF metadata ----------------------------------------------------------------------

# Value type codes of GGUF v2/v3 metadata and the struct format of each fixed-size type.
GGUF_FIXED = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
              10: "<Q", 11: "<q", 12: "<d"}
GGUF_STRING = 8
GGUF_ARRAY = 9


def read_exact(file, size, path):
    data = file.read(size)
    if len(data) != size:
        raise GoldenError(f"{path} ends inside its GGUF metadata, so the file is truncated")
    return data


def read_gguf_value(file, value_type, path):
    if value_type in GGUF_FIXED:
        fmt = GGUF_FIXED[value_type]
        return struct.unpack(fmt, read_exact(file, struct.calcsize(fmt), path))[0]
    if value_type == GGUF_STRING:
        (length,) = struct.unpack("<Q", read_exact(file, 8, path))
        return read_exact(file, length, path).decode("utf-8", errors="replace")
    if value_type == GGUF_ARRAY:
        element_type, count = struct.unpack("<IQ", read_exact(file, 12, path))
        if element_type in GGUF_FIXED:
            # Skip fixed-size arrays in one seek, because no caller needs their elements.
            file.seek(count * struct.calcsize(GGUF_FIXED[element_type]), os.SEEK_CUR)
            return None
        for _ in range(count):
            read_gguf_value(file, element_type, path)
        return None
    raise GoldenError(f"{path} has GGUF metadata value type {value_type}, which is unknown")


def read_sliding_window(path):
    """Return the attention sliding window, in tokens, of the Gemma 3 GGUF at path.

    Reads the metadata up to `gemma3.attention.sliding_window`, the key llama.cpp takes the
    window of Gemma 3's local attention layers from. Raises GoldenError when the file is
    not GGUF v2/v3, is not a Gemma 3 model or lacks the key.
    """
    with open(path, "rb") as file:
        magic, version = struct.unpack("<4sI", read_exact(file, 8, path))
        if magic != b"GGUF" or version not in (2, 3):
            raise GoldenError(
                f"{path} is not a GGUF v2/v3 file (magic {magic!r}, version {version})"
            )
        _tensor_count, kv_count = struct.unpack("<QQ", read_exact(file, 16, path))

        architecture = None
        for _ in range(kv_count):
            key = read_gguf_value(file, GGUF_STRING, path)
            (value_type,) = struct.unpack("<I", read_exact(file, 4, path))
            value = read_gguf_value(file, value_type, path)
            if key == "general.architecture":
                architecture = value
                if architecture != "gemma3":
                    raise GoldenError(
                        f"{path} is a {architecture!r} model, expected gemma3. Set "
                        "PAPERCLIP_GGUF or --model to the Gemma 3 270M GGUF."
                    )
            elif key == "gemma3.attention.sliding_window":
                return int(value)

    raise GoldenError(
        f"{path} has no gemma3.attention.sliding_window metadata key "
        f"(general.architecture is {architecture!r}), so it is not a usable Gemma 3 GGUF"
    )


# --- server -----------------------------------------------------------------------------


def free_loopback_port():
    # NOTE: another process can take the port between close() and the server's bind().
    # The server then fails to start, and a rerun picks a new port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def server_version(server):
    try:
        result = subprocess.run(
            [str(server), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise GoldenError(f"{server} --version failed: {err}") from err
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    return " | ".join(line for line in lines if line.startswith(("version", "built")))


class Server:
    """llama-server on a free loopback port, stopped by PID in close()."""

    def __init__(self, binary, model):
        self.port = free_loopback_port()
        self.log = tempfile.NamedTemporaryFile(prefix="llama-greedy-golden-", suffix=".log")
        command = [str(binary), "-m", str(model), "--host", HOST, "--port", str(self.port)]
        command += SERVER_ARGS
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT
        )
        print(f"started llama-server, pid {self.process.pid}, port {self.port}", file=sys.stderr)

    def close(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        print(f"stopped llama-server, pid {self.process.pid}", file=sys.stderr)
        self.log.close()

    def log_tail(self, lines=20):
        self.log.flush()
        with open(self.log.name, "rb") as file:
            text = file.read().decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def request(self, method, path, body=None, timeout=REQUEST_TIMEOUT_S):
        """Send one request and return (HTTP status, parsed JSON body or None)."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            f"http://{HOST}:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with HTTP.open(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return status, None

    def wait_until_healthy(self):
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise GoldenError(
                    f"llama-server exited with status {self.process.returncode} during "
                    f"start-up. Last lines of its log:\n{self.log_tail()}"
                )
            try:
                status, _ = self.request("GET", "/health", timeout=5)
                if status == 200:
                    return
            except (OSError, urllib.error.URLError):
                pass  # Not listening yet, or still loading the model.
            time.sleep(0.2)
        raise GoldenError(
            f"llama-server on port {self.port} was not healthy after {HEALTH_TIMEOUT_S:.0f} s. "
            f"Last lines of its log:\n{self.log_tail()}"
        )

    def post(self, path, body):
        status, reply = self.request("POST", path, body)
        if status != 200 or not isinstance(reply, dict):
            raise GoldenError(f"POST {path} failed with HTTP {status}: {reply}")
        return reply


# --- one case ---------------------------------------------------------------------------


def tokenize(server, text):
    """Return the prompt ids with BOS, checking that BOS is the only token added."""
    with_bos = server.post("/tokenize", {"content": text, **TOKENIZE_SETTINGS}).get("tokens")
    without = server.post(
        "/tokenize", {"content": text, "add_special": False, "parse_special": True}
    ).get("tokens")
    if not isinstance(with_bos, list) or not isinstance(without, list):
        raise GoldenError('the POST /tokenize reply has no "tokens" list')
    if len(with_bos) != len(without) + 1 or with_bos[1:] != without:
        raise GoldenError(
            "POST /tokenize with add_special added more than one leading token "
            f"({len(with_bos)} vs {len(without)} ids), so the BOS handling changed"
        )
    return with_bos


def check_generation_settings(reply):
    """Raise GoldenError unless the server applied the greedy settings it was sent."""
    echoed = reply.get("generation_settings") or {}
    expected = {
        "samplers": ["top_k"],
        "top_k": 1,
        "ignore_eos": True,
        "n_probs": 2,
        "n_predict": N_PREDICT,
        "post_sampling_probs": False,
    }
    wrong = {key: echoed.get(key) for key, value in expected.items() if echoed.get(key) != value}
    if wrong:
        raise GoldenError(
            f"llama-server did not apply the requested settings: it reports {wrong}, "
            f"expected {expected}. This server version reads the request differently."
        )


def generate(server, name, prompt_ids):
    """Run greedy generation from prompt_ids and return the case record for greedy.json."""
    reply = server.post("/completion", {"prompt": prompt_ids, **COMPLETION_SETTINGS})
    check_generation_settings(reply)

    if reply.get("truncated") or reply.get("tokens_evaluated") != len(prompt_ids):
        raise GoldenError(
            f"case {name!r}: the server evaluated {reply.get('tokens_evaluated')} prompt "
            f"tokens (truncated: {reply.get('truncated')}), expected {len(prompt_ids)}"
        )
    if reply.get("stop_type") != "limit":
        raise GoldenError(
            f"case {name!r}: generation stopped with stop_type {reply.get('stop_type')!r} "
            f"after {reply.get('tokens_predicted')} tokens, expected the {N_PREDICT}-token limit"
        )

    # "tokens" is the server's list of sampled ids. Each entry of
    # "completion_probabilities" also contains its sampled id, so those ids replace a
    # missing "tokens" list and must otherwise equal it.
    steps = reply.get("completion_probabilities")
    if not isinstance(steps, list) or len(steps) != N_PREDICT:
        count = len(steps) if isinstance(steps, list) else "no"
        raise GoldenError(
            f"case {name!r}: the /completion reply has {count} \"completion_probabilities\" "
            f"entries, expected {N_PREDICT}"
        )
    step_ids = [step.get("id") for step in steps]
    generated = reply.get("tokens")
    if not generated:
        print(f"{name}: the reply has no \"tokens\", so the ids come from "
              "\"completion_probabilities\"", file=sys.stderr)
        generated = step_ids
    if generated != step_ids:
        raise GoldenError(
            f"case {name!r}: \"tokens\" {generated} differ from the ids in "
            f"\"completion_probabilities\" {step_ids}"
        )

    top2_ids, top2_probs = [], []
    for position, step in enumerate(steps):
        top = step.get("top_logprobs") or []
        if len(top) < 2:
            raise GoldenError(
                f"case {name!r}, token {position}: expected 2 entries in top_logprobs, "
                f"got {top}"
            )
        top2_ids.append([top[0]["id"], top[1]["id"]])
        top2_probs.append([float(f"{math.exp(entry['logprob']):.6g}") for entry in top[:2]])

    return {
        "name": name,
        "prompt_ids": prompt_ids,
        "generated_ids": generated,
        "top2_ids": top2_ids,
        "top2_probs": top2_probs,
        "generated_text": reply.get("content", ""),
    }


# --- output -----------------------------------------------------------------------------


def is_numeric_list(value):
    """Report whether value is a list of numbers or of lists of numbers, such as ids."""
    if not isinstance(value, list):
        return False
    return all(
        isinstance(item, (int, float))
        or (isinstance(item, list) and all(isinstance(x, (int, float)) for x in item))
        for item in value
    )


def to_compact_json(value, indent=0):
    """Format value as indented JSON that keeps numeric lists and short values on one line."""
    one_line = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if is_numeric_list(value) or len(one_line) + 2 * indent <= 96:
        return one_line

    pad = "  " * indent
    if isinstance(value, dict):
        items = [
            f"{pad}  {json.dumps(key)}: {to_compact_json(item, indent + 1)}"
            for key, item in value.items()
        ]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list):
        items = [f"{pad}  {to_compact_json(item, indent + 1)}" for item in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return one_line


def build_golden(model, model_sha256, sliding_window, version, build_info, cases):
    return {
        "generator": "tools/llama-greedy-golden.py",
        "llama_cpp": LLAMA_CPP,
        "model": model.name,
        "model_sha256": model_sha256,
        "settings": {
            "server_args": SERVER_ARGS,
            "server_version": version,
            "server_build_info": build_info,
            "tokenize_request": TOKENIZE_SETTINGS,
            "completion_request": COMPLETION_SETTINGS,
            "sliding_window": sliding_window,
            "notes": [
                "prompt_ids come from POST /tokenize of the case text in prompts.json and "
                "start with BOS; they are sent to POST /completion as a list of ids.",
                "generated_ids are greedy: at each step the argmax of the logits over all "
                "tokens except the end-of-generation ones (<eos>, <end_of_turn>), which "
                "ignore_eos masks with a -inf bias.",
                "top2_ids and top2_probs are the two most probable tokens of a softmax over "
                "the raw logits, before that mask, with probabilities rounded to 6 "
                "significant digits. Where top2_ids[i][0] != generated_ids[i], the raw "
                "argmax was an end-of-generation token.",
            ],
        },
        "cases": cases,
    }


# --- main -------------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(
        description="Record llama.cpp's greedy token ids for the Gemma 3 golden prompts."
    )
    parser.add_argument("--server", help="llama-server binary (default: PAPERCLIP_LLAMA_SERVER "
                        f"or the cache path for version {SERVER_VERSION})")
    parser.add_argument("--model", help="GGUF model file (default: PAPERCLIP_GGUF or the only "
                        "*.gguf in the cache's models folder)")
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS,
                        help="JSON list of {name, text} cases (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="golden file to write (default: %(default)s)")
    return parser.parse_args()


def record_cases(server, prompts, sliding_window):
    cases = []
    for prompt in prompts:
        prompt_ids = tokenize(server, prompt["text"])
        if len(prompt_ids) + N_PREDICT > CONTEXT_SIZE:
            raise GoldenError(
                f"case {prompt['name']!r} has {len(prompt_ids)} prompt tokens, so "
                f"{N_PREDICT} more do not fit the {CONTEXT_SIZE}-token context"
            )
        started = time.monotonic()
        case = generate(server, prompt["name"], prompt_ids)
        elapsed = time.monotonic() - started
        cases.append(case)

        gaps = [p1 - p2 for p1, p2 in case["top2_probs"]]
        eog_steps = [
            i for i, (top, chosen) in enumerate(zip(case["top2_ids"], case["generated_ids"]))
            if top[0] != chosen
        ]
        print(
            f"{case['name']}: {len(prompt_ids)} prompt tokens, {len(case['generated_ids'])} "
            f"generated in {elapsed:.1f} s, first ids {case['generated_ids'][:10]}, "
            f"smallest top-2 gap {min(gaps):.6g} at token {gaps.index(min(gaps))}, "
            f"raw argmax masked as end-of-generation at tokens {eog_steps or 'none'}"
        )

    max_prompt_tokens = max(len(case["prompt_ids"]) for case in cases)
    if max_prompt_tokens <= sliding_window:
        raise GoldenError(
            f"no prompt exceeds the {sliding_window}-token sliding window (max "
            f"{max_prompt_tokens} tokens), so the golden file would not test it. Lengthen "
            "a case in the prompt file."
        )
    return cases


def run(args):
    server_path = find_server(args.server)
    model = find_model(args.model)
    prompts = load_prompts(args.prompts)
    sliding_window = read_sliding_window(model)
    model_sha256 = file_sha256(model)
    version = server_version(server_path)
    print(f"server {server_path} ({version or 'no version output'})")
    print(f"model {model} (sha256 {model_sha256}, sliding window {sliding_window})")

    server = Server(server_path, model)
    try:
        server.wait_until_healthy()
        _, props = server.request("GET", "/props")
        build_info = props.get("build_info") if isinstance(props, dict) else None
        cases = record_cases(server, prompts, sliding_window)
    finally:
        server.close()

    golden = build_golden(model, model_sha256, sliding_window, version, build_info, cases)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(to_compact_json(golden) + "\n", encoding="utf-8")
    smallest = min(p1 - p2 for case in cases for p1, p2 in case["top2_probs"])
    print(f"wrote {args.output}: {len(cases)} cases, smallest top-2 gap {smallest:.6g}")


def main():
    # Turn SIGTERM into SystemExit so that run()'s finally block stops the server.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    try:
        run(parse_args())
    except (GoldenError, OSError, urllib.error.URLError) as err:
        print(f"llama-greedy-golden: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
