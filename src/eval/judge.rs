//! LLM-judged image retrieval. For each text query, each method retrieves the top-k
//! images of a split: every CLIP checkpoint by image embedding, and a TF-IDF ranking of
//! the abstracts. A language model reads each hit's proposal abstract and the query and
//! decides whether the observations could be relevant to the query. This is the
//! relevance test of Mishra-Sharma, Song and Thaler, "PAPERCLIP" (arXiv:2403.08851), with
//! its ten queries.
//!
//! Invariants:
//! - A method's score is the fraction of its judged (query, image) pairs answered
//!   relevant. Every hit is one pair, so two images of one proposal count twice.
//! - A pair whose output does not parse as the schema, or whose request failed, is
//!   unjudged: counted apart, never as relevant or not relevant.
//! - Each distinct (query, abstract) prompt goes to the judge once per run, and its answer
//!   serves every hit with that abstract, across methods too. Requests are greedy and
//!   seeded, so the same prompt would get the same answer again.
//! - CLIP hits are the exact top-k by cosine similarity; ties, like TF-IDF ties, keep
//!   split order.

mod report;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use serde::Deserialize;
use tracing::Instrument;

pub use report::{JudgeReport, JudgedHit, MethodKind, MethodScore, QueryScore, Tally};

use super::embeddings::exact_top_k;
use super::error::{EvalError, io};
use super::model::{EvalModel, ModelOptions};
use super::report::one_line;
use super::tfidf::TfidfIndex;
use super::{parse_dataset, training_overlap};
use crate::dataset::versions::VersionRecord;
use crate::summaries::{
    BackendError, Completion, CompletionRequest, FinishReason, Sampling, SummaryBackend,
};
use crate::train::data::{SplitData, open_version};

/// The ten queries of the PAPERCLIP relevance test.
pub const PAPER_QUERIES: [&str; 10] = [
    "globular cluster",
    "dwarf galaxy",
    "SN1987A",
    "strong lensing",
    "galaxy clusters",
    "interstellar medium",
    "dark matter",
    "spiral galaxies",
    "lyman alpha",
    "comets",
];

/// Path of the judge's prompt template, relative to the repository root.
pub const PROMPT_PATH: &str = "prompts/judge-v1.txt";
/// The judge's prompt template, as built into the binary.
pub const PROMPT_TEMPLATE: &str = include_str!("../../prompts/judge-v1.txt");
/// The placeholder the query replaces.
pub const QUERY_PLACEHOLDER: &str = "{{query}}";
/// The placeholder the abstract replaces.
pub const ABSTRACT_PLACEHOLDER: &str = "{{abstract}}";
/// Name of the output schema, for servers that require one.
pub const SCHEMA_NAME: &str = "relevance_judgment";
/// Token budget of one answer. `{"relevant": false}` is about 8 tokens, so 32 leaves room
/// for whitespace.
pub const MAX_TOKENS: u32 = 32;
/// Label of the TF-IDF baseline in reports.
pub const TFIDF_LABEL: &str = "tf-idf";

/// Settings of a judge run.
#[derive(Debug, Clone)]
pub struct JudgeOptions {
    /// The paperclip data directory.
    pub data_dir: PathBuf,
    /// `NAME` (latest version) or `NAME@N`.
    pub dataset: String,
    /// The split to retrieve from, usually `val`.
    pub split: String,
    /// The sample field holding the proposal abstract, shown to the judge and ranked by
    /// TF-IDF; `caption_paper` in paperclip datasets.
    pub abstract_field: String,
    /// `(label, checkpoint)` pairs, in report order.
    pub checkpoints: Vec<(String, String)>,
    /// Vocabulary and resize settings shared by the checkpoints.
    pub model: ModelOptions,
    /// Images per forward pass.
    pub batch_size: usize,
    /// The text queries, in report order.
    pub queries: Vec<String>,
    /// Images retrieved and judged per query and method.
    pub k: usize,
    /// Also judge the TF-IDF ranking of the abstracts, after the checkpoints.
    pub tfidf: bool,
    /// Seed of the judge's sampler.
    pub seed: u64,
    /// Judge requests in flight at once.
    pub concurrency: usize,
}

