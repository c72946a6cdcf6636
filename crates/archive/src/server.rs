//! Local archive server: serves a [`Snapshot`] through the MAST API shapes
//! that [`crate::MastClient`] uses, for tests, offline runs and the
//! pipeline's embedded mode.
//!
//! Endpoints:
//! - `POST /api/v0/invoke` with form field `request=<JSON>`:
//!   - `Mast.Caom.Filtered` filters observation rows. Each filter
//!     `{"paramName": column, "values": [...]}` keeps rows whose cell, in
//!     text form, equals one of the values, so `"13012"` matches both
//!     `"13012"` and `13012`. A row must match all filters. A filter on a column
//!     that no snapshot file has is ignored, because recorded responses often
//!     lack columns such as `dataRights`. NOTE: how real MAST treats such a
//!     filter was not confirmed.
//!     `columns` is `*`, a comma list, or `COUNT_BIG(*)`.
//!   - `Mast.Caom.Products` returns product rows whose `obsID` or
//!     `parent_obsid` is in the comma list `params.obsid`.
//!   - `page` and `pagesize` slice the result; `paging` reports the slice.
//!     Without `pagesize` the whole result is one page.
//!     A value `{"min": a, "max": b}` keeps numeric cells in `[a, b]`, both ends
//!     included, as MAST's range filters do.
//!   - An unknown service, or a filter form this server does not implement
//!     (free text), gets HTTP 200 with `{"status": "ERROR", "msg": ...}`.
//!     A body without a valid `request` field gets HTTP 400.
//! - `GET /api/v0.1/Download/file?uri=mast:<path>` returns `files/<path>`
//!   with `Content-Length`; an invalid URI gets 400, a missing file 404. The
//!   URI is checked by [`DataUri::parse`] and the file must resolve (after
//!   symlinks) to a regular file inside `files/`, otherwise 404.
//! - `GET /catalog/<name>` returns `catalog/<name>` by the same rules.
//!
//! [`ServeOptions`] injects these faults:
//! - `fail_first_n` responses with status `fail_status`, counted over all
//!   endpoints;
//! - `executing_polls` responses of `EXECUTING` per distinct invoke request;
//! - a connection closed without a complete response when a query result
//!   exceeds `max_rows_before_reset` rows;
//! - `latency_ms` of delay;
//! - downloads cut to `truncate_downloads_to_bytes`, without `Content-Length`;
//! - downloads that declare their full `Content-Length` but whose connection closes
//!   after `cut_downloads_after_bytes`, as a reset in the middle of the body;
//! - downloads that declare a `Content-Length` `content_length_offset_bytes` away from
//!   the file's size;
//! - the three download faults above for only the first `download_faults_first_n`
//!   downloads, so that a client's retries can get the whole file;
//! - downloads sent at most `bandwidth_bytes_per_sec`, each response on its own;
//! - a share `error_rate_ppm` (per million) of requests, drawn from `error_seed`,
//!   that get `fail_status` instead of their response.
//!
//! NOTE: the real MAST status codes for an unknown service or a malformed
//! request were not confirmed. This server mirrors astroquery's handling,
//! which reads `status == "ERROR"` and `msg` from the body.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;

use crate::download::DOWNLOAD_PATH;
use crate::envelope::{Envelope, Field, MastRequest, Paging, Row, STATUS_EXECUTING, cell_text};
use crate::error::ArchiveError;
use crate::ids::DataUri;
use crate::invoke::INVOKE_PATH;
use crate::queries::{SERVICE_CAOM_FILTERED, SERVICE_CAOM_PRODUCTS};
use crate::snapshot::{FileLookup, Snapshot};

