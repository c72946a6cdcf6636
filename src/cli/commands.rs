//! One function per subcommand: call the library, print the result.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use datafusion::arrow::record_batch::RecordBatch;
use paperclip::dataset::versions::{DatasetPaths, list_datasets, list_versions};
use paperclip::pipeline::{RunOptions, RunReport};
use paperclip::snapshots;
use paperclip::sql::engine::Engine;
use url::Url;

use super::progress::Bars;
use super::{ArchiveCommand, Cli, Command, DatasetsCommand, GlobalArgs, RunArgs, RunsCommand};

pub async fn dispatch(cli: Cli) -> Result<()> {
    let global = &cli.global;
    if global.data_dir.exists() && !global.data_dir.is_dir() {
        bail!(
            "--data-dir {} is a file, not a directory; pass a directory (it is created when missing)",
            global.data_dir.display()
        );
    }
    match cli.command {
        Command::Run(args) => {
            let saved_plan = match &args.plan {
                Some(path) => Some(read_plan(path)?),
                None => None,
            };
            run(global, &args.run, saved_plan, None).await
        }
        Command::Plan(args) => run(global, &args.run, None, Some(args.out.as_deref())).await,
        Command::Archive(ArchiveCommand::Serve(args)) => serve(&args).await,
        Command::Archive(ArchiveCommand::Snapshot(args)) => {
            let summary = snapshots::files::build(&snapshots::files::SnapshotSources {
                out: args.out.clone(),
                catalog: args.catalog.clone(),
                recorded: args.recorded.clone(),
                image_dirs: args.images.clone(),
            })?;
            print_value(global, &summary, || summary.to_string())
        }
        Command::Archive(ArchiveCommand::Fixtures(args)) => {
            let summary = snapshots::fixtures::build(&args.out)?;
            print_value(global, &summary, || summary.to_string())
        }
        Command::Archive(ArchiveCommand::Synth(args)) => {
            let spec = snapshots::synth::SynthSpec {
                proposals: args.proposals,
                previews_per_proposal: args.previews_per_proposal,
                seed: args.seed,
                min_side_px: args.min_side_px,
                max_side_px: args.max_side_px,
                colour_fraction: args.colour_fraction,
                fits_per_proposal: args.fits_per_proposal,
                jpeg_quality: args.jpeg_quality,
            };
            let summary = snapshots::synth::build(&args.out, &spec)?;
            print_value(global, &summary, || summary.to_string())
        }
        Command::Datasets(DatasetsCommand::List) => datasets_list(global).await,
        Command::Datasets(DatasetsCommand::Show { name }) => datasets_show(global, &name).await,
        Command::Datasets(DatasetsCommand::Verify { name }) => datasets_verify(global, &name).await,
        Command::Datasets(DatasetsCommand::Gc {
            name,
            dry_run,
            keep_last,
            keep_days,
        }) => super::gc::gc(global, &name, dry_run, keep_last, keep_days).await,
        Command::Datasets(DatasetsCommand::Diff { name, from, to }) => {
            datasets_diff(global, &name, &from, &to).await
        }
        Command::Sql(args) => {
            let storage = args.storage.as_deref();
            match &args.query {
                Some(query) => sql(global, storage, query).await,
                None => super::sql_shell::run(global, storage).await,
            }
        }
        Command::Serve(args) => super::serve::serve(global, &args).await,
        Command::Cluster(command) => super::cluster::cluster(&command).await,
        Command::Runs(RunsCommand::List { dataset, limit }) => {
            super::runs::list(global, dataset.as_deref(), limit as usize)
        }
        Command::Runs(RunsCommand::Show { run_id }) => super::runs::show(global, &run_id),
        Command::Summarize(args) => super::summarize::summarize(global, &args).await,
        Command::Train(args) => super::train::train(global, &args).await,
        Command::Eval(args) => super::eval::eval(global, &args).await,
        Command::Embed(args) => super::eval::embed(global, &args).await,
        Command::Search(args) => super::eval::search(global, &args).await,
        Command::Judge(args) => super::judge::run(global, &args).await,
    }
}

