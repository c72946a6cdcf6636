//! The client side of a Ballista run: a session whose queries go to a scheduler.

use std::time::Duration;

use ballista::prelude::SessionContextExt;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;

use crate::error::{PipelineError, Result};

/// How long to wait for the scheduler to accept a connection.
const CONNECT_TIMEOUT_SECS: u64 = 10;

/// Checks that something accepts connections at `host:port`, so that a wrong address is
/// reported before any work.
pub async fn check_reachable(host: &str, port: u16) -> Result<()> {
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let connecting = tokio::net::TcpStream::connect((bare_host, port));
    match tokio::time::timeout(Duration::from_secs(CONNECT_TIMEOUT_SECS), connecting).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(unreachable(host, port, error.to_string())),
        Err(_) => Err(unreachable(
            host,
            port,
            format!("no answer in {CONNECT_TIMEOUT_SECS} s"),
        )),
    }
}

fn unreachable(host: &str, port: u16, reason: String) -> PipelineError {
    PipelineError::Invalid(format!(
        "cannot reach the Ballista scheduler at ballista://{host}:{port}: {reason}; start one \
         with `paperclip cluster scheduler --listen {host}:{port}` or correct --engine"
    ))
}

/// Connects to the scheduler at `host:port` and returns a session with the project's
/// functions. The scheduler is reached once here, so that a wrong address is reported
/// before anything is staged.
pub async fn connect(host: &str, port: u16) -> Result<SessionContext> {
    check_reachable(host, port).await?;

    let config = super::session_config();
    let runtime = super::runtime_env(&config)?;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .build();
    let ctx = SessionContext::remote_with_state(&format!("df://{host}:{port}"), state)
        .await
        .map_err(|error| unreachable(host, port, error.to_string()))?;
    for function in super::functions() {
        ctx.register_udf(function);
    }
    tracing::info!(scheduler = %format!("ballista://{host}:{port}"), "connected to the Ballista scheduler");
    Ok(ctx)
}
