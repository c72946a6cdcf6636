//! The summaries stage of a run: LLM summaries of the selected proposals' abstracts, made
//! before the SQL models and handed to them as the `summaries` table.
//!
//! Which proposals: those inside the cycle range that have at least one observation in
//! the archive state, since only they can have samples.
//!
//! Invariants:
//! - with `[summaries]` off, the stage does nothing and the models see an empty
//!   `summaries` table. The stage inputs of the models are then those of a pipeline
//!   without summaries;
//! - with it on, the models' stage inputs include the prompt and schema hashes, the
//!   backend's model id and the sampling settings, so changing any of them makes the
//!   models stale. They also record whether every proposal has an `ok` summary in the cache;
//!   when one does not, the value names the run's time, so every run retries the missing
//!   summaries until they exist;
//! - a summary that is rejected or failed never fails the run (a summary cache that cannot
//!   be read or written does). The proposal is recorded as a skip of stage `summaries` with
//!   the reason code, and `sql/samples.sql` falls back to the abstract caption;
//! - a plan makes no request: it uses the cache and counts what a run would request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use paperclip_catalog::Proposal;

use super::config::{HTTP_BACKEND, PipelineConfig, SummariesSection};
use super::skips::Skip;
use super::state::{ArchiveState, id_set};
use crate::error::{PipelineError, Result};
use crate::summaries::http::{HttpBackend, HttpBackendConfig};
use crate::summaries::local::{LocalBackend, LocalBackendConfig};
use crate::summaries::stage::{OutcomeSource, summarize_proposals};
use crate::summaries::table::summaries_batch;
use crate::summaries::{
    ProposalText, Sampling, StageSettings, Summarizer, SummaryBackend, SummaryCache, SummaryStatus,
};

pub(super) use crate::summaries::table::empty_summaries_batch;

/// Wait after a backend error before the stage's next attempt; the HTTP backend has
/// already retried transient errors with its own backoff by then.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Everything the stage needs, prepared before the freshness check of the stages.
pub(super) struct SummaryStage {
    backend: Arc<dyn SummaryBackend>,
    summarizer: Summarizer,
    sampling: Sampling,
    section: SummariesSection,
    proposals: Vec<ProposalText>,
    cache: SummaryCache,
}

impl SummaryStage {
    /// Builds the backend and reads the cache; `None` when `[summaries]` is off.
    pub(super) async fn prepare(
        config: &PipelineConfig,
        data_dir: &std::path::Path,
        kept: &[Proposal],
        state: &ArchiveState,
        plan_only: bool,
    ) -> Result<Option<Self>> {
        let section = &config.summaries;
        if !section.enabled {
            return Ok(None);
        }
        let observed = id_set(&state.observations, "proposal_id")?;
        let proposals = kept
            .iter()
            .filter(|p| observed.contains(&i64::from(p.id)))
            .map(|p| ProposalText {
                proposal_id: i64::from(p.id),
                abstract_raw: p.abstract_raw.clone(),
            })
            .collect();
        Ok(Some(Self {
            backend: backend(config, plan_only)?,
            summarizer: Summarizer::with_prompt(
                crate::pipeline::config::summary_prompt(config).map_err(PipelineError::Invalid)?,
            )?,
            sampling: Sampling {
                // Adding 0.0 turns -0.0 into 0.0, so both give the same cache key.
                temperature: section.temperature + 0.0,
                seed: section.seed,
            },
            section: section.clone(),
            proposals,
            cache: SummaryCache::open(data_dir).await?,
        }))
    }

    /// Parts of the models stage inputs; see the module documentation.
    pub(super) fn input_parts(&self, now: chrono::DateTime<chrono::Utc>) -> Vec<(String, String)> {
        let model_id = self.backend.model_id();
        let identity = serde_json::json!({
            "prompt": self.summarizer.prompt.name,
            "prompt_sha256": self.summarizer.prompt.sha256,
            "schema_sha256": self.summarizer.schema.sha256,
            "model_id": model_id,
            "sampling": self.sampling,
        });
        let missing = self
            .proposals
            .iter()
            .filter(|p| {
                let key = self
                    .summarizer
                    .key(&p.abstract_raw, &model_id, &self.sampling);
                self.cache
                    .get(&key.id())
                    .is_none_or(|r| r.status != SummaryStatus::Ok)
            })
            .count();
        let cache = if missing == 0 {
            "complete".to_string()
        } else {
            format!(
                "{missing} of {} proposal(s) without a summary as of {}",
                self.proposals.len(),
                now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            )
        };
        vec![
            ("summaries".to_string(), identity.to_string()),
            ("summaries.cache".to_string(), cache),
        ]
    }

