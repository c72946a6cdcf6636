//! The scheduler and executor processes of a Ballista cluster, with the project's SQL
//! functions and object stores.
//!
//! Both run until Ctrl-C or SIGTERM. Each checks its listening address before it starts,
//! so that a port in use is an error naming it instead of a log line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{SchedulerConfig, TaskDistributionPolicy};
use ballista_scheduler::scheduler_process::start_server;

use super::ballista_error;
use crate::error::{PipelineError, Result};

/// The address a scheduler listens on.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub listen: SocketAddr,
}

/// Runs a scheduler until the process is stopped. `on_ready` is called once the address
/// is known to be free.
pub async fn run_scheduler(options: &SchedulerOptions, on_ready: impl FnOnce()) -> Result<()> {
    check_free(options.listen, "--listen")?;
    let config = SchedulerConfig {
        bind_host: options.listen.ip().to_string(),
        bind_port: options.listen.port(),
        external_host: options.listen.ip().to_string(),
        // One task per executor in turn, instead of filling the first executor's slots:
        // the models' stages have few tasks, which would otherwise all go to one machine.
        task_distribution: TaskDistributionPolicy::RoundRobin,
        ..SchedulerConfig::default()
    }
    .with_override_config_producer(Arc::new(super::session_config))
    .with_override_session_builder(Arc::new(super::session_state));

    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| ballista_error("cannot set up the Ballista scheduler's state", e))?;
    tracing::info!(listen = %options.listen, "Ballista scheduler starting");
    on_ready();
    start_server(cluster, options.listen, Arc::new(config))
        .await
        .map_err(|e| ballista_error("the Ballista scheduler stopped", e))
}

/// An executor's addresses, its scheduler, and how many tasks it runs at once.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Host and port of the scheduler.
    pub scheduler_host: String,
    pub scheduler_port: u16,
    /// The Arrow Flight address other executors fetch shuffle data from.
    pub listen: SocketAddr,
    /// The port of the executor's gRPC service, on the same host as `listen`.
    pub grpc_port: u16,
    /// The folder of shuffle files; a temporary folder when `None`.
    pub work_dir: Option<PathBuf>,
    /// Tasks run at once.
    pub concurrent_tasks: usize,
}

/// Runs an executor until the process is stopped. `on_ready` is called once both ports
/// are known to be free.
pub async fn run_executor(options: &ExecutorOptions, on_ready: impl FnOnce()) -> Result<()> {
    check_free(options.listen, "--listen")?;
    check_free(
        SocketAddr::new(options.listen.ip(), options.grpc_port),
        "--grpc-port",
    )?;
    let mut functions = BallistaFunctionRegistry::default();
    for function in super::functions() {
        functions
            .scalar_functions
            .insert(function.name().to_string(), Arc::new(function));
    }
    let host = options.listen.ip().to_string();
    let config = ExecutorProcessConfig {
        bind_host: host.clone(),
        external_host: Some(host),
        port: options.listen.port(),
        grpc_port: options.grpc_port,
        scheduler_host: options.scheduler_host.clone(),
        scheduler_port: options.scheduler_port,
        // An executor started next to its scheduler waits for it instead of failing.
        scheduler_connect_timeout_seconds: 30,
        vcores: options.concurrent_tasks,
        work_dir: options
            .work_dir
            .as_ref()
            .map(|dir| dir.display().to_string()),
        override_function_registry: Some(Arc::new(functions)),
        override_config_producer: Some(Arc::new(super::session_config)),
        override_runtime_producer: Some(Arc::new(super::runtime_env)),
        ..ExecutorProcessConfig::default()
    };

    tracing::info!(listen = %options.listen, scheduler_host = %options.scheduler_host, scheduler_port = options.scheduler_port, "Ballista executor starting");
    on_ready();
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| ballista_error("the Ballista executor stopped", e))
}

/// Fails with the address and the option to change when `address` is taken.
fn check_free(address: SocketAddr, option: &str) -> Result<()> {
    std::net::TcpListener::bind(address).map(drop).map_err(|e| {
        PipelineError::Invalid(format!(
            "cannot listen on {address}: {e}; choose another {option}"
        ))
    })
}
