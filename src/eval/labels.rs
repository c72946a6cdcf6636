//! Description retrieval: rank a list of text labels against each image.
//!
//! The default list is the paper's 77 labels (`configs/labels/paperclip.txt`), compiled
//! into the binary. A label file has one label per line; blank lines and lines starting
//! with `#` are skipped.

use std::path::Path;

use paperclip_clip::rng::Rng;
use serde::Serialize;

use super::error::{EvalError, io};
use super::model::Matrix;
use crate::train::data::SplitData;

/// The 77 labels of the PAPERCLIP paper's appendix.
pub const PAPER_LABELS: &str = include_str!("../../configs/labels/paperclip.txt");

/// Labels of a label file's text. Fails on an empty list or a repeated label, naming it.
pub fn parse_labels(text: &str, origin: &str) -> Result<Vec<String>, EvalError> {
    let mut labels: Vec<String> = Vec::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (number, line) in text.lines().enumerate() {
        let label = line.trim();
        if label.is_empty() || label.starts_with('#') {
            continue;
        }
        if labels.iter().any(|known| known.eq_ignore_ascii_case(label)) {
            return Err(EvalError::Invalid(format!(
                "{origin}:{}: label {label:?} is listed twice; keep one",
                number + 1
            )));
        }
        labels.push(label.to_string());
    }
    if labels.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{origin} has no labels; write one label per line"
        )));
    }
    Ok(labels)
}

/// Reads a label file.
pub fn load_labels(path: &Path) -> Result<Vec<String>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    parse_labels(&text, &path.display().to_string())
}

/// A label and its cosine similarity to an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelScore {
    /// The label.
    pub label: String,
    /// Its cosine similarity to the image.
    pub similarity: f32,
}

/// The best labels of one sample's image under each model.
#[derive(Debug, Clone, Serialize)]
pub struct Description {
    /// Position of the sample in the split.
    pub sample_index: usize,
    /// Sample key.
    pub key: String,
    /// Proposal id.
    pub proposal_id: i64,
    /// The sample's caption, for comparison.
    pub caption: String,
    /// Per model, in report order: the best labels, best first.
    pub top_labels: Vec<Vec<LabelScore>>,
}

/// Picks `count` samples in a seeded order, one per proposal while proposals last.
pub fn pick_examples(data: &SplitData, count: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..data.samples.len()).collect();
    Rng::derived(seed, "eval-description-examples").shuffle(&mut order);
    let mut picked: Vec<usize> = Vec::new();
    for &i in &order {
        let proposal = data.samples[i].proposal_id;
        if picked.len() < count
            && picked
                .iter()
                .all(|&p| data.samples[p].proposal_id != proposal)
        {
            picked.push(i);
        }
    }
    for &i in &order {
        if picked.len() < count && !picked.contains(&i) {
            picked.push(i);
        }
    }
    picked
}

/// Ranks the labels against image row `index` and returns the best `top`; ties keep the
/// list order.
pub fn top_labels(
    images: &Matrix,
    index: usize,
    labels: &[String],
    label_embeddings: &Matrix,
    top: usize,
) -> Vec<LabelScore> {
    let image = images.row(index);
    let mut scored: Vec<LabelScore> = labels
        .iter()
        .enumerate()
        .map(|(j, label)| LabelScore {
            label: label.clone(),
            similarity: image
                .iter()
                .zip(label_embeddings.row(j))
                .map(|(a, b)| a * b)
                .sum(),
        })
        .collect();
    scored.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
    scored.truncate(top);
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_list_has_77_distinct_labels() {
        let labels = parse_labels(PAPER_LABELS, "paper").unwrap();
        assert_eq!(labels.len(), 77);
        assert_eq!(labels[0], "star forming galaxies");
        assert_eq!(labels[76], "binary stars");
    }

    #[test]
    fn repeated_and_empty_lists_are_rejected() {
        let error = parse_labels("dust\n# c\nDust\n", "labels.txt").unwrap_err();
        assert!(error.to_string().contains("labels.txt:3"), "{error}");
        assert!(parse_labels("# only a comment\n\n", "x").is_err());
    }

    #[test]
    fn labels_rank_by_similarity() {
        let images = Matrix {
            dim: 2,
            values: vec![1.0, 0.0],
        };
        let labels = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let embeddings = Matrix {
            dim: 2,
            values: vec![0.0, 1.0, 0.8, 0.6, -1.0, 0.0],
        };
        let top = top_labels(&images, 0, &labels, &embeddings, 2);
        let names: Vec<&str> = top.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(names, vec!["b", "a"]);
        assert_eq!(top[0].similarity, 0.8);
    }
}
