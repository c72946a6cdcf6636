//! Greedy parity of the in-process Gemma 3 engine with llama.cpp: for each prompt of
//! `tests/golden/prompts.json`, the prompt ids and 48 greedily generated ids must equal
//! those `tools/llama-greedy-golden.py` recorded from llama.cpp's `llama-server` in
//! `tests/golden/greedy.json`. The long prompt exceeds the 512-token sliding window, so
//! the local layers' masking is covered too.
//!
//! Skips (prints "skipping: ..." and passes) when the model is not in
//! `~/.cache/paperclip/models`, unless `PAPERCLIP_REQUIRE_LLAMA=1`. `PAPERCLIP_GGUF`
//! overrides the model path.

use std::path::PathBuf;

use paperclip_llm::{DEFAULT_MAX_POSITIONS, Engine};
use serde_json::Value;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn read_json(name: &str) -> Value {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn model_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PAPERCLIP_GGUF") {
        return Some(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME")?;
    let path = PathBuf::from(home).join(".cache/paperclip/models/gemma-3-270m-q4_k_m.gguf");
    path.is_file().then_some(path)
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("an id list")
        .iter()
        .map(|v| v.as_u64().expect("an id") as u32)
        .collect()
}

#[test]
fn greedy_decoding_matches_llama_cpp_token_for_token() {
    let Some(model) = model_path() else {
        assert!(
            std::env::var("PAPERCLIP_REQUIRE_LLAMA").as_deref() != Ok("1"),
            "the Gemma 3 model is missing; run tools/fetch-summary-model.sh"
        );
        eprintln!("skipping: no model; run tools/fetch-summary-model.sh");
        return;
    };
    let golden = read_json("greedy.json");
    let prompts = read_json("prompts.json");
    let mut engine = Engine::load(&model, 2, DEFAULT_MAX_POSITIONS).expect("the model loads");

    for case in golden["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("a case name");
        let text = prompts
            .as_array()
            .expect("prompts")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["text"].as_str())
            .unwrap_or_else(|| panic!("no prompt named {name}"));
        let prompt_ids = ids(&case["prompt_ids"]);
        assert_eq!(engine.encode_prompt(text), prompt_ids, "{name}: prompt ids");

        let expected = ids(&case["generated_ids"]);
        let generated = engine
            .greedy_unconstrained(&prompt_ids, expected.len())
            .expect("generation runs");
        if let Some(i) = (0..expected.len()).find(|&i| generated[i] != expected[i]) {
            panic!(
                "{name}: token {i} is {} but llama.cpp chose {} (its top two: {} {}); ours: {:?}",
                generated[i], expected[i], case["top2_ids"][i], case["top2_probs"][i], generated
            );
        }
    }
}