/// Fault injection and timing settings of the local server. The default
/// injects nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// `EXECUTING` responses per distinct invoke request before the result.
    pub executing_polls: u32,
    /// Close the connection without a complete response when a query result
    /// (all pages) has more rows than this.
    pub max_rows_before_reset: Option<usize>,
    /// Number of first requests, over all endpoints, that get `fail_status`.
    pub fail_first_n: u32,
    /// HTTP status of the injected failures.
    pub fail_status: u16,
    /// Delay before each response, in milliseconds.
    pub latency_ms: u64,
    /// Minimum result rows for an invoke response to be delayed. Downloads
    /// and catalog files are delayed only when this is 0.
    pub latency_min_rows: usize,
    /// Send only this many bytes of each download, without `Content-Length`.
    pub truncate_downloads_to_bytes: Option<u64>,
    /// Declare each download's full `Content-Length`, send this many bytes of the body
    /// and close the connection. Files of at most this size are sent whole.
    pub cut_downloads_after_bytes: Option<u64>,
    /// Bytes added to the `Content-Length` each download declares, so 0 declares the
    /// file's size. hyper (1.x) never sends more body bytes than declared, and it closes
    /// the connection when the body ends early. So a negative offset sends a shorter
    /// file whose response looks complete, and a positive one sends the whole file and
    /// then closes the connection before the declared length.
    pub content_length_offset_bytes: i64,
    /// Number of first downloads, counted over the files served, that get
    /// `truncate_downloads_to_bytes`, `cut_downloads_after_bytes` and
    /// `content_length_offset_bytes`. `None` applies them to every download.
    pub download_faults_first_n: Option<u32>,
    /// Maximum rate of each download and catalog response, in bytes per second.
    pub bandwidth_bytes_per_sec: Option<u64>,
    /// Requests in a million, over all endpoints, that get `fail_status` at random.
    pub error_rate_ppm: u32,
    /// Seed of the random failures: the same seed fails the same request numbers.
    pub error_seed: u64,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            executing_polls: 0,
            max_rows_before_reset: None,
            fail_first_n: 0,
            fail_status: 503,
            latency_ms: 0,
            latency_min_rows: 0,
            truncate_downloads_to_bytes: None,
            cut_downloads_after_bytes: None,
            content_length_offset_bytes: 0,
            download_faults_first_n: None,
            bandwidth_bytes_per_sec: None,
            error_rate_ppm: 0,
            error_seed: 0,
        }
    }
}

struct ServerState {
    snapshot: Snapshot,
    options: ServeOptions,
    polls_by_request: Mutex<HashMap<String, u32>>,
    failures_sent: AtomicU32,
    requests_seen: AtomicU64,
    downloads_served: AtomicU32,
}

type SharedState = Arc<ServerState>;

/// A server running on the current tokio runtime. Dropping it requests a
/// graceful shutdown.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    shutdown_sender: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// Returns the bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns `http://<local_addr>/`, the base URL for a client.
    pub fn base_url(&self) -> Url {
        Url::parse(&format!("http://{}/", self.local_addr))
            .expect("a socket address forms a valid URL")
    }

    /// Requests a graceful shutdown; in-flight requests finish first.
    pub fn shutdown(&mut self) {
        if let Some(sender) = self.shutdown_sender.take() {
            // The receiver is gone only when the server already stopped.
            let _ = sender.send(());
        }
    }

    /// Waits until the server stops (after [`Self::shutdown`] or an error).
    pub async fn join(mut self) -> Result<(), ArchiveError> {
        let addr = self.local_addr;
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(ArchiveError::ServerFailed {
                addr,
                reason: err.to_string(),
            }),
            Err(err) => Err(ArchiveError::ServerFailed {
                addr,
                reason: format!("the server task ended abnormally: {err}"),
            }),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Default address of the local server: loopback, with a free port chosen by
/// the system (the bound address is logged and returned by
/// [`RunningServer::local_addr`]).
pub const DEFAULT_BIND_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Opens the snapshot in `dir` and serves it on `addr`, for the
/// `paperclip archive serve DIR` command.
pub async fn bind_dir(
    dir: &std::path::Path,
    addr: SocketAddr,
    options: ServeOptions,
) -> Result<RunningServer, ArchiveError> {
    let snapshot = Snapshot::open(dir)?;
    bind(snapshot, addr, options).await
}

/// Binds `addr` and serves `snapshot` on the current tokio runtime.
pub async fn bind(
    snapshot: Snapshot,
    addr: SocketAddr,
    options: ServeOptions,
) -> Result<RunningServer, ArchiveError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ArchiveError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ArchiveError::Bind { addr, source })?;
    if !local_addr.ip().is_loopback() {
        tracing::warn!(%local_addr, "archive server is bound to a non-loopback address and is reachable from other hosts");
    }
    tracing::info!(%local_addr, snapshot = %snapshot.root().display(), "archive server started");

    let state = Arc::new(ServerState {
        snapshot,
        options,
        polls_by_request: Mutex::new(HashMap::new()),
        failures_sent: AtomicU32::new(0),
        requests_seen: AtomicU64::new(0),
        downloads_served: AtomicU32::new(0),
    });
    let router = Router::new()
        .route(&format!("/{INVOKE_PATH}"), post(invoke_handler))
        .route(&format!("/{DOWNLOAD_PATH}"), get(download_handler))
        .route("/catalog/{name}", get(catalog_handler))
        .with_state(state);

    let (shutdown_sender, shutdown_receiver) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = shutdown_receiver.await;
            })
            .await;
        tracing::info!(%local_addr, "archive server stopped");
        result
    });
    Ok(RunningServer {
        local_addr,
        shutdown_sender: Some(shutdown_sender),
        task: Some(task),
    })
}