/// Builds the output schema: an object, because servers reject a top-level boolean.
pub fn judge_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {"relevant": {"type": "boolean"}},
        "required": ["relevant"],
        "additionalProperties": false
    })
}

/// Fills the template's placeholders with `query` and `abstract_text`. Rendering is one
/// pass over the template, so placeholder text inside the abstract is copied unchanged.
pub fn render_prompt(query: &str, abstract_text: &str) -> String {
    let mut out = String::with_capacity(PROMPT_TEMPLATE.len() + abstract_text.len());
    let mut rest = PROMPT_TEMPLATE;
    loop {
        let next = [
            (rest.find(QUERY_PLACEHOLDER), QUERY_PLACEHOLDER, query),
            (
                rest.find(ABSTRACT_PLACEHOLDER),
                ABSTRACT_PLACEHOLDER,
                abstract_text,
            ),
        ]
        .into_iter()
        .filter_map(|(at, placeholder, value)| Some((at?, placeholder, value)))
        .min_by_key(|(at, _, _)| *at);
        let Some((at, placeholder, value)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        out.push_str(value);
        rest = &rest[at + placeholder.len()..];
    }
}

/// The answer the schema allows.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    relevant: bool,
}

/// Reads the judge's answer from a completion, or returns why it is unusable.
pub fn parse_answer(completion: &Completion) -> Result<bool, String> {
    let text = completion.text.trim();
    if completion.finish_reason == FinishReason::Length {
        return Err(format!(
            "the output was cut at the budget of {MAX_TOKENS} tokens: {:?}",
            one_line(text, 120)
        ));
    }
    serde_json::from_str::<Answer>(text)
        .map(|answer| answer.relevant)
        .map_err(|error| {
            format!(
                "the output is not {{\"relevant\": true or false}} ({error}): {:?}",
                one_line(text, 120)
            )
        })
}

/// Queries of a query file's text: one per line, blank lines and `#` comments skipped.
/// Fails on an empty list or a repeated query, naming it.
pub fn parse_queries(text: &str, origin: &str) -> Result<Vec<String>, EvalError> {
    let mut queries: Vec<String> = Vec::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (number, line) in text.lines().enumerate() {
        let query = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if query.is_empty() || query.starts_with('#') {
            continue;
        }
        // Both retrievals ignore case and spacing, so such repeats would be judged twice.
        if queries
            .iter()
            .any(|known| known.to_lowercase() == query.to_lowercase())
        {
            return Err(EvalError::Invalid(format!(
                "{origin}:{}: query {query:?} is listed twice; keep one",
                number + 1
            )));
        }
        queries.push(query);
    }
    if queries.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{origin} has no queries; write one query per line"
        )));
    }
    Ok(queries)
}

/// Reads a query file; see [`parse_queries`].
pub fn load_queries(path: &Path) -> Result<Vec<String>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    parse_queries(&text, &path.display().to_string())
}

/// The hits of one method: per query, `(sample index, similarity)`, best first.
struct Retrieval {
    label: String,
    kind: MethodKind,
    source: String,
    weights_sha256: Option<String>,
    hits: Vec<Vec<(usize, f64)>>,
}

