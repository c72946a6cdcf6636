//! The evaluation report: every metric of every model, as JSON and as a Markdown table.

use serde::Serialize;

use super::labels::Description;
use super::model::{EvalModel, TrainingOrigin};

use super::metrics::{
    CurvePoint, Direction, InBatch, InBatchTopK, PairSimilarities, Similarities,
    accuracy_at_fraction, fraction_curve, fraction_cutoff, group_ranks, histogram, in_batch,
    median_rank, pair_similarities, recall_at, sample_ranks,
};

/// Retrieval fractions reported as numbers; the curve has them all.
pub const REPORTED_FRACTIONS: [f64; 5] = [0.01, 0.05, 0.1, 0.2, 0.5];
/// k of the in-batch metric.
pub const IN_BATCH_KS: [usize; 4] = [1, 5, 10, 20];
/// Pairs per batch of the in-batch metric, as in the original code.
pub const IN_BATCH_SIZE: usize = 100;
/// Bins of the similarity histograms over [−1, 1], as in the PAPERCLIP paper's figure.
pub const HISTOGRAM_BINS: usize = 30;
/// Points of the accuracy-versus-fraction curve, minus one.
pub const CURVE_STEPS: usize = 100;

/// An evaluation: the split, its pairs and the metrics of each checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Dataset name.
    pub dataset: String,
    /// Dataset version.
    pub version: u64,
    /// Split evaluated.
    pub split: String,
    /// The sample field used as the caption.
    pub caption_field: String,
    /// Pairs in the split.
    pub samples: usize,
    /// Distinct proposals among them.
    pub proposals: usize,
    /// Pairs whose caption is identical to another pair's.
    pub duplicate_captions: usize,
    /// Seed of the in-batch order and of the shuffled pairs.
    pub seed: u64,
    /// paperclip's version.
    pub code_version: String,
    /// RFC 3339 time of the evaluation.
    pub created_at: String,
    /// One entry per checkpoint, in the order given.
    pub models: Vec<ModelEval>,
    /// Things that limit what the numbers mean: a small split, a checkpoint trained on
    /// these pairs.
    pub warnings: Vec<String>,
    /// Labels ranked in the description retrieval.
    pub labels: usize,
    /// Source of the labels: a file, or the paper's list.
    pub labels_source: String,
    /// Example images with their best labels under each model.
    pub descriptions: Vec<Description>,
}

/// The metrics of one checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct ModelEval {
    /// Name in tables and plots.
    pub label: String,
    /// The checkpoint as given.
    pub checkpoint: String,
    /// SHA-256 of its weights file.
    pub weights_sha256: String,
    /// The vocabulary file used.
    pub vocabulary: String,
    /// Side the stored images were resized to before the crop, if any.
    pub resize_px: Option<usize>,
    /// The training run that wrote the checkpoint, when its record was found.
    pub trained_on: Option<TrainingOrigin>,
    /// Images asking for captions.
    pub image_to_text: DirectionEval,
    /// Captions asking for images.
    pub text_to_image: DirectionEval,
    /// The original code's in-batch metric.
    pub in_batch: InBatch,
    /// Matched against shuffled cosine similarities.
    pub similarity: SimilarityEval,
}

/// The metrics of one direction.
#[derive(Debug, Clone, Serialize)]
pub struct DirectionEval {
    /// The paper's top-k% accuracy at [`REPORTED_FRACTIONS`].
    pub top_fraction: Vec<FractionAccuracy>,
    /// Median sample-level rank (1 = best).
    pub median_rank: f64,
    /// Proposal-level Recall@1.
    pub proposal_recall_at_1: f64,
    /// Proposal-level Recall@5.
    pub proposal_recall_at_5: f64,
    /// Proposal-level Recall@10.
    pub proposal_recall_at_10: f64,
    /// Median proposal-level rank.
    pub proposal_median_rank: f64,
    /// Top-k% accuracy from k = 0 to 1.
    pub curve: Vec<CurvePoint>,
}

