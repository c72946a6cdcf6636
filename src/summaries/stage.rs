//! The summary stage: summaries for a list of proposals, through the cache and a backend.
//!
//! Invariants:
//! - proposals with the same abstract share one key and at most one backend request;
//! - a key whose cached row is `ok` makes no backend request;
//! - any other key gets up to `max_attempts` requests in this run. After a backend error
//!   the stage waits `retry_delay`, doubled after each further error. A cut output
//!   (`truncated`) doubles the token budget of the next attempt, up to four times the
//!   schema's budget. Other rejections are retried at once;
//! - the last outcome of every requested key is appended to the cache, in batches of
//!   [`FLUSH_ROWS`] or after [`FLUSH_SECS`] seconds, whichever comes first, so an
//!   interrupted run keeps what it finished up to the last commit;
//! - no single abstract stops the stage: outcomes are `ok`, `rejected` or `failed`, and
//!   only a cache that cannot be read or written is an error;
//! - after [`MAX_CONSECUTIVE_FAILED_KEYS`] keys in a row end with a backend error (a server
//!   that is down), or after one key whose server cannot be reached at all, the remaining
//!   keys are recorded as failed with reason
//!   `backend_unavailable` without a request. A dead server then costs minutes, not hours,
//!   and the next run requests those keys again;
//! - with `cache_only` (plans) no request is made; keys without an `ok` row are pending.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tracing::Instrument;

use super::backend::{BackendError, Completion, CompletionRequest, Sampling, SummaryBackend};
use super::cache::{SummaryCache, SummaryKey, SummaryRecord, SummaryStatus};
use super::error::SummaryError;
use super::prompt::PromptTemplate;
use super::schema::{SCHEMA_NAME, SchemaFile, Summary, max_tokens};
use super::validate::{OutputChecker, RejectReason, Rejection};

/// Outcomes appended to the cache per commit.
pub const FLUSH_ROWS: usize = 32;

/// Maximum time finished outcomes wait for a commit, in seconds. A slow model finishes
/// few summaries per minute, so without it an interrupted run could lose all of them.
pub const FLUSH_SECS: u64 = 20;

/// Keys in a row that end with a backend error before the stage stops sending requests.
pub const MAX_CONSECUTIVE_FAILED_KEYS: u32 = 8;

/// Reason code of a key not requested because the backend kept failing.
pub const BACKEND_UNAVAILABLE: &str = "backend_unavailable";

/// Largest token budget a retry after a cut output may ask for, as a multiple of the
/// schema's budget.
const MAX_BUDGET_FACTOR: u32 = 4;

/// The prompt, the schema and the checker: what every request of a run shares.
#[derive(Debug, Clone)]
pub struct Summarizer {
    pub prompt: PromptTemplate,
    pub schema: SchemaFile,
    pub checker: OutputChecker,
    /// Token budget of a first attempt, from the schema bounds.
    pub max_tokens: u32,
}

impl Summarizer {
    /// Builds the summarizer from the prompt template and schema built into the binary.
    pub fn current() -> Result<Self, SummaryError> {
        Self::with_prompt(PromptTemplate::current())
    }

    /// Builds the summarizer from `prompt` and the schema built into the binary.
    pub fn with_prompt(prompt: PromptTemplate) -> Result<Self, SummaryError> {
        let schema = SchemaFile::committed()?;
        Ok(Self {
            checker: OutputChecker::new(schema.clone()).with_example(prompt.example()),
            prompt,
            schema,
            max_tokens: max_tokens(),
        })
    }

    /// Returns the cache key of one abstract.
    pub fn key(&self, abstract_raw: &str, model_id: &str, sampling: &Sampling) -> SummaryKey {
        SummaryKey::new(
            abstract_raw,
            model_id,
            &self.prompt.sha256,
            &self.schema.sha256,
            sampling,
        )
    }
}

