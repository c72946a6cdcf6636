//! Every parameter must receive a gradient from the contrastive loss.
//!
//! candle's fused LayerNorm and softmax have no backward pass; a model that used them
//! would train only part of itself without any error. This test fails if any parameter,
//! including every LayerNorm, the embeddings and the temperature, is left out.

use candle_core::{Device, Tensor};
use paperclip_clip::ClipConfig;
use paperclip_clip::ClipModel;
use paperclip_clip::loss::{Positives, ScaleMode, contrastive_loss};

fn tiny_config() -> ClipConfig {
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
    ClipConfig::from_json_value(&json, "tiny test config").unwrap()
}

fn batch(device: &Device) -> (Tensor, Tensor) {
    let pixels = Tensor::randn(0f32, 1f32, (4, 3, 16, 16), device).unwrap();
    let ids: Vec<u32> = vec![
        1, 5, 9, 63, 0, 0, 0, 0, //
        1, 7, 63, 0, 0, 0, 0, 0, //
        1, 2, 3, 4, 5, 6, 7, 63, //
        1, 63, 0, 0, 0, 0, 0, 0,
    ];
    (pixels, Tensor::from_vec(ids, (4, 8), device).unwrap())
}

fn assert_every_parameter_has_a_gradient(mode: ScaleMode, positives: Positives) {
    let device = Device::Cpu;
    let model = ClipModel::random(&tiny_config(), 3, &device).unwrap();
    let (pixels, ids) = batch(&device);

    let images = model.image_features(&pixels).unwrap();
    let texts = model.text_features(&ids).unwrap();
    let loss = contrastive_loss(&images, &texts, model.logit_scale(), mode, &positives).unwrap();
    let grads = loss.backward().unwrap();

    let mut missing = Vec::new();
    for (name, var) in model.params().iter() {
        let norm = grads.get(var.as_tensor()).map(|g| {
            g.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        });
        match norm {
            Some(n) if n > 0.0 && n.is_finite() => {}
            other => missing.push(format!("{name}: {other:?}")),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} parameters got no usable gradient:\n{}",
        missing.len(),
        model.params().len(),
        missing.join("\n")
    );
}

#[test]
fn paper_scale_reaches_every_parameter() {
    assert_every_parameter_has_a_gradient(ScaleMode::Paper, Positives::Diagonal);
}

#[test]
fn standard_scale_with_group_positives_reaches_every_parameter() {
    assert_every_parameter_has_a_gradient(
        ScaleMode::Standard,
        Positives::SameGroup(vec![1, 1, 2, 3]),
    );
}

#[test]
fn the_model_has_the_hugging_face_parameter_set() {
    let model = ClipModel::random(&tiny_config(), 0, &Device::Cpu).unwrap();
    // 16 tensors per block, 2 blocks per tower; text: 2 embeddings + final norm (2);
    // vision: 3 embeddings + pre and post norms (4); 2 projections; logit_scale.
    assert_eq!(model.params().len(), 2 * 16 * 2 + 4 + 7 + 2 + 1);
    for name in [
        "text_model.embeddings.token_embedding.weight",
        "text_model.encoder.layers.1.self_attn.out_proj.bias",
        "text_model.final_layer_norm.weight",
        "vision_model.embeddings.class_embedding",
        "vision_model.pre_layrnorm.bias",
        "vision_model.encoder.layers.0.mlp.fc2.weight",
        "vision_model.post_layernorm.weight",
        "visual_projection.weight",
        "text_projection.weight",
        "logit_scale",
    ] {
        assert!(model.params().get(name).is_some(), "missing {name}");
    }
}
