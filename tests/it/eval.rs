//! `paperclip eval` on a dataset and checkpoints made by the project's own commands: the
//! shapes dataset, a tiny CLIP trained on it, and the same model at its random start.

use std::path::Path;

use crate::support::paperclip;
use crate::train::{options, shapes, write_config};
use paperclip::train::trainer::Quiet;
use paperclip_clip::{ClipConfig, ClipModel};

/// Saves the tiny model at its random initialization as a model folder.
fn random_start(dir: &Path) -> std::path::PathBuf {
    let config = ClipConfig::from_json_file(&dir.join("tiny.json")).unwrap();
    let model = ClipModel::random(&config, 1, &candle_core::Device::Cpu).unwrap();
    let out = dir.join("random-start");
    paperclip_clip::checkpoint::save_model(&model, &out).unwrap();
    out
}

fn metric(model: &serde_json::Value, direction: &str, fraction: f64) -> f64 {
    model[direction]["top_fraction"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["fraction"].as_f64() == Some(fraction))
        .and_then(|p| p["accuracy"].as_f64())
        .unwrap_or_else(|| panic!("no top-{fraction} in {model}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_scores_trained_checkpoint_above_its_random_start() {
    let dir = tempfile::tempdir().unwrap();
    shapes(dir.path(), 1024).await;
    let config = write_config(dir.path(), "shapes", 250, "");
    let outcome = paperclip::train::train(&options(dir.path(), &config), &mut Quiet)
        .await
        .expect("training runs");
    let trained = outcome.record.last_checkpoint.expect("a final checkpoint");
    let base = random_start(dir.path());

    let out_dir = dir.path().join("eval");
    let (base, trained) = (base.display().to_string(), trained.to_string());
    let vocabulary = dir.path().join("merges.txt").display().to_string();
    let out = out_dir.display().to_string();
    let output = paperclip(
        dir.path(),
        &[
            "eval",
            "--dataset",
            "shapes@1",
            "--split",
            "val",
            "--checkpoint",
            &base,
            "--checkpoint",
            &trained,
            "--label",
            "random start",
            "--label",
            "trained",
            "--vocabulary",
            &vocabulary,
            "--out",
            &out,
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "eval failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("| metric | random | random start | trained |"),
        "{stdout}"
    );

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("eval.json")).unwrap()).unwrap();
    assert_eq!(report["samples"], 128);
    let (random_start, trained) = (&report["models"][0], &report["models"][1]);
    for direction in ["image_to_text", "text_to_image"] {
        let (before, after) = (
            metric(random_start, direction, 0.1),
            metric(trained, direction, 0.1),
        );
        eprintln!("{direction} top-10%: random start {before:.3}, trained {after:.3}");
        assert!(
            after >= 0.3,
            "{direction} top-10% {after} is near chance (0.094)"
        );
        assert!(
            after > before + 0.1,
            "{direction}: {after} not above {before}"
        );
    }
    // 128 pairs: one whole batch of 100 for the original code's metric.
    assert_eq!(trained["in_batch"]["batch_size"], 100);
    assert_eq!(trained["in_batch"]["batches"], 1);
    assert_eq!(report["descriptions"].as_array().unwrap().len(), 6);

    for name in [
        "retrieval-image-to-text.png",
        "retrieval-text-to-image.png",
        "similarity-1.png",
        "similarity-2.png",
    ] {
        let bytes = std::fs::read(out_dir.join(name)).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{name} is not a PNG"
        );
    }
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert_eq!(
        html.matches("<img src=\"data:image/png;base64,").count(),
        4 + 6
    );
    assert!(
        !html.contains("src=\"http"),
        "the report must not load anything"
    );
}
