#!/usr/bin/env python3
"""Write PyTorch reference ("golden") files for the paperclip-clip crate.

The Rust crate in crates/clip reimplements the CLIP BPE tokenizer, the two CLIP towers,
the contrastive losses and AdamW. This script runs the reference implementations
(open_clip's SimpleTokenizer, transformers.CLIPModel, torch.optim.AdamW) and writes their
outputs, so the crate's tests can compare against them.

Subcommands:

    tokenizer  Writes tokenizer.json: token ids from open_clip's SimpleTokenizer for every
               line of a caption file and for the edge cases in EDGE_CASES. The caption
               texts are not written, only their line number and SHA-256, because the
               caption file is third-party data. The edge-case texts are written in full.
    tiny       Writes a tiny random CLIPModel (about 59,000 parameters) with its inputs,
               forward outputs, gradients and the parameters after one AdamW step into
               tiny_*.safetensors and tiny_*.json (about 1 MB in total).
    geometry   Writes a random CLIPModel with a real geometry (vit-b-16, vit-b-32 or
               vit-l-14), batch-2 inputs and its forward outputs, for a manual check of the
               full-size towers. The weights take 0.6 to 1.7 GB, so the output does not
               belong in the repository.
    bench      Times training steps (forward, backward, AdamW) of the tiny model on CPU.

Every tensor is stored as float32, except token ids (int64). All randomness is seeded,
and a rerun with the same versions writes byte-identical files. The safetensors headers
and the JSON files, except the model configs, record the library versions.

Usage, from the repository root with the reference environment (the exact versions are
in tools/clip-reference-requirements.txt):

    python3 -m venv .venv-ref
    .venv-ref/bin/pip install -r tools/clip-reference-requirements.txt
    .venv-ref/bin/python tools/clip-golden.py tokenizer \\
        --captions ../shared/data/abstracts/captions-paperclip.txt \\
        --bpe ../shared/data/clip/bpe_simple_vocab_16e6.txt.gz \\
        --out crates/clip/tests/golden/tokenizer.json
    .venv-ref/bin/python tools/clip-golden.py tiny --out crates/clip/tests/golden/
    .venv-ref/bin/python tools/clip-golden.py geometry --name vit-b-16 --out /tmp/clip-b16
    .venv-ref/bin/python tools/clip-golden.py bench --steps 50 --threads 1 2

The script exits with status 1 and a message when an input is missing or a consistency
check fails (for example when the two text-pooling rules of transformers disagree).
"""

import argparse
import copy
import hashlib
import json
import sys
import time
from pathlib import Path

import ftfy
import numpy as np
import open_clip
import regex
import safetensors
import torch
import transformers
from open_clip import tokenizer as open_clip_tokenizer
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel

CONTEXT_LENGTH = 77
START_OF_TEXT_ID = 49406
END_OF_TEXT_ID = 49407

# Tiny model: the text tower's start and end ids are the two largest ids of its 512-entry
# vocabulary, as in the real CLIP vocabulary, so both pooling rules of transformers agree.
TINY_BOS_ID = 510
TINY_EOS_ID = 511
TINY_PAD_ID = 0
TINY_BATCH = 4
TINY_SEQ_LEN = 16
TINY_EOS_POSITIONS = [5, 9, 15, 12]
TINY_PROPOSAL_IDS = [7, 7, 8, 9]
TINY_WEIGHT_SEED = 0
TINY_INPUT_SEED = 1
TINY_NOISE_STD = 0.02

ADAMW_SETTINGS = {
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 1e-3,
}
CLIP_MAX_NORM = 0.5

# "standard" temperature mode scales by min(exp(logit_scale), 100). open_clip_train 3.3.0
# gets the same cap by clamping logit_scale to at most ln(100) after each step.
STANDARD_SCALE_MAX = 100.0

LONG_SENTENCE = (
    "We propose deep imaging of the nearby spiral galaxy with the Advanced Camera for "
    "Surveys to measure the star formation history of its outer disk, resolve individual "
    "red giants and compare their metallicity with the inner halo."
)


def long_text(word_count):
    """Return the first `word_count` words of LONG_SENTENCE repeated."""
    words = LONG_SENTENCE.split()
    return " ".join(words[i % len(words)] for i in range(word_count))


