#!/usr/bin/env python3
"""Time CLIP training steps with transformers.CLIPModel and torch.optim.AdamW.

This is the PyTorch side of benches/training.sh. The Rust side is
crates/clip/benches/train_step.rs, and both run the same step in float32:
- forward through both towers (get_image_features, get_text_features);
- the symmetric InfoNCE loss with the PAPERCLIP temperature, as its training code computed
  it: the logits are the cosine similarities times the raw logit_scale parameter, not its
  exp;
- backward;
- one torch.optim.AdamW step with lr 1e-5, weight decay 1e-3, betas (0.9, 0.999), eps 1e-8.

The model geometry comes from a Hugging Face style CLIP config (benches/configs/NAME.json),
the same file the Rust side reads. The inputs have the same shapes on both sides but not
the same values: seeded standard-normal pixels [batch, 3, image_size, image_size], and
token rows of the start id 49406, random ids below it, the end id 49407 at a random
position and zeros after it.

Progress goes to stderr. The result is one JSON line on stdout, with the median and mean
step time, samples per second (batch / median step time), the median time of each phase
(forward with the loss, backward, AdamW) and the peak resident set size (VmHWM), which
includes the Python interpreter and the torch libraries. On CUDA the script waits for the
device at the end of each phase, so the phase times add up to the whole step.

Usage, from the repository root with the reference environment
(tools/clip-reference-requirements.txt):

    .venv-ref/bin/python benches/clip_train_step.py --config small --steps 20 --threads 2
    .venv-ref/bin/python benches/clip_train_step.py --config vit-b-16 --device cuda

The script exits with status 1 and a message when the config is missing or the loss is not
finite.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import CLIPConfig, CLIPModel

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = REPO_ROOT / "benches" / "configs"

START_OF_TEXT_ID = 49406
# The largest id of the CLIP vocabulary, so the argmax pooling rule (eos_token_id 2) finds it.
END_OF_TEXT_ID = 49407

ADAMW_SETTINGS = {
    "lr": 1e-5,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 1e-3,
}


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def log(message):
    print(f"pytorch: {message}", file=sys.stderr, flush=True)


def resolve_config(config):
    """Return the path of a config given as a file path or as a name in benches/configs/."""
    as_path = Path(config)
    if as_path.is_file():
        return as_path.resolve()
    named = CONFIGS_DIR / f"{config}.json"
    if named.is_file():
        return named
    fail(f"--config {config!r} is neither a file nor a config name: {named} not found")


def build_model(config_path, attention, device):
    """Build a float32 CLIPModel in train mode from a Hugging Face style config file."""
    with open(config_path, encoding="utf-8") as file:
        config = CLIPConfig(**json.load(file))
    model = CLIPModel(config).to(device=device, dtype=torch.float32)
    if attention != "default":
        model.set_attn_implementation(attention)
    model.train()
    return model


def make_inputs(config, batch, seed, device):
    """Return seeded pixel_values [B,3,S,S] and input_ids [B,T].

    Row r of input_ids is the start id, random ids in 1..START_OF_TEXT_ID-1, the end id at a
    random position in 1..T-1, then zeros.
    """
    generator = torch.Generator().manual_seed(seed)
    size = config.vision_config.image_size
    context = config.text_config.max_position_embeddings
    if context < 2:
        fail(f"max_position_embeddings is {context}; a caption needs at least 2 positions")
    pixel_values = torch.randn(batch, 3, size, size, generator=generator)
    input_ids = torch.zeros(batch, context, dtype=torch.int64)
    ends = torch.randint(1, context, (batch,), generator=generator).tolist()
    for row, end in enumerate(ends):
        input_ids[row, 0] = START_OF_TEXT_ID
        input_ids[row, 1:end] = torch.randint(1, START_OF_TEXT_ID, (end - 1,), generator=generator)
        input_ids[row, end] = END_OF_TEXT_ID
    return pixel_values.to(device), input_ids.to(device)


def pooled_tensor(output):
    """Return the projected features of a get_*_features result.

    transformers 5.25.0 returns BaseModelOutputWithPooling with the projected features in
    pooler_output. Earlier releases returned the tensor itself, which passes through.
    """
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


def paper_loss(model, pixel_values, input_ids):
    """Symmetric InfoNCE on cosine similarities times the raw logit_scale parameter."""
    image = pooled_tensor(model.get_image_features(pixel_values=pixel_values))
    text = pooled_tensor(model.get_text_features(input_ids=input_ids))
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    logits = model.logit_scale * image @ text.t()
    targets = torch.arange(logits.shape[0], device=logits.device)
    image_to_text = torch.nn.functional.cross_entropy(logits, targets)
    text_to_image = torch.nn.functional.cross_entropy(logits.t(), targets)
    return 0.5 * (image_to_text + text_to_image)


def peak_rss_mib():
    """Peak resident set size of this process (VmHWM), in MiB, or None outside Linux."""
    try:
        with open("/proc/self/status", encoding="utf-8") as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def default_threads():
    """Return the number of CPUs this process may run on, which `nproc` also prints."""
    return len(os.sched_getaffinity(0))


def run(args):
    config_path = resolve_config(args.config)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        fail("--device cuda was requested, but torch finds no CUDA device")
    torch.set_num_threads(args.threads)
    # Plain IEEE float32 everywhere: no TF32 in CUDA matrix products or cuDNN convolutions.
    torch.backends.fp32_precision = "ieee"
    torch.manual_seed(args.seed)

    model = build_model(config_path, args.attention, device)
    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW_SETTINGS)
    pixel_values, input_ids = make_inputs(model.config, args.batch, args.seed, device)
    parameters = sum(p.numel() for p in model.parameters())
    attention = model.config._attn_implementation
    log(
        f"config {config_path.stem} ({parameters} parameters), batch {args.batch}, "
        f"{torch.get_num_threads()} threads, device {args.device}, attention {attention}, "
        f"{args.warmup} warm-up and {args.steps} timed steps"
    )

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    losses = []
    step_ms = []
    phase_ms = {"forward": [], "backward": [], "optimizer": []}
    for step in range(args.warmup + args.steps):
        synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = paper_loss(model, pixel_values, input_ids)
        loss_value = loss.item()
        forward_done = time.perf_counter()
        loss.backward()
        synchronize()
        backward_done = time.perf_counter()
        optimizer.step()
        synchronize()
        optimizer_done = time.perf_counter()
        elapsed_ms = 1000 * (optimizer_done - start)
        phases = {
            "forward": 1000 * (forward_done - start),
            "backward": 1000 * (backward_done - forward_done),
            "optimizer": 1000 * (optimizer_done - backward_done),
        }
        if not math.isfinite(loss_value):
            fail(f"step {step}: the loss is {loss_value}, not finite")
        losses.append(loss_value)
        kind = "warm-up" if step < args.warmup else "timed"
        if kind == "timed":
            step_ms.append(elapsed_ms)
            for name, ms in phases.items():
                phase_ms[name].append(ms)
        log(
            f"step {step} ({kind}): {elapsed_ms:.1f} ms (forward and loss "
            f"{phases['forward']:.1f}, backward {phases['backward']:.1f}, "
            f"AdamW {phases['optimizer']:.1f}), loss {loss_value:.6f}"
        )

    median_ms = statistics.median(step_ms)
    record = {
        "side": "pytorch",
        "config": config_path.stem,
        "config_file": str(config_path),
        "device": args.device,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "seed": args.seed,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "parameters": parameters,
        "median_ms": median_ms,
        "mean_ms": statistics.fmean(step_ms),
        "min_ms": min(step_ms),
        "max_ms": max(step_ms),
        "samples_per_s": args.batch * 1000 / median_ms,
        "phase_median_ms": {name: statistics.median(values) for name, values in phase_ms.items()},
        "peak_rss_mib": peak_rss_mib(),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "attention": attention,
        "implementation": (
            f"transformers {transformers.__version__} CLIPModel, torch {torch.__version__}, "
            f"Python {platform.python_version()}"
        ),
    }
    if device.type == "cuda":
        record["cuda_device"] = torch.cuda.get_device_name(device)
        record["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(record), flush=True)


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 0")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Time CLIP training steps (forward, InfoNCE on cosine similarities times the raw "
        "logit_scale, backward, AdamW) with transformers.CLIPModel in float32."
    )
    parser.add_argument(
        "--config",
        default="small",
        help="a name in benches/configs/ (small, vit-b-16) or the path of a Hugging Face "
        "style CLIP config.json (default small)",
    )
    parser.add_argument("--batch", type=positive_int, default=32, help="image-caption pairs per step (default 32)")
    parser.add_argument("--warmup", type=non_negative_int, default=3, help="untimed steps before the timed ones (default 3)")
    parser.add_argument("--steps", type=positive_int, default=20, help="timed steps (default 20)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the weights and inputs (default 0)")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=default_threads(),
        help="torch intra-op threads (default: the CPUs this process may use)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs (default cpu)")
    parser.add_argument(
        "--attention",
        choices=["default", "sdpa", "eager"],
        default="default",
        help="attention implementation: transformers' default (sdpa in 5.25.0), or eager, "
        "the plain matmul-softmax-matmul that the candle model computes",
    )
    return parser.parse_args(argv)


def main(argv=None):
    run(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