/// Settings of one stage run.
#[derive(Debug, Clone)]
pub struct StageSettings {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests per key and run.
    pub max_attempts: u32,
    pub sampling: Sampling,
    /// Wait after the first backend error of a key; doubled after each further one.
    pub retry_delay: Duration,
    /// Make no request; report keys without an `ok` row as pending.
    pub cache_only: bool,
    /// Recorded with every new row.
    pub run_id: String,
}

impl StageSettings {
    /// Checks the bounds the stage relies on.
    pub fn check(&self) -> Result<(), SummaryError> {
        if self.concurrency == 0 {
            return Err(SummaryError::Settings(
                "concurrency = 0 would never send a request; use 1 or more".into(),
            ));
        }
        if self.max_attempts == 0 {
            return Err(SummaryError::Settings(
                "max_attempts = 0 would never send a request; use 1 or more".into(),
            ));
        }
        Ok(())
    }
}

/// One proposal to summarize.
#[derive(Debug, Clone)]
pub struct ProposalText {
    pub proposal_id: i64,
    pub abstract_raw: String,
}

/// Origin of a proposal's outcome in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeSource {
    /// An `ok` row already in the cache.
    Cache,
    /// Requests made in this run.
    Backend,
    /// Not requested (`cache_only`); the row, if any, is an earlier failure.
    Pending,
}

/// The outcome for one proposal.
#[derive(Debug, Clone)]
pub struct ProposalSummary {
    pub proposal_id: i64,
    pub summary_key: String,
    /// `None` only for a pending key that has no row yet.
    pub record: Option<SummaryRecord>,
    pub source: OutcomeSource,
}

impl ProposalSummary {
    /// Returns the summary when the outcome is `ok`.
    pub fn summary(&self) -> Option<&Summary> {
        self.record
            .as_ref()
            .filter(|r| r.status == SummaryStatus::Ok)
            .and_then(|r| r.summary.as_ref())
    }
}

/// Every proposal's outcome, in input order, and counts for the run report.
#[derive(Debug, Clone, Default)]
pub struct StageOutcome {
    pub proposals: Vec<ProposalSummary>,
    /// `proposals`, `keys`, `from_cache`, `requested`, `backend_calls`, `ok`, `rejected`,
    /// `failed`, `pending`: keys counted once however many proposals share them, except
    /// `proposals`.
    pub counts: BTreeMap<&'static str, u64>,
}

/// A key that needs requests in this run.
struct Job {
    key: SummaryKey,
    summary_key: String,
    abstract_raw: String,
    proposal_id: i64,
    earlier_attempts: u32,
}

/// Summarizes `proposals` with `backend`, reusing and filling `cache`.
pub async fn summarize_proposals(
    proposals: &[ProposalText],
    backend: &dyn SummaryBackend,
    cache: &mut SummaryCache,
    summarizer: &Summarizer,
    settings: &StageSettings,
) -> Result<StageOutcome, SummaryError> {
    settings.check()?;
    let model_id = backend.model_id();
    let keys: Vec<SummaryKey> = proposals
        .iter()
        .map(|p| summarizer.key(&p.abstract_raw, &model_id, &settings.sampling))
        .collect();
    let ids: Vec<String> = keys.iter().map(SummaryKey::id).collect();
    let jobs = jobs_to_run(proposals, &keys, &ids, cache);
    let mut counts = BTreeMap::from([
        ("proposals", proposals.len() as u64),
        ("keys", unique(&ids) as u64),
    ]);
    let requested: HashSet<String> = jobs.iter().map(|j| j.summary_key.clone()).collect();
    if !settings.cache_only {
        let calls = run_jobs(jobs, backend, cache, summarizer, settings).await?;
        counts.insert("backend_calls", calls);
    }
    let outcomes = collect_outcomes(proposals, &ids, &requested, cache, settings.cache_only);
    count_outcomes(&outcomes, &mut counts);
    Ok(StageOutcome {
        proposals: outcomes,
        counts,
    })
}

fn unique(ids: &[String]) -> usize {
    ids.iter().collect::<HashSet<_>>().len()
}

