//! `paperclip eval`, `embed` and `search`: report files, embedding tables and the search
//! results, with a progress bar on a terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

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
        labels_source: match &args.labels {
            Some(path) => path.display().to_string(),
            None => "the paper's labels".to_string(),
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

    let out_dir = match &args.out {
        Some(dir) => check_out_dir(dir)?,
        None => default_out_dir(global, &evaluation.report)?,
    };
    let files = output::write_all(&evaluation, &out_dir)?;

    #[derive(serde::Serialize)]
    struct Written<'a> {
        #[serde(flatten)]
        report: &'a paperclip::eval::EvalReport,
        files: &'a [PathBuf],
    }
    let written = Written {
        report: &evaluation.report,
        files: &files,
    };
    print_value(global, &written, || {
        let mut text = evaluation.report.to_markdown();
        text.push_str("\nwritten:\n");
        for file in &files {
            text.push_str(&format!("  {}\n", file.display()));
        }
        text
    })
}

/// Accepts a missing or empty folder; a folder with files would mix two reports.
fn check_out_dir(dir: &Path) -> Result<PathBuf> {
    if dir.is_file() {
        anyhow::bail!("--out {} is a file; give a folder", dir.display());
    }
    let has_files = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if has_files {
        anyhow::bail!(
            "--out {} already contains files; give a new or empty folder, so that two \
             reports do not mix",
            dir.display()
        );
    }
    Ok(dir.to_path_buf())
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
    if let Some((_, checkpoint)) = pairs.iter().find(|(label, _)| label.trim().is_empty()) {
        anyhow::bail!("the label of --checkpoint {checkpoint} is empty; give it a name");
    }

    // Equal labels (two folders named step-0000020) get their position, so that every
    // column and plot of the report has its own name.
    let names: Vec<String> = pairs.iter().map(|(label, _)| label.clone()).collect();
    for (i, (label, _)) in pairs.iter_mut().enumerate() {
        if names.iter().filter(|name| *name == label).count() > 1 {
            label.push_str(&format!(" ({})", i + 1));
        }
    }
    Ok(pairs)
}

/// Returns `<data dir>/evaluations/<dataset>-v<N>-<split>-<UTC time to the millisecond>`,
/// with a counter when that folder exists already.
fn default_out_dir(global: &GlobalArgs, report: &paperclip::eval::EvalReport) -> Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let base = format!(
        "{}-v{}-{}-{stamp}",
        report.dataset, report.version, report.split
    );
    unique_path(&global.data_dir.join("evaluations"), &base, "")
}

/// Returns `dir/<base><extension>`, or `dir/<base>-2<extension>` and so on when it exists.
pub(super) fn unique_path(dir: &Path, base: &str, extension: &str) -> Result<PathBuf> {
    for n in 1..1000 {
        let name = if n == 1 {
            format!("{base}{extension}")
        } else {
            format!("{base}-{n}{extension}")
        };
        let path = dir.join(name);
        if !path.exists() {
            return Ok(path);
        }
    }
    anyhow::bail!(
        "{} contains 999 reports named {base}; remove some",
        dir.display()
    )
}

pub(super) fn model_options(args: &ModelArgs) -> ModelOptions {
    ModelOptions {
        vocabulary: args.vocabulary.clone(),
        resize_px: args.resize_px.map(|px| px as usize),
        data_dir: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_labels_get_their_position() {
        let checkpoints = [
            "a/step-1".to_string(),
            "b/step-1".to_string(),
            "c/step-2".to_string(),
        ];
        let labels: Vec<String> = labelled(&checkpoints, &[])
            .unwrap()
            .into_iter()
            .map(|(label, _)| label)
            .collect();
        assert_eq!(labels, ["step-1 (1)", "step-1 (2)", "step-2"]);
    }

    #[test]
    fn empty_label_is_rejected() {
        let error = labelled(&["a".to_string()], &[" ".to_string()]).unwrap_err();
        assert!(error.to_string().contains("is empty"), "{error}");
    }
}