impl ServerState {
    /// Returns the injected failure response while `fail_first_n` lasts, and for the
    /// random share `error_rate_ppm` of requests.
    fn injected_failure(&self) -> Option<Response> {
        self.first_failures().or_else(|| self.random_failure())
    }

    fn random_failure(&self) -> Option<Response> {
        if self.options.error_rate_ppm == 0 {
            return None;
        }
        let request = self.requests_seen.fetch_add(1, Ordering::Relaxed);
        let draw = mix64(self.options.error_seed ^ mix64(request)) % 1_000_000;
        if draw >= u64::from(self.options.error_rate_ppm) {
            return None;
        }
        let status = StatusCode::from_u16(self.options.fail_status)
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        tracing::warn!(
            request,
            status = status.as_u16(),
            "injecting a random failure"
        );
        Some(
            (
                status,
                format!("injected random failure of request {request}"),
            )
                .into_response(),
        )
    }

    fn first_failures(&self) -> Option<Response> {
        let previous = self
            .failures_sent
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |sent| {
                (sent < self.options.fail_first_n).then_some(sent + 1)
            })
            .ok()?;
        let status = StatusCode::from_u16(self.options.fail_status)
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        tracing::warn!(
            failure = previous + 1,
            status = status.as_u16(),
            "injecting a failure response"
        );
        Some(
            (
                status,
                format!(
                    "injected failure {} of {}",
                    previous + 1,
                    self.options.fail_first_n
                ),
            )
                .into_response(),
        )
    }

    /// Counts an invoke request and returns true while its response should
    /// still be `EXECUTING`.
    fn still_executing(&self, request_key: &str) -> bool {
        if self.options.executing_polls == 0 {
            return false;
        }
        let mut polls = self
            .polls_by_request
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let seen = polls.entry(request_key.to_owned()).or_insert(0);
        if *seen < self.options.executing_polls {
            *seen += 1;
            true
        } else {
            false
        }
    }

    /// Counts a download served from a file and returns the body faults it gets.
    fn download_faults(&self) -> BodyFaults {
        let served = self.downloads_served.fetch_add(1, Ordering::SeqCst);
        let options = &self.options;
        if options
            .download_faults_first_n
            .is_some_and(|first_n| served >= first_n)
        {
            return BodyFaults::default();
        }
        let faults = BodyFaults {
            truncate_to: options.truncate_downloads_to_bytes,
            cut_after: options.cut_downloads_after_bytes,
            length_offset: options.content_length_offset_bytes,
        };
        if faults != BodyFaults::default() {
            tracing::warn!(download = served + 1, ?faults, "injecting download faults");
        }
        faults
    }

    async fn delay(&self, result_rows: usize) {
        if self.options.latency_ms > 0 && result_rows >= self.options.latency_min_rows {
            tokio::time::sleep(Duration::from_millis(self.options.latency_ms)).await;
        }
    }
}

