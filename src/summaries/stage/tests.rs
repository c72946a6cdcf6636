use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::*;
use crate::summaries::backend::FinishReason;
use crate::summaries::prompt::MAX_PROMPT_BYTES;

const GOOD: &str = r#"{"objects_and_phenomena": ["dwarf galaxies"], "science_use_cases": ["measure star formation histories"]}"#;
const SIX_ITEMS: &str = r#"{"objects_and_phenomena": ["a1", "b2", "c3", "d4", "e5", "f6"], "science_use_cases": ["x"]}"#;

/// One scripted reply of the test double.
enum Reply {
    Text(&'static str, FinishReason),
    Unreachable,
    ServerError,
}

/// Test double of a language model: answers each request with the next scripted reply
/// for the abstract marker the prompt contains, and records every request.
#[derive(Default)]
struct ScriptedBackend {
    replies: Mutex<HashMap<&'static str, VecDeque<Reply>>>,
    requests: Mutex<Vec<(String, u32)>>,
    samplings: Mutex<Vec<Sampling>>,
    deterministic: bool,
}

impl ScriptedBackend {
    fn script(self, marker: &'static str, replies: Vec<Reply>) -> Self {
        self.replies.lock().unwrap().insert(marker, replies.into());
        self
    }

    fn calls(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn budgets(&self) -> Vec<u32> {
        self.requests.lock().unwrap().iter().map(|r| r.1).collect()
    }
}

#[async_trait::async_trait]
impl SummaryBackend for ScriptedBackend {
    fn model_id(&self) -> String {
        "test:scripted".to_string()
    }

