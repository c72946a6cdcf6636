//! Retrieval metrics over a whole split, on a matrix of cosine similarities between the
//! N images (rows) and the N captions (columns) of one split, sample i's caption in
//! column i.
//!
//! Definitions (also in `docs/evaluation.md`):
//! - **Rank.** A query's rank is 1 plus the number of non-matching candidates whose
//!   similarity is greater than or equal to the best matching candidate's. Ties count
//!   against the match, so a model that scores every pair alike ranks every match last.
//! - **Sample level.** Only the query's own pair matches. Identical captions (several
//!   images of one proposal with one summary) tie, and the ties count against the match.
//! - **Proposal level.** Every candidate of the query's proposal matches.
//! - **Top-k% accuracy** (the PAPERCLIP paper's metric): the fraction of queries whose sample-level
//!   rank is at most ⌊k·N⌋. A random ranking scores ⌊k·N⌋/N.
//! - **In-batch accuracy** (the original code's metric): the split in a seeded order, cut
//!   into whole batches of 100; top-1/5/10/20 sample-level accuracy within each batch,
//!   averaged over batches.

use paperclip_clip::rng::Rng;
use serde::Serialize;

/// Query modality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// An image queries the captions: one row of the matrix.
    ImageToText,
    /// A caption queries the images: one column of the matrix.
    TextToImage,
}

impl Direction {
    /// Both directions, image→text first.
    pub const BOTH: [Direction; 2] = [Direction::ImageToText, Direction::TextToImage];

    /// Returns the name used in reports.
    pub fn label(self) -> &'static str {
        match self {
            Direction::ImageToText => "image→text",
            Direction::TextToImage => "text→image",
        }
    }
}

/// A square, row-major matrix of similarities: images in rows, captions in columns.
#[derive(Debug, Clone)]
pub struct Similarities {
    n: usize,
    values: Vec<f32>,
}

impl Similarities {
    /// Wraps `values` (N·N entries, row-major). Fails on a length that is not a square.
    pub fn new(values: Vec<f32>) -> Result<Self, String> {
        let n = (values.len() as f64).sqrt().round() as usize;
        if n * n != values.len() || n == 0 {
            return Err(format!(
                "a similarity matrix needs N·N values with N ≥ 1, got {}",
                values.len()
            ));
        }
        Ok(Self { n, values })
    }

    /// Returns the number of pairs N.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false: a matrix has at least one pair.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Returns the similarity of image `row` and caption `col`.
    pub fn get(&self, row: usize, col: usize) -> f32 {
        self.values[row * self.n + col]
    }

    /// Returns the similarities of one query to every candidate, in candidate order.
    fn query_scores(&self, direction: Direction, query: usize) -> Vec<f32> {
        match direction {
            Direction::ImageToText => self.values[query * self.n..(query + 1) * self.n].to_vec(),
            Direction::TextToImage => (0..self.n).map(|row| self.get(row, query)).collect(),
        }
    }

    /// Returns the sub-matrix of the given pairs, in the given order.
    fn select(&self, pairs: &[usize]) -> Similarities {
        let values = pairs
            .iter()
            .flat_map(|&row| pairs.iter().map(move |&col| self.get(row, col)))
            .collect();
        Similarities {
            n: pairs.len(),
            values,
        }
    }
}

/// Computes the rank of a query whose matching candidates satisfy `is_match` (see the
/// module docs).
fn rank(scores: &[f32], is_match: impl Fn(usize) -> bool) -> usize {
    let best = scores
        .iter()
        .enumerate()
        .filter(|&(j, _)| is_match(j))
        .map(|(_, &s)| s)
        .fold(f32::NEG_INFINITY, f32::max);
    1 + scores
        .iter()
        .enumerate()
        .filter(|&(j, &s)| !is_match(j) && s >= best)
        .count()
}

/// Sample-level ranks of every query in one direction.
pub fn sample_ranks(sim: &Similarities, direction: Direction) -> Vec<usize> {
    (0..sim.len())
        .map(|q| rank(&sim.query_scores(direction, q), |j| j == q))
        .collect()
}

/// Proposal-level ranks: `groups[i]` is pair i's proposal, and every candidate of the
/// query's proposal matches.
pub fn group_ranks(sim: &Similarities, groups: &[i64], direction: Direction) -> Vec<usize> {
    (0..sim.len())
        .map(|q| rank(&sim.query_scores(direction, q), |j| groups[j] == groups[q]))
        .collect()
}

/// Fraction of ranks at most `k`.
pub fn recall_at(ranks: &[usize], k: usize) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    ranks.iter().filter(|&&r| r <= k).count() as f64 / ranks.len() as f64
}

/// Computes the median rank: the mean of the two middle ranks when their count is even.
pub fn median_rank(ranks: &[usize]) -> f64 {
    let mut sorted = ranks.to_vec();
    sorted.sort_unstable();
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2] as f64,
        n => (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0,
    }
}

/// Returns the rank cut-off of retrieval fraction `fraction` over `n` candidates:
/// ⌊fraction·n⌋.
pub fn fraction_cutoff(fraction: f64, n: usize) -> usize {
    // The small tolerance keeps 0.1·30 at 3, not at 2 through rounding.
    (fraction * n as f64 + 1e-9).floor() as usize
}