async fn invoke_handler(State(state): State<SharedState>, body: Bytes) -> Response {
    if let Some(response) = state.injected_failure() {
        return response;
    }
    let request = match parse_invoke_form(&body) {
        Ok(request) => request,
        Err(message) => {
            tracing::warn!(error = %message, "rejected an invalid invoke request");
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    let request_key = serde_json::to_string(&request).expect("a request always serializes");
    if state.still_executing(&request_key) {
        return json_response(&executing_envelope());
    }

    let (envelope, result_rows) = build_result_page(&state.snapshot, &request);
    if let Some(max_rows) = state.options.max_rows_before_reset
        && result_rows > max_rows
    {
        tracing::warn!(service = %request.service, result_rows, max_rows, "closing the connection: result above the row cap");
        return connection_reset_response();
    }
    state.delay(result_rows).await;
    json_response(&envelope)
}

fn parse_invoke_form(body: &[u8]) -> Result<MastRequest, String> {
    let request_json = url::form_urlencoded::parse(body)
        .find(|(name, _)| name == "request")
        .map(|(_, value)| value.into_owned())
        .ok_or_else(|| {
            "missing form field 'request'; send request=<MAST request JSON>".to_owned()
        })?;
    serde_json::from_str(&request_json)
        .map_err(|err| format!("form field 'request' is not a valid MAST request: {err}"))
}

fn executing_envelope() -> Envelope {
    Envelope {
        status: STATUS_EXECUTING.to_owned(),
        msg: String::new(),
        data: Vec::new(),
        fields: Vec::new(),
        paging: None,
    }
}

fn json_response(envelope: &Envelope) -> Response {
    let body = serde_json::to_vec(envelope).expect("an envelope always serializes");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Builds a response whose body fails before the first byte, so hyper closes
/// the connection without a complete response and the client sees a reset.
fn connection_reset_response() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "result above the row cap",
        ))
    });
    Response::new(Body::from_stream(failing))
}

/// Computes the page to send and the row count of the whole result.
fn build_result_page(snapshot: &Snapshot, request: &MastRequest) -> (Envelope, usize) {
    let result = match request.service.as_str() {
        SERVICE_CAOM_FILTERED => filter_observations(snapshot, &request.params),
        SERVICE_CAOM_PRODUCTS => select_products(snapshot, &request.params),
        other => Err(format!(
            "unknown service {other:?}; this archive snapshot serves {SERVICE_CAOM_FILTERED} and {SERVICE_CAOM_PRODUCTS}"
        )),
    };
    match result {
        Ok((fields, rows)) => {
            let result_rows = rows.len();
            (
                page_envelope(fields, rows, request.page, request.pagesize),
                result_rows,
            )
        }
        Err(message) => (Envelope::error(message), 0),
    }
}

type Selection = (Vec<Field>, Vec<Row>);

fn filter_observations(snapshot: &Snapshot, params: &Value) -> Result<Selection, String> {
    let table = snapshot.observations();
    let mut filters = parse_filters(params)?;
    filters.retain(|filter| {
        let known = table.fields.iter().any(|field| field.name == filter.column);
        if !known {
            tracing::debug!(column = %filter.column, "ignoring a filter on a column the snapshot does not have");
        }
        known
    });
    let rows: Vec<Row> = table
        .rows
        .iter()
        .filter(|row| filters.iter().all(|filter| filter.matches(row)))
        .cloned()
        .collect();
    let columns = params.get("columns").and_then(Value::as_str).unwrap_or("*");
    project_columns(&table.fields, rows, columns)
}

/// One `params.filters` entry: exact values, or numeric ranges in MAST's
/// `{"min": a, "max": b}` form with both ends inclusive.
struct ColumnFilter {
    column: String,
    values: HashSet<String>,
    ranges: Vec<(f64, f64)>,
}

impl ColumnFilter {
    fn matches(&self, row: &Row) -> bool {
        let Some(cell) = row.get(&self.column) else {
            return false;
        };
        let by_value = cell_text(cell).is_some_and(|text| self.values.contains(&text));
        let by_range = cell_number(cell).is_some_and(|number| {
            self.ranges
                .iter()
                .any(|(min, max)| *min <= number && number <= *max)
        });
        by_value || by_range
    }
}