    fn is_deterministic(&self) -> bool {
        self.deterministic
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, BackendError> {
        let mut replies = self.replies.lock().unwrap();
        let (marker, queue) = replies
            .iter_mut()
            .find(|(marker, _)| request.prompt.contains(*marker))
            .expect("every prompt has a scripted abstract");
        self.requests
            .lock()
            .unwrap()
            .push((marker.to_string(), request.max_tokens));
        self.samplings
            .lock()
            .unwrap()
            .push(request.sampling.clone());
        match queue
            .pop_front()
            .unwrap_or(Reply::Text(GOOD, FinishReason::Stop))
        {
            Reply::Text(text, finish_reason) => Ok(Completion {
                text: text.to_string(),
                finish_reason,
                prompt_tokens: Some(300),
                completion_tokens: Some(30),
                elapsed_secs: 0.01,
            }),
            Reply::Unreachable => Err(BackendError::Connect {
                url: "http://127.0.0.1:9/v1/chat/completions".into(),
                detail: "connection refused".into(),
            }),
            Reply::ServerError => Err(BackendError::Http {
                url: "http://127.0.0.1:9/v1/chat/completions".into(),
                status: 500,
                body_excerpt: "internal error".into(),
            }),
        }
    }
}

fn settings() -> StageSettings {
    StageSettings {
        concurrency: 2,
        max_attempts: 3,
        sampling: Sampling::default(),
        retry_delay: Duration::from_millis(1),
        cache_only: false,
        run_id: "test-run".into(),
    }
}

fn proposal(id: i64, marker: &str) -> ProposalText {
    ProposalText {
        proposal_id: id,
        abstract_raw: format!(" We observe {marker} with care."),
    }
}

async fn run(
    proposals: &[ProposalText],
    backend: &ScriptedBackend,
    data_dir: &std::path::Path,
    settings: &StageSettings,
) -> StageOutcome {
    let mut cache = SummaryCache::open(data_dir).await.unwrap();
    let summarizer = Summarizer::current().unwrap();
    summarize_proposals(proposals, backend, &mut cache, &summarizer, settings)
        .await
        .unwrap()
}

fn status(outcome: &StageOutcome, index: usize) -> (SummaryStatus, Option<&str>, u32) {
    let record = outcome.proposals[index].record.as_ref().unwrap();
    (record.status, record.reason.as_deref(), record.attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_keys_cached_after_retries() {
    let dir = tempfile::tempdir().unwrap();
    let backend = ScriptedBackend::default()
        .script("alpha", vec![Reply::Text(SIX_ITEMS, FinishReason::Stop)])
        .script("beta", vec![Reply::Unreachable])
        .script("gamma", vec![]);
    let proposals = [
        proposal(1, "alpha"),
        proposal(2, "beta"),
        proposal(3, "gamma"),
    ];
    let first = run(&proposals, &backend, dir.path(), &settings()).await;
    assert_eq!(backend.calls(), 5);
    for index in 0..3 {
        assert_eq!(status(&first, index).0, SummaryStatus::Ok);
    }
    assert_eq!(status(&first, 0).2, 2, "one rejection, then ok");
    assert_eq!(status(&first, 1).2, 2, "one backend error, then ok");
    assert_eq!(first.counts["ok"], 3);
    assert_eq!(first.counts["backend_calls"], 5);
    let caption = first.proposals[2].summary().unwrap().caption();
    assert_eq!(caption, "dwarf galaxies; measure star formation histories");

    let second = run(&proposals, &backend, dir.path(), &settings()).await;
    assert_eq!(backend.calls(), 5, "cached ok keys make no request");
    assert_eq!(second.counts["from_cache"], 3);
    assert!(
        second
            .proposals
            .iter()
            .all(|p| p.source == OutcomeSource::Cache)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_recorded_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let bad = || Reply::Text(SIX_ITEMS, FinishReason::Stop);
    let backend = ScriptedBackend::default()
        .script("alpha", vec![bad(), bad(), bad(), bad(), bad(), bad()])
        .script("gamma", vec![]);
    let proposals = [proposal(1, "alpha"), proposal(3, "gamma")];
    let first = run(&proposals, &backend, dir.path(), &settings()).await;
    assert_eq!(
        status(&first, 0),
        (SummaryStatus::Rejected, Some("schema_violation"), 3)
    );
    let record = first.proposals[0].record.as_ref().unwrap();
    assert_eq!(record.raw_output.as_deref(), Some(SIX_ITEMS));
    assert!(
        record
            .detail
            .as_deref()
            .unwrap()
            .contains("/objects_and_phenomena")
    );
    assert_eq!(status(&first, 1).0, SummaryStatus::Ok, "the run goes on");
    assert_eq!(first.counts["rejected"], 1);

    let second = run(&proposals, &backend, dir.path(), &settings()).await;
    assert_eq!(backend.calls(), 3 + 1 + 3);
    assert_eq!(
        status(&second, 0),
        (SummaryStatus::Rejected, Some("schema_violation"), 6),
        "attempts add up over runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_output_doubles_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cut = || Reply::Text(r#"{"objects_and_phenomena": ["a"#, FinishReason::Length);
    let backend = ScriptedBackend::default().script("alpha", vec![cut(), cut(), cut()]);
    let outcome = run(&[proposal(1, "alpha")], &backend, dir.path(), &settings()).await;
    let budget = max_tokens();
    assert_eq!(backend.budgets(), [budget, budget * 2, budget * 4]);
    let record = outcome.proposals[0].record.as_ref().unwrap();
    assert_eq!(record.reason.as_deref(), Some("truncated"));
    assert!(
        record
            .detail
            .as_deref()
            .unwrap()
            .contains("/objects_and_phenomena/0")
    );
    assert_eq!(record.finish_reason.as_deref(), Some("length"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_abstracts_share_request() {
    let dir = tempfile::tempdir().unwrap();
    let backend = ScriptedBackend::default().script("alpha", vec![]);
    let proposals = [proposal(1, "alpha"), proposal(2, "alpha")];
    let outcome = run(&proposals, &backend, dir.path(), &settings()).await;
    assert_eq!(backend.calls(), 1);
    assert_eq!(outcome.counts["keys"], 1);
    assert_eq!(outcome.counts["proposals"], 2);
    assert_eq!(
        outcome.proposals[0].summary_key,
        outcome.proposals[1].summary_key
    );
    assert!(outcome.proposals[1].summary().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_only_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backend = ScriptedBackend::default().script("alpha", vec![]);
    let plan = StageSettings {
        cache_only: true,
        ..settings()
    };
    let outcome = run(&[proposal(1, "alpha")], &backend, dir.path(), &plan).await;
    assert_eq!(backend.calls(), 0);
    assert_eq!(outcome.counts["pending"], 1);
    assert!(outcome.proposals[0].record.is_none());
    let table = crate::summaries::table::summaries_batch(&outcome.proposals);
    let status = table.column_by_name("status").unwrap();
    let status = status
        .as_any()
        .downcast_ref::<datafusion::arrow::array::StringArray>()
        .unwrap();
    assert_eq!(status.value(0), "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_stops_after_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let markers = ["k00", "k01", "k02"];
    let mut backend = ScriptedBackend::default();
    for marker in markers {
        backend = backend.script(marker, vec![Reply::Unreachable]);
    }
    let proposals: Vec<ProposalText> = (0..)
        .zip(markers)
        .map(|(id, marker)| proposal(id, marker))
        .collect();
    let one_at_a_time = StageSettings {
        concurrency: 1,
        max_attempts: 1,
        ..settings()
    };
    let outcome = run(&proposals, &backend, dir.path(), &one_at_a_time).await;
    assert_eq!(backend.calls(), 1);
    let last = outcome.proposals.last().unwrap().record.as_ref().unwrap();
    assert_eq!(last.reason.as_deref(), Some(BACKEND_UNAVAILABLE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_server_stops_requests() {
    let dir = tempfile::tempdir().unwrap();
    let markers = [
        "k00", "k01", "k02", "k03", "k04", "k05", "k06", "k07", "k08", "k09", "k10", "k11",
    ];
    let mut backend = ScriptedBackend::default();
    for marker in markers {
        backend = backend.script(marker, vec![Reply::ServerError]);
    }
    let proposals: Vec<ProposalText> = (0..)
        .zip(markers)
        .map(|(id, marker)| proposal(id, marker))
        .collect();
    let one_at_a_time = StageSettings {
        concurrency: 1,
        max_attempts: 1,
        ..settings()
    };
    let outcome = run(&proposals, &backend, dir.path(), &one_at_a_time).await;
    assert_eq!(backend.calls(), MAX_CONSECUTIVE_FAILED_KEYS as usize);
    assert_eq!(outcome.counts["failed"], markers.len() as u64);
    let last = outcome.proposals.last().unwrap().record.as_ref().unwrap();
    assert_eq!(last.reason.as_deref(), Some(BACKEND_UNAVAILABLE));
    assert!(last.detail.as_deref().unwrap().contains("internal error"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_prompt_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let backend = ScriptedBackend::default();
    let huge = ProposalText {
        proposal_id: 1,
        abstract_raw: "x".repeat(MAX_PROMPT_BYTES),
    };
    let outcome = run(&[huge], &backend, dir.path(), &settings()).await;
    assert_eq!(backend.calls(), 0);
    assert_eq!(
        status(&outcome, 0),
        (SummaryStatus::Rejected, Some("prompt_too_long"), 0)
    );
}

#[test]
fn zero_settings_rejected() {
    let zero = StageSettings {
        concurrency: 0,
        ..settings()
    };
    assert!(
        zero.check()
            .unwrap_err()
            .to_string()
            .contains("concurrency = 0")
    );
    let none = StageSettings {
        max_attempts: 0,
        ..settings()
    };
    assert!(
        none.check()
            .unwrap_err()
            .to_string()
            .contains("max_attempts = 0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deterministic_backend_is_retried_with_seeded_sampling() {
    let dir = tempfile::tempdir().unwrap();
    let backend = ScriptedBackend {
        deterministic: true,
        ..ScriptedBackend::default()
    }
    .script("alpha", vec![Reply::Text(SIX_ITEMS, FinishReason::Stop)]);
    let proposals = [proposal(1, "alpha")];
    let mut settings = settings();
    settings.sampling.seed = Some(40);

    let outcome = run(&proposals, &backend, dir.path(), &settings).await;

    assert_eq!(status(&outcome, 0), (SummaryStatus::Ok, None, 2));
    let samplings = backend.samplings.lock().unwrap().clone();
    assert_eq!(
        samplings[0], settings.sampling,
        "the first attempt is as configured"
    );
    assert_eq!(
        samplings[1],
        Sampling {
            temperature: RETRY_TEMPERATURE,
            seed: Some(42),
        }
    );
}
