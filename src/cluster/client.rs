//! The client side of a Ballista run: a session whose queries go to a scheduler.

use std::time::Duration;

use ballista::prelude::SessionContextExt;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;

use crate::error::{PipelineError, Result};

/// How long to wait for the scheduler to accept a connection.
const CONNECT_TIMEOUT_SECS: u64 = 10;

/// Connects to the scheduler at `host:port` and returns a session with the project's
/// functions. The scheduler is reached once here, so that a wrong address is reported
/// before anything is staged.
pub async fn connect(host: &str, port: u16) -> Result<SessionContext> {
    let address = format!("ballista://{host}:{port}");
    let unreachable = |why: String| {
        PipelineError::Invalid(format!(
            "cannot reach the Ballista scheduler at {address}: {why}; start one with \
             `paperclip cluster scheduler --listen {host}:{port}` or correct --engine"
        ))
    };
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let connecting = tokio::net::TcpStream::connect((bare_host, port));
    match tokio::time::timeout(Duration::from_secs(CONNECT_TIMEOUT_SECS), connecting).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Err(unreachable(error.to_string())),
        Err(_) => {
            return Err(unreachable(format!(
                "no answer in {CONNECT_TIMEOUT_SECS} s"
            )));
        }
    }

    let config = super::session_config();
    let runtime = super::runtime_env(&config)?;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .build();
    let ctx = SessionContext::remote_with_state(&format!("df://{host}:{port}"), state)
        .await
        .map_err(|error| unreachable(error.to_string()))?;
    for function in super::functions() {
        ctx.register_udf(function);
    }
    tracing::info!(scheduler = %address, "connected to the Ballista scheduler");
    Ok(ctx)
}