/// Builds the latency, bandwidth, random failures and cut downloads that `archive serve`
/// injects.
fn archive_faults(args: &super::ServeArgs) -> Result<paperclip_archive::server::ServeOptions> {
    if !(0.0..=1.0).contains(&args.error_rate) {
        bail!(
            "--error-rate {} is outside 0 to 1; give the share of requests to fail, such as 0.01",
            args.error_rate
        );
    }
    let bandwidth_bytes_per_sec = match args.bandwidth_mb_per_sec {
        Some(rate) if !(rate > 0.0 && rate.is_finite()) => {
            bail!("--bandwidth-mb-per-sec {rate} is not a positive number of megabytes per second")
        }
        Some(rate) => Some((rate * 1e6).round().max(1.0) as u64),
        None => None,
    };
    Ok(paperclip_archive::server::ServeOptions {
        latency_ms: args.latency_ms,
        bandwidth_bytes_per_sec,
        error_rate_ppm: (args.error_rate * 1e6).round() as u32,
        error_seed: args.error_seed,
        cut_downloads_after_bytes: args.cut_downloads_after_bytes,
        download_faults_first_n: args.cut_downloads_first,
        ..Default::default()
    })
}

/// Reads a plan written by `paperclip plan --out`.
fn read_plan(path: &std::path::Path) -> Result<paperclip::pipeline::Plan> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read the plan {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a plan written by `paperclip plan --out`; write it again with that command",
            path.display()
        )
    })
}

/// Runs a pipeline (exactly `saved_plan` when given), or with `plan` set reports what a
/// run would do and writes the plan to the file it names.
async fn run(
    global: &GlobalArgs,
    args: &RunArgs,
    saved_plan: Option<paperclip::pipeline::Plan>,
    plan: Option<Option<&std::path::Path>>,
) -> Result<()> {
    let engine = args.engine.parse()?;
    let plan_only = plan.is_some();
    let pipeline = args.pipeline.as_path();
    let archive = args.archive.as_deref();
    let config = paperclip::pipeline::config::load(pipeline)?;

    let mut embedded = None;
    let archive_override = match archive {
        None => None,
        Some("embedded") => {
            let server = snapshots::embedded::start(&global.data_dir).await?;
            let url = server.url.clone();
            embedded = Some(server);
            Some(url)
        }
        Some(text) => {
            let url = Url::parse(text)
                .ok()
                .filter(|u| ["http", "https"].contains(&u.scheme()));
            match url {
                Some(url) => Some(url),
                None => bail!(
                    "--archive {text:?} is not an http(s) URL; use e.g. http://127.0.0.1:8765 or `embedded`"
                ),
            }
        }
    };

    let options = RunOptions {
        data_dir: global.data_dir.clone(),
        archive_override,
        progress: Arc::new(Bars::new()),
        plan_only,
        now: None,
        started_at: None,
        full_refresh: args.full_refresh,
        run_id: None,
        saved_plan,
        engine,
    };
    let result = if options.engine == Engine::Local {
        paperclip::pipeline::run(&config, &options).await
    } else {
        run_on_cluster(&config, &options).await
    };
    if let Some(server) = embedded {
        server.stop().await;
    }
    let what = if plan_only { "plan" } else { "run" };
    let report = result.with_context(|| format!("{what} of {} failed", pipeline.display()))?;
    if let Some(saved) = &report.plan {
        if let Some(Some(out)) = plan {
            let mut json = serde_json::to_vec_pretty(saved).expect("a plan serializes");
            json.push(b'\n');
            std::fs::write(out, json)
                .with_context(|| format!("cannot write the plan to {}", out.display()))?;
        }
        let plan = saved;
        return print_value(global, &report, || {
            format!(
                "plan for {}: {}\n{}",
                report.dataset,
                plan.summary,
                format_report(&report)
            )
        });
    }
    print_value(global, &report, || format_report(&report))?;
    let unchanged = report.unchanged_version.is_some();
    if report.counts.get("samples").copied().unwrap_or(0) == 0 && !unchanged {
        if report.skips.is_empty() {
            bail!(
                "the run produced no samples, so nothing was published: no proposal reached the archive queries; check archive.catalog and selection.min_cycle/max_cycle"
            );
        }
        bail!(
            "the run produced no samples, so nothing was published; the skipped items above say why"
        );
    }
    Ok(())
}