/// Top-k% accuracy at one fraction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FractionAccuracy {
    /// Retrieval fraction k.
    pub fraction: f64,
    /// The rank cut-off ⌊k·N⌋.
    pub cutoff_rank: usize,
    /// Fraction of queries within the cut-off; `None` when the cut-off is 0, since no
    /// ranking can score there.
    pub accuracy: Option<f64>,
    /// The accuracy of a random ranking, ⌊k·N⌋/N.
    pub random: f64,
}

/// Summary of the similarity histograms.
#[derive(Debug, Clone, Serialize)]
pub struct SimilarityEval {
    /// Mean similarity of matched pairs.
    pub matched_mean: f64,
    /// Mean similarity of shuffled pairs.
    pub shuffled_mean: f64,
    /// Histogram counts of matched pairs, [`HISTOGRAM_BINS`] bins over [−1, 1].
    pub matched_counts: Vec<usize>,
    /// Histogram counts of shuffled pairs.
    pub shuffled_counts: Vec<usize>,
}

/// Computes every metric of one model from its similarity matrix.
pub fn model_eval(model: &EvalModel, sim: &Similarities, groups: &[i64], seed: u64) -> ModelEval {
    let direction = |d: Direction| direction_eval(sim, groups, d);
    ModelEval {
        label: model.label.clone(),
        checkpoint: model.source.clone(),
        weights_sha256: model.weights_sha256.clone(),
        vocabulary: model.vocabulary.display().to_string(),
        resize_px: model.resize_px,
        trained_on: model.origin.clone(),
        image_to_text: direction(Direction::ImageToText),
        text_to_image: direction(Direction::TextToImage),
        in_batch: in_batch(sim, IN_BATCH_SIZE, &IN_BATCH_KS, seed),
        similarity: similarity_eval(&pair_similarities(sim, seed)),
    }
}

fn direction_eval(sim: &Similarities, groups: &[i64], direction: Direction) -> DirectionEval {
    let ranks = sample_ranks(sim, direction);
    let proposal = group_ranks(sim, groups, direction);
    let n = ranks.len();
    DirectionEval {
        top_fraction: REPORTED_FRACTIONS
            .iter()
            .map(|&fraction| {
                let cutoff_rank = fraction_cutoff(fraction, n);
                FractionAccuracy {
                    fraction,
                    cutoff_rank,
                    accuracy: (cutoff_rank > 0).then(|| accuracy_at_fraction(&ranks, fraction)),
                    random: cutoff_rank as f64 / n as f64,
                }
            })
            .collect(),
        median_rank: median_rank(&ranks),
        proposal_recall_at_1: recall_at(&proposal, 1),
        proposal_recall_at_5: recall_at(&proposal, 5),
        proposal_recall_at_10: recall_at(&proposal, 10),
        proposal_median_rank: median_rank(&proposal),
        curve: fraction_curve(&ranks, CURVE_STEPS),
    }
}

fn similarity_eval(pairs: &PairSimilarities) -> SimilarityEval {
    let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len().max(1) as f64;
    SimilarityEval {
        matched_mean: mean(&pairs.matched),
        shuffled_mean: mean(&pairs.shuffled),
        matched_counts: histogram(&pairs.matched, HISTOGRAM_BINS, -1.0, 1.0),
        shuffled_counts: histogram(&pairs.shuffled, HISTOGRAM_BINS, -1.0, 1.0),
    }
}

