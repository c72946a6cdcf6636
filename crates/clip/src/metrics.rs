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

/// Mean over dimensions of the variance across rows of the L2-normalized rows of
/// `features` (`[batch, dim]`): about 1/dim for spread-out embeddings, 0 when every row
/// points the same way. A falling value is the usual sign of a collapsing model.
pub fn embedding_variance(features: &candle_core::Tensor) -> Result<f64, crate::ClipError> {
    let normalized = crate::model::l2_normalize(&features.detach())?;
    let centered = normalized.broadcast_sub(&normalized.mean_keepdim(0)?)?;
    let variance = centered.sqr()?.mean_all()?;
    Ok(f64::from(variance.to_scalar::<f32>()?))
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
    fn identical_embeddings_have_zero_variance() {
        use candle_core::{Device, Tensor};

        let same = Tensor::ones((8, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(embedding_variance(&same).unwrap(), 0.0);

        let spread = Tensor::randn(0f32, 1f32, (512, 16), &Device::Cpu).unwrap();
        let variance = embedding_variance(&spread).unwrap();
        assert!((variance - 1.0 / 16.0).abs() < 0.01, "{variance}");
    }

    #[test]
    fn constant_scores_rank_last() {
        let scores = vec![vec![0.5; 4]; 4];
        assert_eq!(diagonal_ranks(&scores), vec![4; 4]);
    }
}
