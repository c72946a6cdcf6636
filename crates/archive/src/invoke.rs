//! `POST /api/v0/invoke`: one request with long-polling, and paged results.
//!
//! A request whose response status is `EXECUTING` is re-sent unchanged after
//! `poll_interval_ms`, at most `max_polls` times. A paged result is read page
//! by page (1 to `pagesFiltered`). It is returned only when the rows add up
//! to `rowsFiltered`, every page reports the same `rowsFiltered`, and no key
//! is repeated. Otherwise the whole result is discarded with
//! [`ArchiveError::IncompletePaging`], so a truncated result is never
//! returned as complete.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tracing::Instrument;

use crate::client::{Counters, Failure, MastClient, RequestContext, RetryMode, read_success_body};
use crate::envelope::{
    Envelope, MastRequest, Paging, Row, STATUS_COMPLETE, STATUS_ERROR, STATUS_EXECUTING, cell_text,
};
use crate::error::ArchiveError;

/// Path of the Portal API endpoint, relative to the base URL.
pub const INVOKE_PATH: &str = "api/v0/invoke";

static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// How to validate the rows of a paged query.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueryShape<'a> {
    /// Columns that must be in `fields` and in every row.
    pub required_columns: &'a [&'a str],
    /// Column whose values must be unique over all pages, if any.
    pub key_column: Option<&'a str>,
}

impl MastClient {
    /// Sends `service` with `params` and returns the rows of all pages.
    pub async fn invoke(&self, service: &str, params: Value) -> Result<Vec<Row>, ArchiveError> {
        let shape = QueryShape {
            required_columns: &[],
            key_column: None,
        };
        self.invoke_all_pages(service, params, shape, RetryMode::Retry)
            .await
    }

    /// Sends one request, re-sending it while MAST returns `EXECUTING`, and
    /// returns the `COMPLETE` envelope.
    pub async fn invoke_page(&self, request: &MastRequest) -> Result<Envelope, ArchiveError> {
        self.invoke_page_with_mode(request, RetryMode::Retry).await
    }

    pub(crate) async fn invoke_all_pages(
        &self,
        service: &str,
        params: Value,
        shape: QueryShape<'_>,
        mode: RetryMode,
    ) -> Result<Vec<Row>, ArchiveError> {
        let mut request = MastRequest::new(service, params);
        request.pagesize = Some(self.config.page_size);
        request.timeout = Some(self.config.server_wait_secs);
        let context = RequestContext::new(service, &request.params_json());

        let first = self.invoke_page_with_mode(&request, mode).await?;
        check_columns(&context, &first, shape)?;
        let Some(first_paging) = first.paging else {
            return Ok(first.data);
        };
        check_page(&context, &first, &first_paging, 1)?;

        let mut rows = first.data;
        for page in 2..=first_paging.pages_filtered {
            request.page = Some(page as u32);
            let envelope = self.invoke_page_with_mode(&request, mode).await?;
            check_columns(&context, &envelope, shape)?;
            check_page(&context, &envelope, &first_paging, page)?;
            rows.extend(envelope.data);
        }
        check_total(&context, &rows, &first_paging, shape.key_column)?;
        Ok(rows)
    }

