//! `paperclip train`: runs the training stage with a progress bar and prints the outcome.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use paperclip::train::record::RunRecord;
use paperclip::train::trainer::{StepReport, TrainObserver, ValReport};
use paperclip::train::{TrainConfig, TrainOptions, train as run_training};

use super::commands::print_value;
use super::{GlobalArgs, TrainArgs};

/// Draws a bar with loss and samples per second; prints validations and warnings above it.
struct TrainBar {
    bar: Option<ProgressBar>,
    quiet: bool,
    /// Without a terminal, a line every this many steps replaces the bar.
    log_every: u64,
}

impl TrainBar {
    fn new(quiet: bool, log_every: u64) -> Self {
        Self {
            bar: None,
            quiet,
            log_every: log_every.max(1),
        }
    }

    fn println(&self, line: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(line),
            // A closed stderr (a finished `head`, a dead log pipe) must not stop training.
            None => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
    }
}

impl TrainObserver for TrainBar {
    fn started(&mut self, record: &RunRecord, first_step: u64) {
        self.println(&format!(
            "run {}: {}@v{} ({} train, {} val samples), {} parameters on {}{}",
            record.run_id,
            record.dataset,
            record.dataset_version,
            record.train_samples,
            record.val_samples,
            record.parameters,
            record.device,
            if first_step > 0 {
                format!(", resuming at step {first_step}")
            } else {
                String::new()
            }
        ));
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::new(record.steps_total);
        bar.set_style(
            ProgressStyle::with_template("train [{bar:30}] {pos}/{len} {msg} eta {eta}")
                .expect("template is valid")
                .progress_chars("=> "),
        );
        bar.set_position(first_step);
        self.bar = Some(bar);
    }

    fn step(&mut self, report: &StepReport) {
        let message = format!(
            "loss {:.4} lr {:.2e} {:.1} samples/s",
            report.loss, report.lr, report.samples_per_sec
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(report.step);
                bar.set_message(message);
            }
            None if report.step.is_multiple_of(self.log_every) => self.println(&format!(
                "step {}/{}: {message}",
                report.step, report.total_steps
            )),
            None => {}
        }
    }

    fn validated(&mut self, report: &ValReport) {
        let shown: Vec<String> = report
            .metrics
            .iter()
            .filter(|(name, _)| name.starts_with("top") || name == "loss")
            .map(|(name, value)| format!("{name} {value:.4}"))
            .collect();
        self.println(&format!(
            "step {}: validation {}",
            report.step,
            shown.join(", ")
        ));
    }

    fn checkpointed(&mut self, dir: &Path) {
        self.println(&format!("checkpoint {}", dir.display()));
    }

    fn warn(&mut self, message: &str) {
        self.println(&format!("warning: {message}"));
    }
}

/// Runs `paperclip train`.
pub async fn train(global: &GlobalArgs, args: &TrainArgs) -> Result<()> {
    let mut config = TrainConfig::load(&args.config)?;
    if let Some(dataset) = &args.dataset {
        config.data.dataset = dataset.clone();
    }
    if let Some(steps) = args.steps {
        config.training.steps = steps;
    }
    config
        .check()
        .map_err(|message| anyhow::anyhow!("invalid training settings: {message}"))?;

    let options = TrainOptions {
        data_dir: global.data_dir.clone(),
        config_path: args.config.clone(),
        config,
        resume: args.resume.clone(),
        stop_after: args.stop_after,
    };
    let mut bar = TrainBar::new(global.json, options.config.training.log_every);
    let outcome = run_training(&options, &mut bar)
        .await
        .with_context(|| format!("training with {} failed", args.config.display()))?;
    if let Some(bar) = &bar.bar {
        bar.finish_and_clear();
    }

    let record = &outcome.record;
    let mut value = serde_json::to_value(record)?;
    if let (Some(object), Some(validation)) = (value.as_object_mut(), &outcome.last_validation) {
        let metrics: serde_json::Map<String, serde_json::Value> = validation
            .metrics
            .iter()
            .map(|(name, v)| (name.clone(), serde_json::json!(v)))
            .collect();
        object.insert("last_validation_step".into(), validation.step.into());
        object.insert("last_validation".into(), metrics.into());
    }
    print_value(global, &value, || {
        format!(
            "run {} {} after {} of {} steps\nrecord: {}\nlast checkpoint: {}\nbest checkpoint: {}",
            record.run_id,
            record.status,
            record.steps_done,
            record.steps_total,
            outcome.run_dir.join("run.json").display(),
            record.last_checkpoint.as_deref().unwrap_or("none"),
            record
                .best_checkpoint
                .as_deref()
                .unwrap_or("none (no validation)"),
        )
    })
}