/// Computes the top-k% accuracy of the PAPERCLIP paper: the fraction of ranks within
/// ⌊fraction·n⌋.
pub fn accuracy_at_fraction(ranks: &[usize], fraction: f64) -> f64 {
    recall_at(ranks, fraction_cutoff(fraction, ranks.len()))
}

/// One point of an accuracy-versus-fraction curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurvePoint {
    /// Retrieval fraction k in [0, 1].
    pub fraction: f64,
    /// Fraction of queries whose match ranks within ⌊k·N⌋.
    pub accuracy: f64,
    /// The accuracy of a random ranking: ⌊k·N⌋/N.
    pub random: f64,
}

/// Accuracy at `steps + 1` evenly spaced fractions from 0 to 1.
pub fn fraction_curve(ranks: &[usize], steps: usize) -> Vec<CurvePoint> {
    let n = ranks.len().max(1);
    (0..=steps)
        .map(|i| {
            let fraction = i as f64 / steps as f64;
            CurvePoint {
                fraction,
                accuracy: accuracy_at_fraction(ranks, fraction),
                random: fraction_cutoff(fraction, n) as f64 / n as f64,
            }
        })
        .collect()
}

/// The original code's metric: top-k within seeded batches of `batch_size` pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InBatch {
    /// Pairs per batch: `batch_size`, or N when the split is smaller.
    pub batch_size: usize,
    /// Whole batches scored; the pairs left over are not used.
    pub batches: usize,
    /// Top-k accuracy in both directions, for each k below the batch size.
    pub top_k: Vec<InBatchTopK>,
}

/// In-batch accuracy at one k.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InBatchTopK {
    /// Rank cut-off within a batch.
    pub k: usize,
    /// Fraction of images whose caption ranks within k, averaged over batches.
    pub image_to_text: f64,
    /// Fraction of captions whose image ranks within k, averaged over batches.
    pub text_to_image: f64,
}

/// Scores whole batches of a seeded permutation of the split (see the module docs).
pub fn in_batch(sim: &Similarities, batch_size: usize, ks: &[usize], seed: u64) -> InBatch {
    let batch_size = batch_size.clamp(1, sim.len());
    let mut order: Vec<usize> = (0..sim.len()).collect();
    Rng::derived(seed, "eval-in-batch").shuffle(&mut order);
    let batches = sim.len() / batch_size;

    let ks: Vec<usize> = ks.iter().copied().filter(|&k| k < batch_size).collect();
    let mut sums = vec![(0.0, 0.0); ks.len()];
    for batch in order.chunks_exact(batch_size) {
        let sub = sim.select(batch);
        let image_to_text = sample_ranks(&sub, Direction::ImageToText);
        let text_to_image = sample_ranks(&sub, Direction::TextToImage);
        for (sum, &k) in sums.iter_mut().zip(&ks) {
            sum.0 += recall_at(&image_to_text, k);
            sum.1 += recall_at(&text_to_image, k);
        }
    }

    let n = batches.max(1) as f64;
    InBatch {
        batch_size,
        batches,
        top_k: ks
            .iter()
            .zip(&sums)
            .map(|(&k, sum)| InBatchTopK {
                k,
                image_to_text: sum.0 / n,
                text_to_image: sum.1 / n,
            })
            .collect(),
    }
}

/// Matched and shuffled cosine similarities, for the similarity histograms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairSimilarities {
    /// Similarity of each image with its own caption.
    pub matched: Vec<f32>,
    /// Similarity of each image with the caption of a seeded random permutation.
    pub shuffled: Vec<f32>,
}

/// Returns the diagonal, and the similarities under a seeded permutation of the captions.
pub fn pair_similarities(sim: &Similarities, seed: u64) -> PairSimilarities {
    let mut permutation: Vec<usize> = (0..sim.len()).collect();
    Rng::derived(seed, "eval-shuffled-pairs").shuffle(&mut permutation);
    PairSimilarities {
        matched: (0..sim.len()).map(|i| sim.get(i, i)).collect(),
        shuffled: permutation
            .iter()
            .enumerate()
            .map(|(i, &j)| sim.get(i, j))
            .collect(),
    }
}