impl EvalReport {
    /// Renders the Markdown report: the split, then one column per model.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "# Retrieval evaluation of {}@{} ({} split)\n\n{}. Ranks count ties against the \
             match. Seed {}.\n\n",
            markdown_text(&self.dataset),
            self.version,
            markdown_text(&self.split),
            markdown_text(&self.summary_line()),
            self.seed
        );
        for warning in &self.warnings {
            out.push_str(&format!("> Warning: {}\n\n", markdown_text(warning)));
        }
        out.push_str(&self.markdown_table());
        if !self.descriptions.is_empty() {
            out.push_str(&format!(
                "\n## Description retrieval\n\n{}\n\n",
                markdown_text(&self.descriptions_line())
            ));
            for d in &self.descriptions {
                out.push_str(&format!(
                    "- `{}` (proposal {}): {}\n",
                    d.key.replace('`', "'"),
                    d.proposal_id,
                    markdown_text(&one_line(&d.caption, 160))
                ));
                for (model, top) in self.models.iter().zip(&d.top_labels) {
                    let names: Vec<String> = top
                        .iter()
                        .map(|s| format!("{} ({:.3})", markdown_text(&s.label), s.similarity))
                        .collect();
                    out.push_str(&format!(
                        "  - {}: {}\n",
                        markdown_text(&model.label),
                        names.join(", ")
                    ));
                }
            }
        }
        out
    }

    /// Renders the metrics table alone, one column per model.
    pub fn markdown_table(&self) -> String {
        let mut out = String::from("| metric | random |");
        for model in &self.models {
            out.push_str(&format!(" {} |", markdown_text(&model.label)));
        }
        out.push_str("\n|---|---|");
        out.push_str(&"---|".repeat(self.models.len()));
        out.push('\n');
        for row in self.rows() {
            out.push_str(&format!("| {} | {} |", row.name, row.random));
            for value in &row.values {
                out.push_str(&format!(" {value} |"));
            }
            out.push('\n');
        }
        out
    }

    /// Lists every reported number as a table row, in report order.
    pub fn rows(&self) -> Vec<MetricRow> {
        let mut rows = Vec::new();
        for direction in Direction::BOTH {
            let pick = |m: &ModelEval| match direction {
                Direction::ImageToText => m.image_to_text.clone(),
                Direction::TextToImage => m.text_to_image.clone(),
            };
            let evals: Vec<DirectionEval> = self.models.iter().map(pick).collect();
            let name = direction.label();
            for (i, &fraction) in REPORTED_FRACTIONS.iter().enumerate() {
                let random = self.random_at(fraction);
                let mut row = MetricRow::new(
                    format!("{name} top-{}% (whole split)", percent(fraction)),
                    format!("{random:.3}"),
                    evals
                        .iter()
                        .map(|e| e.top_fraction[i].accuracy.unwrap_or(0.0)),
                );
                for (value, e) in row.values.iter_mut().zip(&evals) {
                    if e.top_fraction[i].accuracy.is_none() {
                        *value = "n/a".into();
                    }
                }
                rows.push(row);
            }
            let mut median = MetricRow::ranks(
                format!("{name} median rank (of {})", self.samples),
                evals.iter().map(|e| e.median_rank),
            );
            median.random = format!("{:.1}", (self.samples + 1) as f64 / 2.0);
            rows.push(median);
            for (k, pick) in [
                (
                    1,
                    (|e: &DirectionEval| e.proposal_recall_at_1) as fn(&DirectionEval) -> f64,
                ),
                (5, |e| e.proposal_recall_at_5),
                (10, |e| e.proposal_recall_at_10),
            ] {
                rows.push(MetricRow::new(
                    format!("{name} proposal Recall@{k}"),
                    "".into(),
                    evals.iter().map(pick),
                ));
            }
            rows.push(MetricRow::ranks(
                format!("{name} proposal median rank"),
                evals.iter().map(|e| e.proposal_median_rank),
            ));
        }
        self.in_batch_rows(&mut rows);
        rows.push(MetricRow::new(
            "mean cosine similarity, matched pairs".into(),
            "".into(),
            self.models.iter().map(|m| m.similarity.matched_mean),
        ));
        rows.push(MetricRow::new(
            "mean cosine similarity, shuffled pairs".into(),
            "".into(),
            self.models.iter().map(|m| m.similarity.shuffled_mean),
        ));
        rows
    }

    fn in_batch_rows(&self, rows: &mut Vec<MetricRow>) {
        let Some(first) = self.models.first() else {
            return;
        };
        let b = &first.in_batch;
        for (i, k) in b.top_k.iter().map(|t| t.k).enumerate() {
            for (name, pick) in [
                (
                    "image→text",
                    (|t: &InBatchTopK| t.image_to_text) as fn(&InBatchTopK) -> f64,
                ),
                ("text→image", |t| t.text_to_image),
            ] {
                rows.push(MetricRow::new(
                    format!(
                        "{name} in-batch top-{k} ({} batch{} of {}, original code's metric)",
                        b.batches,
                        if b.batches == 1 { "" } else { "es" },
                        b.batch_size
                    ),
                    format!("{:.3}", k as f64 / b.batch_size as f64),
                    self.models.iter().map(|m| pick(&m.in_batch.top_k[i])),
                ));
            }
        }
    }

    /// Describes the split in one sentence: pairs, proposals, caption field, duplicates.
    pub fn summary_line(&self) -> String {
        format!(
            "{} from {}, caption field {:?}; {} share their caption with another pair",
            count(self.samples, "pair"),
            count(self.proposals, "proposal"),
            self.caption_field,
            count(self.duplicate_captions, "pair"),
        )
    }

    /// Introduces the description examples: how many labels each shows, out of how many.
    pub fn descriptions_line(&self) -> String {
        format!(
            "The best {} of {} for each example image ({}), next to its caption.",
            self.labels.min(4),
            count(self.labels, "label"),
            self.labels_source
        )
    }

    fn random_at(&self, fraction: f64) -> f64 {
        fraction_cutoff(fraction, self.samples) as f64 / self.samples.max(1) as f64
    }
}

