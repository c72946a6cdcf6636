//! The training stage end to end: a synthetic shapes dataset published as a dataset
//! version, a tiny CLIP trained on it from random weights, checkpoints, exact resumes and
//! the run record in SQL.

use std::path::{Path, PathBuf};

use crate::support::paperclip;
use paperclip::train::synthetic::{ShapesSpec, publish_shapes};
use paperclip::train::trainer::{Quiet, StepReport, TrainObserver, ValReport};
use paperclip::train::{TrainConfig, TrainOptions, train};

/// A tiny model: 32-pixel images in 8-pixel patches, two blocks per tower.
const TINY_MODEL: &str = r#"{
  "projection_dim": 32,
  "text_config": {"vocab_size": 517, "hidden_size": 64, "intermediate_size": 128,
                  "num_hidden_layers": 2, "num_attention_heads": 4,
                  "max_position_embeddings": 32, "eos_token_id": 2},
  "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "image_size": 32, "patch_size": 8}
}"#;

/// Writes the model config, a vocabulary of single characters plus three merges
/// and a training config; returns the config path.
pub(crate) fn write_config(dir: &Path, dataset: &str, steps: u64, extra: &str) -> PathBuf {
    std::fs::write(dir.join("tiny.json"), TINY_MODEL).unwrap();
    std::fs::write(
        dir.join("merges.txt"),
        "#version: a few merges\nt h\nth e</w>\ni n</w>\n",
    )
    .unwrap();
    let text = format!(
        r#"
[data]
dataset = "{dataset}"
loader_threads = 1

[model]
architecture = "tiny.json"
vocabulary = "merges.txt"
init_seed = 1

[loss]
temperature = "standard"

[optimizer]
lr = 2e-3
warmup_steps = 20
weight_decay = 1e-4

[training]
batch_size = 32
steps = {steps}
seed = 7
augment = "center_crop"
log_every = 10

[validation]
every = 100
batch_size = 32
{extra}
"#
    );
    let path = dir.join("train.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn options(data_dir: &Path, config_path: &Path) -> TrainOptions {
    TrainOptions {
        data_dir: data_dir.to_path_buf(),
        config_path: config_path.to_path_buf(),
        config: TrainConfig::load(config_path).expect("config loads"),
        resume: None,
        stop_after: None,
    }
}

#[derive(Default)]
struct Recorder {
    steps: Vec<StepReport>,
    validations: Vec<ValReport>,
}

impl TrainObserver for Recorder {
    fn step(&mut self, report: &StepReport) {
        self.steps.push(report.clone());
    }
    fn validated(&mut self, report: &ValReport) {
        self.validations.push(report.clone());
    }
}

fn metric(report: &ValReport, name: &str) -> f64 {
    report
        .metrics
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no metric {name} in {:?}", report.metrics))
}

pub(crate) async fn shapes(data_dir: &Path, train_samples: usize) {
    let spec = ShapesSpec {
        name: "shapes".into(),
        train_samples,
        val_samples: 128,
        image_px: 32,
        seed: 11,
    };
    publish_shapes(data_dir, &spec)
        .await
        .expect("shapes dataset publishes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_learns_shapes_to_five_times_chance() {
    let dir = tempfile::tempdir().unwrap();
    shapes(dir.path(), 2048).await;
    let config = write_config(dir.path(), "shapes", 400, "");

    let mut recorder = Recorder::default();
    let outcome = train(&options(dir.path(), &config), &mut recorder)
        .await
        .expect("training runs");

    assert_eq!(outcome.record.status, "finished");
    let first = recorder.validations.first().expect("validation at step 0");
    let last = recorder.validations.last().expect("validation at the end");
    assert_eq!((first.step, last.step), (0, 400));
    let chance = 1.0 / 32.0;
    let top1 = metric(last, "top1_text_to_image");
    let top1_back = metric(last, "top1_image_to_text");
    eprintln!(
        "top-1 text->image {top1:.3}, image->text {top1_back:.3} (chance {chance:.3}); \
         loss {:.3} -> {:.3}",
        first.loss, last.loss
    );
    assert!(top1 >= 5.0 * chance, "top-1 {top1} below 5x chance");
    assert!(last.loss < first.loss, "validation loss did not fall");
}

/// Final weights of a run, by parameter name.
fn final_weights(run_dir: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let record = paperclip::train::record::RunRecord::load(run_dir).unwrap();
    let last = PathBuf::from(record.last_checkpoint.expect("a checkpoint"));
    candle_core::safetensors::load(last.join("model.safetensors"), &candle_core::Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(name, t)| (name, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_ends_with_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    shapes(dir.path(), 96).await;
    let config = write_config(dir.path(), "shapes", 6, "[checkpoints]\nevery = 3\n");

    let straight = train(&options(dir.path(), &config), &mut Quiet)
        .await
        .unwrap();

    let mut first = options(dir.path(), &config);
    first.stop_after = Some(3);
    let stopped = train(&first, &mut Quiet).await.unwrap();
    assert_eq!(stopped.record.status, "stopped");
    assert_eq!(stopped.record.steps_done, 3);
    let checkpoint = PathBuf::from(stopped.record.last_checkpoint.clone().unwrap());

    let mut second = options(dir.path(), &config);
    second.resume = Some(checkpoint);
    let resumed = train(&second, &mut Quiet).await.unwrap();
    assert_eq!(resumed.record.run_id, stopped.record.run_id);
    assert_eq!(resumed.record.status, "finished");

    let a = final_weights(&straight.run_dir);
    let b = final_weights(&resumed.run_dir);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, values) in &a {
        assert_eq!(values, &b[name], "{name} differs after the resume");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_with_a_changed_learning_rate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    shapes(dir.path(), 64).await;
    let config = write_config(dir.path(), "shapes", 2, "");
    let mut first = options(dir.path(), &config);
    first.stop_after = Some(1);
    let stopped = train(&first, &mut Quiet).await.unwrap();

    let mut second = options(dir.path(), &config);
    second.config.optimizer.lr = 1.0;
    second.resume = Some(PathBuf::from(stopped.record.last_checkpoint.unwrap()));
    let error = train(&second, &mut Quiet).await.unwrap_err().to_string();
    assert!(error.contains("cannot resume from"), "{error}");
    assert!(error.contains("start a new run"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_record_and_metrics_are_sql_tables() {
    let dir = tempfile::tempdir().unwrap();
    shapes(dir.path(), 64).await;
    let config = write_config(dir.path(), "shapes", 2, "");
    let outcome = train(&options(dir.path(), &config), &mut Quiet)
        .await
        .unwrap();

    let ctx = datafusion::prelude::SessionContext::new();
    paperclip::dataset::catalog::register_datasets(&ctx, dir.path())
        .await
        .unwrap();
    let batches = ctx
        .sql(
            "SELECT r.run_id, r.dataset, r.dataset_version, r.status, count(m.metric) AS n \
             FROM paperclip.training_runs r JOIN paperclip.training_metrics m USING (run_id) \
             WHERE m.split = 'val' GROUP BY 1, 2, 3, 4",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(text.contains(&outcome.record.run_id), "{text}");
    assert!(text.contains("| shapes "), "{text}");
    assert!(text.contains("finished"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caption_field_missing_lists_text_fields() {
    let dir = tempfile::tempdir().unwrap();
    shapes(dir.path(), 64).await;
    let config = write_config(dir.path(), "shapes", 2, "");
    let mut opts = options(dir.path(), &config);
    opts.config.data.caption_field = "summary".into();
    let error = train(&opts, &mut Quiet).await.unwrap_err().to_string();
    assert!(error.contains("no text field \"summary\""), "{error}");
    assert!(error.contains("caption"), "{error}");
}

/// Publishes the embedded archive's dataset under `dir/data` with the CLI; returns the
/// data directory.
pub(crate) fn embedded_dataset(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let pipeline = crate::support::pipeline_path();
    let run = paperclip(
        &data,
        &["run", pipeline.to_str().unwrap(), "--archive", "embedded"],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    data
}

#[test]
fn cli_trains_on_embedded_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let data = embedded_dataset(dir.path());

    // The embedded archive's previews are 512 pixels; the tiny model takes 32.
    let config = write_config(
        dir.path(),
        "hst-paperclip",
        2,
        "[checkpoints]\nevery = 1\nkeep_best = 1\n",
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "augment = \"center_crop\"",
            "augment = \"paper\"\nresize_px = 64",
        )
        .replace("every = 100", "every = 1")
        // The embedded archive has one validation sample, too few to rank.
        .replace(
            "loader_threads = 1",
            "loader_threads = 1\nval_split = \"train\"",
        );
    std::fs::write(&config, text).unwrap();

    let output = paperclip(&data, &["--json", "train", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let record: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(record["status"], "finished");
    assert_eq!(record["dataset"], "hst-paperclip");
    assert_eq!(record["dataset_version"], 1);
    assert_eq!(record["steps_done"], 2);

    let last = PathBuf::from(record["last_checkpoint"].as_str().unwrap());
    for file in [
        "model.safetensors",
        "config.json",
        "optimizer.safetensors",
        "trainer_state.json",
    ] {
        assert!(
            last.join(file).is_file(),
            "{file} missing in {}",
            last.display()
        );
    }
    let hf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(last.join("config.json")).unwrap()).unwrap();
    assert_eq!(hf["model_type"], "clip");
    assert_eq!(hf["vision_config"]["image_size"], 32);

    let sql = paperclip(
        &data,
        &[
            "sql",
            "SELECT metric, count(*) AS n FROM paperclip.training_metrics WHERE split = 'val' AND metric = 'loss' GROUP BY metric",
        ],
    );
    let table = String::from_utf8_lossy(&sql.stdout);
    assert!(
        sql.status.success(),
        "{}",
        String::from_utf8_lossy(&sql.stderr)
    );
    // Validation at steps 0, 1 and 2.
    assert!(table.contains("| loss   | 3 "), "{table}");
}

#[test]
fn config_unknown_key_lists_valid_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[data]\ndataset = \"x\"\n[optimizer]\nlearning_rate = 1e-4\n",
    )
    .unwrap();
    let error = TrainConfig::load(&path).unwrap_err().to_string();
    assert!(error.contains("learning_rate"), "{error}");
    assert!(error.contains("`lr`"), "{error}");
    assert!(error.contains("bad.toml"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverging_run_stops_naming_step_and_samples() {
    let dir = tempfile::tempdir().unwrap();
    shapes(dir.path(), 64).await;
    let config = write_config(dir.path(), "shapes", 5, "");
    let mut opts = options(dir.path(), &config);
    // Weights of about 1e30 after the first step overflow f32 in the next forward pass.
    opts.config.optimizer.lr = 1e30;
    opts.config.optimizer.warmup_steps = 0;
    opts.config.validation.every = 0;

    let error = train(&opts, &mut Quiet).await.unwrap_err().to_string();
    assert!(error.contains("at step 2"), "{error}");
    assert!(error.contains("shapes_train_"), "{error}");
    assert!(error.contains("optimizer.lr"), "{error}");

    let records = paperclip::train::record::read_run_records(dir.path());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, "failed");
    assert!(
        records[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("at step 2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_best_zero_keeps_only_the_newest_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    shapes(dir.path(), 96).await;
    let config = write_config(
        dir.path(),
        "shapes",
        6,
        "[checkpoints]\nevery = 2\nkeep_best = 0\n",
    );
    let finished = train(&options(dir.path(), &config), &mut Quiet)
        .await
        .unwrap();

    assert_eq!(finished.record.best_checkpoint, None);
    let names: Vec<String> = std::fs::read_dir(finished.run_dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["step-0000006".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_without_steps_left_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    shapes(dir.path(), 64).await;
    let config = write_config(dir.path(), "shapes", 4, "");
    let mut first = options(dir.path(), &config);
    first.stop_after = Some(3);
    let stopped = train(&first, &mut Quiet).await.unwrap();

    let mut again = options(dir.path(), &config);
    again.resume = Some(PathBuf::from(stopped.record.last_checkpoint.unwrap()));
    again.stop_after = Some(2);
    let error = train(&again, &mut Quiet).await.unwrap_err().to_string();
    assert!(error.contains("the checkpoint is at step 3"), "{error}");
    assert!(error.contains("above 3"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_earlier_checkpoint_drops_later_history() {
    let dir = tempfile::tempdir().unwrap();
    shapes(dir.path(), 96).await;
    let config = write_config(
        dir.path(),
        "shapes",
        6,
        "[checkpoints]\nevery = 2\nkeep_best = 5\n",
    );
    let finished = train(&options(dir.path(), &config), &mut Quiet)
        .await
        .unwrap();
    let checkpoints = finished.run_dir.join("checkpoints");
    assert!(checkpoints.join("step-0000006").is_dir());

    let mut resumed = options(dir.path(), &config);
    resumed.resume = Some(checkpoints.join("step-0000002"));
    resumed.stop_after = Some(3);
    let outcome = train(&resumed, &mut Quiet).await.unwrap();

    let last = PathBuf::from(outcome.record.last_checkpoint.unwrap());
    assert!(last.ends_with("step-0000003"), "{}", last.display());
    assert!(last.is_dir());
    assert!(!checkpoints.join("step-0000004").exists());
    assert!(!checkpoints.join("step-0000006").exists());

    let metrics = std::fs::read_to_string(finished.run_dir.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(steps.iter().all(|&s| s <= 3), "{steps:?}");
    let train_rows_at_3 = metrics
        .lines()
        .filter(|l| {
            l.contains("\"step\":3")
                && l.contains("\"split\":\"train\"")
                && l.contains("\"metric\":\"loss\"")
        })
        .count();
    assert_eq!(train_rows_at_3, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_names_changed_setting_and_accepts_path_spelling() {
    let dir = tempfile::tempdir().unwrap();
    shapes(dir.path(), 64).await;
    let config = write_config(dir.path(), "shapes", 3, "");
    let mut first = options(dir.path(), &config);
    first.stop_after = Some(1);
    let stopped = train(&first, &mut Quiet).await.unwrap();
    let checkpoint = PathBuf::from(stopped.record.last_checkpoint.unwrap());

    let respelled = dir.path().join(".").join("train.toml");
    let mut changed = options(dir.path(), &respelled);
    changed.config.training.seed = 8;
    changed.resume = Some(checkpoint.clone());
    let error = train(&changed, &mut Quiet).await.unwrap_err().to_string();
    assert!(error.contains("training.seed differs"), "{error}");

    let mut same = options(dir.path(), &respelled);
    same.resume = Some(checkpoint);
    let outcome = train(&same, &mut Quiet).await.unwrap();
    assert_eq!(outcome.record.status, "finished");
}

#[test]
fn config_step_count_beyond_limit_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.toml");
    std::fs::write(
        &path,
        "[data]\ndataset = \"x\"\n[training]\nsteps = 18446744073709551615\n",
    )
    .unwrap();
    let error = TrainConfig::load(&path).unwrap_err().to_string();
    assert!(error.contains("training.steps"), "{error}");
}

#[test]
fn shipped_training_configs_load() {
    for name in ["paperclip-vit-b16.toml", "smoke-cpu.toml"] {
        let path = crate::support::repo_root().join("configs").join(name);
        let config = TrainConfig::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(config.data.dataset, "hst-paperclip", "{name}");
    }
    let paper =
        TrainConfig::load(&crate::support::repo_root().join("configs/paperclip-vit-b16.toml"))
            .unwrap();
    assert_eq!(paper.training.batch_size, 32);
    assert_eq!(paper.optimizer.lr, 1e-5);
    assert_eq!(paper.optimizer.warmup_steps, 2000);
    assert_eq!(paper.optimizer.weight_decay, 1e-3);
    assert_eq!(paper.training.steps, 20_000);
}

#[cfg(unix)]
#[test]
fn sigterm_ends_a_run_with_a_checkpoint_to_resume_from() {
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let data = embedded_dataset(dir.path());
    let config = write_config(dir.path(), "hst-paperclip", 100_000, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "augment = \"center_crop\"",
            "augment = \"paper\"\nresize_px = 64",
        )
        .replace("log_every = 10", "log_every = 1")
        .replace("batch_size = 32\nsteps", "batch_size = 4\nsteps");
    std::fs::write(&config, text).unwrap();

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_paperclip"))
        .arg("--data-dir")
        .arg(&data)
        .args(["train", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.starts_with("step 3/") {
            break;
        }
    }
    // SAFETY: kill(2) with a valid pid of our own child and SIGTERM has no memory effects.
    unsafe { libc_kill(child.id() as i32, 15) };
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    let stderr = [seen, rest].concat().join("\n");

    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("training stopped by a signal after step"),
        "{stderr}"
    );
    assert!(stderr.contains("resume with --resume"), "{stderr}");
    let records = paperclip::train::record::read_run_records(&data);
    assert_eq!(records[0].status, "interrupted");
    let last = PathBuf::from(records[0].last_checkpoint.clone().expect("a checkpoint"));
    assert!(last.join("model.safetensors").is_file());
}

#[cfg(unix)]
unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bf16_run_trains_and_checkpoints_f32_weights() {
    let dir = tempfile::tempdir().unwrap();
    shapes(dir.path(), 64).await;
    let config = write_config(dir.path(), "shapes", 3, "");
    let mut opts = options(dir.path(), &config);
    opts.config.training.precision = paperclip::train::config::Precision::Bf16;
    let mut recorder = Recorder::default();
    let outcome = train(&opts, &mut recorder).await.unwrap();

    assert_eq!(outcome.record.status, "finished");
    assert!(recorder.steps.iter().all(|s| s.loss.is_finite()));
    let weights = final_weights(&outcome.run_dir);
    assert!(weights.values().flatten().all(|v| v.is_finite()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_run_is_left_untouched_by_a_second_resume() {
    let dir = tempfile::tempdir().unwrap();
    shapes(dir.path(), 96).await;
    let config = write_config(
        dir.path(),
        "shapes",
        6,
        "[checkpoints]\nevery = 2\nkeep_best = 5\n",
    );
    let finished = train(&options(dir.path(), &config), &mut Quiet)
        .await
        .unwrap();
    let checkpoints = finished.run_dir.join("checkpoints");
    let metrics_before = std::fs::read_to_string(finished.run_dir.join("metrics.jsonl")).unwrap();

    // Another process holds the run.
    let lock = std::fs::File::create(finished.run_dir.join(".lock")).unwrap();
    lock.try_lock().unwrap();
    let mut resume = options(dir.path(), &config);
    resume.resume = Some(checkpoints.join("step-0000002"));
    let error = train(&resume, &mut Quiet).await.unwrap_err().to_string();
    assert!(
        error.contains("being trained by another process"),
        "{error}"
    );

    assert!(checkpoints.join("step-0000006").is_dir());
    let metrics_after = std::fs::read_to_string(finished.run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics_before, metrics_after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_model_file_is_caught_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    shapes(dir.path(), 64).await;
    let config = write_config(dir.path(), "shapes", 3, "");
    let mut first = options(dir.path(), &config);
    first.stop_after = Some(1);
    let stopped = train(&first, &mut Quiet).await.unwrap();

    let model_file = dir.path().join("tiny.json");
    let edited = std::fs::read_to_string(&model_file).unwrap().replace(
        "\"num_attention_heads\": 4, \"image_size\"",
        "\"num_attention_heads\": 2, \"image_size\"",
    );
    assert_ne!(edited, TINY_MODEL);
    std::fs::write(&model_file, edited).unwrap();

    let mut resume = options(dir.path(), &config);
    resume.resume = Some(PathBuf::from(stopped.record.last_checkpoint.unwrap()));
    let error = train(&resume, &mut Quiet).await.unwrap_err().to_string();
    assert!(error.contains("model geometry"), "{error}");
}