    pub(crate) async fn invoke_page_with_mode(
        &self,
        request: &MastRequest,
        mode: RetryMode,
    ) -> Result<Envelope, ArchiveError> {
        let request_id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed);
        let params = request.params_json();
        let span = tracing::info_span!(
            "mast_invoke",
            request_id,
            service = %request.service,
            page = request.page.unwrap_or(1),
            params = %params,
        );
        self.poll_until_done(request, mode).instrument(span).await
    }

    async fn poll_until_done(
        &self,
        request: &MastRequest,
        mode: RetryMode,
    ) -> Result<Envelope, ArchiveError> {
        let context = RequestContext::new(&request.service, &request.params_json());
        let body = serde_json::to_string(request).expect("a JSON value always serializes");
        for poll in 0..=self.config.max_polls {
            let bytes = self
                .with_retries(&context, mode, || self.post_invoke(&body))
                .await?;
            let envelope = Envelope::from_slice(&bytes)
                .map_err(|reason| invalid_response(&context, reason))?;
            match envelope.status.as_str() {
                STATUS_COMPLETE => return Ok(envelope),
                STATUS_ERROR => {
                    return Err(ArchiveError::ServiceError {
                        service: context.service,
                        params: context.params,
                        msg: envelope.msg,
                    });
                }
                STATUS_EXECUTING => {
                    Counters::add(&self.counters.polls, 1);
                    tracing::debug!(
                        poll = poll + 1,
                        "MAST returned status EXECUTING, re-sending the request"
                    );
                    if poll < self.config.max_polls {
                        tokio::time::sleep(Duration::from_millis(self.config.poll_interval_ms))
                            .await;
                    }
                }
                other => {
                    let reason =
                        format!("unknown status {other:?}, expected COMPLETE, EXECUTING or ERROR");
                    return Err(invalid_response(&context, reason));
                }
            }
        }
        Err(ArchiveError::StillExecuting {
            service: context.service,
            params: context.params,
            polls: self.config.max_polls,
        })
    }

    async fn post_invoke(&self, request_json: &str) -> Result<Bytes, Failure> {
        Counters::add(&self.counters.requests, 1);
        let response = self
            .http
            .post(self.endpoint(INVOKE_PATH))
            .header(reqwest::header::ACCEPT, "text/plain")
            .form(&[("request", request_json)])
            .timeout(self.request_timeout())
            .send()
            .await
            .map_err(Failure::from_reqwest)?;
        read_success_body(response).await
    }
}

pub(crate) fn invalid_response(context: &RequestContext, reason: String) -> ArchiveError {
    ArchiveError::InvalidResponse {
        service: context.service.clone(),
        params: context.params.clone(),
        reason,
    }
}

fn incomplete(context: &RequestContext, reason: String) -> ArchiveError {
    ArchiveError::IncompletePaging {
        service: context.service.clone(),
        params: context.params.clone(),
        reason,
    }
}

fn check_columns(
    context: &RequestContext,
    envelope: &Envelope,
    shape: QueryShape<'_>,
) -> Result<(), ArchiveError> {
    envelope
        .check_columns(shape.required_columns)
        .map_err(|reason| invalid_response(context, reason))
}

/// Checks one page against the paging of page 1.
fn check_page(
    context: &RequestContext,
    envelope: &Envelope,
    first: &Paging,
    page: u64,
) -> Result<(), ArchiveError> {
    let Some(paging) = envelope.paging else {
        return Err(incomplete(
            context,
            format!("page {page} has no paging object"),
        ));
    };
    if paging.page != page {
        return Err(incomplete(
            context,
            format!("requested page {page} but received page {}", paging.page),
        ));
    }
    if paging.rows_filtered != first.rows_filtered || paging.pages_filtered != first.pages_filtered
    {
        let reason = format!(
            "the result changed while paging: page 1 reported {} rows in {} pages, page {page} reports {} rows in {} pages",
            first.rows_filtered, first.pages_filtered, paging.rows_filtered, paging.pages_filtered
        );
        return Err(incomplete(context, reason));
    }
    if envelope.data.len() as u64 != paging.rows {
        let reason = format!(
            "page {page} reports {} rows but contains {}",
            paging.rows,
            envelope.data.len()
        );
        return Err(incomplete(context, reason));
    }
    Ok(())
}

/// Checks the concatenated pages: row count and key uniqueness.
fn check_total(
    context: &RequestContext,
    rows: &[Row],
    first: &Paging,
    key_column: Option<&str>,
) -> Result<(), ArchiveError> {
    if rows.len() as u64 != first.rows_filtered {
        let reason = format!(
            "received {} rows over {} pages, but rowsFiltered is {}",
            rows.len(),
            first.pages_filtered,
            first.rows_filtered
        );
        return Err(incomplete(context, reason));
    }
    let Some(key_column) = key_column else {
        return Ok(());
    };
    let mut seen = HashSet::new();
    for row in rows {
        let Some(key) = row.get(key_column).and_then(cell_text) else {
            continue;
        };
        if !seen.insert(key.clone()) {
            let reason =
                format!("{key_column} {key} appears in more than one row, so pages overlap");
            return Err(incomplete(context, reason));
        }
    }
    Ok(())
}