    /// Summarizes the proposals (from the cache only when `plan_only`), records counts and
    /// skips, and returns the `summaries` table and the stage's reasons.
    pub(super) async fn run(
        mut self,
        plan_only: bool,
        run_id: &str,
        counts: &mut BTreeMap<String, u64>,
        skips: &mut Vec<Skip>,
    ) -> Result<(RecordBatch, Vec<String>)> {
        let settings = StageSettings {
            concurrency: self.section.concurrency,
            max_attempts: self.section.max_attempts,
            sampling: self.sampling.clone(),
            retry_delay: RETRY_DELAY,
            cache_only: plan_only,
            run_id: run_id.to_string(),
        };
        let outcome = summarize_proposals(
            &self.proposals,
            self.backend.as_ref(),
            &mut self.cache,
            &self.summarizer,
            &settings,
        )
        .await?;
        for (name, value) in &outcome.counts {
            counts.insert(format!("summaries_{name}"), *value);
        }
        for proposal in &outcome.proposals {
            if let Some(skip) = skip_for(proposal) {
                skips.push(skip);
            }
        }
        let reason = describe(&outcome.counts, &self.backend.model_id());
        Ok((summaries_batch(&outcome.proposals), vec![reason]))
    }
}

/// Builds the skip that records a proposal without a summary; `None` for an `ok` one.
fn skip_for(proposal: &crate::summaries::ProposalSummary) -> Option<Skip> {
    let (reason, detail) = match &proposal.record {
        Some(record) if record.status == SummaryStatus::Ok => return None,
        Some(record) => (
            record.reason.clone().unwrap_or_else(|| "unknown".into()),
            format!(
                "{} after {} attempt(s): {}; the caption falls back to the abstract (summary_key {})",
                record.status.as_str(),
                record.attempts,
                record.detail.as_deref().unwrap_or(""),
                proposal.summary_key
            ),
        ),
        None if proposal.source == OutcomeSource::Pending => (
            "not_requested".to_string(),
            "a plan makes no summary requests; a run would request this one".to_string(),
        ),
        None => ("unknown".to_string(), String::new()),
    };
    Some(Skip::new(
        "summaries",
        proposal.proposal_id.to_string(),
        Some(proposal.proposal_id),
        reason,
        detail,
    ))
}

fn describe(counts: &BTreeMap<&'static str, u64>, model_id: &str) -> String {
    let count = |name| counts.get(name).copied().unwrap_or(0);
    format!(
        "{} proposal(s) with {model_id}: {} from the cache, {} ok, {} rejected, {} failed, {} pending, {} attempt(s)",
        count("proposals"),
        count("from_cache"),
        count("ok"),
        count("rejected"),
        count("failed"),
        count("pending"),
        count("backend_calls"),
    )
}

/// Builds the backend that `[summaries]` names (the config check accepts `local` and
/// `http` only).
fn backend(config: &PipelineConfig, plan_only: bool) -> Result<Arc<dyn SummaryBackend>> {
    let section = &config.summaries;
    if section.backend_kind() == HTTP_BACKEND {
        return http_backend(section, plan_only);
    }
    let config = LocalBackendConfig {
        model_path: config.summary_model_path(),
        threads: section.local_threads(),
    };
    let backend = LocalBackend::new(config)
        .map_err(|error| PipelineError::Invalid(format!("summaries: {error}")))?;
    Ok(Arc::new(backend))
}

/// Builds the `http` backend. A plan sends no request, so it does not need the API key.
fn http_backend(section: &SummariesSection, plan_only: bool) -> Result<Arc<dyn SummaryBackend>> {
    let mut config =
        HttpBackendConfig::new(section.server_url().to_string(), section.model.clone());
    config.api_key_env = section.api_key_env.clone();
    config.timeout_secs = section.timeout_secs;
    config.max_concurrency = section.concurrency;
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .or_else(|| plan_only.then(|| "not-needed-for-a-plan".to_string()))
    };
    let backend = HttpBackend::with_env(config, env).map_err(|error| {
        PipelineError::Invalid(format!(
            "summaries: cannot set up the HTTP backend: {error}"
        ))
    })?;
    Ok(Arc::new(backend))
}
