//! A text-only retrieval baseline: TF-IDF vectors of a split's texts and their cosine
//! similarity to a query.
//!
//! The weighting follows the defaults of scikit-learn's `TfidfVectorizer` (1.x):
//! - text is lowercased, and tokens are runs of two or more word characters, the regex
//!   `(?u)\b\w\w+\b`. A word character here is a Unicode alphanumeric character or `_`;
//! - the vocabulary and the document frequencies come from the distinct texts, so a text
//!   repeated by many samples counts as one document;
//! - idf is smoothed: `ln((1 + n) / (1 + df)) + 1`, where `n` is the number of distinct texts
//!   and `df` the number of them that contain the term;
//! - a vector is the raw term counts times idf, scaled to unit L2 norm.
//!
//! A query is weighted the same way with the fitted vocabulary, so its words that no text
//! contains are dropped. Rankings put equal scores in input order.

use std::collections::HashMap;

/// A sparse vector: `(term id, weight)` pairs sorted by term id.
type SparseVector = Vec<(usize, f64)>;

/// TF-IDF vectors of a list of texts.
#[derive(Debug, Clone)]
pub struct TfidfIndex {
    /// Term to term id.
    vocabulary: HashMap<String, usize>,
    /// Smoothed idf of each term id.
    idf: Vec<f64>,
    /// The L2-normalized vector of each distinct text.
    documents: Vec<SparseVector>,
    /// For each input text, the position of its distinct text in `documents`.
    document_of: Vec<usize>,
}

/// Splits `text` into lowercased tokens of at least two word characters.
pub fn tokenize(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|token| token.chars().nth(1).is_some())
        .map(str::to_string)
        .collect()
}

impl TfidfIndex {
    /// Builds the vocabulary, idf and vectors of `texts`; see the module docs.
    pub fn fit<S: AsRef<str>>(texts: &[S]) -> Self {
        let mut distinct: HashMap<&str, usize> = HashMap::new();
        let mut tokens_of_documents: Vec<Vec<String>> = Vec::new();
        let mut document_of = Vec::with_capacity(texts.len());
        for text in texts {
            let text = text.as_ref();
            let next = distinct.len();
            let document = *distinct.entry(text).or_insert(next);
            if document == next {
                tokens_of_documents.push(tokenize(text));
            }
            document_of.push(document);
        }

        let mut vocabulary: HashMap<String, usize> = HashMap::new();
        let mut document_frequency: Vec<usize> = Vec::new();
        for tokens in &tokens_of_documents {
            let mut seen: Vec<usize> = tokens
                .iter()
                .map(|token| {
                    let next = vocabulary.len();
                    let id = *vocabulary.entry(token.clone()).or_insert(next);
                    if id == next {
                        document_frequency.push(0);
                    }
                    id
                })
                .collect();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                document_frequency[id] += 1;
            }
        }

        let n = tokens_of_documents.len() as f64;
        let idf = document_frequency
            .iter()
            .map(|&df| ((1.0 + n) / (1.0 + df as f64)).ln() + 1.0)
            .collect();
        let mut index = Self {
            vocabulary,
            idf,
            documents: Vec::new(),
            document_of,
        };
        index.documents = tokens_of_documents
            .iter()
            .map(|tokens| index.weigh(tokens))
            .collect();
        index
    }

    /// Returns the idf of `term` (one lowercased token), or `None` when no text contains it.
    pub fn idf(&self, term: &str) -> Option<f64> {
        self.vocabulary.get(term).map(|&id| self.idf[id])
    }

    /// Number of distinct texts.
    pub fn distinct_texts(&self) -> usize {
        self.documents.len()
    }

    /// Returns whether the vocabulary contains at least one term of `query`. A query
    /// without one scores 0 against every text.
    pub fn contains_any_term(&self, query: &str) -> bool {
        tokenize(query)
            .iter()
            .any(|token| self.vocabulary.contains_key(token))
    }

    /// Counts known tokens, multiplies by idf and scales to unit L2 norm; a vector with no
    /// known token stays empty.
    fn weigh(&self, tokens: &[String]) -> SparseVector {
        let mut counts: HashMap<usize, f64> = HashMap::new();
        for token in tokens {
            if let Some(&id) = self.vocabulary.get(token) {
                *counts.entry(id).or_default() += 1.0;
            }
        }
        let mut vector: SparseVector = counts
            .into_iter()
            .map(|(id, count)| (id, count * self.idf[id]))
            .collect();
        vector.sort_unstable_by_key(|&(id, _)| id);
        let norm = vector.iter().map(|(_, w)| w * w).sum::<f64>().sqrt();
        if norm > 0.0 {
            for (_, weight) in &mut vector {
                *weight /= norm;
            }
        }
        vector
    }

    /// Computes the cosine similarity of `query` to each input text, in input order.
    pub fn similarities(&self, query: &str) -> Vec<f64> {
        let query = self.weigh(&tokenize(query));
        let by_document: Vec<f64> = self
            .documents
            .iter()
            .map(|document| dot(&query, document))
            .collect();
        self.document_of.iter().map(|&d| by_document[d]).collect()
    }

    /// Returns the `k` input texts most similar to `query` as `(position, similarity)`, best first.
    /// Equal similarities keep input order.
    pub fn top_k(&self, query: &str, k: usize) -> Vec<(usize, f64)> {
        let mut scored: Vec<(usize, f64)> =
            self.similarities(query).into_iter().enumerate().collect();
        // A stable sort keeps input order among equal scores.
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.truncate(k);
        scored
    }
}