fn cell_number(cell: &Value) -> Option<f64> {
    match cell {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn parse_filters(params: &Value) -> Result<Vec<ColumnFilter>, String> {
    let Some(filters) = params.get("filters") else {
        return Ok(Vec::new());
    };
    let filters = filters.as_array().ok_or("params.filters must be a list")?;
    filters.iter().map(parse_filter).collect()
}

fn parse_filter(filter: &Value) -> Result<ColumnFilter, String> {
    let column = filter
        .get("paramName")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("filter {filter} has no paramName"))?;
    let values = filter
        .get("values")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("filter on {column:?} has no values list"))?;
    let mut parsed = ColumnFilter {
        column: column.to_owned(),
        values: HashSet::new(),
        ranges: Vec::new(),
    };
    for value in values {
        if let Some(text) = cell_text(value) {
            parsed.values.insert(text);
        } else if let Some(range) = parse_range(value) {
            parsed.ranges.push(range);
        } else {
            return Err(format!(
                "filter on {column:?} has value {value}; this server supports exact string or number values and {{\"min\": a, \"max\": b}} ranges"
            ));
        }
    }
    Ok(parsed)
}

fn parse_range(value: &Value) -> Option<(f64, f64)> {
    let object = value.as_object()?;
    if object.len() != 2 {
        return None;
    }
    let min = object.get("min")?.as_f64()?;
    let max = object.get("max")?.as_f64()?;
    Some((min, max))
}

fn project_columns(fields: &[Field], rows: Vec<Row>, columns: &str) -> Result<Selection, String> {
    let columns = columns.trim();
    if columns == "*" {
        return Ok((fields.to_vec(), rows));
    }
    if columns.eq_ignore_ascii_case("COUNT_BIG(*)") {
        let count_field = Field {
            name: "Column1".to_owned(),
            field_type: "string".to_owned(),
        };
        let mut count_row = Row::new();
        count_row.insert("Column1".to_owned(), json!(rows.len()));
        return Ok((vec![count_field], vec![count_row]));
    }
    let mut selected = Vec::new();
    for name in columns.split(',').map(str::trim) {
        let field = fields
            .iter()
            .find(|field| field.name == name)
            .ok_or_else(|| format!("unknown column {name:?} in params.columns"))?;
        selected.push(field.clone());
    }
    let projected = rows
        .into_iter()
        .map(|row| {
            selected
                .iter()
                .map(|field| {
                    (
                        field.name.clone(),
                        row.get(&field.name).cloned().unwrap_or(Value::Null),
                    )
                })
                .collect()
        })
        .collect();
    Ok((selected, projected))
}

fn select_products(snapshot: &Snapshot, params: &Value) -> Result<Selection, String> {
    let obsid_list = match params.get("obsid") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(number)) => number.to_string(),
        _ => {
            return Err("params.obsid must be a comma-separated list of numeric obsids".to_owned());
        }
    };
    let obsids: HashSet<String> = obsid_list
        .split(',')
        .map(|obsid| obsid.trim().to_owned())
        .filter(|obsid| !obsid.is_empty())
        .collect();
    let rows = snapshot
        .products_for(&obsids)
        .into_iter()
        .cloned()
        .collect();
    Ok((snapshot.products().fields.clone(), rows))
}

/// Slices `rows` into the requested page (pages count from 1).
fn page_envelope(
    fields: Vec<Field>,
    rows: Vec<Row>,
    page: Option<u32>,
    pagesize: Option<u32>,
) -> Envelope {
    let rows_filtered = rows.len() as u64;
    let page = u64::from(page.unwrap_or(1).max(1));
    let page_size = pagesize
        .map(u64::from)
        .filter(|size| *size > 0)
        .unwrap_or(rows_filtered.max(1));
    let pages_filtered = rows_filtered.div_ceil(page_size);
    let start = ((page - 1).saturating_mul(page_size)).min(rows_filtered) as usize;
    let end = (start as u64 + page_size).min(rows_filtered) as usize;
    let data: Vec<Row> = rows.into_iter().skip(start).take(end - start).collect();
    let mut envelope = Envelope::complete(fields, data);
    envelope.paging = Some(Paging {
        page,
        page_size,
        pages_filtered,
        rows: (end - start) as u64,
        rows_filtered,
        rows_total: rows_filtered,
    });
    envelope
}

