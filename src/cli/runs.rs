//! `paperclip runs list` and `paperclip runs show`: the run records under
//! `<data dir>/runs/`, newest first.

use anyhow::Result;
use paperclip::runs::{RunSummary, list_runs, read_run};

use super::GlobalArgs;
use super::commands::{print_value, write_stdout};

pub fn list(global: &GlobalArgs, dataset: Option<&str>, limit: usize) -> Result<()> {
    let mut runs = list_runs(&global.data_dir, dataset)?;
    if let Some(name) = dataset
        && runs.is_empty()
    {
        let known = paperclip::dataset::versions::list_datasets(&global.data_dir)?;
        let with_runs: Vec<String> = list_runs(&global.data_dir, None)?
            .into_iter()
            .map(|run| run.dataset)
            .collect();
        if !known.iter().chain(&with_runs).any(|known| known == name) {
            let mut names: Vec<String> = known.into_iter().chain(with_runs).collect();
            names.sort();
            names.dedup();
            anyhow::bail!(
                "no dataset {name:?} in {}; datasets: {}",
                global.data_dir.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            );
        }
    }
    runs.truncate(limit);
    print_value(global, &runs, || {
        if runs.is_empty() {
            let scope = dataset.map_or(String::new(), |name| format!(" of dataset {name:?}"));
            return format!(
                "no runs{scope} in {}",
                global.data_dir.join("runs").display()
            );
        }
        let mut text = format!(
            "{:<28} {:<20} {:<14} {:<24} {:>9}  error\n",
            "run id", "dataset", "status", "started (UTC)", "elapsed"
        );
        for run in &runs {
            text.push_str(&row(run));
            text.push('\n');
        }
        text.trim_end().to_string()
    })
}

fn row(run: &RunSummary) -> String {
    let started = run.started_at.map_or("?".to_string(), |at| {
        at.format("%Y-%m-%d %H:%M:%S").to_string()
    });
    let elapsed = run
        .elapsed_secs
        .map_or("?".to_string(), |secs| format!("{secs:.1} s"));
    let error = run
        .error
        .as_deref()
        .and_then(|e| e.lines().next())
        .unwrap_or("");
    format!(
        "{:<28} {:<20} {:<14} {:<24} {:>9}  {error}",
        run.run_id,
        run.dataset,
        status_text(run),
        started,
        elapsed
    )
}

/// `published v4`, `unchanged v4`, `failed` or `ok`.
fn status_text(run: &RunSummary) -> String {
    match (run.status.as_str(), run.version) {
        ("published" | "unchanged", Some(version)) => format!("{} v{version}", run.status),
        _ => run.status.clone(),
    }
}

pub fn show(global: &GlobalArgs, run_id: &str) -> Result<()> {
    let record = read_run(&global.data_dir, run_id)?;
    if global.json {
        return write_stdout(&serde_json::to_string_pretty(&record)?);
    }
    let summary = RunSummary::from_record(&record);
    let mut text = String::new();
    if let Some(run) = &summary {
        text.push_str(&format!("run {}\n", run.run_id));
        text.push_str(&format!("  dataset  {}\n", run.dataset));
        text.push_str(&format!("  status   {}\n", status_text(run)));
        if let Some(at) = run.started_at {
            text.push_str(&format!(
                "  started  {} UTC\n",
                at.format("%Y-%m-%d %H:%M:%S%.3f")
            ));
        }
        if let Some(secs) = run.elapsed_secs {
            text.push_str(&format!("  elapsed  {secs:.1} s\n"));
        }
        if let Some(engine) = record.get("engine").and_then(|v| v.as_str()) {
            text.push_str(&format!("  engine   {engine}\n"));
        }
        if let Some(error) = &run.error {
            text.push_str(&format!("  error    {error}\n"));
        }
    }
    for (title, key) in [
        ("counts", "counts"),
        ("skipped, by stage/reason", "skipped_by_reason"),
    ] {
        let Some(map) = record.get(key).and_then(|v| v.as_object()) else {
            continue;
        };
        if map.is_empty() {
            continue;
        }
        text.push_str(&format!("{title}:\n"));
        for (name, value) in map {
            text.push_str(&format!("  {name:<40} {value}\n"));
        }
    }
    write_stdout(text.trim_end())
}
