//! `paperclip serve`: scheduled pipelines in the foreground, one printed line per event,
//! until Ctrl-C or SIGTERM.
//!
//! The process runs a set of services that share one stop token; the scheduler is the
//! first. Another service (an SQL endpoint, say) is one more `services.spawn(...)` in
//! [`serve`]: it gets a child token, must return soon after it is cancelled, and may use
//! the embedded archive or data directory like the scheduler. When one service fails, the
//! others are stopped and its error is what the command reports.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use paperclip::schedule::{
    Event, EventKind, EventSink, RunOutcome, RunSettings, ScheduledPipeline, Scheduler, SystemClock,
};
use paperclip::snapshots;
use paperclip::sql::server::{Credentials, MemoryLimits, SqlServerOptions, TlsFiles, serve_sql};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::commands::write_stdout;
use super::{DEFAULT_SQL_PASSWORD_ENV, GlobalArgs, ServePipelinesArgs};

pub async fn serve(global: &GlobalArgs, args: &ServePipelinesArgs) -> Result<()> {
    let pipelines = args
        .pipelines
        .iter()
        .map(|path| ScheduledPipeline::load(path))
        .collect::<Result<Vec<_>, _>>()?;
    let printer = Arc::new(EventPrinter::new(global.json, &pipelines));
    let engine = args.engine.parse()?;
    let (archive_override, embedded) = archive(global, args.archive.as_deref()).await?;
    let settings = RunSettings {
        data_dir: global.data_dir.clone(),
        archive_override,
        engine,
    };
    let scheduler = if pipelines.is_empty() {
        None
    } else {
        Some(Scheduler::new(
            pipelines,
            settings,
            Arc::new(SystemClock),
            printer,
        )?)
    };

    let stop = CancellationToken::new();
    stop_on_signal(stop.clone());
    let mut services: JoinSet<Result<()>> = JoinSet::new();
    if let Some(scheduler) = scheduler {
        let scheduler_stop = stop.child_token();
        services.spawn(async move {
            scheduler
                .run(scheduler_stop)
                .await
                .context("the scheduler stopped")
        });
    }
    if let Some(listen) = args.sql_listen {
        let options = SqlServerOptions {
            listen,
            max_connections: args.sql_max_connections,
            credentials: sql_credentials(args, listen)?,
            tls: args
                .sql_tls_cert
                .clone()
                .zip(args.sql_tls_key.clone())
                .map(|(cert, key)| TlsFiles { cert, key }),
            memory: Some(sql_memory_limits(args)?),
            query_timeout: (args.sql_query_timeout_secs > 0)
                .then(|| std::time::Duration::from_secs(args.sql_query_timeout_secs)),
            storage_url: args.sql_storage.clone(),
        };
        let data_dir = global.data_dir.clone();
        let sql_stop = stop.child_token();
        let mut login = match &options.credentials {
            Some(credentials) => format!("user {}, password required", credentials.user()),
            None => "no password: any local user can connect".to_string(),
        };
        if options.tls.is_some() {
            login.push_str("; TLS");
        }
        services.spawn(async move {
            let announce = || {
                let line = format!("SQL server listening on {listen} (read-only; {login})");
                if let Err(error) = write_stdout(&line) {
                    tracing::warn!(%error, "cannot print that the SQL server listens");
                }
            };
            serve_sql(&data_dir, &options, sql_stop, announce)
                .await
                .context("the SQL server stopped")
        });
    }

    let result = join_services(services, &stop).await;
    if let Some(server) = embedded {
        server.stop().await;
    }
    result
}

/// Returns the per-query and total memory limits, checked against each other.
fn sql_memory_limits(args: &ServePipelinesArgs) -> Result<MemoryLimits> {
    let (per_query_mib, total_mib) = (args.sql_memory_limit_mib, args.sql_memory_total_mib);
    if total_mib < per_query_mib {
        bail!(
            "--sql-memory-total-mib {total_mib} is below --sql-memory-limit-mib \
             {per_query_mib}, so no query could use its own limit; raise the total or lower \
             the limit per query"
        );
    }
    Ok(MemoryLimits {
        per_query_mib: per_query_mib as usize,
        total_mib: total_mib as usize,
    })
}