async fn download_handler(
    State(state): State<SharedState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(response) = state.injected_failure() {
        return response;
    }
    let Some(raw_uri) = query.get("uri") else {
        tracing::warn!("rejected a download request without the uri parameter");
        return (
            StatusCode::BAD_REQUEST,
            "missing query parameter 'uri'; send ?uri=mast:<path>",
        )
            .into_response();
    };
    let uri = match DataUri::parse(raw_uri) {
        Ok(uri) => uri,
        Err(err) => {
            tracing::warn!(error = %err, "rejected a download request with an invalid data URI");
            return (StatusCode::BAD_REQUEST, err.to_string()).into_response();
        }
    };
    let lookup = state.snapshot.data_file(&uri);
    state.delay(0).await;
    let pace = state.options.bandwidth_bytes_per_sec;
    let faults = || state.download_faults();
    serve_lookup(lookup, &format!("data URI {uri}"), faults, pace).await
}

async fn catalog_handler(
    State(state): State<SharedState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    if let Some(response) = state.injected_failure() {
        return response;
    }
    let lookup = state.snapshot.catalog_file(&name);
    state.delay(0).await;
    let pace = state.options.bandwidth_bytes_per_sec;
    serve_lookup(
        lookup,
        &format!("catalog file {name:?}"),
        BodyFaults::default,
        pace,
    )
    .await
}

/// Faults injected into one file response; the default sends the file as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct BodyFaults {
    /// Send only this many bytes, without `Content-Length`.
    truncate_to: Option<u64>,
    /// Close the connection after this many body bytes, with the full `Content-Length`.
    cut_after: Option<u64>,
    /// Added to the declared `Content-Length`.
    length_offset: i64,
}

/// Serves a looked-up file; `faults` is called only when the file exists.
async fn serve_lookup(
    lookup: Result<FileLookup, ArchiveError>,
    label: &str,
    faults: impl FnOnce() -> BodyFaults,
    bytes_per_sec: Option<u64>,
) -> Response {
    let path = match lookup {
        Ok(FileLookup::Found(path)) => path,
        Ok(FileLookup::NotFound) => {
            tracing::info!(label, "requested file not found in the snapshot");
            return (
                StatusCode::NOT_FOUND,
                format!("{label} not found in this archive snapshot"),
            )
                .into_response();
        }
        Ok(FileLookup::OutsideSnapshot) => {
            tracing::warn!(label, "rejected a path that resolves outside the snapshot");
            return (
                StatusCode::NOT_FOUND,
                format!("{label} not found in this archive snapshot"),
            )
                .into_response();
        }
        Err(err) => {
            tracing::error!(label, error = %err, "failed to resolve a snapshot file");
            return (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response();
        }
    };
    match file_response(&path, faults(), bytes_per_sec).await {
        Ok(response) => response,
        Err(err) => {
            tracing::error!(path = %path.display(), error = %err, "failed to open a snapshot file");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to read {label}: {err}"),
            )
                .into_response()
        }
    }
}

async fn file_response(
    path: &std::path::Path,
    faults: BodyFaults,
    bytes_per_sec: Option<u64>,
) -> std::io::Result<Response> {
    let file = tokio::fs::File::open(path).await?;
    let size_bytes = file.metadata().await?.len();
    let builder = Response::builder().header(header::CONTENT_TYPE, "application/octet-stream");
    if let Some(limit_bytes) = faults.truncate_to {
        let body = Body::from_stream(file_chunks(file, limit_bytes, bytes_per_sec));
        return Ok(builder.body(body).expect("static headers are valid"));
    }
    let declared_bytes = size_bytes.saturating_add_signed(faults.length_offset);
    let body = match faults.cut_after {
        Some(cut_bytes) if cut_bytes < size_bytes => {
            let reset = futures::stream::once(async move {
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    format!("download cut after {cut_bytes} of {size_bytes} bytes"),
                ))
            });
            let chunks = file_chunks(file, cut_bytes, bytes_per_sec);
            Body::from_stream(chunks.chain(flush_pause()).chain(reset))
        }
        _ if declared_bytes > size_bytes => {
            let chunks = file_chunks(file, size_bytes, bytes_per_sec);
            Body::from_stream(chunks.chain(flush_pause()))
        }
        _ => Body::from_stream(file_chunks(file, size_bytes, bytes_per_sec)),
    };
    Ok(builder
        .header(header::CONTENT_LENGTH, declared_bytes)
        .body(body)
        .expect("static headers are valid"))
}

