//! Model behaviour users have been bitten by in other CLIP implementations: the initial
//! temperature, captions longer than the context, and a temperature grown past 100.

use candle_core::{Device, Tensor};
use paperclip_clip::loss::{Positives, ScaleMode, contrastive_loss, logit_multiplier};
use paperclip_clip::{ClipConfig, ClipModel};

fn tiny_config() -> ClipConfig {
    let json = serde_json::json!({
        "projection_dim": 8,
        "text_config": {
            "vocab_size": 49408, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 77
        },
        "vision_config": {
            "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "image_size": 16, "patch_size": 8
        }
    });
    ClipConfig::from_json_value(&json, "tiny").unwrap()
}

fn scalar(t: &Tensor) -> f32 {
    t.to_scalar::<f32>().unwrap()
}

#[test]
fn model_starts_at_clip_temperature() {
    let model = ClipModel::random(&tiny_config(), 0, &Device::Cpu).unwrap();
    assert!((scalar(model.logit_scale()) - 2.6592).abs() < 1e-6);
}

#[test]
fn loaded_weights_bring_their_own_temperature() {
    let dir = tempfile::tempdir().unwrap();
    let source = ClipModel::random(&tiny_config(), 1, &Device::Cpu).unwrap();
    let var = source.params().get("logit_scale").unwrap();
    var.set(&Tensor::new(4.6052f32, &Device::Cpu).unwrap())
        .unwrap();
    let path = dir.path().join("model.safetensors");
    source.params().save(&path).unwrap();

    let target = ClipModel::random(&tiny_config(), 2, &Device::Cpu).unwrap();
    target.load_weights(&path).unwrap();
    assert!((scalar(target.logit_scale()) - 4.6052).abs() < 1e-6);
}

#[test]
fn temperature_past_100_clamps_in_standard_mode() {
    let model = ClipModel::random(&tiny_config(), 0, &Device::Cpu).unwrap();
    let var = model.params().get("logit_scale").unwrap();
    var.set(&Tensor::new(10f32, &Device::Cpu).unwrap()).unwrap();

    let standard = logit_multiplier(model.logit_scale(), ScaleMode::Standard).unwrap();
    assert_eq!(scalar(&standard), 100.0);
    let paper = logit_multiplier(model.logit_scale(), ScaleMode::Paper).unwrap();
    assert_eq!(scalar(&paper), 10.0);

    let pixels = Tensor::randn(0f32, 1f32, (4, 3, 16, 16), &Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..4)
        .flat_map(|i| {
            let mut row = vec![49406, 320 + i, 49407];
            row.resize(77, 0);
            row
        })
        .collect();
    let ids = Tensor::from_vec(ids, (4, 77), &Device::Cpu).unwrap();
    let images = model.image_features(&pixels).unwrap();
    let texts = model.text_features(&ids).unwrap();
    let loss = contrastive_loss(
        &images,
        &texts,
        model.logit_scale(),
        ScaleMode::Standard,
        &Positives::Diagonal,
    )
    .unwrap();
    assert!(scalar(&loss).is_finite());
    let grads = loss.backward().unwrap();
    // Clamped: the temperature gets no gradient, as with torch.clamp.
    let grad = grads.get(model.logit_scale()).map(scalar).unwrap_or(0.0);
    assert_eq!(grad, 0.0);
}

#[test]
fn text_rows_longer_than_context_are_rejected() {
    let model = ClipModel::random(&tiny_config(), 0, &Device::Cpu).unwrap();
    let mut row = vec![49406u32; 129];
    row.push(49407);
    let ids = Tensor::from_vec(row, (1, 130), &Device::Cpu).unwrap();
    let error = model.text_features(&ids).unwrap_err().to_string();
    assert!(error.contains("130 positions"), "{error}");
    assert!(error.contains("truncate"), "{error}");
}

#[test]
fn text_pooling_reads_end_token_of_truncated_caption() {
    let model = ClipModel::random(&tiny_config(), 0, &Device::Cpu).unwrap();
    // A caption cut at 77 tokens has its end token at the last position. Pooling reads
    // that position, so a change to an earlier token must change the embedding.
    let mut full = vec![49406u32];
    full.extend((0..75).map(|i| 1000 + i));
    full.push(49407);
    let mut changed = full.clone();
    changed[70] = 2000;
    let ids = Tensor::from_vec([full, changed].concat(), (2, 77), &Device::Cpu).unwrap();
    let features = model.text_features(&ids).unwrap().to_vec2::<f32>().unwrap();
    assert_ne!(features[0], features[1]);
}

/// Returns an open_clip model config of the reference data, when present.
fn open_clip_config(name: &str) -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/clip/model_configs")
        .join(name);
    if path.is_file() {
        return Some(path);
    }
    let message = format!("skipping: shared data file not found at {}", path.display());
    if std::env::var("PAPERCLIP_REQUIRE_SHARED_DATA").as_deref() == Ok("1") {
        panic!("{message}");
    }
    eprintln!("{message}");
    None
}

#[test]
fn open_clip_configs_give_the_openai_geometries() {
    for (file, preset) in [("ViT-B-16.json", "vit-b-16"), ("ViT-B-32.json", "vit-b-32")] {
        let Some(path) = open_clip_config(file) else {
            return;
        };
        let parsed = ClipConfig::from_json_file(&path).unwrap();
        let expected = ClipConfig::preset(preset).unwrap();
        // open_clip builds these configs with exact GELU unless asked for QuickGELU.
        assert_eq!(
            parsed.text.hidden_act,
            paperclip_clip::config::Activation::Gelu
        );
        let strip = |mut c: ClipConfig| {
            c.text.hidden_act = paperclip_clip::config::Activation::QuickGelu;
            c.vision.hidden_act = paperclip_clip::config::Activation::QuickGelu;
            c
        };
        assert_eq!(strip(parsed), expected, "{file}");
    }
}