# (name, text) pairs. Every text is written in full into tokenizer.json.
EDGE_CASES = [
    ("curly_single_quotes", "\u2018single\u2019 quotes and don\u2019t"),
    ("curly_double_quotes", "\u201cdouble quoted\u201d text"),
    ("html_amp", "stars &amp; galaxies"),
    ("html_escaped_tag", "&lt;b&gt;bold&lt;/b&gt; text"),
    ("html_numeric_apostrophe", "the galaxy&#39;s core"),
    ("html_quot", "&quot;quoted&quot; words"),
    ("html_double_escaped", "AT&amp;amp;T and R&amp;amp;D"),
    ("html_triple_escaped", "a &amp;amp;amp; b"),
    # ftfy leaves entities alone when the text contains a literal "<".
    ("html_double_escaped_with_less_than", "x < y &amp;amp; z"),
    ("ligatures", "\ufb01eld of the \ufb02are"),
    ("fullwidth_letters_digits", "\uff21\uff22\uff23\uff11\uff12\uff13"),
    ("accented_nfc", "caf\u00e9 \u00e9toile"),
    ("accented_nfd", "cafe\u0301 e\u0301toile"),
    ("accented_upper", "\u00c9TOILE \u00c5NGSTR\u00d6M"),
    ("greek", "\u03a9\u03bc\u03ad\u03b3\u03b1 \u039a\u03b5\u03bd\u03c4\u03b1\u03cd\u03c1\u03bf\u03c5 \u03b1-Cen"),
    ("cyrillic", "\u0422\u0443\u043c\u0430\u043d\u043d\u043e\u0441\u0442\u044c \u0410\u043d\u0434\u0440\u043e\u043c\u0435\u0434\u044b"),
    ("cjk", "\u9280\u6cb3\u7cfb\u3068\u661f\u96f2"),
    ("emoji", "a telescope \U0001f52d sees \u2728 stars"),
    ("tabs_newlines_spaces", "tabs\there\nnew line\r\nand   multiple    spaces"),
    ("leading_trailing_whitespace", "   padded text \t\n"),
    ("contractions", "don't it's we'll they're I'd I'm we've"),
    ("contractions_upper", "DON'T IT'S WE'LL"),
    ("numbers", "2,500.75 km/s and 1e-5"),
    ("punctuation_runs", "wait...!!!??? -- yes"),
    ("curly_braces", "[O III] in {i} and {ii}, 10^{2} and {~2L*}"),
    ("special_tokens_openai_spelling", "before <|startoftext|> middle <|endoftext|> after"),
    ("special_tokens_open_clip_spelling", "before <start_of_text> middle <end_of_text> after"),
    ("special_tokens_upper_case", "<END_OF_TEXT>"),
    ("empty", ""),
    ("spaces_only", "     "),
    ("long_500_words", long_text(500)),
    # Further cases that exercise ftfy or Python's str.lower().
    ("mojibake", "The Mona Lisa doesn\u00c3\u00a2\u00e2\u201a\u00ac\u00e2\u201e\u00a2t smile"),
    ("dotted_capital_i", "\u0130stanbul"),
    ("sharp_s", "Stra\u00dfe STRASSE"),
    ("no_break_and_zero_width_space", "a\u00a0b c\u200bd"),
    ("soft_hyphen", "spec\u00adtroscopy"),
    ("control_characters", "bell\x07 and null\x00 end"),
    ("ellipsis_and_dashes", "wait\u2026 en\u2013dash em\u2014dash"),
    ("superscript_and_arabic_digits", "km\u00b2 and \u0663\u0664"),
    ("roman_numeral_and_fractions", "\u2163 and \u00bd"),
    ("vertical_tab", "a\x0bb"),
    ("c1_next_line", "a\x85b"),
    ("line_separator", "a\u2028b"),
    ("byte_order_mark", "\ufeffa b\ufeffc"),
    ("ideographic_space", "a\u3000b"),
]


def fail(message):
    """Print `message` to stderr and exit with status 1."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def library_versions():
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "open_clip_torch": open_clip.__version__,
        "ftfy": ftfy.__version__,
        "regex": regex.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
    }


def safetensors_metadata(generator):
    """Return a one-entry safetensors header metadata naming the generator and versions.

    safetensors writes metadata entries in hash order, so a single entry keeps the files
    byte-identical from run to run.
    """
    versions = ", ".join(f"{name} {version}" for name, version in library_versions().items())
    return {"generator": f"{generator} ({versions})"}


# --------------------------------------------------------------------------------------
# tokenizer


def open_clip_clean(text):
    """Apply SimpleTokenizer's default cleaning ("lower"): ftfy, HTML, whitespace, lower case."""
    return open_clip_tokenizer.whitespace_clean(open_clip_tokenizer.basic_clean(text)).lower()


def ftfy_steps(text):
    """Return the names of the ftfy fixes that change `text` (empty when none does)."""
    fixed, explanation = ftfy.fix_and_explain(text)
    if fixed == text:
        return []
    return [name for _action, name in explanation or []]


def encode_case(tokenizer, text):
    """Return `encode` (no start or end token) and the 77-token row without its padding."""
    ids = tokenizer.encode(text)
    row = open_clip.tokenize([text], context_length=CONTEXT_LENGTH)[0].tolist()
    while row and row[-1] == 0:
        row.pop()
    if row[0] != START_OF_TEXT_ID or row[-1] != END_OF_TEXT_ID:
        fail(f"open_clip.tokenize row does not start with 49406 and end with 49407: {row}")
    return ids, row


