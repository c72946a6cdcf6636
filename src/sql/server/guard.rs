//! Timeouts and cancel requests for the whole of a query, rows included.
//!
//! pgwire races a client's cancel request only against planning: the rows are computed
//! while they are sent, after that race is over. [`Guarded`] wraps datafusion-postgres's
//! handlers and puts every row stream behind a guard that ends it with SQLSTATE 57014
//! (`query_canceled`) when the server's query timeout or the client's
//! `statement_timeout` passes, or the client cancels.
//!
//! Planning runs with the compute runtime as the current one. DataFusion starts the
//! partitions of a query (a join's build side, an aggregate's input) as tasks when the
//! plan is executed, and those tasks must not occupy the connections' threads, which
//! watch the deadlines and cancel requests.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionContext;
use datafusion_postgres::pgwire::api::portal::Portal;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, Response,
};
use datafusion_postgres::pgwire::api::stmt::StoredStatement;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore, ConnectionHandle};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::{Sink, Stream, StreamExt};
use tokio::time::Instant;

use super::memory::{QueryPool, ServerPool};
use super::params::DeclaredTypes;
use super::session::STATEMENT_TIMEOUT_KEY;

/// datafusion-postgres's handlers with every result behind a timeout and cancel guard,
/// and every query under its own memory limit.
pub struct Guarded {
    inner: Arc<DfSessionService>,
    parser: Arc<DeclaredTypes>,
    ctx: Arc<SessionContext>,
    hooks: Vec<Arc<dyn QueryHook>>,
    memory: Option<QueryMemory>,
    timeout: Option<Duration>,
    compute: tokio::runtime::Handle,
}

/// The per-query memory limit and the server's pool each query takes from.
pub struct QueryMemory {
    /// The pool shared by all queries.
    pub server: Arc<ServerPool>,
    /// Memory limit of one query, in MiB.
    pub per_query_mib: usize,
}

impl Guarded {
    /// Serves `ctx` through datafusion-postgres with `hooks`; `timeout` bounds each query
    /// from its start to its last row. Rows are computed on `compute`, a runtime other
    /// than the connections', so that busy computations never keep a connection from
    /// noticing its deadline or a cancel.
    pub fn new(
        ctx: Arc<SessionContext>,
        hooks: Vec<Arc<dyn QueryHook>>,
        memory: Option<QueryMemory>,
        timeout: Option<Duration>,
        compute: tokio::runtime::Handle,
    ) -> Self {
        let inner = Arc::new(DfSessionService::new_with_hooks(ctx.clone(), hooks.clone()));
        Self {
            parser: Arc::new(DeclaredTypes::new(inner.query_parser())),
            inner,
            ctx,
            hooks,
            memory,
            timeout,
            compute,
        }
    }

    /// Returns the handlers for one query: the shared ones, or with a memory limit a
    /// session of the query's own whose memory pool counts only that query. The session shares the
    /// catalog, functions and settings of the server's.
    fn query_service(&self) -> Arc<DfSessionService> {
        let Some(memory) = &self.memory else {
            return self.inner.clone();
        };
        let pool = QueryPool::new(memory.server.clone(), memory.per_query_mib);
        let runtime = RuntimeEnv {
            memory_pool: pool,
            ..(*self.ctx.runtime_env()).clone()
        };
        let state = SessionStateBuilder::new_from_existing(self.ctx.state())
            .with_runtime_env(Arc::new(runtime))
            .build();
        Arc::new(DfSessionService::new_with_hooks(
            Arc::new(SessionContext::new_with_state(state)),
            self.hooks.clone(),
        ))
    }

    /// Returns the deadline of a query that starts now: the earlier of the server's
    /// timeout and the client's `statement_timeout`.
    fn deadline(&self, client: &impl ClientInfo) -> Option<Deadline> {
        let started = Instant::now();
        let server = self.timeout.map(|timeout| Deadline {
            at: started + timeout,
            timeout,
            set_by: SetBy::Server,
        });
        let client = client_statement_timeout(client).map(|timeout| Deadline {
            at: started + timeout,
            timeout,
            set_by: SetBy::Client,
        });
        match (server, client) {
            (Some(server), Some(client)) if client.at < server.at => Some(client),
            (server, client) => server.or(client),
        }
    }

