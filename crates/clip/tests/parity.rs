//! Parity with `transformers.CLIPModel` and `torch.optim.AdamW` on golden files written by
//! `tools/clip-golden.py tiny` (see `tests/golden/README.md`): the same random weights and
//! inputs must give the same embeddings, logits, loss, gradients and post-step weights.
//!
//! With `PAPERCLIP_CLIP_GOLDEN_DIR` pointing at the output of `tools/clip-golden.py
//! geometry --name vit-b-16`, `vit_b16_forward_matches_transformers` checks the
//! ViT-B/16 geometry the same way (ignored by default: it needs that 600 MB folder).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use paperclip_clip::loss::{Positives, ScaleMode, contrastive_loss, logits};
use paperclip_clip::optim::{AdamW, AdamWConfig, clip_grad_norm};
use paperclip_clip::{ClipConfig, ClipModel};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn load(dir: &Path, name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join(name), &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    values(a)
        .iter()
        .zip(values(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

struct Fixture {
    model: ClipModel,
    pixels: Tensor,
    ids: Tensor,
    groups: Vec<i64>,
    step: serde_json::Value,
}

fn model_from(dir: &Path, config_file: &str, weights_file: &str) -> ClipModel {
    let config = ClipConfig::from_json_file(&dir.join(config_file)).unwrap();
    let model = ClipModel::random(&config, 0, &Device::Cpu).unwrap();
    let unused = model.load_weights(&dir.join(weights_file)).unwrap();
    assert!(unused.is_empty(), "unused tensors {unused:?}");
    model
}

fn inputs(dir: &Path, file: &str) -> (Tensor, Tensor, Vec<i64>) {
    let inputs = load(dir, file);
    let ids = inputs["input_ids"].to_dtype(DType::U32).unwrap();
    let groups = inputs
        .get("proposal_ids")
        .map(|t| t.to_vec1::<i64>().unwrap())
        .unwrap_or_default();
    (inputs["pixel_values"].clone(), ids, groups)
}

fn tiny() -> Fixture {
    let dir = golden_dir();
    let (pixels, ids, groups) = inputs(&dir, "tiny_inputs.safetensors");
    let text = std::fs::read_to_string(dir.join("tiny_step.json")).unwrap();
    Fixture {
        model: model_from(&dir, "tiny_config.json", "tiny_weights.safetensors"),
        pixels,
        ids,
        groups,
        step: serde_json::from_str(&text).unwrap(),
    }
}

fn check_forward(
    model: &ClipModel,
    pixels: &Tensor,
    ids: &Tensor,
    forward: &HashMap<String, Tensor>,
) {
    let images = model.image_features(pixels).unwrap();
    let texts = model.text_features(ids).unwrap();
    let per_image = logits(&images, &texts, model.logit_scale(), ScaleMode::Standard).unwrap();
    let checks = [
        ("vision_pooled", model.vision_pooled(pixels).unwrap()),
        ("text_pooled", model.text_pooled(ids).unwrap()),
        ("image_embeds", images),
        ("text_embeds", texts),
        ("logits_per_image", per_image.clone()),
        ("logits_per_text", per_image.t().unwrap()),
    ];
    for (name, ours) in checks {
        let diff = max_abs_diff(&ours, &forward[name]);
        eprintln!("{name}: max abs difference {diff:e}");
        assert!(diff <= 1e-4, "{name}: max abs difference {diff:e} > 1e-4");
    }
}

#[test]
fn forward_matches_transformers() {
    let f = tiny();
    let forward = load(&golden_dir(), "tiny_forward.safetensors");
    check_forward(&f.model, &f.pixels, &f.ids, &forward);
}

fn scalar(t: &Tensor) -> f64 {
    f64::from(t.to_scalar::<f32>().unwrap())
}

fn golden(f: &Fixture, key: &str) -> f64 {
    f.step[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing"))
}

fn loss(f: &Fixture, mode: ScaleMode, positives: &Positives) -> Tensor {
    let images = f.model.image_features(&f.pixels).unwrap();
    let texts = f.model.text_features(&f.ids).unwrap();
    contrastive_loss(&images, &texts, f.model.logit_scale(), mode, positives).unwrap()
}

fn assert_close(name: &str, ours: f64, theirs: f64, relative: f64) {
    let diff = (ours - theirs).abs();
    assert!(
        diff <= relative * theirs.abs().max(1e-12),
        "{name}: {ours} vs {theirs} (relative difference {:e})",
        diff / theirs.abs()
    );
}

#[test]
fn losses_and_temperature_gradients_match_pytorch() {
    let f = tiny();
    let groups = Positives::SameGroup(f.groups.clone());
    let cases = [
        (
            "loss",
            "logit_scale_grad",
            ScaleMode::Paper,
            Positives::Diagonal,
        ),
        (
            "loss_standard",
            "logit_scale_grad_standard",
            ScaleMode::Standard,
            Positives::Diagonal,
        ),
        (
            "loss_multipositive_paper",
            "logit_scale_grad_multipositive_paper",
            ScaleMode::Paper,
            groups.clone(),
        ),
    ];
    for (loss_key, grad_key, mode, positives) in cases {
        let value = loss(&f, mode, &positives);
        assert_close(loss_key, scalar(&value), golden(&f, loss_key), 1e-5);
        let grads = value.backward().unwrap();
        let grad = grads.get(f.model.logit_scale()).unwrap();
        assert_close(grad_key, scalar(grad), golden(&f, grad_key), 1e-4);
    }
    let value = loss(&f, ScaleMode::Standard, &groups);
    assert_close(
        "loss_multipositive_standard",
        scalar(&value),
        golden(&f, "loss_multipositive_standard"),
        1e-5,
    );
}

#[test]
fn gradients_match_pytorch() {
    let f = tiny();
    let grads = loss(&f, ScaleMode::Paper, &Positives::Diagonal)
        .backward()
        .unwrap();
    let reference = load(&golden_dir(), "tiny_grads.safetensors");
    let mut worst = (0.0f32, String::new());
    for (name, var) in f.model.params().iter() {
        let theirs = &reference[name];
        let scale = values(theirs).iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let ours = grads
            .get(var.as_tensor())
            .cloned()
            .unwrap_or_else(|| var.zeros_like().unwrap());
        // Relative to the tensor's largest gradient; the attention key biases have exact
        // zero gradients whose stored values are rounding noise below 1e-8.
        let diff = max_abs_diff(&ours, theirs) / scale.max(1e-4);
        if diff > worst.0 {
            worst = (diff, name.to_string());
        }
    }
    assert!(
        worst.0 <= 1e-4,
        "gradient of {} differs by {:e} of its scale",
        worst.1,
        worst.0
    );
}

#[test]
fn one_adamw_step_matches_pytorch() {
    let f = tiny();
    let value = loss(&f, ScaleMode::Paper, &Positives::Diagonal);
    assert_close("loss", scalar(&value), golden(&f, "loss"), 1e-5);
    let grads = value.backward().unwrap();
    let reference_grads = load(&golden_dir(), "tiny_grads.safetensors");
    let mut optimizer = AdamW::new(
        f.model.params(),
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-3,
        },
    )
    .unwrap();
    optimizer.step(f.model.params(), &grads, 1e-3).unwrap();

    let after = load(&golden_dir(), "tiny_step.safetensors");
    let mut checked = 0usize;
    for (name, var) in f.model.params().iter() {
        let ours = values(var.as_tensor());
        let theirs = values(&after[name]);
        let grad = values(&reference_grads[name]);
        for i in 0..ours.len() {
            // Elements with |g| below 1e-6 move by an amount set by float rounding noise in
            // either implementation (see the golden README); they are left out.
            if grad[i].abs() < 1e-6 {
                continue;
            }
            let diff = (ours[i] - theirs[i]).abs();
            assert!(
                diff <= 1e-5 * theirs[i].abs().max(1e-2),
                "{name}[{i}]: {} vs {} after one step",
                ours[i],
                theirs[i]
            );
            checked += 1;
        }
    }
    assert!(checked > 40_000, "only {checked} elements compared");
}

#[test]
fn gradient_clipping_uses_the_pytorch_coefficient() {
    let f = tiny();
    let mut grads = loss(&f, ScaleMode::Paper, &Positives::Diagonal)
        .backward()
        .unwrap();
    let before = scalar(grads.get(f.model.logit_scale()).unwrap());
    let norm = clip_grad_norm(f.model.params(), &mut grads, 0.5).unwrap();
    assert_close(
        "grad_global_norm",
        norm,
        golden(&f, "grad_global_norm"),
        1e-4,
    );
    let clipped = &f.step["clipped"];
    let after = scalar(grads.get(f.model.logit_scale()).unwrap());
    assert_close(
        "clip coefficient",
        after / before,
        clipped["clip_coefficient"].as_f64().unwrap(),
        1e-5,
    );
}

#[test]
#[ignore = "needs the ViT-B/16 golden folder from tools/clip-golden.py geometry"]
fn vit_b16_forward_matches_transformers() {
    let dir = PathBuf::from(
        std::env::var("PAPERCLIP_CLIP_GOLDEN_DIR")
            .expect("set PAPERCLIP_CLIP_GOLDEN_DIR to the geometry folder"),
    );
    let model = model_from(&dir, "config.json", "weights.safetensors");
    let (pixels, ids, _) = inputs(&dir, "inputs.safetensors");
    check_forward(&model, &pixels, &ids, &load(&dir, "forward.safetensors"));
}