/// Counts of `values` in `bins` equal bins over [lo, hi]; values outside go to the end bins.
pub fn histogram(values: &[f32], bins: usize, lo: f32, hi: f32) -> Vec<usize> {
    let mut counts = vec![0; bins];
    let width = (hi - lo) / bins as f32;
    for &v in values.iter().filter(|v| v.is_finite()) {
        let bin = ((v - lo) / width).floor().clamp(0.0, (bins - 1) as f32) as usize;
        counts[bin] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: &[&[f32]]) -> Similarities {
        Similarities::new(rows.iter().flat_map(|r| r.iter().copied()).collect()).unwrap()
    }

    #[test]
    fn sample_ranks_count_ties_against_the_match() {
        // Image 1's caption ties with caption 0; caption 2 is best for image 2's column.
        let sim = matrix(&[&[0.9, 0.1, 0.2], &[0.5, 0.5, 0.1], &[0.3, 0.8, 0.2]]);
        assert_eq!(sample_ranks(&sim, Direction::ImageToText), vec![1, 2, 3]);
        assert_eq!(sample_ranks(&sim, Direction::TextToImage), vec![1, 2, 2]);
    }

    #[test]
    fn duplicate_captions_tie_then_match_by_proposal() {
        // Pairs 0 and 1 share one proposal and one caption, so columns 0 and 1 are equal.
        let sim = matrix(&[&[0.8, 0.8, 0.1], &[0.6, 0.6, 0.2], &[0.1, 0.1, 0.9]]);
        assert_eq!(sample_ranks(&sim, Direction::ImageToText), vec![2, 2, 1]);
        let groups = [7, 7, 9];
        assert_eq!(
            group_ranks(&sim, &groups, Direction::ImageToText),
            vec![1, 1, 1]
        );
        // Caption 1 queries the images: image 0 scores 0.8 > image 1's 0.6, but image 0 is
        // of the same proposal, so the proposal-level rank is 1.
        assert_eq!(sample_ranks(&sim, Direction::TextToImage), vec![1, 2, 1]);
        assert_eq!(
            group_ranks(&sim, &groups, Direction::TextToImage),
            vec![1, 1, 1]
        );
    }

    #[test]
    fn constant_scores_rank_every_match_last() {
        let sim = Similarities::new(vec![0.3; 16]).unwrap();
        assert_eq!(sample_ranks(&sim, Direction::ImageToText), vec![4; 4]);
        assert_eq!(accuracy_at_fraction(&[4; 4], 0.75), 0.0);
        assert_eq!(accuracy_at_fraction(&[4; 4], 1.0), 1.0);
    }

    #[test]
    fn fraction_cutoff_is_floor_of_k_n() {
        let ranks = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(fraction_cutoff(0.25, 10), 2);
        assert_eq!(accuracy_at_fraction(&ranks, 0.25), 0.2);
        assert_eq!(accuracy_at_fraction(&ranks, 0.3), 0.3);
        assert_eq!(accuracy_at_fraction(&ranks, 0.05), 0.0);
        let curve = fraction_curve(&ranks, 4);
        let points: Vec<(f64, f64, f64)> = curve
            .iter()
            .map(|p| (p.fraction, p.accuracy, p.random))
            .collect();
        assert_eq!(
            points,
            vec![
                (0.0, 0.0, 0.0),
                (0.25, 0.2, 0.2),
                (0.5, 0.5, 0.5),
                (0.75, 0.7, 0.7),
                (1.0, 1.0, 1.0)
            ]
        );
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median_rank(&[5, 1, 3]), 3.0);
        assert_eq!(median_rank(&[4, 1, 3, 2]), 2.5);
        assert_eq!(median_rank(&[]), 0.0);
    }

    #[test]
    fn in_batch_uses_whole_batches_only() {
        // Identity-like scores: every match ranks first in any batch.
        let n = 7;
        let values = (0..n * n)
            .map(|i| if i / n == i % n { 1.0 } else { 0.0 })
            .collect();
        let sim = Similarities::new(values).unwrap();
        let result = in_batch(&sim, 3, &[1, 5], 42);
        assert_eq!(result.batch_size, 3);
        assert_eq!(result.batches, 2);
        let top: Vec<(usize, f64, f64)> = result
            .top_k
            .iter()
            .map(|t| (t.k, t.image_to_text, t.text_to_image))
            .collect();
        assert_eq!(top, vec![(1, 1.0, 1.0)]);
    }

    #[test]
    fn in_batch_of_a_reversed_ranking() {
        // Each image's own caption scores lowest: top-1 is 0 in every batch, and top-k
        // for k = batch - 1 is 0 as well, since the match ranks last.
        let n = 4;
        let values = (0..n * n)
            .map(|i| if i / n == i % n { -1.0 } else { 0.5 })
            .collect();
        let result = in_batch(&Similarities::new(values).unwrap(), 4, &[1, 3], 1);
        let top: Vec<(usize, f64, f64)> = result
            .top_k
            .iter()
            .map(|t| (t.k, t.image_to_text, t.text_to_image))
            .collect();
        assert_eq!(top, vec![(1, 0.0, 0.0), (3, 0.0, 0.0)]);
    }

    #[test]
    fn shuffled_pairs_are_a_permutation_of_each_row() {
        let sim = matrix(&[&[0.9, 0.1], &[0.2, 0.8]]);
        let pairs = pair_similarities(&sim, 42);
        assert_eq!(pairs.matched, vec![0.9, 0.8]);
        assert_eq!(pairs.shuffled.len(), 2);
        for (i, s) in pairs.shuffled.iter().enumerate() {
            assert!((0..2).any(|j| sim.get(i, j) == *s));
        }
    }

    #[test]
    fn histogram_bins_edges_and_outliers() {
        let counts = histogram(&[-1.0, -0.99, 0.0, 0.5, 1.0, 2.0, f32::NAN], 4, -1.0, 1.0);
        assert_eq!(counts, vec![2, 0, 1, 3]);
    }
}