    /// Runs `planning` (datafusion-postgres's handler, up to the start of the rows) with
    /// the compute runtime as the current one, and stops it at `deadline`. Errors of
    /// `query` get an SQLSTATE and a hint where they can.
    async fn plan<T>(
        &self,
        planning: impl Future<Output = PgWireResult<T>> + Send,
        deadline: Option<Deadline>,
        query: &str,
    ) -> PgWireResult<T> {
        let planning = on_runtime(self.compute.clone(), planning);
        let planned = match deadline {
            None => planning.await,
            Some(deadline) => match tokio::time::timeout_at(deadline.at, planning).await {
                Ok(planned) => planned,
                Err(_) => Err(deadline.error()),
            },
        };
        planned.map_err(|error| self.explain(error, query))
    }

    /// Turns an engine error into one with the SQLSTATE a client expects, and the hint
    /// `paperclip sql` gives for a misnamed dataset, version or table.
    fn explain(&self, error: PgWireError, query: &str) -> PgWireError {
        let PgWireError::ApiError(source) = &error else {
            return error;
        };
        let message = source.to_string();
        let datasets: Vec<String> = self
            .ctx
            .catalog_names()
            .into_iter()
            .filter(|name| name != "datafusion")
            .collect();
        let mut info = ErrorInfo::new("ERROR".to_string(), sqlstate(&message).to_string(), message);
        info.hint = crate::dataset::sql_hints::name_hint(query, &info.message, &datasets);
        PgWireError::UserError(Box::new(info))
    }

    fn guard(
        &self,
        response: Response,
        client: &impl ClientInfo,
        deadline: Option<Deadline>,
    ) -> Response {
        let handle = client
            .session_extensions()
            .get::<Arc<ConnectionHandle>>()
            .map(|handle| Arc::clone(&*handle));
        let compute = self.compute.clone();
        match response {
            Response::Query(mut query) => {
                let rows = std::mem::replace(query.data_rows(), Box::pin(futures::stream::empty()));
                *query.data_rows() = Box::pin(guarded_rows(rows, handle, deadline, compute));
                Response::Query(query)
            }
            Response::CopyOut(mut copy) => {
                let rows =
                    std::mem::replace(&mut copy.data_stream, Box::pin(futures::stream::empty()));
                copy.data_stream = Box::pin(guarded_rows(rows, handle, deadline, compute));
                Response::CopyOut(copy)
            }
            response => response,
        }
    }
}

/// Polls `future` with `runtime` entered, so the tasks it spawns run there.
fn on_runtime<'a, T>(
    runtime: tokio::runtime::Handle,
    future: impl Future<Output = T> + Send + 'a,
) -> impl Future<Output = T> + Send + 'a {
    let mut future = Box::pin(future);
    std::future::poll_fn(move |cx| {
        let _entered = runtime.enter();
        future.as_mut().poll(cx)
    })
}

/// Origin of a query's time limit.
#[derive(Debug, Clone, Copy)]
enum SetBy {
    Server,
    Client,
}

/// The time by which a query must have sent its last row.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    timeout: Duration,
    set_by: SetBy,
}

impl Deadline {
    fn error(&self) -> PgWireError {
        match self.set_by {
            SetBy::Server => canceled(&format!(
                "canceling statement due to the SQL server's query timeout of {} s \
                 (--sql-query-timeout-secs)",
                self.timeout.as_secs()
            )),
            SetBy::Client => canceled(&format!(
                "canceling statement due to statement timeout ({} ms, set by SET \
                 statement_timeout)",
                self.timeout.as_millis()
            )),
        }
    }
}

/// Returns the client's `SET statement_timeout`, which datafusion-postgres keeps in the
/// connection's metadata in milliseconds; 0 means none, as in PostgreSQL.
fn client_statement_timeout(client: &impl ClientInfo) -> Option<Duration> {
    let millis: u64 = client.metadata().get(STATEMENT_TIMEOUT_KEY)?.parse().ok()?;
    (millis > 0).then(|| Duration::from_millis(millis))
}