/// Builds the SQL account from the password variable: none on loopback without one, and
/// an error for a server reachable from other machines without one.
fn sql_credentials(
    args: &ServePipelinesArgs,
    listen: std::net::SocketAddr,
) -> Result<Option<Arc<Credentials>>> {
    let variable = &args.sql_password_env;
    let password = match std::env::var(variable) {
        Ok(password) if password.is_empty() => bail!(
            "the environment variable {variable} is set but empty; put the SQL password in \
             it, or unset it to serve without a password on loopback"
        ),
        Ok(password) => Some(password),
        Err(std::env::VarError::NotUnicode(_)) => {
            bail!("the environment variable {variable} is not valid UTF-8; set it again")
        }
        Err(std::env::VarError::NotPresent) if variable != DEFAULT_SQL_PASSWORD_ENV => bail!(
            "--sql-password-env names {variable}, but {variable} is not set; export the SQL \
             password in it"
        ),
        Err(std::env::VarError::NotPresent) => None,
    };
    match password {
        Some(password) => Ok(Some(Arc::new(Credentials::new(&args.sql_user, &password)))),
        None if listen.ip().is_loopback() => Ok(None),
        None => bail!(
            "--sql-listen {listen} is reachable from other machines, so it needs a password: \
             put one in the environment variable {variable} (or name another variable with \
             --sql-password-env)"
        ),
    }
}

