//! Model configs: open_clip's JSON configs give the OpenAI geometries.
//!
//! The behaviour users have been bitten by in other CLIP implementations (the initial
//! temperature, captions longer than the context, a temperature grown past 100) is tested
//! in the repository's `it` suite, `tests/it/user_reports/clip.rs`.

use paperclip_clip::ClipConfig;

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