/// Dot product of two sparse vectors sorted by term id.
fn dot(a: &SparseVector, b: &SparseVector) -> f64 {
    let (mut i, mut j, mut sum) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                sum += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() < 1e-9
    }

    #[test]
    fn tokenize_matches_scikit_learn_pattern() {
        assert_eq!(
            tokenize("Category: SN1987A, a Lyman-alpha x_ray_2 I'm ÉTOILE"),
            ["category", "sn1987a", "lyman", "alpha", "x_ray_2", "étoile"]
        );
        assert!(tokenize("a b c . !").is_empty());
    }

    /// Hand-computed: n = 3 distinct texts; df(red) = df(star) = 2 and
    /// df(galaxy) = df(blue) = 1, so idf = ln(4/3) + 1 and ln(4/2) + 1.
    #[test]
    fn fit_computes_smoothed_idf_over_distinct_texts() {
        let texts = ["red star", "red red galaxy", "blue star", "red star"];
        let index = TfidfIndex::fit(&texts);

        assert_eq!(index.distinct_texts(), 3);
        let rare = (4.0f64 / 2.0).ln() + 1.0;
        let common = (4.0f64 / 3.0).ln() + 1.0;
        assert!(close(index.idf("red").unwrap(), common));
        assert!(close(index.idf("star").unwrap(), common));
        assert!(close(index.idf("galaxy").unwrap(), rare));
        assert!(close(index.idf("blue").unwrap(), rare));
        assert_eq!(index.idf("comet"), None);
    }

    /// Hand-computed cosines for the query "red star", whose vector is (1, 1) / √2 over
    /// (red, star):
    /// - "red star" has the same direction: 1;
    /// - "red red galaxy" is (2·1.287682, 1.693147) over (red, galaxy), norm 3.082085, so
    ///   the cosine is 2·1.287682 / 3.082085 / √2 = 0.590852;
    /// - "blue star" is (1.693147, 1.287682) over (blue, star), norm 2.127175, so the
    ///   cosine is 1.287682 / 2.127175 / √2 = 0.428046.
    #[test]
    fn similarities_match_hand_computed_cosines() {
        let texts = ["red star", "red red galaxy", "blue star", "red star"];
        let index = TfidfIndex::fit(&texts);

        let scores = index.similarities("Red STAR");
        assert_eq!(scores.len(), 4);
        assert!(close(scores[0], 1.0), "{scores:?}");
        assert!((scores[1] - 0.590_852_445_611).abs() < 1e-9, "{scores:?}");
        assert!((scores[2] - 0.428_046_035_063).abs() < 1e-9, "{scores:?}");
        assert!(close(scores[3], 1.0), "{scores:?}");
    }

    #[test]
    fn top_k_breaks_ties_by_input_order() {
        let texts = ["red star", "red red galaxy", "blue star", "red star"];
        let index = TfidfIndex::fit(&texts);

        let ranked: Vec<usize> = index.top_k("red star", 3).iter().map(|h| h.0).collect();
        assert_eq!(ranked, [0, 3, 1]);
    }

    #[test]
    fn unknown_query_scores_zero_everywhere() {
        let index = TfidfIndex::fit(&["red star", "blue star"]);

        assert!(!index.contains_any_term("comet tails"));
        assert!(index.contains_any_term("a star"));
        assert_eq!(index.similarities("comet tails"), [0.0, 0.0]);
        let ranked: Vec<usize> = index.top_k("comet", 5).iter().map(|h| h.0).collect();
        assert_eq!(ranked, [0, 1]);
    }
}