/// Retrieves with every method, judges the hits through `backend` and returns the report.
/// `progress` gets a phase (a checkpoint label while embedding, `judge` while judging),
/// the items done and the items in all.
pub async fn judge(
    options: &JudgeOptions,
    backend: &dyn SummaryBackend,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<JudgeReport, EvalError> {
    check_options(options)?;
    let (name, version) = parse_dataset(&options.dataset)?;
    let record = open_version(&options.data_dir, name, version).await?;
    let data = SplitData::load(
        &options.data_dir,
        &record,
        &options.split,
        &options.abstract_field,
        0,
        None,
    )?;
    let mut warnings: Vec<String> = check_abstracts(&data, &options.abstract_field)?
        .into_iter()
        .collect();
    if data.samples.len() < options.k {
        warnings.push(format!(
            "the split has {} samples, fewer than k = {}: each method retrieves all of them",
            data.samples.len(),
            options.k
        ));
    }
    let mut retrievals = Vec::new();
    for (label, checkpoint) in &options.checkpoints {
        let span = tracing::info_span!("judge_method", method = %label);
        let (retrieval, model) = retrieve_clip(options, &record, label, checkpoint, progress)
            .instrument(span)
            .await?;
        let overlap = training_overlap(&options.data_dir, &options.abstract_field, &data, &model);
        warnings.extend(overlap.await?);
        retrievals.push(retrieval);
    }
    if options.tfidf {
        let _entered = tracing::info_span!("judge_method", method = TFIDF_LABEL).entered();
        retrievals.push(retrieve_tfidf(options, &data));
    }

    let (pairs, pair_of_hit) = distinct_pairs(&retrievals, &data);
    let answers = judge_pairs(options, backend, &pairs, &data, progress).await;
    let mut report = report::build(
        options,
        &record,
        &data,
        backend.model_id(),
        &retrievals,
        &pair_of_hit,
        &answers,
    );
    report.warnings = warnings;
    Ok(report)
}

/// Rejects an abstract field that is empty in every sample, since the judge would read
/// nothing; returns a warning when only some samples have none.
fn check_abstracts(data: &SplitData, field: &str) -> Result<Option<String>, EvalError> {
    let empty = data
        .samples
        .iter()
        .filter(|s| s.caption.trim().is_empty())
        .count();
    if empty == data.samples.len() {
        return Err(EvalError::Invalid(format!(
            "the field {field:?} is empty or null in every sample of split {:?}; give \
             --abstract-field the field that holds the proposal abstracts (caption_paper)",
            data.split
        )));
    }
    Ok((empty > 0).then(|| {
        format!(
            "{empty} of {} samples have an empty {field:?}; the judge reads an empty abstract \
             for them",
            data.samples.len()
        )
    }))
}

fn check_options(options: &JudgeOptions) -> Result<(), EvalError> {
    if options.checkpoints.is_empty() && !options.tfidf {
        return Err(EvalError::Invalid(
            "nothing to judge: give --checkpoint, or leave out --no-tfidf to judge the TF-IDF \
             baseline"
                .into(),
        ));
    }
    if options.k == 0 {
        return Err(EvalError::Invalid(
            "k = 0 retrieves nothing; give -k 1 or more (the PAPERCLIP test uses 10)".into(),
        ));
    }
    if options.queries.is_empty() {
        return Err(EvalError::Invalid(
            "no queries to judge; give a query file with one query per line".into(),
        ));
    }
    let mut labels: Vec<&str> = options.checkpoints.iter().map(|c| c.0.as_str()).collect();
    if options.tfidf {
        labels.push(TFIDF_LABEL);
    }
    for (i, label) in labels.iter().enumerate() {
        if labels[..i].contains(label) {
            return Err(EvalError::Invalid(format!(
                "two methods are labelled {label:?}; give each --checkpoint its own --label \
                 ({TFIDF_LABEL:?} is the TF-IDF baseline's)"
            )));
        }
    }
    Ok(())
}

/// Embeds the split's images and the queries with one checkpoint and keeps the top k;
/// returns the model too, for the training-overlap check.
async fn retrieve_clip(
    options: &JudgeOptions,
    record: &VersionRecord,
    label: &str,
    checkpoint: &str,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<(Retrieval, EvalModel), EvalError> {
    let model_options = ModelOptions {
        data_dir: Some(options.data_dir.clone()),
        ..options.model.clone()
    };
    let model = EvalModel::load(checkpoint, label, &model_options)?;
    let data = SplitData::load(
        &options.data_dir,
        record,
        &options.split,
        &options.abstract_field,
        0,
        model.resize_px,
    )?;
    let total = data.samples.len();
    // NOTE: embed_split also embeds every abstract, which retrieval does not need, so the
    // text tower's time is spent for nothing.
    let (images, _) = model.embed_split(&data, options.batch_size, &|done| {
        progress(label, done, total)
    })?;
    let queries = model.embed_texts(&options.queries, options.batch_size)?;
    let hits = options
        .queries
        .iter()
        .enumerate()
        .map(|(q, query)| {
            let _entered = tracing::info_span!("judge_retrieval", query = %query).entered();
            exact_top_k(&images, queries.row(q), options.k)
                .into_iter()
                .map(|(i, similarity)| (i, f64::from(similarity)))
                .collect()
        })
        .collect();
    let retrieval = Retrieval {
        label: label.to_string(),
        kind: MethodKind::Clip,
        source: checkpoint.to_string(),
        weights_sha256: Some(model.weights_sha256.clone()),
        hits,
    };
    Ok((retrieval, model))
}

/// Ranks the split's abstracts by TF-IDF similarity to each query and keeps the top k.
fn retrieve_tfidf(options: &JudgeOptions, data: &SplitData) -> Retrieval {
    let abstracts: Vec<&str> = data.samples.iter().map(|s| s.caption.as_str()).collect();
    let index = TfidfIndex::fit(&abstracts);
    let hits = options
        .queries
        .iter()
        .map(|query| {
            let _entered = tracing::info_span!("judge_retrieval", query = %query).entered();
            if !index.contains_any_term(query) {
                tracing::warn!(
                    query,
                    "no abstract contains a word of the query: no TF-IDF hits"
                );
            }
            // Samples sharing no word with the query are not hits; a query may get fewer
            // than k.
            let mut hits = index.top_k(query, options.k);
            hits.retain(|&(_, similarity)| similarity > 0.0);
            hits
        })
        .collect();
    Retrieval {
        label: TFIDF_LABEL.to_string(),
        kind: MethodKind::Tfidf,
        source: format!(
            "TF-IDF over the {} distinct {} texts of the split",
            index.distinct_texts(),
            options.abstract_field
        ),
        weights_sha256: None,
        hits,
    }
}

/// A prompt to judge: the query's position and a sample whose abstract it shows.
#[derive(Debug, Clone, Copy)]
struct Pair {
    query: usize,
    sample: usize,
}

/// Collects the distinct (query, abstract) pairs in first-hit order, and for every hit
/// (`[method][query][rank]`) the position of its pair.
fn distinct_pairs(retrievals: &[Retrieval], data: &SplitData) -> (Vec<Pair>, Vec<Vec<Vec<usize>>>) {
    let mut pairs = Vec::new();
    let mut position: HashMap<(usize, &str), usize> = HashMap::new();
    let pair_of_hit = retrievals
        .iter()
        .map(|retrieval| {
            retrieval
                .hits
                .iter()
                .enumerate()
                .map(|(query, hits)| {
                    hits.iter()
                        .map(|&(sample, _)| {
                            let abstract_text = data.samples[sample].caption.as_str();
                            *position.entry((query, abstract_text)).or_insert_with(|| {
                                pairs.push(Pair { query, sample });
                                pairs.len() - 1
                            })
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    (pairs, pair_of_hit)
}

/// Sends every pair to the judge, `options.concurrency` at a time; returns the answers in
/// pair order, each the relevance or the reason it is missing.
async fn judge_pairs(
    options: &JudgeOptions,
    backend: &dyn SummaryBackend,
    pairs: &[Pair],
    data: &SplitData,
    progress: &dyn Fn(&str, usize, usize),
) -> Vec<Result<bool, String>> {
    let sampling = Sampling {
        temperature: 0.0,
        seed: Some(options.seed),
    };
    let mut answers = Vec::with_capacity(pairs.len());
    let unreachable = AtomicUsize::new(0);
    let mut stream = futures::stream::iter(pairs)
        .map(|pair| {
            let query = options.queries[pair.query].as_str();
            let sample = &data.samples[pair.sample];
            let request = CompletionRequest {
                prompt: render_prompt(query, &sample.caption),
                schema: judge_schema(),
                schema_name: SCHEMA_NAME.to_string(),
                max_tokens: MAX_TOKENS,
                sampling: sampling.clone(),
            };
            let span = tracing::info_span!("judge_pair", query, proposal_id = sample.proposal_id);
            let unreachable = &unreachable;
            async move {
                if unreachable.load(Ordering::Relaxed) >= MAX_UNREACHABLE {
                    return Err(format!(
                        "not sent: the judge could not be reached for {MAX_UNREACHABLE} prompts \
                         in a row"
                    ));
                }
                let completion = backend.complete(&request).await;
                match &completion {
                    Err(BackendError::Connect { .. }) => {
                        unreachable.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => unreachable.store(0, Ordering::Relaxed),
                }
                let answer = answer(completion);
                if let Err(reason) = &answer {
                    tracing::warn!(query, proposal_id = sample.proposal_id, reason, "unjudged");
                }
                answer
            }
            .instrument(span)
        })
        .buffered(options.concurrency.max(1));
    progress("judge", 0, pairs.len());
    while let Some(answer) = stream.next().await {
        answers.push(answer);
        progress("judge", answers.len(), pairs.len());
    }
    answers
}

/// Consecutive prompts that could not reach the judge after which the rest are not sent.
const MAX_UNREACHABLE: usize = 3;

fn answer(completion: Result<Completion, BackendError>) -> Result<bool, String> {
    match completion {
        Ok(completion) => parse_answer(&completion),
        Err(error) => Err(format!("the judge request failed: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(text: &str, finish_reason: FinishReason) -> Completion {
        Completion {
            text: text.to_string(),
            finish_reason,
            prompt_tokens: None,
            completion_tokens: None,
            elapsed_secs: 0.0,
        }
    }

    #[test]
    fn prompt_contains_query_and_abstract_once() {
        let prompt = render_prompt("dark matter", "Category: Cosmology. Weak {{query}} lensing");

        assert!(prompt.contains("Query: \"dark matter\""), "{prompt}");
        assert!(
            prompt.contains("Abstract: \"Category: Cosmology. Weak {{query}} lensing\""),
            "{prompt}"
        );
        assert_eq!(prompt.matches("dark matter").count(), 1);
        assert!(!prompt.contains(ABSTRACT_PLACEHOLDER));
    }

    #[test]
    fn template_has_each_placeholder_once() {
        assert_eq!(PROMPT_TEMPLATE.matches(QUERY_PLACEHOLDER).count(), 1);
        assert_eq!(PROMPT_TEMPLATE.matches(ABSTRACT_PLACEHOLDER).count(), 1);
    }

    #[test]
    fn parse_answer_reads_schema_objects() {
        let parse = |text| parse_answer(&completion(text, FinishReason::Stop));

        assert_eq!(parse("{\"relevant\": true}"), Ok(true));
        assert_eq!(parse(" {\"relevant\":false}\n"), Ok(false));
        assert!(parse("true").is_err());
        assert!(parse("{\"relevant\": \"yes\"}").is_err());
        assert!(parse("{\"relevant\": true, \"why\": \"x\"}").is_err());
        assert!(parse("{\"relevant\": tr").is_err());
    }

    #[test]
    fn parse_answer_rejects_cut_output() {
        let cut = completion("{\"relevant\": true}", FinishReason::Length);

        let reason = parse_answer(&cut).unwrap_err();
        assert!(reason.contains("budget"), "{reason}");
    }

    #[test]
    fn schema_accepts_only_boolean_objects() {
        let schema = judge_schema();
        let validator = jsonschema::validator_for(&schema).unwrap();

        assert!(validator.is_valid(&serde_json::json!({"relevant": true})));
        assert!(!validator.is_valid(&serde_json::json!(true)));
        assert!(!validator.is_valid(&serde_json::json!({"relevant": 1})));
        assert!(!validator.is_valid(&serde_json::json!({})));
    }

    #[test]
    fn parse_queries_skips_comments_and_rejects_repeats() {
        let queries = parse_queries("# mine\n\n dark matter \ncomets\n", "q.txt").unwrap();
        assert_eq!(queries, ["dark matter", "comets"]);

        let error = parse_queries("comets\nComets\n", "q.txt").unwrap_err();
        assert!(error.to_string().contains("q.txt:2"), "{error}");
        let spaced = parse_queries("dark  cloud\nDark cloud\n", "q.txt").unwrap_err();
        assert!(spaced.to_string().contains("q.txt:2"), "{spaced}");
        let accented = parse_queries("galaxyé\nGALAXYÉ\n", "q.txt").unwrap_err();
        assert!(accented.to_string().contains("q.txt:2"), "{accented}");
        let bom = parse_queries("\u{feff}# comment\ncomets\n", "q.txt").unwrap();
        assert_eq!(bom, ["comets"]);
        assert!(parse_queries("# none\n", "q.txt").is_err());
    }

    #[test]
    fn paper_queries_parse_as_a_query_file() {
        let queries = parse_queries(&PAPER_QUERIES.join("\n"), "paper").unwrap();
        assert_eq!(queries.len(), 10);
    }
}