/// Lists one job per key without an `ok` row, in the order of the proposals.
fn jobs_to_run(
    proposals: &[ProposalText],
    keys: &[SummaryKey],
    ids: &[String],
    cache: &SummaryCache,
) -> Vec<Job> {
    let mut seen = HashSet::new();
    let mut jobs = Vec::new();
    for ((proposal, key), id) in proposals.iter().zip(keys).zip(ids) {
        let cached = cache.get(id);
        if cached.is_some_and(|r| r.status == SummaryStatus::Ok) || !seen.insert(id.clone()) {
            continue;
        }
        jobs.push(Job {
            key: key.clone(),
            summary_key: id.clone(),
            abstract_raw: proposal.abstract_raw.clone(),
            proposal_id: proposal.proposal_id,
            earlier_attempts: cached.map_or(0, |r| r.attempts),
        });
    }
    jobs
}

/// Runs the jobs with bounded concurrency, appending outcomes to the cache as they come.
/// Returns the number of backend requests.
async fn run_jobs(
    jobs: Vec<Job>,
    backend: &dyn SummaryBackend,
    cache: &mut SummaryCache,
    summarizer: &Summarizer,
    settings: &StageSettings,
) -> Result<u64, SummaryError> {
    let breaker = Breaker::default();
    let mut results = futures::stream::iter(jobs)
        .map(|job| summarize_guarded(job, backend, summarizer, settings, &breaker))
        .buffer_unordered(settings.concurrency);
    let mut pending = Vec::new();
    let mut calls = 0;
    let mut last_flush = Instant::now();
    while let Some((record, job_calls)) = results.next().await {
        calls += u64::from(job_calls);
        pending.push(record);
        let due = last_flush.elapsed() >= Duration::from_secs(FLUSH_SECS);
        if pending.len() >= FLUSH_ROWS || due {
            cache.append(std::mem::take(&mut pending)).await?;
            last_flush = Instant::now();
        }
    }
    cache.append(pending).await?;
    Ok(calls)
}

/// Temperature of a retry at a deterministic backend whose output was rejected.
pub const RETRY_TEMPERATURE: f32 = 0.7;

/// Sampling of attempt `attempt` (2 or later) at a deterministic backend after a rejected
/// output: the configured temperature, at least [`RETRY_TEMPERATURE`], and the configured
/// seed (0 when unset) plus the attempt number. The same request would only repeat the
/// rejected output, and this sequence is itself reproducible.
pub fn retry_sampling(configured: &Sampling, attempt: u32) -> Sampling {
    Sampling {
        temperature: configured.temperature.max(RETRY_TEMPERATURE),
        seed: Some(
            configured
                .seed
                .unwrap_or(0)
                .wrapping_add(u64::from(attempt)),
        ),
    }
}

/// Counts keys in a row that ended with a backend error.
#[derive(Debug, Default)]
struct Breaker {
    consecutive_failed: AtomicU32,
    last_error: Mutex<String>,
}

impl Breaker {
    fn open(&self) -> bool {
        self.consecutive_failed.load(Ordering::Relaxed) >= MAX_CONSECUTIVE_FAILED_KEYS
    }