type Rows<T> = Pin<Box<dyn Stream<Item = PgWireResult<T>> + Send>>;

/// Aborts the task that computes the rows when the guarded stream is dropped, so a
/// client that goes away stops its query.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// State of a guarded stream between rows.
struct Guard<T> {
    rows: tokio::sync::mpsc::Receiver<PgWireResult<T>>,
    producer: AbortOnDrop,
    handle: Option<Arc<ConnectionHandle>>,
    cancel: Option<futures::channel::oneshot::Receiver<()>>,
}

/// Passes on the rows of `rows` until they end, the deadline passes or the client
/// cancels.
///
/// The rows are computed on a task of their own and passed through a channel: a
/// DataFusion stream can compute for minutes inside one poll, and only a separate task
/// lets the deadline and the cancel request be noticed meanwhile.
fn guarded_rows<T: Send + 'static>(
    mut rows: Rows<T>,
    handle: Option<Arc<ConnectionHandle>>,
    deadline: Option<Deadline>,
    compute: tokio::runtime::Handle,
) -> impl Stream<Item = PgWireResult<T>> + Send {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    let producer = compute.spawn(async move {
        while let Some(row) = rows.next().await {
            if sender.send(row).await.is_err() {
                break;
            }
        }
    });
    let guard = Guard {
        rows: receiver,
        producer: AbortOnDrop(producer),
        handle,
        cancel: None,
    };
    futures::stream::unfold(Some(guard), move |guard| async move {
        let mut guard = guard?;
        // The cancel receiver is taken on the first poll, once pgwire's own race against
        // planning is over; taking it earlier would cancel that race.
        if guard.cancel.is_none()
            && let Some(handle) = &guard.handle
        {
            guard.cancel = Some(handle.start_query().await);
        }
        let cancelled = async {
            match guard.cancel.as_mut() {
                Some(receiver) => {
                    let _ = receiver.await;
                }
                None => std::future::pending().await,
            }
        };
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.at).await,
                None => std::future::pending().await,
            }
        };
        let stopped = tokio::select! {
            row = guard.rows.recv() => {
                let row = row?;
                return Some((row, Some(guard)));
            }
            () = cancelled => canceled("canceling statement due to user request"),
            () = expired => deadline.expect("only a deadline expires").error(),
        };
        guard.producer.0.abort();
        Some((Err(stopped), None))
    })
}

/// The SQLSTATE of an engine error, from its message: syntax, unknown table, column or
/// function, out of memory; `XX000` (internal error) for the rest.
fn sqlstate(message: &str) -> &'static str {
    if message.contains("ParserError") || message.contains("sql parser error") {
        "42601"
    } else if message.contains("table '") && message.contains("not found") {
        "42P01"
    } else if message.contains("No field named") {
        "42703"
    } else if message.contains("Invalid function") {
        "42883"
    } else if message.contains("Resources exhausted") {
        "53200"
    } else {
        "XX000"
    }
}

fn canceled(message: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        "57014".to_string(),
        message.to_string(),
    )))
}

#[async_trait]
impl SimpleQueryHandler for Guarded {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let deadline = self.deadline(client);
        let service = self.query_service();
        let responses = self
            .plan(
                SimpleQueryHandler::do_query(&*service, client, query),
                deadline,
                query,
            )
            .await?;
        Ok(responses
            .into_iter()
            .map(|response| self.guard(response, client, deadline))
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Guarded {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = DeclaredTypes;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        target: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.inner.do_describe_statement(client, target).await
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        target: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.inner.do_describe_portal(client, target).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let deadline = self.deadline(client);
        let service = self.query_service();
        let query = portal.statement.statement.0.clone();
        let response = self
            .plan(
                ExtendedQueryHandler::do_query(&*service, client, portal, max_rows),
                deadline,
                &query,
            )
            .await?;
        Ok(self.guard(response, client, deadline))
    }
}
