//! Apache Ballista, the distributed engine the pipeline's SQL models can run on.
//!
//! A cluster is one scheduler and any number of executors, all started from this binary
//! (`paperclip cluster scheduler`, `paperclip cluster executor`) so that each has the
//! project's SQL functions and opens the same object stores. A run given
//! `--engine ballista://HOST:PORT` connects to the scheduler with [`client::connect`]; the
//! scheduler plans the stages and the executors run them.
//!
//! Every process builds its sessions from [`session_config`] and [`session_state`], so a
//! plan serialized on one side is read back the same on the others. Ballista has no
//! authentication: any client that reaches a scheduler or executor can run SQL that reads
//! what that process can read, so both bind to loopback by default.

pub mod client;
pub mod processes;

use std::sync::Arc;

use ballista_core::extension::{
    SessionConfigExt, ballista_aggregate_functions, ballista_scalar_functions,
    ballista_window_functions,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionConfig;

use crate::store::registry::EnvStoreRegistry;

/// Builds the session settings of the client, the scheduler and the executors.
///
/// Staged tables are Parquet. Their strings are read back as `Utf8`, not `Utf8View`, so
/// that the models see the types the local engine gives them. Ballista's adaptive planner
/// is off, because with it the sample models never finished: the scheduler kept adding
/// stages, over 12,000 in ten minutes on the built-in fixture archive. The static planner
/// runs them in seconds.
pub fn session_config() -> SessionConfig {
    SessionConfig::new_with_ballista()
        .with_information_schema(true)
        .with_ballista_adaptive_query_planner(false)
        .set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        )
}

/// The functions of every cluster process: the models' own, and the image stage's
/// function, which downloads and writes files and so exists only on cluster sessions.
pub fn functions() -> Vec<datafusion::logical_expr::ScalarUDF> {
    let mut functions = crate::sql::functions();
    functions.push(crate::pipeline::image_udf());
    functions
}

/// Builds a runtime whose object stores open from the environment ([`EnvStoreRegistry`]).
pub fn runtime_env(_config: &SessionConfig) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(EnvStoreRegistry::new()))
        .build_arc()
}

/// Builds the scheduler's session state, with Ballista's functions and the project's.
pub fn session_state(config: SessionConfig) -> datafusion::error::Result<SessionState> {
    let runtime = runtime_env(&config)?;
    let mut scalar_functions = ballista_scalar_functions();
    scalar_functions.extend(functions().into_iter().map(Arc::new));
    Ok(SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_scalar_functions(scalar_functions)
        .with_aggregate_functions(ballista_aggregate_functions())
        .with_window_functions(ballista_window_functions())
        .build())
}

/// Turns a Ballista error into the library's error, with what was being done.
fn ballista_error(
    doing: &str,
    error: ballista_core::error::BallistaError,
) -> crate::error::PipelineError {
    crate::error::PipelineError::Ballista {
        doing: doing.to_string(),
        source: Box::new(error),
    }
}
