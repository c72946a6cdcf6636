//! The SQL server of `paperclip serve --sql-listen`: the same catalog as `paperclip sql`
//! (every dataset version, the run log, training runs) over the PostgreSQL wire protocol,
//! through datafusion-postgres, so psql, DBeaver, psycopg and Grafana connect unchanged.
//!
//! Invariants:
//! - Read-only: every statement that is not a query, `EXPLAIN` of a query, `SHOW`, `SET`,
//!   a transaction or cursor statement is rejected with SQLSTATE 25006
//!   (`read_only_sql_transaction`) before it is planned. `SET` changes only the session.
//! - The catalog is read again every [`CATALOG_REFRESH_SECS`], so versions published by a
//!   scheduled run appear without a restart. A query that started on the old catalog
//!   finishes on it.
//! - The listener binds the address given (the command line's default is 127.0.0.1) and
//!   logs a warning when the address is reachable from other machines.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::auth::AuthManager;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::auth::StartupHandler;
use datafusion_postgres::pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::{ConnectionManager, PgWireServerHandlers};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::types::format::FormatOptions;
use datafusion_postgres::{QueryHook, ServerOptions, serve_with_handlers};
use tokio_util::sync::CancellationToken;

use crate::error::{PipelineError, Result};

mod auth;
mod copy;
mod guard;
mod memory;
mod params;
mod session;
mod wire;

pub use auth::Credentials;
pub use memory::MemoryLimits;

/// Seconds between two readings of the catalog.
pub const CATALOG_REFRESH_SECS: u64 = 10;

/// The catalog database name clients see (`psql -d paperclip`); datasets are further
/// catalogs next to it, as in `paperclip sql`.
pub const DATABASE: &str = "datafusion";

/// Listening address and connection limit of the SQL server.
#[derive(Debug, Clone)]
pub struct SqlServerOptions {
    /// Address and port.
    pub listen: SocketAddr,
    /// Most connections at once; 0 for no limit.
    pub max_connections: usize,
    /// The account clients log in with (SCRAM-SHA-256); `None` accepts any client.
    pub credentials: Option<Arc<Credentials>>,
    /// Certificate and key files for TLS; plain connections when `None`.
    pub tls: Option<TlsFiles>,
    /// Memory one query, and all running queries together, may hold; no limits when
    /// `None`.
    pub memory: Option<MemoryLimits>,
    /// Maximum time a query may take, rows included; no limit when `None`.
    pub query_timeout: Option<Duration>,
    /// Serve the versions uploaded under this object store URL instead of the data
    /// directory's catalog.
    pub storage_url: Option<String>,
}

/// A PEM certificate chain and its PKCS#8 private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, server certificate first.
    pub cert: PathBuf,
    /// Private key in PKCS#8 form (`BEGIN PRIVATE KEY`).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Checks that both files read as datafusion-postgres will read them. It falls back
    /// to unencrypted connections when they do not, which must never happen silently.
    pub fn check(&self) -> Result<()> {
        let open = |path: &Path| {
            std::fs::File::open(path)
                .map(std::io::BufReader::new)
                .map_err(|e| PipelineError::io(path, e))
        };
        let certs = rustls_pemfile::certs(&mut open(&self.cert)?)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| tls_error(&self.cert, &e.to_string()))?;
        if certs.is_empty() {
            return Err(tls_error(
                &self.cert,
                "holds no PEM certificate (BEGIN CERTIFICATE)",
            ));
        }
        let keys = rustls_pemfile::pkcs8_private_keys(&mut open(&self.key)?)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| tls_error(&self.key, &e.to_string()))?;
        let Some(key) = keys.into_iter().next() else {
            return Err(tls_error(
                &self.key,
                "holds no PKCS#8 private key (BEGIN PRIVATE KEY); convert it with `openssl \
                 pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`",
            ));
        };

        // datafusion-postgres serves in plain text when this fails, so it must not fail
        // there: a key of another certificate is refused here.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| {
                builder
                    .with_no_client_auth()
                    .with_single_cert(certs, key.into())
            })
            .map_err(|e| {
                PipelineError::Invalid(format!(
                    "TLS files {} and {} cannot be used together ({e}); give the key that \
                     belongs to the certificate",
                    self.cert.display(),
                    self.key.display()
                ))
            })?;
        Ok(())
    }
}

