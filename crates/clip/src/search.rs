//! Exact nearest-neighbour search by dot product, for text-to-image search over stored
//! embeddings. With L2-normalized rows the dot product is the cosine similarity.
//!
//! The rows are scored in parallel blocks; each block keeps its best `k`, and the blocks'
//! winners are merged. Equal scores keep row order, so results are deterministic.

use rayon::prelude::*;

/// Rows scored by one parallel task.
const ROWS_PER_TASK: usize = 4096;

/// Returns the `k` rows of `rows` (row-major, `dim` wide) with the largest dot product
/// with `query`, best first, as `(row index, score)`.
pub fn top_k_dot(rows: &[f32], dim: usize, query: &[f32], k: usize) -> Vec<(usize, f32)> {
    let dim = dim.max(1);
    let mut best: Vec<(usize, f32)> = rows
        .par_chunks(ROWS_PER_TASK * dim)
        .enumerate()
        .flat_map_iter(|(task, block)| {
            let mut local: Vec<(usize, f32)> = block
                .chunks_exact(dim)
                .enumerate()
                .map(|(i, row)| (task * ROWS_PER_TASK + i, dot(row, query)))
                .collect();
            keep_best(&mut local, k);
            local
        })
        .collect();
    keep_best(&mut best, k);
    best
}

/// Computes a dot product in 16 independent lanes, which the compiler turns into SIMD.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (a_blocks, b_blocks) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = a_blocks
        .remainder()
        .iter()
        .zip(b_blocks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_blocks.zip(b_blocks) {
        for lane in 0..16 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Sorts best first (ties by index) and keeps `k`.
fn keep_best(scored: &mut Vec<(usize, f32)>, k: usize) {
    let order = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if scored.len() > k && k > 0 {
        scored.select_nth_unstable_by(k - 1, order);
    }
    scored.truncate(k);
    scored.sort_by(order);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_first_with_ties_in_row_order() {
        let rows = [0.1, 0.0, 0.9, 0.0, 0.5, 0.0, 0.9, 0.0, -1.0, 0.0];
        let top = top_k_dot(&rows, 2, &[1.0, 0.0], 3);
        assert_eq!(top, vec![(1, 0.9), (3, 0.9), (2, 0.5)]);
        assert_eq!(top_k_dot(&rows, 2, &[1.0, 0.0], 10).len(), 5);
        assert!(top_k_dot(&rows, 2, &[1.0, 0.0], 0).is_empty());
    }

    #[test]
    fn blocks_merge_to_the_global_best() {
        // More rows than one task takes, the best ones in the last block.
        let n = ROWS_PER_TASK * 2 + 10;
        let rows: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let top = top_k_dot(&rows, 1, &[1.0], 3);
        let indices: Vec<usize> = top.iter().map(|t| t.0).collect();
        assert_eq!(indices, vec![n - 1, n - 2, n - 3]);
    }

    #[test]
    fn dot_matches_the_plain_sum_with_a_tail() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.1).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-4);
    }
}
