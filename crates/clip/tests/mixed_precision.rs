//! bf16 mixed precision: activations in bf16, parameters and optimizer state in f32.
//!
//! Runs on the CPU, where candle supports bf16 too, so the path a GPU run takes is tested
//! without a GPU: the same embeddings as f32 up to bf16 rounding, a finite loss, and a
//! gradient in f32 for every parameter.

use candle_core::{DType, Device, Tensor};
use paperclip_clip::loss::{Positives, ScaleMode, contrastive_loss};
use paperclip_clip::optim::{AdamW, AdamWConfig};
use paperclip_clip::{ClipConfig, ClipModel};

fn tiny() -> ClipConfig {
    let json = serde_json::json!({
        "projection_dim": 16,
        "text_config": {
            "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4,
            "max_position_embeddings": 8, "eos_token_id": 63
        },
        "vision_config": {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "image_size": 16, "patch_size": 8
        }
    });
    ClipConfig::from_json_value(&json, "tiny").unwrap()
}

fn inputs() -> (Tensor, Tensor) {
    let pixels = Tensor::randn(0f32, 1f32, (4, 3, 16, 16), &Device::Cpu).unwrap();
    let ids: Vec<u32> = [
        [1, 5, 9, 63, 0, 0, 0, 0],
        [1, 7, 63, 0, 0, 0, 0, 0],
        [1, 2, 3, 4, 5, 6, 7, 63],
        [1, 63, 0, 0, 0, 0, 0, 0],
    ]
    .concat();
    (pixels, Tensor::from_vec(ids, (4, 8), &Device::Cpu).unwrap())
}

fn relative_difference(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale
}

#[test]
fn bf16_features_match_f32_to_bf16_precision() {
    let (pixels, ids) = inputs();
    let mut model = ClipModel::random(&tiny(), 5, &Device::Cpu).unwrap();
    let images32 = model.image_features(&pixels).unwrap();
    let texts32 = model.text_features(&ids).unwrap();

    model.set_compute_dtype(DType::BF16);
    let images16 = model.image_features(&pixels).unwrap();
    let texts16 = model.text_features(&ids).unwrap();

    assert_eq!(images16.dtype(), DType::F32);
    let image_diff = relative_difference(&images16, &images32);
    let text_diff = relative_difference(&texts16, &texts32);
    // bf16 keeps 8 bits of mantissa: about 0.4 % per rounding, a few percent through
    // two blocks.
    assert!(image_diff < 0.05, "images differ by {image_diff}");
    assert!(text_diff < 0.05, "texts differ by {text_diff}");
}

#[test]
fn a_bf16_step_updates_every_f32_parameter() {
    let (pixels, ids) = inputs();
    let mut model = ClipModel::random(&tiny(), 5, &Device::Cpu).unwrap();
    model.set_compute_dtype(DType::BF16);
    let before = model.params().snapshot().unwrap();

    let images = model.image_features(&pixels).unwrap();
    let texts = model.text_features(&ids).unwrap();
    let loss = contrastive_loss(
        &images,
        &texts,
        model.logit_scale(),
        ScaleMode::Paper,
        &Positives::Diagonal,
    )
    .unwrap();
    assert!(loss.to_scalar::<f32>().unwrap().is_finite());
    let grads = loss.backward().unwrap();
    let mut optimizer = AdamW::new(model.params(), AdamWConfig::default()).unwrap();
    optimizer.step(model.params(), &grads, 1e-3).unwrap();

    for (name, var) in model.params().iter() {
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        assert_eq!(grad.dtype(), DType::F32, "{name}");
        assert_eq!(var.dtype(), DType::F32, "{name}");
        let moved = relative_difference(var.as_tensor(), &before[name]);
        assert!(moved > 0.0, "{name} did not move (gradient {grad})");
    }
}