const FILE_CHUNK_BYTES: u64 = 64 * 1024;

/// Pause before a body that is cut or shorter than its `Content-Length` ends.
const FLUSH_PAUSE: Duration = Duration::from_millis(20);

/// Yields nothing after [`FLUSH_PAUSE`]. hyper drops the bytes it has not written yet
/// when a body fails or ends before its declared length, so a faulty body waits for them
/// to go out before it ends.
fn flush_pause<T>() -> impl Stream<Item = T> {
    futures::stream::once(tokio::time::sleep(FLUSH_PAUSE)).filter_map(|()| async { None })
}

/// Streams at most `limit_bytes` of `file` in chunks, each after the time it takes at
/// `bytes_per_sec`.
fn file_chunks(
    file: tokio::fs::File,
    limit_bytes: u64,
    bytes_per_sec: Option<u64>,
) -> impl Stream<Item = std::io::Result<Bytes>> {
    futures::stream::try_unfold(
        (file, limit_bytes),
        move |(mut file, remaining_bytes)| async move {
            if remaining_bytes == 0 {
                return Ok(None);
            }
            let mut buffer = vec![0u8; remaining_bytes.min(FILE_CHUNK_BYTES) as usize];
            let read_bytes = file.read(&mut buffer).await?;
            if read_bytes == 0 {
                return Ok(None);
            }
            buffer.truncate(read_bytes);
            if let Some(rate) = bytes_per_sec.filter(|rate| *rate > 0) {
                let secs = read_bytes as f64 / rate as f64;
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            }
            Ok(Some((
                Bytes::from(buffer),
                (file, remaining_bytes - read_bytes as u64),
            )))
        },
    )
}

/// SplitMix64's finalizer: spreads the bits of `value` over the whole word.
fn mix64(value: u64) -> u64 {
    let mut mixed = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    mixed ^ (mixed >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered_rows(count: usize) -> Vec<Row> {
        (1..=count)
            .map(|number| {
                let mut row = Row::new();
                row.insert("n".to_owned(), json!(number));
                row
            })
            .collect()
    }

    #[test]
    fn page_two_holds_second_slice() {
        let envelope = page_envelope(Vec::new(), numbered_rows(2_500), Some(2), Some(1_000));
        let paging = envelope.paging.unwrap();
        assert_eq!(paging.pages_filtered, 3);
        assert_eq!(paging.rows, 1_000);
        assert_eq!(envelope.data[0]["n"], json!(1_001));
        assert_eq!(envelope.data[999]["n"], json!(2_000));
    }

    #[test]
    fn page_past_end_is_empty() {
        let envelope = page_envelope(Vec::new(), numbered_rows(5), Some(3), Some(4));
        assert!(envelope.data.is_empty());
        assert_eq!(envelope.paging.unwrap().rows, 0);
    }

    #[test]
    fn range_filter_keeps_both_ends() {
        let params = json!({"filters": [{"paramName": "t", "values": [{"min": 1, "max": 2}]}]});
        let filters = parse_filters(&params).unwrap();
        let row = |t: Value| Row::from_iter([("t".to_owned(), t)]);
        assert!(filters[0].matches(&row(json!(1))));
        assert!(filters[0].matches(&row(json!("2.0"))));
        assert!(!filters[0].matches(&row(json!(2.5))));
        assert!(!filters[0].matches(&row(json!(null))));
    }

    #[test]
    fn free_text_filter_is_rejected() {
        let params = json!({"filters": [{"paramName": "t_min", "values": [{"text": "x"}]}]});
        let message = parse_filters(&params).err().unwrap();
        assert!(message.contains("t_min"), "{message}");
    }
}
