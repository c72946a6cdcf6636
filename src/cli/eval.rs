//! `paperclip eval`, `embed` and `search`: report files, embedding tables and the search
//! results, with a progress bar on a terminal.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use paperclip::eval::labels::{PAPER_LABELS, load_labels, parse_labels};
use paperclip::eval::search::{EmbedOptions, SearchOptions, hit_thumbnails};
use paperclip::eval::{EvalOptions, ModelOptions, evaluate, output, report::one_line};

use super::commands::print_value;
use super::{EmbedArgs, EvalArgs, GlobalArgs, ModelArgs, SearchArgs};

pub async fn eval(global: &GlobalArgs, args: &EvalArgs) -> Result<()> {
    let options = EvalOptions {
        data_dir: global.data_dir.clone(),
        dataset: args.dataset.clone(),
        split: args.split.clone(),
        caption_field: args.caption_field.clone(),
        checkpoints: labelled(&args.checkpoints.checkpoint, &args.checkpoints.label)?,
        model: model_options(&args.model),
        batch_size: args.model.batch_size as usize,
        seed: args.seed,
        labels: match &args.labels {
            Some(path) => load_labels(path)?,
            None => parse_labels(PAPER_LABELS, "the paper's label list")?,
        },
        examples: args.examples as usize,
    };

    let bar = progress_bar();
    let evaluation = evaluate(&options, &|label, done, total| {
        show_progress(bar.as_ref(), label, done, total)
    })
    .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }

    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(global, &evaluation.report));
    let files = output::write_all(&evaluation, &out_dir)?;
    print_value(global, &evaluation.report, || {
        let mut text = evaluation.report.to_markdown();
        text.push_str("\nwritten:\n");
        for file in &files {
            text.push_str(&format!("  {}\n", file.display()));
        }
        text
    })
}

/// Pairs each checkpoint with its --label, or with a label made from its path.
pub(super) fn labelled(checkpoints: &[String], labels: &[String]) -> Result<Vec<(String, String)>> {
    if !labels.is_empty() && labels.len() != checkpoints.len() {
        anyhow::bail!(
            "{} --label for {} --checkpoint; give one label per checkpoint or none",
            labels.len(),
            checkpoints.len()
        );
    }
    let mut pairs: Vec<(String, String)> = checkpoints
        .iter()
        .enumerate()
        .map(|(i, checkpoint)| {
            let label = labels.get(i).cloned().unwrap_or_else(|| {
                let path = std::path::Path::new(checkpoint.trim_end_matches('/'));
                path.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_else(|| checkpoint.clone())
            });
            (label, checkpoint.clone())
        })
        .collect();
    let first_label = pairs.first().map(|p| p.0.clone());
    if pairs.len() == 2 && first_label.as_ref() == Some(&pairs[1].0) {
        pairs[0].0.push_str(" (1)");
        pairs[1].0.push_str(" (2)");
    }
    Ok(pairs)
}

fn default_out_dir(global: &GlobalArgs, report: &paperclip::eval::EvalReport) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    global.data_dir.join("evaluations").join(format!(
        "{}-v{}-{}-{stamp}",
        report.dataset, report.version, report.split
    ))
}

pub(super) fn model_options(args: &ModelArgs) -> ModelOptions {
    ModelOptions {
        vocabulary: args.vocabulary.clone(),
        resize_px: args.resize_px.map(|px| px as usize),
    }
}

/// Creates a bar on stderr when it is a terminal.
pub(super) fn progress_bar() -> Option<ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len}, eta {eta}")
                .expect("template is valid")
                .progress_chars("=> "),
        );
        bar
    })
}

pub(super) fn show_progress(bar: Option<&ProgressBar>, prefix: &str, done: usize, total: usize) {
    if let Some(bar) = bar {
        bar.set_prefix(prefix.to_string());
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }
}

pub async fn embed(global: &GlobalArgs, args: &EmbedArgs) -> Result<()> {
    let options = EmbedOptions {
        data_dir: global.data_dir.clone(),
        dataset: args.dataset.clone(),
        splits: args.split.clone(),
        caption_field: args.caption_field.clone(),
        checkpoint: args.checkpoint.clone(),
        model: model_options(&args.model),
        batch_size: args.model.batch_size as usize,
    };
    let bar = progress_bar();
    let (path, info) = paperclip::eval::search::embed(&options, &|split, done, total| {
        show_progress(bar.as_ref(), split, done, total)
    })
    .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    #[derive(serde::Serialize)]
    struct Embedded<'a> {
        table: &'a std::path::Path,
        #[serde(flatten)]
        info: &'a paperclip::eval::embeddings::EmbeddingsInfo,
    }
    print_value(
        global,
        &Embedded {
            table: &path,
            info: &info,
        },
        || {
            format!(
                "embedded {}@{} ({}) with {}: {}-wide vectors in {}",
                info.dataset,
                info.version,
                info.splits.join(", "),
                info.checkpoint,
                info.dim,
                path.display()
            )
        },
    )
}

pub async fn search(global: &GlobalArgs, args: &SearchArgs) -> Result<()> {
    let options = SearchOptions {
        data_dir: global.data_dir.clone(),
        dataset: args.dataset.clone(),
        query: args.query.clone(),
        k: args.k as usize,
        checkpoint: args.checkpoint.clone(),
        split: args.split.clone(),
    };
    let result = paperclip::eval::search::search(&options).await?;
    if let Some(path) = &args.html {
        let info = paperclip::eval::embeddings::read_info(&result.table)?;
        let thumbnails = hit_thumbnails(&global.data_dir, &result, &info.caption_field).await?;
        output::write_gallery(path, &result, &thumbnails)?;
    }
    print_value(global, &result, || {
        let mut text = format!(
            "{} nearest of {} images in {}@{} ({:.1} ms):\n",
            result.hits.len(),
            result.searched,
            result.dataset,
            result.version,
            result.search_ms
        );
        for hit in &result.hits {
            text.push_str(&format!(
                "{:>3}  {:.3}  {}  proposal {}  {}  {}\n",
                hit.rank,
                hit.similarity,
                hit.key,
                hit.proposal_id,
                hit.target_name.as_deref().unwrap_or("-"),
                one_line(&hit.caption, 80)
            ));
        }
        if let Some(path) = &args.html {
            text.push_str(&format!("gallery: {}\n", path.display()));
        }
        text
    })
}