/// Waits for every service; the first failure stops the others and is returned.
async fn join_services(mut services: JoinSet<Result<()>>, stop: &CancellationToken) -> Result<()> {
    let mut first_error = None;
    while let Some(joined) = services.join_next().await {
        let outcome = joined
            .context("a service panicked")
            .and_then(std::convert::identity);
        if let Err(error) = outcome {
            stop.cancel();
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Cancels `stop` on Ctrl-C or SIGTERM. The handlers are installed before this returns,
/// so a signal sent as soon as the first event is printed is not missed.
fn stop_on_signal(stop: CancellationToken) {
    let signals = Signals::install();
    tokio::spawn(async move {
        tokio::select! {
            () = signals.wait() => {
                eprintln!("stopping");
                stop.cancel();
            }
            () = stop.cancelled() => {}
        }
    });
}

/// The stop signals: SIGINT and SIGTERM on Unix, Ctrl-C elsewhere.
pub(super) struct Signals {
    #[cfg(unix)]
    listeners: Vec<tokio::signal::unix::Signal>,
}

impl Signals {
    #[cfg(unix)]
    pub(super) fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let mut listeners = Vec::new();
        for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
            match signal(kind) {
                Ok(listener) => listeners.push(listener),
                Err(error) => tracing::warn!(%error, ?kind, "cannot listen for a stop signal"),
            }
        }
        Self { listeners }
    }

    #[cfg(unix)]
    pub(super) async fn wait(mut self) {
        if self.listeners.is_empty() {
            std::future::pending::<()>().await;
        }
        let received = self.listeners.iter_mut().map(|l| Box::pin(l.recv()));
        futures::future::select_all(received).await;
    }

    #[cfg(not(unix))]
    pub(super) fn install() -> Self {
        Self {}
    }

    #[cfg(not(unix))]
    pub(super) async fn wait(self) {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C; stop the process another way");
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves `--archive`: a URL, `embedded` (started here and kept for the whole serve), or
/// nothing for each pipeline's own archive.
async fn archive(
    global: &GlobalArgs,
    archive: Option<&str>,
) -> Result<(Option<Url>, Option<snapshots::embedded::EmbeddedArchive>)> {
    match archive {
        None => Ok((None, None)),
        Some("embedded") => {
            let server = snapshots::embedded::start(&global.data_dir).await?;
            Ok((Some(server.url.clone()), Some(server)))
        }
        Some(text) => match Url::parse(text)
            .ok()
            .filter(|url| ["http", "https"].contains(&url.scheme()))
        {
            Some(url) => Ok((Some(url), None)),
            None => bail!(
                "--archive {text:?} is not an http(s) URL; use e.g. http://127.0.0.1:8765 or `embedded`"
            ),
        },
    }
}

/// Prints one line per event on stdout: text in each pipeline's time zone, or with
/// `--json` one JSON object per line.
struct EventPrinter {
    json: bool,
    zones: HashMap<String, Tz>,
}

impl EventPrinter {
    fn new(json: bool, pipelines: &[ScheduledPipeline]) -> Self {
        let zones = pipelines
            .iter()
            .map(|p| (p.config.dataset.name.clone(), p.schedule.time_zone()))
            .collect();
        Self { json, zones }
    }

    fn line(&self, event: &Event) -> String {
        if self.json {
            return serde_json::to_string(event).expect("events serialize");
        }
        let zone = self.zones.get(&event.dataset).copied().unwrap_or(Tz::UTC);
        let time = |at: &DateTime<Utc>| at.with_timezone(&zone).format("%Y-%m-%d %H:%M:%S %Z");
        let message = match &event.kind {
            EventKind::Waiting { due } => format!("next run due {}", time(due)),
            EventKind::Started {
                run_id,
                due,
                attempt,
                catch_up,
            } => match (attempt, catch_up) {
                (1, true) => format!("started catch-up run {run_id} for {} (missed)", time(due)),
                (1, false) => format!("started run {run_id}, due {}", time(due)),
                (n, _) => format!(
                    "started run {run_id}, retry {} of the run due {}",
                    n - 1,
                    time(due)
                ),
            },
            EventKind::Finished {
                run_id,
                outcome,
                elapsed_secs,
                ..
            } => {
                let outcome = match outcome {
                    RunOutcome::Published { version } => format!("published v{version}"),
                    RunOutcome::Unchanged { version } => format!("unchanged, still v{version}"),
                    RunOutcome::NoSamples => "no samples; nothing published".to_string(),
                };
                format!("{outcome} (run {run_id}, {elapsed_secs:.1} s)")
            }
            EventKind::Failed {
                run_id,
                attempt,
                error,
                retry_at,
            } => {
                let run = run_id.as_deref().unwrap_or("without a record");
                let next = match retry_at {
                    Some(at) => format!("retrying at {}", time(at)),
                    None => "no retry left; waiting for the next due time".to_string(),
                };
                format!("attempt {attempt} failed (run {run}): {error}; {next}")
            }
            EventKind::Skipped { due, busy_with } => format!(
                "skipped the run due {}: the run due {} is still going",
                time(due),
                time(busy_with)
            ),
            EventKind::Stopped {
                interrupted_attempt: Some(_),
            } => "stopped; the running run was cut short".to_string(),
            EventKind::Stopped { .. } => "stopped".to_string(),
        };
        // One line per event, even when an error message has line breaks.
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        format!("{}  {}  {message}", time(&event.at), event.dataset)
    }
}

impl EventSink for EventPrinter {
    fn event(&self, event: &Event) {
        if let Err(error) = write_stdout(&self.line(event)) {
            tracing::warn!(%error, "cannot print a scheduler event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paperclip::schedule::events::{Event, EventKind};

    #[test]
    fn event_line_joins_multi_line_errors() {
        let printer = EventPrinter {
            json: false,
            zones: HashMap::from([("d".to_string(), chrono_tz::UTC)]),
        };
        let event = Event {
            at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            dataset: "d".into(),
            pipeline: "p.toml".into(),
            kind: EventKind::Failed {
                run_id: Some("r1".into()),
                attempt: 1,
                error: "No field named x.\nValid fields are y, z.".into(),
                retry_at: None,
            },
        };
        let line = printer.line(&event);
        assert!(!line.contains('\n'), "{line:?}");
        assert!(
            line.contains("No field named x. Valid fields are y, z."),
            "{line}"
        );
    }
}
