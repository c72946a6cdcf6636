//! `paperclip judge`: the LLM-judged retrieval test, written as JSON and Markdown and
//! printed, with a progress bar on a terminal.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use paperclip::eval::judge::{JudgeOptions, JudgeReport, PAPER_QUERIES, judge, load_queries};

use super::commands::print_value;
use super::eval::{labelled, model_options, progress_bar, show_progress, unique_path};
use super::{GlobalArgs, JudgeArgs};

pub async fn run(global: &GlobalArgs, args: &JudgeArgs) -> Result<()> {
    if let Some(out) = &args.out {
        check_out(out)?;
    }
    let options = JudgeOptions {
        data_dir: global.data_dir.clone(),
        dataset: args.dataset.clone(),
        split: args.split.clone(),
        abstract_field: args.abstract_field.clone(),
        checkpoints: labelled(&args.checkpoints.checkpoint, &args.checkpoints.label)?,
        model: model_options(&args.model),
        batch_size: args.model.batch_size as usize,
        queries: match &args.queries {
            Some(path) => load_queries(path)?,
            None => PAPER_QUERIES.iter().map(|q| q.to_string()).collect(),
        },
        k: args.k as usize,
        tfidf: !args.no_tfidf,
        seed: args.seed,
        concurrency: usize::try_from(args.llm.concurrency).unwrap_or(1),
    };
    let backend = super::llm::backend(&args.llm)?;

    let bar = progress_bar();
    let report = judge(&options, backend.as_ref(), &|phase, done, total| {
        show_progress(bar.as_ref(), phase, done, total)
    })
    .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }

    let json_path = args
        .out
        .clone()
        .map_or_else(|| default_out(global, &report), Ok)?;
    let markdown_path = json_path.with_extension("md");
    let written = write_reports(&report, &json_path, &markdown_path);
    // The judgements took long to make: print them even when the files cannot be written.
    print_value(global, &report, || {
        let mut text = report.to_markdown();
        if written.is_ok() {
            text.push_str(&format!(
                "\nwritten:\n  {}\n  {}",
                json_path.display(),
                markdown_path.display()
            ));
        }
        text
    })?;
    written?;

    let unjudged = report.unjudged();
    if unjudged > 0 {
        bail!(
            "{unjudged} of {} (query, image) pairs are unjudged, so the scores count only the \
             judged ones; the reasons are in {}. Check the judge backend and run again",
            report.pairs(),
            markdown_path.display()
        );
    }
    Ok(())
}

/// Rejects an --out that is a Markdown file, a folder, or a report that exists already,
/// before any judging starts.
fn check_out(out: &Path) -> Result<()> {
    if out.extension().is_some_and(|ext| ext == "md") {
        bail!(
            "--out {} would be overwritten by the Markdown report; give a .json file, and the \
             Markdown goes next to it",
            out.display()
        );
    }
    if out.is_dir() {
        bail!(
            "--out {} is a folder; give a .json file name",
            out.display()
        );
    }
    for path in [out.to_path_buf(), out.with_extension("md")] {
        if path.exists() {
            bail!(
                "{} exists already; give an --out whose .json and .md files are both new, so \
                 that no report is overwritten",
                path.display()
            );
        }
    }
    Ok(())
}

fn default_out(global: &GlobalArgs, report: &JudgeReport) -> Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let base = format!("judge-{}-v{}-{stamp}", report.dataset, report.version);
    unique_path(&global.data_dir.join("evaluations"), &base, ".json")
}

fn write_reports(report: &JudgeReport, json_path: &Path, markdown_path: &Path) -> Result<()> {
    if let Some(dir) = json_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the report folder {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(json_path, json + "\n")
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    std::fs::write(markdown_path, report.to_markdown())
        .with_context(|| format!("cannot write {}", markdown_path.display()))?;
    Ok(())
}