/// Runs a pipeline whose stages go to a cluster. On SIGINT or SIGTERM the run stops and
/// deletes the inputs it staged, so the cluster's tasks that have not started fail
/// instead of running on for a run that is gone.
async fn run_on_cluster(
    config: &paperclip::pipeline::PipelineConfig,
    options: &RunOptions,
) -> paperclip::error::Result<paperclip::pipeline::RunReport> {
    let signals = super::serve::Signals::install();
    tokio::select! {
        result = paperclip::pipeline::run(config, options) => result,
        () = signals.wait() => {
            paperclip::sql::engine::remove_live_staging().await;
            Err(paperclip::error::PipelineError::Invalid(format!(
                "interrupted; the inputs staged for {} were deleted, so its tasks that had not \
                 started fail, and those running finish their partition into the caches. Run \
                 again to go on",
                options.engine
            )))
        }
    }
}

/// One line per stage: name, status and the reasons it ran or would run.
fn format_stages(report: &RunReport) -> String {
    let mut text = String::from("stages:\n");
    for stage in &report.stages {
        let reasons = if stage.reasons.is_empty() {
            String::new()
        } else {
            format!(": {}", stage.reasons.join("; "))
        };
        text.push_str(&format!(
            "  {:<10} {:<10}{reasons}\n",
            stage.stage, stage.status
        ));
    }
    text
}

fn format_report(report: &RunReport) -> String {
    let mut text = String::new();
    if report.plan.is_some() {
        text.push_str(&format_stages(report));
        for (name, value) in &report.counts {
            text.push_str(&format!("  {name:<32} {value}\n"));
        }
        return text.trim_end().to_string();
    }
    let outcome = match (report.published_version, report.unchanged_version) {
        (Some(version), _) => format!("published {} v{version}", report.dataset),
        (None, Some(version)) => format!(
            "{} v{version} is up to date; nothing published",
            report.dataset
        ),
        (None, None) => format!("{}: nothing published (no samples)", report.dataset),
    };
    text.push_str(&format!(
        "{outcome} (run {}, {:.1} s)\n",
        report.run_id, report.elapsed_secs
    ));
    if !report.uploaded_versions.is_empty() {
        let versions: Vec<String> = report
            .uploaded_versions
            .iter()
            .map(|v| format!("v{v}"))
            .collect();
        let url = report.storage_url.as_deref().unwrap_or("storage.url");
        text.push_str(&format!("uploaded {} to {url}\n", versions.join(", ")));
    }
    if let Some(engine) = &report.engine {
        text.push_str(&format!("SQL models ran on {engine}\n"));
    }
    text.push_str(&format_stages(report));
    for (name, value) in &report.counts {
        text.push_str(&format!("  {name:<32} {value}\n"));
    }
    if !report.skipped_by_reason.is_empty() {
        text.push_str("skipped, by stage/reason:\n");
        for (reason, count) in &report.skipped_by_reason {
            text.push_str(&format!("  {reason:<40} {count}\n"));
        }
    }
    let unchanged = report.unchanged_version.is_some();
    if report.counts.get("samples").copied().unwrap_or(0) == 0 && !unchanged {
        text.push_str(&format!(
            "first skipped items (all {} are in paperclip.runs):\n",
            report.skips.len()
        ));
        for skip in report.skips.iter().take(10) {
            text.push_str(&format!(
                "  {}/{} {}: {}\n",
                skip.stage, skip.reason, skip.item, skip.detail
            ));
        }
    }
    text.trim_end().to_string()
}