fn tls_error(path: &Path, problem: &str) -> PipelineError {
    PipelineError::Invalid(format!("TLS file {} {problem}", path.display()))
}

/// The pgwire handlers: queries through datafusion-postgres's session service with the
/// hooks above, start-up through [`auth`], cancel requests through the connections that
/// start-up registered.
struct Handlers {
    session: Arc<guard::Guarded>,
    connections: Arc<ConnectionManager>,
    cancel: Arc<DefaultCancelHandler>,
    credentials: Option<Arc<Credentials>>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.session.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(auth::Startup::new(
            self.credentials.as_ref(),
            &self.connections,
        ))
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
}

/// Serves the data directory's catalog until `stop` is cancelled. `on_ready` runs once
/// the catalog is read and the address is free, just before the server listens.
pub async fn serve_sql(
    data_dir: &Path,
    options: &SqlServerOptions,
    stop: CancellationToken,
    on_ready: impl FnOnce(),
) -> Result<()> {
    if !options.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %options.listen,
            "the SQL server is reachable from other machines; bind it to 127.0.0.1 unless \
             that is intended"
        );
    }
    let server_pool = options
        .memory
        .map(|limits| memory::ServerPool::new(limits.total_mib));
    let catalog = CatalogSource::new(data_dir, options.storage_url.as_deref());
    let ctx = Arc::new(session(&catalog, server_pool.clone()).await?);
    if let Some(tls) = &options.tls {
        tls.check()?;
    }
    let path_text = |path: &PathBuf| path.display().to_string();
    let server_options = ServerOptions::new()
        .with_host(options.listen.ip().to_string())
        .with_port(options.listen.port())
        .with_max_connections(options.max_connections)
        .with_tls_cert_path(options.tls.as_ref().map(|tls| path_text(&tls.cert)))
        .with_tls_key_path(options.tls.as_ref().map(|tls| path_text(&tls.key)));
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(ReadOnly),
        Arc::new(session::ClientStatements),
        Arc::new(WireTypes),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    // Connections run on one runtime and the rows are computed on another: a long query
    // keeps the compute threads busy, and the connections must still notice deadlines,
    // cancel requests and new clients. Both are apart from the caller's runtime, which
    // handles signals and the scheduler.
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name(name)
            .enable_all()
            .build()
            .map(|runtime| OwnedRuntime(Some(runtime)))
            .map_err(|e| {
                PipelineError::Invalid(format!("cannot start the SQL server's threads: {e}"))
            })
    };
    let connection_runtime = runtime("paperclip-sql-io")?;
    let compute_runtime = runtime("paperclip-sql")?;
    let connections = Arc::new(ConnectionManager::new());
    let handlers = Arc::new(Handlers {
        session: Arc::new(guard::Guarded::new(
            ctx.clone(),
            hooks,
            server_pool
                .zip(options.memory)
                .map(|(server, limits)| guard::QueryMemory {
                    server,
                    per_query_mib: limits.per_query_mib,
                }),
            options.query_timeout,
            compute_runtime.handle().clone(),
        )),
        cancel: Arc::new(DefaultCancelHandler::new(connections.clone())),
        connections,
        credentials: options.credentials.clone(),
    });
    // The server binds inside datafusion-postgres, which only logs a failure; binding once
    // here first turns a taken port into an error that names it.
    drop(std::net::TcpListener::bind(options.listen).map_err(|e| {
        PipelineError::Invalid(format!(
            "the SQL server cannot listen on {}: {e}; choose another --sql-listen address",
            options.listen
        ))
    })?);
    tracing::info!(listen = %options.listen, "SQL server listening");
    on_ready();

    let listen = options.listen;
    let server = connection_runtime
        .spawn(async move { serve_with_handlers(handlers, &server_options).await });
    let refresh = refresh_catalog(ctx.clone(), catalog, stop.clone());
    let outcome = tokio::select! {
        served = server => match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PipelineError::Invalid(format!(
                "the SQL server cannot listen on {listen}: {e}; choose another --sql-listen \
                 address"
            ))),
            Err(e) => Err(PipelineError::Invalid(format!("the SQL server failed: {e}"))),
        },
        () = refresh => Ok(()),
        () = stop.cancelled() => Ok(()),
    };
    // Dropping the runtimes abandons queries still running, since the server stopped and
    // no client can receive their rows.
    drop((connection_runtime, compute_runtime));
    outcome
}

