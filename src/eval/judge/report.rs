//! The judge's report: scores per method and per query, every hit with its answer, and
//! the Markdown tables.

use serde::{Deserialize, Serialize};

use super::{JudgeOptions, PROMPT_PATH, PROMPT_TEMPLATE, Retrieval};
use crate::dataset::versions::VersionRecord;
use crate::eval::report::{markdown_text, one_line};
use crate::train::data::SplitData;

/// The ranking a method uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    /// Cosine similarity of CLIP image and query embeddings.
    Clip,
    /// TF-IDF cosine similarity of the abstract and the query.
    Tfidf,
}

/// Counts of a set of (query, image) pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Pairs retrieved.
    pub pairs: usize,
    /// Pairs with an answer.
    pub judged: usize,
    /// Pairs answered relevant.
    pub relevant: usize,
    /// Pairs left without an answer: unparseable output or a failed request.
    pub unjudged: usize,
    /// `relevant / judged`; `None` when no pair was judged.
    pub score: Option<f64>,
}

impl Tally {
    /// Counts answers, `None` being an unjudged pair.
    pub fn of(answers: impl IntoIterator<Item = Option<bool>>) -> Self {
        let mut tally = Self::default();
        for answer in answers {
            tally.pairs += 1;
            match answer {
                Some(relevant) => {
                    tally.judged += 1;
                    tally.relevant += usize::from(relevant);
                }
                None => tally.unjudged += 1,
            }
        }
        tally.score = (tally.judged > 0).then(|| tally.relevant as f64 / tally.judged as f64);
        tally
    }
}

/// One retrieved image and the judge's answer for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgedHit {
    /// 1 for the best hit.
    pub rank: usize,
    /// Position of the sample in the split.
    pub sample_index: usize,
    /// Sample key.
    pub key: String,
    /// Proposal id.
    pub proposal_id: i64,
    /// Cosine similarity of the method (CLIP or TF-IDF).
    pub similarity: f64,
    /// The judge's answer: true when relevant; `None` when unjudged.
    pub answer: Option<bool>,
    /// The reason the pair is unjudged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unjudged_reason: Option<String>,
}

/// One query under one method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryScore {
    /// The query.
    pub query: String,
    /// Counts and score of its hits.
    #[serde(flatten)]
    pub tally: Tally,
    /// Hits, best first.
    pub hits: Vec<JudgedHit>,
}

/// One retrieval method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodScore {
    /// Name in reports.
    pub label: String,
    /// CLIP or TF-IDF.
    pub kind: MethodKind,
    /// The checkpoint as given, or a description of the TF-IDF index.
    pub source: String,
    /// SHA-256 of a checkpoint's weights file.
    pub weights_sha256: Option<String>,
    /// Counts and score over every query.
    #[serde(flatten)]
    pub tally: Tally,
    /// Per query, in query order.
    pub queries: Vec<QueryScore>,
}

/// The judge's whole result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeReport {
    /// Dataset name.
    pub dataset: String,
    /// Dataset version.
    pub version: u64,
    /// The split retrieved from.
    pub split: String,
    /// The sample field shown to the judge as the abstract.
    pub abstract_field: String,
    /// Samples in the split.
    pub samples: usize,
    /// Hits per query and method.
    pub k: usize,
    /// Seed of the judge's sampler; decoding is greedy.
    pub seed: u64,
    /// The judge's model identity.
    pub judge_model: String,
    /// The prompt template.
    pub prompt: String,
    /// SHA-256 of the prompt template.
    pub prompt_sha256: String,
    /// Distinct (query, abstract) prompts sent to the judge.
    pub judge_requests: usize,
    /// Version of paperclip.
    pub code_version: String,
    /// RFC 3339 time the report was made.
    pub created_at: String,
    /// The queries, in report order.
    pub queries: Vec<String>,
    /// The methods, in report order.
    pub methods: Vec<MethodScore>,
    /// Things that limit what the scores mean: a split smaller than k, a checkpoint
    /// trained on proposals of this split.
    pub warnings: Vec<String>,
}

/// Puts the answers on the hits and counts them.
pub(super) fn build(
    options: &JudgeOptions,
    record: &VersionRecord,
    data: &SplitData,
    judge_model: String,
    retrievals: &[Retrieval],
    pair_of_hit: &[Vec<Vec<usize>>],
    answers: &[Result<bool, String>],
) -> JudgeReport {
    let methods = retrievals
        .iter()
        .zip(pair_of_hit)
        .map(|(retrieval, pairs)| method_score(options, data, retrieval, pairs, answers))
        .collect();
    JudgeReport {
        dataset: record.dataset.clone(),
        version: record.version,
        split: options.split.clone(),
        abstract_field: options.abstract_field.clone(),
        samples: data.samples.len(),
        k: options.k,
        seed: options.seed,
        judge_model,
        prompt: PROMPT_PATH.to_string(),
        prompt_sha256: sha256_hex(PROMPT_TEMPLATE),
        judge_requests: answers.len(),
        code_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        queries: options.queries.clone(),
        methods,
        warnings: Vec::new(),
    }
}