def read_caption_lines(path):
    """Split the caption file at "\\n" only, so other line separators stay inside a line."""
    if not path.is_file():
        fail(f"caption file not found: {path}; pass --captions with the caption file")
    text = path.read_bytes().decode("utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def command_tokenizer(args):
    bundled_bpe = Path(open_clip_tokenizer.default_bpe())
    bundled_sha = sha256_bytes(bundled_bpe.read_bytes())
    bpe_record = {"file": bundled_bpe.name, "sha256": bundled_sha}
    if args.bpe is not None:
        if not args.bpe.is_file():
            fail(f"BPE file not found: {args.bpe}")
        given_sha = sha256_bytes(args.bpe.read_bytes())
        if given_sha != bundled_sha:
            fail(
                f"{args.bpe} (sha256 {given_sha}) differs from open_clip's bundled "
                f"{bundled_bpe} (sha256 {bundled_sha})"
            )
        bpe_record["matches_file_passed_with_bpe"] = True

    # The default tokenizer: clean="lower", the bundled vocabulary, no extra special tokens.
    tokenizer = open_clip_tokenizer.SimpleTokenizer()
    if tokenizer.vocab_size != 49408:
        fail(f"unexpected vocabulary size {tokenizer.vocab_size}")

    captions = []
    for index, line in enumerate(read_caption_lines(args.captions)):
        ids, ids77 = encode_case(tokenizer, line)
        captions.append(
            {
                "line": index,
                "sha256": sha256_bytes(line.encode("utf-8")),
                "ftfy_steps": ftfy_steps(line),
                "ids": ids,
                "ids77": ids77,
            }
        )

    edge_cases = []
    names = set()
    for name, text in EDGE_CASES:
        if name in names:
            fail(f"duplicate edge case name {name!r}")
        names.add(name)
        ids, ids77 = encode_case(tokenizer, text)
        fixed = ftfy.fix_text(text)
        edge_cases.append(
            {
                "name": name,
                "text": text,
                "ftfy_fixed": fixed,
                "ftfy_steps": ftfy_steps(text),
                "cleaned": open_clip_clean(text),
                "ids": ids,
                "ids77": ids77,
            }
        )

    document = {
        "description": (
            "Token ids from open_clip's SimpleTokenizer (default clean='lower'). "
            "ids = tokenizer.encode(text), without start or end token and untruncated. "
            "ids77 = open_clip.tokenize([text], context_length=77)[0] with the trailing "
            "zero padding removed: it starts with 49406 and ends with 49407, also when the "
            "text was truncated. Captions are identified by 0-based line number and the "
            "SHA-256 of the line's UTF-8 text without its newline; their texts are not "
            "stored. For edge cases, ftfy_fixed is ftfy.fix_text(text) with default "
            "settings, cleaned is the text after the whole cleaning (ftfy, two rounds of "
            "html.unescape, strip, whitespace runs to one space, str.lower), and ftfy_steps "
            "names the ftfy fixes that changed the text."
        ),
        "generator": "tools/clip-golden.py tokenizer",
        "versions": library_versions(),
        "cleaning": {
            "ftfy_version": ftfy.__version__,
            "steps": (
                "ftfy.fix_text(text) with default settings; html.unescape applied twice; "
                "strip; split on whitespace and join with one space; str.lower()"
            ),
        },
        "bpe_vocabulary": bpe_record,
        "special_tokens": {
            "start_of_text": START_OF_TEXT_ID,
            "end_of_text": END_OF_TEXT_ID,
            "strings_matched_as_special_in_text": ["<start_of_text>", "<end_of_text>"],
        },
        "context_length": CONTEXT_LENGTH,
        "captions_file": {
            "name": args.captions.name,
            "sha256": sha256_bytes(args.captions.read_bytes()),
            "line_count": len(captions),
        },
        "captions": captions,
        "edge_cases": edge_cases,
    }
    write_json(args.out, document)
    print(f"{args.out}: {len(captions)} captions, {len(edge_cases)} edge cases")
    print_ftfy_report(edge_cases)
    changed_captions = [c["line"] for c in captions if c["ftfy_steps"]]
    print(f"captions that ftfy changes: {changed_captions or 'none'}")
    print_sizes([args.out])


def print_ftfy_report(edge_cases):
    print("edge cases that ftfy.fix_text changes:")
    for case in edge_cases:
        if case["ftfy_steps"]:
            print(
                f"  {case['name']}: {case['ftfy_steps']}: "
                f"{case['text']!r} -> {case['ftfy_fixed']!r}"
            )


# --------------------------------------------------------------------------------------
# models


def tiny_config():
    return CLIPConfig(
        text_config={
            "vocab_size": 512,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": TINY_SEQ_LEN,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "bos_token_id": TINY_BOS_ID,
            "eos_token_id": TINY_EOS_ID,
            "pad_token_id": TINY_PAD_ID,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
            "num_channels": 3,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        },
        projection_dim=16,
        logit_scale_init_value=2.6592,
    )


# (vision width, vision layers, patch size, text width, projection width) of the OpenAI
# checkpoints. Every other size is transformers' CLIPTextConfig/CLIPVisionConfig default:
# 49,408 ids, 77 positions, 12 text layers, MLP 4x wide, 64-wide heads, quick_gelu,
# image 224, LayerNorm epsilon 1e-5, start id 49406, end id 49407.
GEOMETRIES = {
    "vit-b-16": (768, 12, 16, 512, 512),
    "vit-b-32": (768, 12, 32, 512, 512),
    "vit-l-14": (1024, 24, 14, 768, 768),
}


def geometry_config(name):
    vision_width, vision_layers, patch, text_width, projection = GEOMETRIES[name]
    return CLIPConfig(
        text_config={
            "hidden_size": text_width,
            "intermediate_size": 4 * text_width,
            "num_attention_heads": text_width // 64,
            "hidden_act": "quick_gelu",
        },
        vision_config={
            "hidden_size": vision_width,
            "intermediate_size": 4 * vision_width,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": vision_width // 64,
            "patch_size": patch,
            "image_size": 224,
            "hidden_act": "quick_gelu",
        },
        projection_dim=projection,
        logit_scale_init_value=2.6592,
    )


def build_model(config):
    """Build a float32 CLIPModel with eager (plain softmax) attention, in train mode."""
    model = CLIPModel(copy.deepcopy(config)).to(torch.float32)
    model.set_attn_implementation("eager")
    for sub_config in (model.config, model.text_model.config, model.vision_model.config):
        if sub_config._attn_implementation != "eager":
            fail(f"attention implementation is {sub_config._attn_implementation}, not eager")
    model.train()
    return model


def add_noise(model, std):
    """Add std * randn_like to every parameter except logit_scale, in named_parameters order."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name != "logit_scale":
                param.add_(std * torch.randn_like(param))


def parameters_by_name(model):
    return {name: param.detach().clone().contiguous() for name, param in model.named_parameters()}


def check_state_dict(model):
    """Check that state_dict contains every parameter, and return a copy without buffers.

    transformers 5.25.0 registers the position_ids buffers as non-persistent, so they are not
    in state_dict. Any other non-parameter entry is dropped here and listed.
    """
    state = model.state_dict()
    parameter_names = {name for name, _ in model.named_parameters()}
    dropped = sorted(set(state) - parameter_names)
    missing = sorted(parameter_names - set(state))
    if missing:
        fail(f"state_dict lacks parameters {missing}")
    tensors = {
        name: tensor.detach().clone().contiguous()
        for name, tensor in state.items()
        if name in parameter_names
    }
    return tensors, dropped


def make_inputs(batch, seq_len, image_size, bos_id, eos_id, eos_positions, max_regular_id, seed):
    """Return seeded pixel_values [B,3,S,S] and input_ids [B,T].

    Row r of input_ids is bos_id, random ids in 1..=max_regular_id, eos_id at
    eos_positions[r], then zeros.
    """
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch, 3, image_size, image_size, generator=generator)
    input_ids = torch.zeros(batch, seq_len, dtype=torch.int64)
    for row, eos_position in enumerate(eos_positions):
        input_ids[row, 0] = bos_id
        input_ids[row, 1:eos_position] = torch.randint(
            1, max_regular_id + 1, (eos_position - 1,), generator=generator
        )
        input_ids[row, eos_position] = eos_id
    return pixel_values, input_ids


def check_pooling_rules(input_ids, eos_id):
    """Check that transformers' two text-pooling rules pick the same position in every row.

    With eos_token_id == 2 transformers pools at argmax(input_ids); otherwise at the first
    position whose id equals eos_token_id.
    """
    by_argmax = input_ids.argmax(dim=-1)
    by_first_eos = (input_ids == eos_id).int().argmax(dim=-1)
    if not torch.equal(by_argmax, by_first_eos):
        fail(f"pooling rules disagree: argmax {by_argmax.tolist()}, first eos {by_first_eos.tolist()}")
    return by_first_eos.tolist()


def pooled_tensor(output):
    """Return the projected features of a get_*_features result.

    transformers 5.25.0 returns BaseModelOutputWithPooling with the projected features in
    pooler_output. Earlier releases returned the tensor itself, which passes through.
    """
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


def forward_outputs(model, pixel_values, input_ids):
    with torch.no_grad():
        image_embeds = pooled_tensor(model.get_image_features(pixel_values=pixel_values))
        text_embeds = pooled_tensor(model.get_text_features(input_ids=input_ids))
        output = model(input_ids=input_ids, pixel_values=pixel_values)
        # model(...).text_model_output.pooler_output is already projected in transformers 5.25.0,
        # so the towers' own pooler outputs come from calling the towers directly.
        vision_output = model.vision_model(pixel_values=pixel_values)
        text_output = model.text_model(input_ids=input_ids)
    outputs = {
        "image_embeds": image_embeds,
        "text_embeds": text_embeds,
        "logits_per_image": output.logits_per_image,
        "logits_per_text": output.logits_per_text,
        "vision_pooled": vision_output.pooler_output,
        "text_pooled": text_output.pooler_output,
        "vision_last_hidden_state": vision_output.last_hidden_state,
        "text_last_hidden_state": text_output.last_hidden_state,
    }
    projected = model.text_projection(outputs["text_pooled"]).detach()
    if not torch.allclose(projected, text_embeds, atol=1e-6, rtol=0):
        fail("text_projection(text_pooled) differs from get_text_features")
    return {name: tensor.detach().to(torch.float32).contiguous() for name, tensor in outputs.items()}


# --------------------------------------------------------------------------------------
# losses


def normalized_embeddings(model, pixel_values, input_ids):
    image = pooled_tensor(model.get_image_features(pixel_values=pixel_values))
    text = pooled_tensor(model.get_text_features(input_ids=input_ids))
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return image, text


def logits_image_to_text(model, pixel_values, input_ids, mode):
    """Return scale * cos_sim with images as rows.

    mode "paper" multiplies by the raw logit_scale parameter; mode "standard" by
    min(exp(logit_scale), 100).
    """
    image, text = normalized_embeddings(model, pixel_values, input_ids)
    if mode == "paper":
        scale = model.logit_scale
    elif mode == "standard":
        scale = model.logit_scale.exp().clamp(max=STANDARD_SCALE_MAX)
    else:
        raise ValueError(f"unknown temperature mode {mode!r}")
    return scale * image @ text.t()


def contrastive_loss(logits):
    """Symmetric cross-entropy with the matching pair of each row on the diagonal."""
    targets = torch.arange(logits.shape[0])
    image_to_text = torch.nn.functional.cross_entropy(logits, targets)
    text_to_image = torch.nn.functional.cross_entropy(logits.t(), targets)
    return 0.5 * (image_to_text + text_to_image)


def multipositive_loss(logits, proposal_ids):
    """Symmetric soft-target cross-entropy where every pair from one proposal is a positive.

    targets[i, j] = [proposal_ids[i] == proposal_ids[j]] / (number of such j). The matrix
    is symmetric, so both directions use it.
    """
    same = (proposal_ids[:, None] == proposal_ids[None, :]).to(logits.dtype)
    targets = same / same.sum(dim=1, keepdim=True)

    def one_direction(direction_logits):
        log_probs = torch.log_softmax(direction_logits, dim=1)
        return (-(targets * log_probs).sum(dim=1)).mean()

    return 0.5 * (one_direction(logits) + one_direction(logits.t()))


def total_grad_norm(parameters):
    """L2 norm over all gradients, computed as torch.nn.utils.clip_grad_norm_ does."""
    norms = [p.grad.detach().norm(2) for p in parameters]
    return torch.linalg.vector_norm(torch.stack(norms), 2)


def fresh_model(config, weights):
    model = build_model(config)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or any("position_ids" not in name for name in missing):
        fail(f"loading weights: missing {missing}, unexpected {unexpected}")
    return model


def check_all_grads(model):
    absent = [name for name, p in model.named_parameters() if p.grad is None]
    if absent:
        # AdamW skips parameters without a gradient, weight decay included.
        fail(f"parameters without a gradient: {absent}")


def one_step(config, weights, pixel_values, input_ids, clip_max_norm=None):
    """Run one paper-mode training step from `weights` with a fresh AdamW.

    Returns (loss, grad_norm, logit_scale_grad, gradients, parameters after the step).
    When clip_max_norm is set, clip_grad_norm_ scales the gradients before the step, and
    the returned gradients are the clipped ones.
    """
    model = fresh_model(config, weights)
    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW_SETTINGS)
    optimizer.zero_grad()
    loss = contrastive_loss(logits_image_to_text(model, pixel_values, input_ids, "paper"))
    loss.backward()
    check_all_grads(model)
    grad_norm = total_grad_norm(model.parameters())
    if clip_max_norm is not None:
        returned_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=clip_max_norm)
        if not torch.allclose(returned_norm, grad_norm, rtol=1e-6, atol=0):
            fail(f"clip_grad_norm_ returned {returned_norm.item()}, expected {grad_norm.item()}")
    logit_scale_grad = model.logit_scale.grad.item()
    gradients = {
        name: p.grad.detach().clone().contiguous() for name, p in model.named_parameters()
    }
    optimizer.step()
    return loss.item(), grad_norm.item(), logit_scale_grad, gradients, parameters_by_name(model)


def loss_and_logit_scale_grad(config, weights, pixel_values, input_ids, mode, proposal_ids=None):
    model = fresh_model(config, weights)
    logits = logits_image_to_text(model, pixel_values, input_ids, mode)
    if proposal_ids is None:
        loss = contrastive_loss(logits)
    else:
        loss = multipositive_loss(logits, proposal_ids)
    loss.backward()
    return loss.item(), model.logit_scale.grad.item()


def step_in_float64(config, weights, pixel_values, input_ids):
    """Repeat the plain step in float64, to show how far float32 rounding moves the results."""
    weights64 = {name: tensor.double() for name, tensor in weights.items()}
    model = fresh_model(config, weights).double()
    model.load_state_dict(weights64, strict=False)
    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW_SETTINGS)
    loss = contrastive_loss(
        logits_image_to_text(model, pixel_values.double(), input_ids, "paper")
    )
    loss.backward()
    grad_norm = total_grad_norm(model.parameters()).item()
    optimizer.step()
    return loss.item(), grad_norm, parameters_by_name(model)


# --------------------------------------------------------------------------------------
# tiny


def command_tiny(args):
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    config = tiny_config()

    torch.manual_seed(TINY_WEIGHT_SEED)
    model = build_model(config)
    add_noise(model, TINY_NOISE_STD)
    weights, dropped = check_state_dict(model)

    pixel_values, input_ids = make_inputs(
        TINY_BATCH,
        TINY_SEQ_LEN,
        config.vision_config.image_size,
        TINY_BOS_ID,
        TINY_EOS_ID,
        TINY_EOS_POSITIONS,
        TINY_BOS_ID - 1,
        TINY_INPUT_SEED,
    )
    pooled_positions = check_pooling_rules(input_ids, TINY_EOS_ID)
    if pooled_positions != TINY_EOS_POSITIONS:
        fail(f"pooled positions {pooled_positions} differ from {TINY_EOS_POSITIONS}")
    proposal_ids = torch.tensor(TINY_PROPOSAL_IDS, dtype=torch.int64)

    metadata = safetensors_metadata("tools/clip-golden.py tiny")
    paths = []

    path = out / "tiny_weights.safetensors"
    save_file(weights, str(path), metadata=metadata)
    paths.append(path)

    path = out / "tiny_config.json"
    write_json(path, model.config.to_diff_dict() | {"architectures": ["CLIPModel"]})
    paths.append(path)

    path = out / "tiny_inputs.safetensors"
    inputs = {
        "pixel_values": pixel_values.contiguous(),
        "input_ids": input_ids.contiguous(),
        "proposal_ids": proposal_ids,
    }
    save_file(inputs, str(path), metadata=metadata)
    paths.append(path)

    outputs = forward_outputs(model, pixel_values, input_ids)
    path = out / "tiny_forward.safetensors"
    save_file(outputs, str(path), metadata=metadata)
    paths.append(path)

    loss, grad_norm, logit_scale_grad, gradients, stepped = one_step(
        config, weights, pixel_values, input_ids
    )
    _, clipped_norm, clipped_logit_scale_grad, _, clipped = one_step(
        config, weights, pixel_values, input_ids, clip_max_norm=CLIP_MAX_NORM
    )
    loss_standard, logit_scale_grad_standard = loss_and_logit_scale_grad(
        config, weights, pixel_values, input_ids, "standard"
    )
    loss_multipositive, logit_scale_grad_multipositive = loss_and_logit_scale_grad(
        config, weights, pixel_values, input_ids, "paper", proposal_ids
    )
    loss_multipositive_standard, _ = loss_and_logit_scale_grad(
        config, weights, pixel_values, input_ids, "standard", proposal_ids
    )
    loss64, grad_norm64, stepped64 = step_in_float64(config, weights, pixel_values, input_ids)

    path = out / "tiny_grads.safetensors"
    save_file(gradients, str(path), metadata=metadata)
    paths.append(path)

    path = out / "tiny_step.safetensors"
    save_file(stepped, str(path), metadata=metadata)
    paths.append(path)

    # The clipped step's weights are not stored: they differ from tiny_step only where
    # gradients are tiny (see the notes below); the clip coefficient checks clipping.
    clip_coefficient = min(1.0, CLIP_MAX_NORM / (clipped_norm + 1e-6))
    step_document = {
        "description": (
            "One training step of the tiny model from tiny_weights.safetensors on "
            "tiny_inputs.safetensors. Loss in paper temperature mode: L2-normalized "
            "embeddings, logits = cos_sim * logit_scale (the raw parameter), "
            "0.5 * (CE(image-to-text logits, arange) + CE(text-to-image logits, arange)), "
            "mean over the batch. Then torch.optim.AdamW over all parameters, logit_scale "
            "included, and exactly one step. tiny_grads.safetensors holds the gradients of "
            "that loss, tiny_step.safetensors the parameters after the step. Under "
            "'clipped': the same step with the gradients first scaled by "
            "torch.nn.utils.clip_grad_norm_(max_norm=0.5). Every value labelled "
            "_standard, _multipositive or float64 is computed on the original weights."
        ),
        "generator": "tools/clip-golden.py tiny",
        "versions": library_versions(),
        "optimizer": {
            "name": "torch.optim.AdamW",
            "lr": ADAMW_SETTINGS["lr"],
            "betas": list(ADAMW_SETTINGS["betas"]),
            "eps": ADAMW_SETTINGS["eps"],
            "weight_decay": ADAMW_SETTINGS["weight_decay"],
            "steps": 1,
        },
        "loss": loss,
        "grad_global_norm": grad_norm,
        "logit_scale_grad": logit_scale_grad,
        "loss_standard": loss_standard,
        "logit_scale_grad_standard": logit_scale_grad_standard,
        "loss_multipositive_paper": loss_multipositive,
        "logit_scale_grad_multipositive_paper": logit_scale_grad_multipositive,
        "loss_multipositive_standard": loss_multipositive_standard,
        "proposal_ids": TINY_PROPOSAL_IDS,
        "clipped": {
            "max_norm": CLIP_MAX_NORM,
            "grad_global_norm_before_clip": clipped_norm,
            "clip_coefficient": clip_coefficient,
            "clip_coefficient_formula": "min(1, max_norm / (grad_global_norm + 1e-6))",
            "logit_scale_grad_before_clip": clipped_logit_scale_grad,
        },
        "notes": [
            "The k_proj.bias gradients are zero in exact arithmetic, because softmax ignores "
            "a shift that is the same for every key, so their stored values (below 1e-8) are "
            "float32 rounding noise. AdamW's first step moves each element by about "
            "lr * g / (|g| + eps), so for these tensors and for other elements with |g| "
            "below about 1e-6 the stepped value depends on that noise.",
            "The first AdamW step is close to -lr * sign(g) for every element with |g| much "
            "larger than eps, so tiny_step.safetensors hardly depends on the gradients' "
            "magnitudes. Compare tiny_grads.safetensors to check them. For the same reason "
            "a clipped step differs from tiny_step.safetensors only in elements with small "
            "|g|, so clipping is checked through clip_coefficient.",
        ],
        "float64_reference": {
            "loss": loss64,
            "grad_global_norm": grad_norm64,
        },
    }
    path = out / "tiny_step.json"
    write_json(path, step_document)
    paths.append(path)

    print(f"state_dict entries that are not parameters (dropped): {dropped or 'none'}")
    print(f"pooled text positions: {pooled_positions}")
    print(f"loss {loss!r}, float64 {loss64!r}")
    print(f"grad_global_norm {grad_norm!r}, float64 {grad_norm64!r}")
    print(f"logit_scale_grad {logit_scale_grad!r}")
    print(f"loss_standard {loss_standard!r}, logit_scale_grad_standard {logit_scale_grad_standard!r}")
    print(f"loss_multipositive_paper {loss_multipositive!r}")
    print(f"clip coefficient {clip_coefficient!r}")
    print_step_sensitivity(weights, gradients, stepped, clipped, stepped64)
    print_attention_difference(config, weights, pixel_values, input_ids, outputs)
    print_sizes(paths)


def max_difference(left, right, gradients=None, min_grad=0.0):
    """Return max |left - right| over elements whose gradient magnitude is at least min_grad."""
    largest = 0.0
    for name in left:
        difference = (left[name].double() - right[name].double()).abs()
        if gradients is not None:
            difference = difference * (gradients[name].abs() >= min_grad)
        largest = max(largest, difference.max().item())
    return largest


def print_step_sensitivity(weights, gradients, stepped, clipped, stepped64):
    """Print how strongly the one-step golden depends on the gradients' exact values."""
    all_grads = torch.cat([g.flatten().abs() for g in gradients.values()])
    tiny = (all_grads < 1e-6).sum().item()
    zero = (all_grads == 0).sum().item()
    print(f"gradient elements: {all_grads.numel()}, exactly zero {zero}, below 1e-6 {tiny - zero}")
    print(f"max |step - weights| {max_difference(stepped, weights):.3e}")
    for min_grad in (0.0, 1e-6, 1e-5):
        print(
            f"elements with |grad| >= {min_grad:g}: "
            f"max |clipped step - step| {max_difference(clipped, stepped, gradients, min_grad):.3e}, "
            f"max |float32 step - float64 step| "
            f"{max_difference(stepped, stepped64, gradients, min_grad):.3e}"
        )


def print_attention_difference(config, weights, pixel_values, input_ids, eager_outputs):
    """Print how far transformers' SDPA attention is from the eager attention used here."""
    model = fresh_model(config, weights)
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        sdpa = pooled_tensor(model.get_image_features(pixel_values=pixel_values))
        sdpa_text = pooled_tensor(model.get_text_features(input_ids=input_ids))
    difference = max(
        (sdpa - eager_outputs["image_embeds"]).abs().max().item(),
        (sdpa_text - eager_outputs["text_embeds"]).abs().max().item(),
    )
    print(f"max |sdpa - eager| over image and text embeddings: {difference:.3e}")


# --------------------------------------------------------------------------------------
# geometry


def command_geometry(args):
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    config = geometry_config(args.name)
    start = time.perf_counter()

    torch.manual_seed(args.seed)
    model = build_model(config)
    weights, dropped = check_state_dict(model)
    built = time.perf_counter()

    batch = 2
    text = config.text_config
    eos_positions = [9, text.max_position_embeddings - 1]
    pixel_values, input_ids = make_inputs(
        batch,
        text.max_position_embeddings,
        config.vision_config.image_size,
        START_OF_TEXT_ID,
        END_OF_TEXT_ID,
        eos_positions,
        START_OF_TEXT_ID - 1,
        args.seed + 1,
    )
    check_pooling_rules(input_ids, END_OF_TEXT_ID)
    outputs = forward_outputs(model, pixel_values, input_ids)
    computed = time.perf_counter()

    metadata = safetensors_metadata(f"tools/clip-golden.py geometry --name {args.name}")
    paths = [out / "weights.safetensors", out / "config.json", out / "inputs.safetensors", out / "forward.safetensors"]
    save_file(weights, str(paths[0]), metadata=metadata)
    write_json(paths[1], model.config.to_diff_dict() | {"architectures": ["CLIPModel"]})
    save_file({"pixel_values": pixel_values, "input_ids": input_ids}, str(paths[2]), metadata=metadata)
    save_file(outputs, str(paths[3]), metadata=metadata)
    written = time.perf_counter()

    parameter_count = sum(t.numel() for t in weights.values())
    print(f"{args.name}: {parameter_count} parameters, dropped non-parameters: {dropped or 'none'}")
    print(
        f"build {built - start:.1f} s, forward {computed - built:.1f} s, "
        f"write {written - computed:.1f} s, total {written - start:.1f} s"
    )
    print_sizes(paths)


# --------------------------------------------------------------------------------------
# bench


def command_bench(args):
    config = tiny_config()
    torch.manual_seed(TINY_WEIGHT_SEED)
    model = build_model(config)
    add_noise(model, TINY_NOISE_STD)
    pixel_values, input_ids = make_inputs(
        TINY_BATCH,
        TINY_SEQ_LEN,
        config.vision_config.image_size,
        TINY_BOS_ID,
        TINY_EOS_ID,
        TINY_EOS_POSITIONS,
        TINY_BOS_ID - 1,
        TINY_INPUT_SEED,
    )
    initial = copy.deepcopy(model.state_dict())
    print(f"torch {torch.__version__}, batch {TINY_BATCH}, {args.steps} timed steps after {args.warmup} warm-up steps")
    for threads in args.threads:
        torch.set_num_threads(threads)
        model.load_state_dict(initial)
        optimizer = torch.optim.AdamW(model.parameters(), **ADAMW_SETTINGS)

        def train_step():
            optimizer.zero_grad()
            loss = contrastive_loss(logits_image_to_text(model, pixel_values, input_ids, "paper"))
            loss.backward()
            optimizer.step()
            return loss

        for _ in range(args.warmup):
            train_step()
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = train_step()
        elapsed = time.perf_counter() - start
        print(
            f"threads {threads}: {1000 * elapsed / args.steps:.2f} ms/step "
            f"(final loss {loss.item():.6f})"
        )


# --------------------------------------------------------------------------------------


def format_json(value, indent=0):
    """Format `value` as indented JSON with each list of numbers on one line.

    Non-ASCII characters are written as \\u escapes, so an editor that normalizes Unicode
    cannot turn the NFD edge case into NFC.
    """
    pad = " " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [
            f"{pad}{json.dumps(key)}: {format_json(item, indent + 1)}" for key, item in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    is_numbers = all(
        isinstance(item, (int, float)) and not isinstance(item, bool) for item in value
    ) if isinstance(value, list) else False
    if isinstance(value, list) and value and not is_numbers:
        items = [f"{pad}{format_json(item, indent + 1)}" for item in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    return json.dumps(value, separators=(",", ":") if is_numbers else (", ", ": "))


def write_json(path, document):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="ascii") as file:
        file.write(format_json(document))
        file.write("\n")


def print_sizes(paths):
    total = 0
    for path in paths:
        size = path.stat().st_size
        total += size
        print(f"  {size:>12,d} B  {path}")
    print(f"  {total:>12,d} B  total")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Write PyTorch reference files for the paperclip-clip crate.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    tokenizer = commands.add_parser("tokenizer", help="write tokenizer.json")
    tokenizer.add_argument("--captions", type=Path, required=True, help="caption file, one caption a line")
    tokenizer.add_argument(
        "--bpe",
        type=Path,
        help="a bpe_simple_vocab_16e6.txt.gz that must be byte-identical to open_clip's bundled copy",
    )
    tokenizer.add_argument("--out", type=Path, required=True, help="output JSON path")
    tokenizer.set_defaults(handler=command_tokenizer)

    tiny = commands.add_parser("tiny", help="write the tiny model's golden files")
    tiny.add_argument("--out", type=Path, required=True, help="output directory")
    tiny.set_defaults(handler=command_tiny)

    geometry = commands.add_parser("geometry", help="write a full-size random model and its forward outputs")
    geometry.add_argument("--name", choices=sorted(GEOMETRIES), required=True, help="model geometry")
    geometry.add_argument("--out", type=Path, required=True, help="output directory")
    geometry.add_argument("--seed", type=int, default=0, help="seed of the weights; the inputs use seed + 1")
    geometry.set_defaults(handler=command_geometry)

    bench = commands.add_parser("bench", help="time tiny-model training steps on CPU")
    bench.add_argument("--steps", type=int, default=50, help="timed steps per thread count")
    bench.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    bench.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time")
    bench.set_defaults(handler=command_bench)

    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