/// A runtime owned by an async function. Dropped, it shuts down without waiting for its
/// tasks: tokio panics when a runtime is dropped the ordinary way inside another one,
/// which an early error return would do.
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl OwnedRuntime {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("present until dropped").handle()
    }

    fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle().spawn(future)
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A session with the project's functions, every dataset version, the run log and the
/// `pg_catalog` tables clients probe.
async fn session(
    catalog: &CatalogSource,
    server_pool: Option<Arc<memory::ServerPool>>,
) -> Result<SessionContext> {
    let ctx = match server_pool {
        Some(pool) => {
            let runtime = RuntimeEnvBuilder::new()
                .with_memory_pool(pool)
                .build_arc()?;
            super::new_session_with_runtime(runtime)
        }
        None => super::new_session(),
    };
    catalog.register(&ctx).await?;
    setup_pg_catalog(&ctx, DATABASE, AuthManager::new())
        .map_err(|e| PipelineError::Invalid(format!("cannot set up pg_catalog: {e}")))?;
    Ok(ctx)
}

/// The source of the served versions.
enum CatalogSource {
    /// The data directory: every version, the run log and the training records.
    DataDir(PathBuf),
    /// The versions uploaded under an object store URL.
    Storage(String),
}

impl CatalogSource {
    fn new(data_dir: &Path, storage_url: Option<&str>) -> Self {
        match storage_url {
            Some(url) => Self::Storage(url.to_string()),
            None => Self::DataDir(data_dir.to_path_buf()),
        }
    }

    /// Registers the source's datasets in `ctx`, replacing those registered before.
    async fn register(&self, ctx: &SessionContext) -> Result<()> {
        match self {
            Self::DataDir(dir) => crate::dataset::catalog::register_datasets(ctx, dir).await?,
            Self::Storage(url) => {
                crate::dataset::remote_catalog::register_remote_datasets(ctx, url).await?
            }
        };
        Ok(())
    }
}

/// Registers the datasets again every [`CATALOG_REFRESH_SECS`] until `stop`.
async fn refresh_catalog(
    ctx: Arc<SessionContext>,
    catalog: CatalogSource,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(CATALOG_REFRESH_SECS));
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        if let Err(error) = catalog.register(&ctx).await {
            tracing::warn!(%error, "cannot read the catalog again; serving the previous one");
        }
    }
}

/// Rejects every statement that could change data or the catalog; see the module docs.
#[derive(Debug)]
struct ReadOnly;

/// Returns the error for a statement that is not read-only, `None` for one that is.
fn rejection(statement: &Statement) -> Option<PgWireError> {
    if let Some(variable) = engine_setting(statement) {
        return Some(PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".to_string(),
            "0A000".to_string(),
            format!(
                "SET {variable} is not available on the paperclip SQL server: its DataFusion \
                 settings are the same for every client; use `paperclip sql` to run a query \
                 with other settings"
            ),
        ))));
    }
    if is_read_only(statement) {
        return None;
    }
    let text = statement.to_string();
    let first_word = text.split_whitespace().next().unwrap_or("").to_uppercase();
    Some(PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        "25006".to_string(),
        format!(
            "{first_word} is not allowed: the paperclip SQL server is read-only (published \
             versions never change); use SELECT, WITH, EXPLAIN, SHOW or SET"
        ),
    ))))
}

/// Returns the name of the DataFusion setting (`datafusion.*`) that `statement` sets, if any. The
/// server's sessions share these settings, so no client may change them.
fn engine_setting(statement: &Statement) -> Option<String> {
    let Statement::Set(Set::SingleAssignment { variable, .. }) = statement else {
        return None;
    };
    let name = variable.to_string().replace('"', "");
    name.to_lowercase()
        .starts_with("datafusion.")
        .then_some(name)
}

