//! CLIP training: the initial and loaded temperature, a temperature grown past 100, and
//! captions longer than the text context, on tiny random models on the CPU.
//!
//! One AdamW step in bf16 compute with f32 weights and optimizer state is tested in
//! `crates/clip/tests/mixed_precision.rs` (`a_bf16_step_updates_every_f32_parameter`) and,
//! through `paperclip train`, in `tests/it/train.rs`
//! (`a_bf16_run_trains_and_checkpoints_f32_weights`).

use candle_core::{Device, Tensor};
use paperclip_clip::loss::{Positives, ScaleMode, contrastive_loss, logit_multiplier};
use paperclip_clip::tokenizer::ClipTokenizer;
use paperclip_clip::{ClipConfig, ClipModel};

/// CLIP's context length.
const CONTEXT: usize = 77;

/// Returns a tiny model config whose text tower takes the 517 ids of [`tokenizer`] and 77
/// positions.
fn tiny_config() -> ClipConfig {
    let json = serde_json::json!({
        "projection_dim": 8,
        "text_config": {
            "vocab_size": 517, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 1, "num_attention_heads": 2,
            "max_position_embeddings": CONTEXT
        },
        "vision_config": {
            "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "image_size": 16, "patch_size": 8
        }
    });
    ClipConfig::from_json_value(&json, "tiny").unwrap()
}

/// Builds a CLIP tokenizer of single characters and three merges. It has 517 ids, and the
/// end-of-text id is the largest.
fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_merges_text("#version: a few merges\nt h\nth e</w>\ni n</w>\n").unwrap()
}

fn scalar(t: &Tensor) -> f32 {
    t.to_scalar::<f32>().unwrap()
}

// https://github.com/huggingface/transformers/issues/13430
#[test]
fn fresh_model_starts_at_clip_temperature() {
    let model = ClipModel::random(&tiny_config(), 0, &Device::Cpu).unwrap();
    assert!(
        (scalar(model.logit_scale()) - (1.0f32 / 0.07).ln()).abs() < 1e-4,
        "{}",
        scalar(model.logit_scale())
    );
    assert!((scalar(model.logit_scale()) - 2.6592).abs() < 1e-4);
}

// https://github.com/huggingface/transformers/issues/13430
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

// https://github.com/openai/CLIP/pull/530
#[test]
fn temperature_past_100_clamps_in_standard_mode() {
    let model = ClipModel::random(&tiny_config(), 0, &Device::Cpu).unwrap();
    let var = model.params().get("logit_scale").unwrap();
    var.set(&Tensor::new(10f32, &Device::Cpu).unwrap()).unwrap();

    let standard = logit_multiplier(model.logit_scale(), ScaleMode::Standard).unwrap();
    assert_eq!(scalar(&standard), 100.0);
    let paper = logit_multiplier(model.logit_scale(), ScaleMode::Paper).unwrap();
    assert_eq!(scalar(&paper), 10.0);

    let tokenizer = tokenizer();
    let ids: Vec<u32> = ["a red disk", "a blue bar", "the ring", "in the corner"]
        .iter()
        .flat_map(|caption| tokenizer.encode_padded(caption, CONTEXT).unwrap())
        .collect();
    let ids = Tensor::from_vec(ids, (4, CONTEXT), &Device::Cpu).unwrap();
    let pixels = Tensor::randn(0f32, 1f32, (4, 3, 16, 16), &Device::Cpu).unwrap();
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

// https://github.com/huggingface/sentence-transformers/issues/3210
#[test]
fn long_caption_cut_and_pooled_at_end() {
    let tokenizer = tokenizer();
    let words: Vec<String> = (0..128)
        .map(|i| format!("{}", (b'a' + i % 26) as char))
        .collect();
    let caption = words.join(" ");
    assert_eq!(tokenizer.encode(&caption).len() + 2, 130);

    let ids = tokenizer.encode_padded(&caption, CONTEXT).unwrap();
    assert_eq!(ids.len(), CONTEXT);
    assert_eq!(ids[0], tokenizer.start_of_text_id());
    assert_eq!(ids[CONTEXT - 1], tokenizer.end_of_text_id());

    // A word the cut keeps changes the embedding; a word after the cut does not.
    let mut changed_before_cut = words.clone();
    changed_before_cut[70] = "z".to_string();
    let mut changed_after_cut = words.clone();
    changed_after_cut[100] = "z".to_string();
    let rows: Vec<u32> = [words, changed_before_cut, changed_after_cut]
        .iter()
        .flat_map(|w| tokenizer.encode_padded(&w.join(" "), CONTEXT).unwrap())
        .collect();
    let model = ClipModel::random(&tiny_config(), 0, &Device::Cpu).unwrap();
    let ids = Tensor::from_vec(rows, (3, CONTEXT), &Device::Cpu).unwrap();
    let features = model.text_features(&ids).unwrap().to_vec2::<f32>().unwrap();
    assert_ne!(features[0], features[1]);
    assert_eq!(features[0], features[2]);

    // Rows longer than the context are rejected with the fix, not cut silently.
    let mut long = vec![tokenizer.start_of_text_id(); 129];
    long.push(tokenizer.end_of_text_id());
    let ids = Tensor::from_vec(long, (1, 130), &Device::Cpu).unwrap();
    let error = model.text_features(&ids).unwrap_err().to_string();
    assert!(error.contains("130 positions"), "{error}");
    assert!(error.contains("truncate"), "{error}");
}
