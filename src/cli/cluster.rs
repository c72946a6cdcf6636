//! `paperclip cluster scheduler|executor`: the processes of a Ballista cluster.

use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use paperclip::cluster::processes::{
    ExecutorOptions, SchedulerOptions, run_executor, run_scheduler,
};

use super::commands::write_stdout;
use super::serve::Signals;
use super::{ClusterCommand, ExecutorArgs, SchedulerArgs};

pub async fn cluster(command: &ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Scheduler(args) => scheduler(args).await,
        ClusterCommand::Executor(args) => executor(args).await,
    }
}

async fn scheduler(args: &SchedulerArgs) -> Result<()> {
    reject_ipv6(args.listen.ip(), "--listen")?;
    warn_if_reachable(args.listen.ip(), "scheduler");
    let options = SchedulerOptions {
        listen: args.listen,
    };
    let announce = || announce(&format!("Ballista scheduler listening on {}", args.listen));
    // The scheduler itself does not stop on signals; the executor does.
    let signals = Signals::install();
    tokio::select! {
        result = run_scheduler(&options, announce) => result.context("the Ballista scheduler failed"),
        () = signals.wait() => Ok(()),
    }
}

async fn executor(args: &ExecutorArgs) -> Result<()> {
    reject_ipv6(args.listen.ip(), "--listen")?;
    if args.grpc_port == args.listen.port() {
        bail!(
            "--grpc-port {} is also the port of --listen {}; the executor needs two ports, \
             e.g. --grpc-port {}",
            args.grpc_port,
            args.listen,
            args.listen.port().wrapping_add(1)
        );
    }
    warn_if_reachable(args.listen.ip(), "executor");

    let (scheduler_host, scheduler_port) = scheduler_address(&args.scheduler)?;
    // Shuffle files of a folder the executor made itself go when it stops.
    let temporary = match &args.work_dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("cannot create the executor's work folder")?),
    };
    let work_dir = args
        .work_dir
        .clone()
        .or_else(|| temporary.as_ref().map(|dir| dir.path().to_path_buf()));

    let concurrent_tasks = match args.concurrent_tasks {
        Some(tasks) => tasks as usize,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let options = ExecutorOptions {
        scheduler_host,
        scheduler_port,
        listen: args.listen,
        grpc_port: args.grpc_port,
        work_dir,
        concurrent_tasks,
    };

    let announce = || {
        announce(&format!(
            "Ballista executor listening on {} (tasks on port {}), serving the scheduler at {}",
            args.listen, args.grpc_port, args.scheduler
        ))
    };

    let result = run_executor(&options, announce)
        .await
        .context("the Ballista executor failed");
    drop(temporary);
    result
}

/// Ballista 55's executor cannot connect over IPv6, so a cluster on IPv6 never runs a task.
fn reject_ipv6(ip: IpAddr, option: &str) -> Result<()> {
    if ip.is_ipv6() {
        bail!(
            "{option} {ip} is an IPv6 address, which Ballista executors cannot use yet; \
             give an IPv4 address such as 127.0.0.1"
        );
    }
    Ok(())
}

fn announce(line: &str) {
    if let Err(error) = write_stdout(line) {
        tracing::warn!(%error, "cannot print that the process listens");
    }
}

/// Prints a warning when other machines can connect, because Ballista has no authentication.
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

/// Splits `HOST:PORT`. IPv6 hosts, schemes and user names are rejected.
fn scheduler_address(text: &str) -> Result<(String, u16)> {
    if text.contains("://") || text.contains('@') {
        bail!(
            "--scheduler takes HOST:PORT without a scheme or user name, e.g. 127.0.0.1:50050 \
             (not the ballista:// address that `run --engine` takes)"
        );
    }
    if text.starts_with('[') {
        bail!(
            "--scheduler {text:?} is an IPv6 address, which Ballista executors cannot use yet; \
             give an IPv4 address such as 127.0.0.1:50050"
        );
    }
    let parsed = text.rsplit_once(':').and_then(|(host, port)| {
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
        for wrong in ["host", "host:0", ":50050", "host:port"] {
            let error = scheduler_address(wrong).unwrap_err().to_string();
            assert!(
                error.contains(wrong) && error.contains("HOST:PORT"),
                "{error}"
            );
        }
        for rejected in ["ballista://h:1", "http://h:1", "user:pw@h:1", "[::1]:7"] {
            let error = scheduler_address(rejected).unwrap_err().to_string();
            assert!(error.contains("127.0.0.1:50050"), "{error}");
            assert!(!error.contains("pw"), "{error}");
        }
    }
}
