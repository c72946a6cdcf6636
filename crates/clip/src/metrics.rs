//! Retrieval metrics on a square similarity matrix whose diagonal holds the matching pairs.
//!
//! Rank rule: the rank of row i's match is 1 plus the number of other columns whose score
//! is greater than OR EQUAL to the match's score. Ties therefore count against the match,
//! so identical captions in one batch (several images of one proposal) never inflate a
//! score, and a model that gives every pair the same similarity scores zero at every k
//! below the batch size.

/// Rank of each row's diagonal entry among the row's entries (1 = best).
pub fn diagonal_ranks(scores: &[Vec<f32>]) -> Vec<usize> {
    scores
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let own = row[i];
            1 + row
                .iter()
                .enumerate()
                .filter(|&(j, &s)| j != i && s >= own)
                .count()
        })
        .collect()
}

/// Fraction of rows whose match ranks within `k`.
pub fn top_k_accuracy(ranks: &[usize], k: usize) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    ranks.iter().filter(|&&r| r <= k).count() as f64 / ranks.len() as f64
}

/// The transpose of a square matrix (image→text rows into text→image rows).
pub fn transpose(scores: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let n = scores.len();
    (0..n)
        .map(|j| (0..n).map(|i| scores[i][j]).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_count_ties_against_the_match() {
        let scores = vec![
            vec![0.9, 0.1, 0.2],
            vec![0.5, 0.5, 0.1],
            vec![0.3, 0.8, 0.2],
        ];
        assert_eq!(diagonal_ranks(&scores), vec![1, 2, 3]);
        assert_eq!(top_k_accuracy(&[1, 2, 3], 1), 1.0 / 3.0);
        assert_eq!(top_k_accuracy(&[1, 2, 3], 2), 2.0 / 3.0);
        assert_eq!(diagonal_ranks(&transpose(&scores)), vec![1, 2, 2]);
    }

    #[test]
    fn constant_scores_rank_last() {
        let scores = vec![vec![0.5; 4]; 4];
        assert_eq!(diagonal_ranks(&scores), vec![4; 4]);
    }
}