    /// Counts a failed key. A server that cannot be reached at all, or a model file that
    /// cannot be loaded, opens the breaker at once, because every other request would
    /// fail the same way.
    fn record(&self, record: &SummaryRecord) {
        if record.status == SummaryStatus::Failed {
            if matches!(
                record.reason.as_deref(),
                Some("connect" | "model_unavailable")
            ) {
                self.consecutive_failed
                    .store(MAX_CONSECUTIVE_FAILED_KEYS, Ordering::Relaxed);
            } else {
                self.consecutive_failed.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(detail) = &record.detail {
                *self.last_error.lock().expect("lock is not poisoned") = detail.clone();
            }
        } else {
            self.consecutive_failed.store(0, Ordering::Relaxed);
        }
    }
}

/// [`summarize_one`], unless the backend failed for the last keys in a row.
async fn summarize_guarded(
    job: Job,
    backend: &dyn SummaryBackend,
    summarizer: &Summarizer,
    settings: &StageSettings,
    breaker: &Breaker,
) -> (SummaryRecord, u32) {
    if breaker.open() {
        let mut record = new_record(&job, SummaryStatus::Failed, settings);
        record.reason = Some(BACKEND_UNAVAILABLE.to_string());
        record.detail = Some(format!(
            "not requested: the server could not be reached, or the last {MAX_CONSECUTIVE_FAILED_KEYS} abstracts all failed at the backend (last error: {}); check the server, the next run requests it again",
            breaker.last_error.lock().expect("lock is not poisoned")
        ));
        return (record, 0);
    }
    let (record, calls) = summarize_one(job, backend, summarizer, settings).await;
    if record.reason.as_deref() != Some(RejectReason::PromptTooLong.code()) {
        breaker.record(&record);
    }
    (record, calls)
}

/// Outcome of the last attempt of a key.
enum Attempt {
    Rejected(Rejection, Option<Completion>),
    Failed(BackendError),
}

/// Requests one key until it passes or the attempts run out. Returns the row and the
/// number of requests made.
async fn summarize_one(
    job: Job,
    backend: &dyn SummaryBackend,
    summarizer: &Summarizer,
    settings: &StageSettings,
) -> (SummaryRecord, u32) {
    let span = tracing::info_span!(
        "summary",
        proposal_id = job.proposal_id,
        summary_key = %&job.summary_key[..12]
    );
    async {
        let started = Instant::now();
        let prompt = match summarizer.prompt.render(&job.abstract_raw) {
            Ok(prompt) => prompt,
            Err(too_long) => {
                let rejection = Rejection {
                    reason: RejectReason::PromptTooLong,
                    detail: too_long.to_string(),
                };
                let attempt = Attempt::Rejected(rejection, None);
                return (failure_record(&job, attempt, 0, 0, started, settings), 0);
            }
        };
        let mut budget = summarizer.max_tokens;
        let mut last = None;
        let mut calls = 0;
        let mut sampling = settings.sampling.clone();
        for attempt in 1..=settings.max_attempts {
            calls = attempt;
            let request = CompletionRequest {
                prompt: prompt.clone(),
                schema: summarizer.schema.value.clone(),
                schema_name: SCHEMA_NAME.to_string(),
                max_tokens: budget,
                sampling: sampling.clone(),
            };
            match backend.complete(&request).await {
                Ok(completion) => match summarizer.checker.check(&completion, budget) {
                    Ok(summary) => {
                        tracing::info!(attempt, "summary accepted");
                        let record = ok_record(&job, summary, completion, attempt, budget, started, settings);
                        return (record, attempt);
                    }
                    Err(rejection) => {
                        tracing::warn!(proposal_id = job.proposal_id, attempt, reason = rejection.reason.code(), detail = %rejection.detail, "summary rejected");
                        let truncated = rejection.reason == RejectReason::Truncated;
                        if truncated {
                            budget = (budget * 2).min(summarizer.max_tokens * MAX_BUDGET_FACTOR);
                        }
                        last = Some((Attempt::Rejected(rejection, Some(completion)), request.max_tokens));
                        // The same request would give the same output again.
                        if backend.is_deterministic() && !truncated {
                            sampling = retry_sampling(&settings.sampling, attempt + 1);
                        }
                    }
                },
                Err(error) => {
                    tracing::warn!(proposal_id = job.proposal_id, attempt, code = error.code(), %error, "summary request failed");
                    last = Some((Attempt::Failed(error), budget));
                    if attempt < settings.max_attempts {
                        tokio::time::sleep(settings.retry_delay * 2u32.pow(attempt - 1)).await;
                    }
                }
            }
        }
        let (attempt, budget) = last.expect("max_attempts is at least 1");
        (failure_record(&job, attempt, calls, budget, started, settings), calls)
    }
    .instrument(span)
    .await
}

fn new_record(job: &Job, status: SummaryStatus, settings: &StageSettings) -> SummaryRecord {
    SummaryRecord {
        summary_key: job.summary_key.clone(),
        key: job.key.clone(),
        status,
        reason: None,
        detail: None,
        raw_output: None,
        finish_reason: None,
        summary: None,
        caption: None,
        attempts: job.earlier_attempts,
        elapsed_secs: 0.0,
        max_tokens: 0,
        prompt_tokens: None,
        completion_tokens: None,
        run_id: settings.run_id.clone(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }
}

fn with_completion(record: &mut SummaryRecord, completion: Completion) {
    record.finish_reason = Some(finish_reason_text(&completion));
    record.prompt_tokens = completion.prompt_tokens;
    record.completion_tokens = completion.completion_tokens;
    record.raw_output = Some(completion.text);
}

fn finish_reason_text(completion: &Completion) -> String {
    match &completion.finish_reason {
        super::backend::FinishReason::Stop => "stop".to_string(),
        super::backend::FinishReason::Length => "length".to_string(),
        super::backend::FinishReason::Other(other) => other.clone(),
    }
}

fn ok_record(
    job: &Job,
    summary: Summary,
    completion: Completion,
    calls: u32,
    budget: u32,
    started: Instant,
    settings: &StageSettings,
) -> SummaryRecord {
    let mut record = new_record(job, SummaryStatus::Ok, settings);
    with_completion(&mut record, completion);
    record.caption = Some(summary.caption());
    record.summary = Some(summary);
    record.attempts += calls;
    record.max_tokens = budget;
    record.elapsed_secs = started.elapsed().as_secs_f64();
    record
}

fn failure_record(
    job: &Job,
    attempt: Attempt,
    calls: u32,
    budget: u32,
    started: Instant,
    settings: &StageSettings,
) -> SummaryRecord {
    let (status, reason, detail, completion) = match attempt {
        Attempt::Rejected(rejection, completion) => (
            SummaryStatus::Rejected,
            rejection.reason.code().to_string(),
            rejection.detail,
            completion,
        ),
        Attempt::Failed(error) => (
            SummaryStatus::Failed,
            error.code().to_string(),
            error.to_string(),
            None,
        ),
    };
    let mut record = new_record(job, status, settings);
    if let Some(completion) = completion {
        with_completion(&mut record, completion);
    }
    record.reason = Some(reason);
    record.detail = Some(detail);
    record.attempts += calls;
    record.max_tokens = budget;
    record.elapsed_secs = started.elapsed().as_secs_f64();
    record
}

fn collect_outcomes(
    proposals: &[ProposalText],
    ids: &[String],
    requested: &HashSet<String>,
    cache: &SummaryCache,
    cache_only: bool,
) -> Vec<ProposalSummary> {
    proposals
        .iter()
        .zip(ids)
        .map(|(proposal, id)| {
            let record = cache.get(id).cloned();
            let source = match () {
                _ if !requested.contains(id) => OutcomeSource::Cache,
                _ if cache_only => OutcomeSource::Pending,
                _ => OutcomeSource::Backend,
            };
            ProposalSummary {
                proposal_id: proposal.proposal_id,
                summary_key: id.clone(),
                record,
                source,
            }
        })
        .collect()
}

fn count_outcomes(outcomes: &[ProposalSummary], counts: &mut BTreeMap<&'static str, u64>) {
    let mut seen = HashSet::new();
    for outcome in outcomes {
        if !seen.insert(&outcome.summary_key) {
            continue;
        }
        let status = outcome.record.as_ref().map(|r| r.status);
        let name = match (outcome.source, status) {
            (OutcomeSource::Cache, _) => "from_cache",
            (OutcomeSource::Pending, _) => "pending",
            (OutcomeSource::Backend, Some(SummaryStatus::Ok)) => "ok",
            (OutcomeSource::Backend, Some(SummaryStatus::Rejected)) => "rejected",
            (OutcomeSource::Backend, _) => "failed",
        };
        *counts.entry(name).or_default() += 1;
        if outcome.source == OutcomeSource::Backend {
            *counts.entry("requested").or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests;