fn is_read_only(statement: &Statement) -> bool {
    match statement {
        Statement::Query(_)
        | Statement::Set(_)
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::ExplainTable { .. } => true,
        // COPY TO STDOUT only sends rows to the client, which is what psql's \copy sends.
        Statement::Copy { .. } => copy::is_copy_to_stdout(statement),
        // EXPLAIN ANALYZE runs its statement, so the statement itself must be read-only.
        Statement::Explain { statement, .. } => is_read_only(statement),
        _ => false,
    }
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        rejection(statement).map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        rejection(statement).map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        rejection(statement).map(Err)
    }
}

/// Plans queries with [`wire::wire_safe`] on top, so every result column is sent in a
/// type clients decode correctly.
#[derive(Debug)]
struct WireTypes;

impl WireTypes {
    async fn plan(statement: &Statement, ctx: &SessionContext) -> PgWireResult<LogicalPlan> {
        let statement = datafusion::sql::parser::Statement::Statement(Box::new(statement.clone()));
        let plan = ctx
            .state()
            .statement_to_plan(statement)
            .await
            .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        wire::wire_safe(plan).map_err(|e| PgWireError::ApiError(Box::new(e)))
    }
}

#[async_trait]
impl QueryHook for WireTypes {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Some(copy) = copy::CopyOut::parse(statement) {
            let format = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
            return Some(match copy {
                Ok(copy) => copy.respond(ctx, format).await,
                Err(error) => Err(error),
            });
        }
        let Statement::Query(_) = statement else {
            return None;
        };
        let response = async {
            let plan = Self::plan(statement, ctx).await?;
            let frame = ctx
                .execute_logical_plan(plan)
                .await
                .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
            let format = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
            let rows = encode_dataframe(frame, &Format::UnifiedText, Some(format)).await?;
            Ok(Response::Query(rows))
        };
        Some(response.await)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if copy::is_copy_to_stdout(statement) {
            return Some(Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".to_string(),
                "0A000".to_string(),
                "COPY ... TO STDOUT works only as a simple query, as psql's \\copy sends it; \
                 run the query with SELECT to read its rows through a prepared statement"
                    .to_string(),
            )))));
        }
        let Statement::Query(_) = statement else {
            return None;
        };
        Some(Self::plan(statement, ctx).await)
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn read_only(sql: &str) -> bool {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        is_read_only(&statements[0])
    }

    #[test]
    fn queries_and_session_statements_pass() {
        for sql in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
            "SET application_name = 'psql'",
            "BEGIN",
            "COMMIT",
        ] {
            assert!(read_only(sql), "{sql}");
        }
    }

    #[test]
    fn writes_are_rejected() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "DELETE FROM t",
            "CREATE TABLE t (a INT)",
            "CREATE TABLE t AS SELECT 1",
            "DROP TABLE t",
            "COPY t TO '/tmp/x.csv'",
            "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
            "TRUNCATE t",
        ] {
            assert!(!read_only(sql), "{sql}");
        }
    }

    #[test]
    fn engine_settings_cannot_be_changed() {
        for (sql, rejected) in [
            ("SET datafusion.execution.batch_size = 1", true),
            ("SET DataFusion.runtime.memory_limit = '100G'", true),
            ("SET \"datafusion.execution.batch_size\" = 1", true),
            ("SET application_name = 'psql'", false),
            ("SET statement_timeout = 1000", false),
        ] {
            let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
            assert_eq!(rejection(&statements[0]).is_some(), rejected, "{sql}");
        }
    }

    #[test]
    fn rejection_names_the_statement_and_sqlstate() {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, "DELETE FROM t").unwrap();
        let Some(PgWireError::UserError(info)) = rejection(&statements[0]) else {
            panic!("DELETE passed");
        };
        assert_eq!(info.code, "25006");
        assert!(
            info.message.starts_with("DELETE is not allowed"),
            "{}",
            info.message
        );
    }
}