async fn serve(args: &super::ServeArgs) -> Result<()> {
    let (dir, host) = (&args.dir, &args.host);
    let ip: IpAddr = host
        .parse()
        .with_context(|| format!("--host {host:?} is not an IP address; use e.g. 127.0.0.1"))?;
    let snapshot = paperclip_archive::Snapshot::open(dir)
        .with_context(|| format!("cannot open snapshot {}", dir.display()))?;
    let mut server = paperclip_archive::server::bind(
        snapshot,
        SocketAddr::new(ip, args.port),
        archive_faults(args)?,
    )
    .await?;
    eprintln!(
        "serving {} on http://{}",
        dir.display(),
        server.local_addr()
    );
    if !ip.is_loopback() {
        eprintln!("warning: bound to {ip}, which other machines can reach");
    }
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    server.shutdown();
    server.join().await?;
    Ok(())
}

async fn datasets_list(global: &GlobalArgs) -> Result<()> {
    let mut rows = Vec::new();
    for name in list_datasets(&global.data_dir)? {
        let versions = list_versions(&DatasetPaths::new(&global.data_dir, &name)).await?;
        let latest = versions.last();
        rows.push(serde_json::json!({
            "dataset": name,
            "versions": versions.len(),
            "latest_version": latest.map(|v| v.version),
            "samples": latest.and_then(|v| v.counts.get("samples")),
            "created_at": latest.map(|v| v.created_at.clone()),
        }));
    }
    print_value(global, &rows, || {
        if rows.is_empty() {
            return format!("no datasets in {}", global.data_dir.display());
        }
        rows.iter()
            .map(|r| {
                format!(
                    "{}  latest v{}  {} samples  {} version(s)  {}",
                    r["dataset"].as_str().unwrap_or_default(),
                    r["latest_version"],
                    r["samples"],
                    r["versions"],
                    r["created_at"].as_str().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Checks that a dataset exists, naming the known ones when it does not.
pub(super) fn require_dataset(global: &GlobalArgs, name: &str) -> Result<DatasetPaths> {
    let known = list_datasets(&global.data_dir)?;
    if !known.iter().any(|k| k == name) {
        bail!(paperclip::error::PipelineError::DatasetNotFound {
            name: name.to_string(),
            data_dir: global.data_dir.clone(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        });
    }
    Ok(DatasetPaths::new(&global.data_dir, name))
}

async fn datasets_diff(global: &GlobalArgs, name: &str, from: &str, to: &str) -> Result<()> {
    use paperclip::dataset::diff::{diff_versions, resolve_version};

    let paths = require_dataset(global, name)?;
    let from = resolve_version(&paths, from).await?;
    let to = resolve_version(&paths, to).await?;
    let summary = diff_versions(&global.data_dir, name, from, to).await?;
    print_value(global, &summary, || {
        let totals: Vec<String> = summary
            .totals
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let mut text = format!("{name} v{from} -> v{to}: {}\n", totals.join(", "));
        for (title, counts) in [
            ("per split", &summary.by_split),
            ("per proposal", &summary.by_proposal),
        ] {
            if counts.is_empty() {
                continue;
            }
            text.push_str(&format!("{title}:\n"));
            for count in counts {
                text.push_str(&format!(
                    "  {:<12} {:<9} {}\n",
                    count.group, count.change, count.samples
                ));
            }
        }
        text.trim_end().to_string()
    })
}

async fn datasets_verify(global: &GlobalArgs, name: &str) -> Result<()> {
    let paths = require_dataset(global, name)?;
    let problems = paperclip::dataset::verify::verify_dataset(&paths).await?;
    let versions = list_versions(&paths).await?.len();
    print_value(global, &problems, || {
        if problems.is_empty() {
            format!("{name}: {versions} version(s) verified; every shard matches its manifest")
        } else {
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        }
    })?;
    if !problems.is_empty() {
        bail!("{name}: {} problem(s) found", problems.len());
    }
    Ok(())
}

async fn datasets_show(global: &GlobalArgs, name: &str) -> Result<()> {
    let paths = require_dataset(global, name)?;
    let versions = list_versions(&paths).await?;
    let expired = paperclip::dataset::retention::load_expired(&paths)?;
    print_value(global, &versions, || {
        let mut text = format!(
            "{name}: {} version(s) in {}\n",
            versions.len(),
            paths.root.display()
        );
        for v in &versions {
            text.push_str(&format!(
                "v{}  {}  run {}  fingerprint {}\n",
                v.version,
                v.created_at,
                v.run_id,
                &v.fingerprint[..16]
            ));
            for (count, value) in &v.counts {
                text.push_str(&format!("    {count:<28} {value}\n"));
            }
            for shard in &v.shards {
                let reused = shard
                    .reused_from
                    .map_or(String::new(), |from| format!("  (reused from v{from})"));
                text.push_str(&format!(
                    "    shard {:<18} {:>6} samples {:>12} bytes  sha256 {}{reused}\n",
                    shard.name, shard.samples, shard.size_bytes, shard.sha256
                ));
            }
        }
        text.push_str(&super::gc::format_expired(&expired));
        text.trim_end().to_string()
    })
}

async fn sql(global: &GlobalArgs, storage: Option<&str>, query: &str) -> Result<()> {
    let (ctx, datasets) = sql_session(global, storage).await?;
    run_query(global, &ctx, &datasets, query).await
}

/// Opens a session with the datasets of the data directory, or with those uploaded under
/// `storage`; returns it with the dataset names.
pub(super) async fn sql_session(
    global: &GlobalArgs,
    storage: Option<&str>,
) -> Result<(datafusion::prelude::SessionContext, Vec<String>)> {
    let ctx = paperclip::sql::new_session();
    let datasets = match storage {
        Some(url) => {
            paperclip::dataset::remote_catalog::register_remote_datasets(&ctx, url).await?
        }
        None => paperclip::dataset::catalog::register_datasets(&ctx, &global.data_dir).await?,
    };
    Ok((ctx, datasets))
}

/// Runs one query on a session with the datasets registered and prints its rows.
pub(super) async fn run_query(
    global: &GlobalArgs,
    ctx: &datafusion::prelude::SessionContext,
    datasets: &[String],
    query: &str,
) -> Result<()> {
    let with_hint = |error: anyhow::Error| {
        let text = format!("{error:#}");
        match paperclip::dataset::sql_hints::name_hint(query, &text, datasets) {
            Some(hint) => anyhow::anyhow!("query failed: {}; {hint}", error.root_cause()),
            None => error,
        }
    };
    let frame = paperclip::sql::read_only_query(ctx, query)
        .await
        .map_err(|e| with_hint(e.into()))?;
    let schema = frame.schema().as_arrow().clone();
    let batches = frame
        .collect()
        .await
        .context("SQL query failed")
        .map_err(with_hint)?;
    if global.json {
        return write_stdout(&batches_to_json(&batches)?);
    }
    if batches.iter().all(|b| b.num_rows() == 0) {
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        return write_stdout(&format!("0 rows (columns: {})", columns.join(", ")));
    }
    write_stdout(&datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
}

/// Set once a command has printed its result on stdout.
static STDOUT_WRITTEN: AtomicBool = AtomicBool::new(false);

/// Returns true when the command printed its result on stdout.
pub fn stdout_written() -> bool {
    STDOUT_WRITTEN.load(Ordering::Relaxed)
}

/// Writes a line to stdout, returning an error (a broken pipe included) instead of panicking.
pub(super) fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;

    STDOUT_WRITTEN.store(true, Ordering::Relaxed);
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    stdout.flush()?;
    Ok(())
}

fn batches_to_json(batches: &[RecordBatch]) -> Result<String> {
    let mut buffer = Vec::new();
    {
        let mut writer = datafusion::arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, datafusion::arrow::json::writer::JsonArray>(&mut buffer);
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        writer.write_batches(&refs)?;
        writer.finish()?;
    }
    if buffer.is_empty() {
        return Ok("[]".to_string());
    }
    Ok(String::from_utf8(buffer)?)
}

pub(super) fn print_value<T: serde::Serialize>(
    global: &GlobalArgs,
    value: &T,
    text: impl FnOnce() -> String,
) -> Result<()> {
    if global.json {
        write_stdout(&serde_json::to_string_pretty(value)?)
    } else {
        write_stdout(&text())
    }
}