fn method_score(
    options: &JudgeOptions,
    data: &SplitData,
    retrieval: &Retrieval,
    pairs: &[Vec<usize>],
    answers: &[Result<bool, String>],
) -> MethodScore {
    let queries: Vec<QueryScore> = options
        .queries
        .iter()
        .zip(&retrieval.hits)
        .zip(pairs)
        .map(|((query, hits), pairs)| {
            let hits: Vec<JudgedHit> = hits
                .iter()
                .zip(pairs)
                .enumerate()
                .map(|(rank, (&(sample_index, similarity), &pair))| {
                    let sample = &data.samples[sample_index];
                    JudgedHit {
                        rank: rank + 1,
                        sample_index,
                        key: sample.key.clone(),
                        proposal_id: sample.proposal_id,
                        similarity,
                        answer: answers[pair].as_ref().ok().copied(),
                        unjudged_reason: answers[pair].as_ref().err().cloned(),
                    }
                })
                .collect();
            QueryScore {
                query: query.clone(),
                tally: Tally::of(hits.iter().map(|h| h.answer)),
                hits,
            }
        })
        .collect();
    let tally = Tally::of(queries.iter().flat_map(|q| q.hits.iter().map(|h| h.answer)));
    tracing::info!(
        method = %retrieval.label,
        relevant = tally.relevant,
        judged = tally.judged,
        unjudged = tally.unjudged,
        "judged"
    );
    MethodScore {
        label: retrieval.label.clone(),
        kind: retrieval.kind,
        source: retrieval.source.clone(),
        weights_sha256: retrieval.weights_sha256.clone(),
        tally,
        queries,
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl JudgeReport {
    /// Pairs left unjudged over every method.
    pub fn unjudged(&self) -> usize {
        self.methods.iter().map(|m| m.tally.unjudged).sum()
    }

    /// Pairs retrieved over every method.
    pub fn pairs(&self) -> usize {
        self.methods.iter().map(|m| m.tally.pairs).sum()
    }

    /// The report as Markdown: the settings, a score table with one row per method, a
    /// table of scores per query with one column per method, and the unjudged pairs.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "# LLM-judged retrieval on {}@{} ({} split)\n\n\
             {} queries, top {} of {} images per query and method. The judge `{}` read the \
             `{}` field with {} (SHA-256 {}), greedy, seed {}; {} distinct (query, abstract) \
             prompts. A score is the fraction of judged pairs answered relevant.\n\n",
            markdown_text(&self.dataset),
            self.version,
            markdown_text(&self.split),
            self.queries.len(),
            self.k,
            self.samples,
            self.judge_model,
            self.abstract_field,
            self.prompt,
            &self.prompt_sha256[..12],
            self.seed,
            self.judge_requests,
        );
        for warning in &self.warnings {
            out.push_str(&format!("> Warning: {}\n\n", markdown_text(warning)));
        }
        out.push_str(&self.method_table());
        out.push_str("\n## Score per query\n\n");
        out.push_str(&self.query_table());
        let unjudged = self.unjudged_lines();
        if !unjudged.is_empty() {
            out.push_str("\n## Unjudged pairs\n\n");
            out.push_str(&unjudged);
        }
        out
    }

    /// One row per method: score and counts.
    pub fn method_table(&self) -> String {
        let mut out = String::from(
            "| method | score | relevant | judged | unjudged |\n|---|---:|---:|---:|---:|\n",
        );
        for method in &self.methods {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                cell(&method.label),
                score_text(method.tally.score),
                method.tally.relevant,
                method.tally.judged,
                method.tally.unjudged
            ));
        }
        out
    }

    /// One row per query, one column per method.
    fn query_table(&self) -> String {
        let labels: Vec<String> = self.methods.iter().map(|m| cell(&m.label)).collect();
        let mut out = format!(
            "| query | {} |\n|---|{}\n",
            labels.join(" | "),
            "---:|".repeat(labels.len())
        );
        for (q, query) in self.queries.iter().enumerate() {
            let scores: Vec<String> = self
                .methods
                .iter()
                .map(|m| match m.queries[q].tally {
                    Tally {
                        score, unjudged: 0, ..
                    } => score_text(score),
                    Tally {
                        score, unjudged, ..
                    } => format!("{} ({unjudged} unjudged)", score_text(score)),
                })
                .collect();
            out.push_str(&format!("| {} | {} |\n", cell(query), scores.join(" | ")));
        }
        out
    }

    fn unjudged_lines(&self) -> String {
        let mut out = String::new();
        for method in &self.methods {
            for query in &method.queries {
                for hit in query.hits.iter().filter(|h| h.answer.is_none()) {
                    out.push_str(&format!(
                        "- {}, {}, rank {}, `{}` (proposal {}): {}\n",
                        markdown_text(&method.label),
                        markdown_text(&format!("{:?}", query.query)),
                        hit.rank,
                        hit.key.replace('`', "'"),
                        hit.proposal_id,
                        markdown_text(&one_line(
                            hit.unjudged_reason.as_deref().unwrap_or("no answer"),
                            200
                        ))
                    ));
                }
            }
        }
        out
    }
}

fn score_text(score: Option<f64>) -> String {
    score.map_or_else(|| "-".to_string(), |s| format!("{s:.2}"))
}

/// Text safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    markdown_text(&one_line(text, 80))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_scores_judged_pairs_only() {
        let tally = Tally::of([Some(true), Some(false), None, Some(true)]);

        assert_eq!(tally.pairs, 4);
        assert_eq!(tally.judged, 3);
        assert_eq!(tally.relevant, 2);
        assert_eq!(tally.unjudged, 1);
        assert_eq!(tally.score, Some(2.0 / 3.0));
    }

    #[test]
    fn tally_without_answers_has_no_score() {
        let tally = Tally::of([None, None]);

        assert_eq!(tally.judged, 0);
        assert_eq!(tally.score, None);
        assert_eq!(score_text(tally.score), "-");
    }

    #[test]
    fn markdown_escapes_pipes_and_html_in_labels() {
        assert_eq!(cell("a|b"), "a\\|b");
        assert_eq!(cell("<script>"), "&lt;script&gt;");
    }
}