/// Puts `text` on one line, cut to `max_chars` characters with an ellipsis.
pub fn one_line(text: &str, max_chars: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max_chars {
        return flat;
    }
    let cut: String = flat.chars().take(max_chars).collect();
    format!("{cut}…")
}

/// Writes `n` with `noun`, plural unless `n` is 1.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Escapes text for Markdown, where inline HTML would otherwise render: `&`, `<`, `>`, and
/// `|`, which would end a table cell.
pub fn markdown_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
}

fn percent(fraction: f64) -> String {
    let text = format!("{:.1}", fraction * 100.0);
    text.trim_end_matches(".0").to_string()
}

/// One row of the metrics table.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// Name of the measured quantity.
    pub name: String,
    /// The value of a random ranking, or empty.
    pub random: String,
    /// One formatted value per model.
    pub values: Vec<String>,
}

impl MetricRow {
    fn new(name: String, random: String, values: impl Iterator<Item = f64>) -> Self {
        Self {
            name,
            random,
            values: values.map(|v| format!("{v:.3}")).collect(),
        }
    }

    fn ranks(name: String, values: impl Iterator<Item = f64>) -> Self {
        Self {
            name,
            random: String::new(),
            values: values.map(|v| format!("{v:.1}")).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_text_escapes_html_and_cells() {
        assert_eq!(
            markdown_text("<b>a</b> & c|d"),
            "&lt;b&gt;a&lt;/b&gt; &amp; c\\|d"
        );
    }

    #[test]
    fn counts_use_singular_for_one() {
        assert_eq!(count(1, "pair"), "1 pair");
        assert_eq!(count(0, "pair"), "0 pairs");
        assert_eq!(count(3, "label"), "3 labels");
    }

    #[test]
    fn top_fraction_is_undefined_below_one_rank() {
        let sim = Similarities::new(vec![0.9, 0.1, 0.2, 0.8]).unwrap();
        let eval = direction_eval(&sim, &[1, 2], Direction::ImageToText);
        let at_one_percent = eval.top_fraction[0];
        assert_eq!(at_one_percent.cutoff_rank, 0);
        assert_eq!(at_one_percent.accuracy, None);
        let at_half = eval.top_fraction[4];
        assert_eq!((at_half.cutoff_rank, at_half.accuracy), (1, Some(1.0)));
    }
}
