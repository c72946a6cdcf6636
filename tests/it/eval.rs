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
    let config = write_config(dir.path(), "shapes", 400, "");
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
    let (random_start, fine_tuned) = (&report["models"][0], &report["models"][1]);
    for direction in ["image_to_text", "text_to_image"] {
        let (before, after) = (
            metric(random_start, direction, 0.1),
            metric(fine_tuned, direction, 0.1),
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
    assert_eq!(fine_tuned["in_batch"]["batch_size"], 100);
    assert_eq!(fine_tuned["in_batch"]["batches"], 1);
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

    search_finds_what_the_query_names(dir.path(), &trained, &vocabulary);
    mistakes_are_caught(dir.path(), &trained, &vocabulary, &outcome.record.run_id);
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Checks the mistakes users make: a copied checkpoint, the training split, a wrong vocabulary,
/// a used output folder, a partial re-embedding, an empty query.
fn mistakes_are_caught(data_dir: &Path, trained: &str, vocabulary: &str, run_id: &str) {
    // A copied checkpoint folder is still traced to its run, and scoring it on its own
    // training split is flagged.
    let copy = data_dir.join("copied-checkpoint");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(trained).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
    }
    let copy = copy.display().to_string();
    let out = paperclip(
        data_dir,
        &[
            "--json",
            "eval",
            "--dataset",
            "shapes",
            "--split",
            "train",
            "--checkpoint",
            &copy,
            "--vocabulary",
            vocabulary,
            "--examples",
            "0",
        ],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["models"][0]["trained_on"]["run_id"], run_id);
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("was trained on this split"), "{warnings}");
    let folder = Path::new(report["files"][0].as_str().unwrap())
        .parent()
        .unwrap();
    assert!(
        folder.starts_with(data_dir.join("evaluations")),
        "{folder:?}"
    );

    // The report folder given must be new or empty.
    let used = folder.display().to_string();
    let again = paperclip(
        data_dir,
        &[
            "eval",
            "--dataset",
            "shapes",
            "--checkpoint",
            &copy,
            "--out",
            &used,
        ],
    );
    assert!(
        stderr_of(&again).contains("already contains files"),
        "{}",
        stderr_of(&again)
    );

    // A vocabulary of another size than the model's token table.
    let wrong = data_dir.join("wrong-merges.txt");
    std::fs::write(&wrong, "#version: 0.2\na b\nc d\n").unwrap();
    let bad = paperclip(
        data_dir,
        &[
            "eval",
            "--dataset",
            "shapes",
            "--checkpoint",
            &copy,
            "--vocabulary",
            wrong.to_str().unwrap(),
        ],
    );
    assert!(
        stderr_of(&bad).contains("tokens, but the checkpoint's text tower has"),
        "{}",
        stderr_of(&bad)
    );

    // Embedding one split again would drop the other split's rows.
    let partial = paperclip(
        data_dir,
        &[
            "embed",
            "--checkpoint",
            trained,
            "--dataset",
            "shapes",
            "--split",
            "val",
            "--vocabulary",
            vocabulary,
        ],
    );
    assert!(
        stderr_of(&partial).contains("would drop"),
        "{}",
        stderr_of(&partial)
    );

    // A copy of the weights picks that table; an empty query is rejected.
    let by_copy = paperclip(
        data_dir,
        &[
            "search",
            "a blue circle",
            "--dataset",
            "shapes",
            "--checkpoint",
            &copy,
            "-k",
            "1",
        ],
    );
    assert!(by_copy.status.success(), "{}", stderr_of(&by_copy));
    let empty = paperclip(
        data_dir,
        &["search", "  ", "--dataset", "shapes", "--checkpoint", &copy],
    );
    assert!(
        stderr_of(&empty).contains("the query is empty"),
        "{}",
        stderr_of(&empty)
    );
}

/// `embed` writes the table and `search` ranks images by a caption-like query: most of
/// the hits show the queried colour or shape.
fn search_finds_what_the_query_names(data_dir: &Path, checkpoint: &str, vocabulary: &str) {
    let embed = paperclip(
        data_dir,
        &[
            "--json",
            "embed",
            "--checkpoint",
            checkpoint,
            "--dataset",
            "shapes",
            "--vocabulary",
            vocabulary,
        ],
    );
    assert!(
        embed.status.success(),
        "{}",
        String::from_utf8_lossy(&embed.stderr)
    );
    let table: serde_json::Value = serde_json::from_slice(&embed.stdout).unwrap();
    assert_eq!(table["splits"], serde_json::json!(["train", "val"]));

    let gallery = data_dir.join("gallery.html");
    let search = paperclip(
        data_dir,
        &[
            "--json",
            "search",
            "a red square in the top left",
            "--dataset",
            "shapes@1",
            "-k",
            "8",
            "--split",
            "val",
            "--html",
            gallery.to_str().unwrap(),
        ],
    );
    assert!(
        search.status.success(),
        "{}",
        String::from_utf8_lossy(&search.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&search.stdout).unwrap();
    assert_eq!(result["searched"], 128);
    let hits = result["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 8);
    let matching = hits
        .iter()
        .filter(|hit| {
            let caption = hit["caption"].as_str().unwrap();
            caption.contains("red") || caption.contains("square")
        })
        .count();
    eprintln!("{matching} of 8 hits are red or square: {hits:?}");
    assert!(matching >= 6, "{matching} of 8 hits are red or square");
    let similarities: Vec<f64> = hits
        .iter()
        .map(|h| h["similarity"].as_f64().unwrap())
        .collect();
    assert!(
        similarities.windows(2).all(|w| w[0] >= w[1]),
        "{similarities:?}"
    );
    let html = std::fs::read_to_string(&gallery).unwrap();
    assert_eq!(html.matches("data:image/png;base64,").count(), 8);

    // A second table makes the checkpoint choice explicit.
    let base = data_dir.join("random-start").display().to_string();
    let second = paperclip(
        data_dir,
        &[
            "embed",
            "--checkpoint",
            &base,
            "--dataset",
            "shapes",
            "--vocabulary",
            vocabulary,
        ],
    );
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    // Both tables are one SQL table, distinguished by the weights hash.
    let sql = paperclip(
        data_dir,
        &[
            "--json",
            "sql",
            "SELECT count(*) AS n, count(DISTINCT weights_sha256) AS models FROM shapes.v1.embeddings",
        ],
    );
    assert!(
        sql.status.success(),
        "{}",
        String::from_utf8_lossy(&sql.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&sql.stdout).unwrap();
    assert_eq!(
        rows,
        serde_json::json!([{"n": 2 * (1024 + 128), "models": 2}])
    );

    let ambiguous = paperclip(data_dir, &["search", "a red square", "--dataset", "shapes"]);
    let stderr = String::from_utf8_lossy(&ambiguous.stderr);
    assert!(stderr.contains("pick one with --checkpoint"), "{stderr}");
}
