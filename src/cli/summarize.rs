//! `paperclip summarize`: the summary stage over one catalog file, printed per proposal.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use paperclip::summaries::prompt::PromptTemplate;
use paperclip::summaries::stage::{OutcomeSource, summarize_proposals};
use paperclip::summaries::{
    ProposalSummary, ProposalText, Sampling, StageSettings, Summarizer, SummaryCache, SummaryStatus,
};
use serde::Serialize;

use super::commands::print_value;
use super::{GlobalArgs, SummarizeArgs};

/// Output of the command with `--json`.
#[derive(Debug, Serialize)]
struct SummarizeReport {
    model_id: String,
    prompt: String,
    prompt_sha256: String,
    schema_sha256: String,
    max_tokens: u32,
    cache: String,
    counts: BTreeMap<&'static str, u64>,
    proposals: Vec<ProposalLine>,
}

/// One proposal's outcome.
#[derive(Debug, Serialize)]
struct ProposalLine {
    proposal_id: i64,
    /// `ok`, `rejected`, `failed` or `pending`.
    status: String,
    /// `cache` when an earlier run's summary was reused, `backend` when requested now.
    source: &'static str,
    caption: Option<String>,
    objects_and_phenomena: Option<Vec<String>>,
    science_use_cases: Option<Vec<String>>,
    reason: Option<String>,
    detail: Option<String>,
    attempts: u32,
    summary_key: String,
}

pub async fn summarize(global: &GlobalArgs, args: &SummarizeArgs) -> Result<()> {
    let temperature = args.temperature;
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        bail!("--temperature {temperature} is outside 0..=2; use 0 for greedy decoding");
    }

    let proposals = read_catalog(&args.catalog, args.limit)?;
    let backend = super::llm::backend(&args.llm)?;
    let summarizer = Summarizer::with_prompt(prompt_template(args.prompt.as_deref())?)?;
    let mut cache = SummaryCache::open(&global.data_dir).await?;
    let settings = StageSettings {
        concurrency: usize::try_from(args.llm.concurrency).unwrap_or(1),
        max_attempts: args.max_attempts,
        sampling: Sampling {
            // Adding 0.0 turns -0.0 into 0.0, so both give the same cache key.
            temperature: temperature + 0.0,
            seed: args.seed,
        },
        retry_delay: Duration::from_secs(1),
        cache_only: false,
        run_id: paperclip::pipeline::run::new_run_id(),
    };
    let outcome = summarize_proposals(
        &proposals,
        backend.as_ref(),
        &mut cache,
        &summarizer,
        &settings,
    )
    .await?;
    let report = SummarizeReport {
        model_id: backend.model_id(),
        prompt: summarizer.prompt.name.clone(),
        prompt_sha256: summarizer.prompt.sha256.clone(),
        schema_sha256: summarizer.schema.sha256.clone(),
        max_tokens: summarizer.max_tokens,
        cache: cache.dir().display().to_string(),
        counts: outcome.counts.clone(),
        proposals: outcome.proposals.iter().map(line).collect(),
    };
    print_value(global, &report, || text(&report))?;
    let missing = report.proposals.iter().filter(|p| p.status != "ok").count();
    if missing > 0 {
        bail!(
            "{missing} of {} proposal(s) have no summary; the reasons are listed above and kept in {}, and a rerun retries them",
            report.proposals.len(),
            report.cache
        );
    }
    Ok(())
}

/// Reads the `--prompt` template, or returns the built-in one.
fn prompt_template(path: Option<&Path>) -> Result<PromptTemplate> {
    let Some(path) = path else {
        return Ok(PromptTemplate::current());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the prompt template {}", path.display()))?;
    Ok(PromptTemplate::parse(&path.display().to_string(), &text)?)
}

fn read_catalog(path: &Path, limit: Option<u64>) -> Result<Vec<ProposalText>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the catalog {}", path.display()))?;
    let is_phase2 = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("pro"));
    let proposals = if is_phase2 {
        vec![
            paperclip_catalog::parse_phase2_pro(&bytes).with_context(|| {
                format!("{} is not a readable Phase II .pro file", path.display())
            })?,
        ]
    } else {
        let catalog = paperclip_catalog::parse_abstracts_cat(&bytes);
        for skip in &catalog.skipped {
            // Told to the user: a record left out must not vanish from the counts silently.
            eprintln!(
                "skipped catalog line {} (proposal {}): {}",
                skip.line,
                skip.id.as_deref().unwrap_or("unknown"),
                skip.reason
            );
        }
        catalog.proposals
    };
    if proposals.is_empty() {
        bail!(
            "{} contains no proposal record; pass an abstracts.cat catalog or a Phase II .pro file",
            path.display()
        );
    }
    let limit = limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    Ok(proposals
        .into_iter()
        .take(limit)
        .map(|p| ProposalText {
            proposal_id: i64::from(p.id),
            abstract_raw: p.abstract_raw,
        })
        .collect())
}

fn line(outcome: &ProposalSummary) -> ProposalLine {
    let record = outcome.record.as_ref();
    let summary = outcome.summary();
    ProposalLine {
        proposal_id: outcome.proposal_id,
        status: record.map_or("pending", |r| r.status.as_str()).to_string(),
        source: match outcome.source {
            OutcomeSource::Cache => "cache",
            OutcomeSource::Backend => "backend",
            OutcomeSource::Pending => "pending",
        },
        caption: summary.map(paperclip::summaries::Summary::caption),
        objects_and_phenomena: summary.map(|s| s.objects_and_phenomena.clone()),
        science_use_cases: summary.map(|s| s.science_use_cases.clone()),
        reason: record.and_then(|r| r.reason.clone()),
        detail: record
            .filter(|r| r.status != SummaryStatus::Ok)
            .and_then(|r| r.detail.clone()),
        attempts: record.map_or(0, |r| r.attempts),
        summary_key: outcome.summary_key.clone(),
    }
}

fn text(report: &SummarizeReport) -> String {
    let mut out = String::new();
    for proposal in &report.proposals {
        let description = match (&proposal.caption, &proposal.reason) {
            (Some(caption), _) => caption.clone(),
            (None, reason) => format!(
                "{}: {}",
                reason.as_deref().unwrap_or("no summary"),
                proposal.detail.as_deref().unwrap_or("")
            ),
        };
        out.push_str(&format!(
            "{:>6}  {:<8} {:<7}  {description}\n",
            proposal.proposal_id, proposal.status, proposal.source
        ));
    }
    let count = |name| report.counts.get(name).copied().unwrap_or(0);
    out.push_str(&format!(
        "{} proposal(s) with {}: {} from the cache, {} ok, {} rejected, {} failed, {} attempt(s); cache {}",
        count("proposals"),
        report.model_id,
        count("from_cache"),
        count("ok"),
        count("rejected"),
        count("failed"),
        count("backend_calls"),
        report.cache
    ));
    out
}
