//! `paperclip cluster scheduler|executor`: the processes of a Ballista cluster.

use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use paperclip::cluster::processes::{
    ExecutorOptions, SchedulerOptions, run_executor, run_scheduler,
};

use super::commands::write_stdout;
use super::{ClusterCommand, ExecutorArgs, SchedulerArgs};

pub async fn cluster(command: &ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Scheduler(args) => scheduler(args).await,
        ClusterCommand::Executor(args) => executor(args).await,
    }
}

async fn scheduler(args: &SchedulerArgs) -> Result<()> {
    warn_if_reachable(args.listen.ip(), "scheduler");
    let options = SchedulerOptions {
        listen: args.listen,
    };
    let announce = || announce(&format!("Ballista scheduler listening on {}", args.listen));
    run_scheduler(&options, announce)
        .await
        .context("the Ballista scheduler failed")
}

async fn executor(args: &ExecutorArgs) -> Result<()> {
    warn_if_reachable(args.listen.ip(), "executor");
    let (scheduler_host, scheduler_port) = scheduler_address(&args.scheduler)?;
    let concurrent_tasks = match args.concurrent_tasks {
        Some(tasks) => tasks as usize,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let options = ExecutorOptions {
        scheduler_host,
        scheduler_port,
        listen: args.listen,
        grpc_port: args.grpc_port,
        work_dir: args.work_dir.clone(),
        concurrent_tasks,
    };
    let announce = || {
        announce(&format!(
            "Ballista executor listening on {} (tasks on port {}), serving the scheduler at {}",
            args.listen, args.grpc_port, args.scheduler
        ))
    };
    run_executor(&options, announce)
        .await
        .context("the Ballista executor failed")
}

fn announce(line: &str) {
    if let Err(error) = write_stdout(line) {
        tracing::warn!(%error, "cannot print that the process listens");
    }
}

/// Ballista has no authentication; say so when other machines can connect.
fn warn_if_reachable(ip: IpAddr, process: &str) {
    if let Some(warning) = reachable_warning(ip, process) {
        eprintln!("{warning}");
    }
}

fn reachable_warning(ip: IpAddr, process: &str) -> Option<String> {
    (!ip.is_loopback()).then(|| {
        format!(
            "warning: the Ballista {process} listens on {ip}, which other machines can reach; \
             Ballista has no authentication, so anyone who connects can run SQL that reads \
             what this process can read. Keep it on a private network."
        )
    })
}

/// Splits `HOST:PORT` (`[::1]:50050` for IPv6).
fn scheduler_address(text: &str) -> Result<(String, u16)> {
    let parsed = text.rsplit_once(':').and_then(|(host, port)| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse::<u16>().ok().filter(|port| *port > 0)?;
        (!host.is_empty()).then(|| (host.to_string(), port))
    });
    match parsed {
        Some(address) => Ok(address),
        None => bail!(
            "--scheduler {text:?} is not HOST:PORT; give the address the scheduler was started \
             with, e.g. 127.0.0.1:50050"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_beyond_loopback_are_warned_about() {
        for quiet in ["127.0.0.1", "::1"] {
            assert_eq!(reachable_warning(quiet.parse().unwrap(), "scheduler"), None);
        }
        for wide in ["0.0.0.0", "10.1.2.3", "::"] {
            let warning = reachable_warning(wide.parse().unwrap(), "executor").unwrap();
            assert!(
                warning.contains(wide) && warning.contains("no authentication"),
                "{warning}"
            );
        }
    }

    #[test]
    fn scheduler_addresses_split_into_host_and_port() {
        assert_eq!(
            scheduler_address("10.0.0.2:50050").unwrap(),
            ("10.0.0.2".to_string(), 50050)
        );
        assert_eq!(
            scheduler_address("[::1]:7").unwrap(),
            ("::1".to_string(), 7)
        );
        for wrong in ["host", "host:0", ":50050", "host:port"] {
            let error = scheduler_address(wrong).unwrap_err().to_string();
            assert!(
                error.contains(wrong) && error.contains("HOST:PORT"),
                "{error}"
            );
        }
    }
}
