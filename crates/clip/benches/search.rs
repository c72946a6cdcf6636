//! Exact search over 100,000 unit vectors of width 512: the time of one query
//! (`top_k_dot`, k = 12), median over 32 queries, on every core and on one.
//!
//! `cargo bench -p paperclip-clip --bench search [-- ROWS DIM]` prints one JSON line;
//! `benches/search.sh` runs it next to the same search in NumPy.

use std::time::Instant;

use paperclip_clip::rng::Rng;
use paperclip_clip::search::top_k_dot;

fn random_unit_rows(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::seeded(seed);
    let mut values = Vec::with_capacity(rows * dim);
    for _ in 0..rows {
        let row: Vec<f32> = (0..dim).map(|_| rng.normal() as f32).collect();
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        values.extend(row.iter().map(|x| x / norm));
    }
    values
}

fn median_query_ms(rows: &[f32], queries: &[f32], dim: usize) -> f64 {
    top_k_dot(rows, dim, &queries[..dim], 12);
    let mut times: Vec<f64> = queries
        .chunks_exact(dim)
        .map(|query| {
            let clock = Instant::now();
            let top = top_k_dot(rows, dim, query, 12);
            assert_eq!(top.len(), 12);
            clock.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(100_000);
    let dim = args.get(1).copied().unwrap_or(512);
    let images = random_unit_rows(rows, dim, 1);
    let queries = random_unit_rows(32, dim, 2);

    let all_cores = median_query_ms(&images, &queries, dim);
    let one_core = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool")
        .install(|| median_query_ms(&images, &queries, dim));
    println!(
        "{{\"engine\": \"paperclip\", \"rows\": {rows}, \"dim\": {dim}, \"threads\": {}, \
         \"query_ms_median\": {all_cores:.2}, \"query_ms_median_one_thread\": {one_core:.2}}}",
        rayon::current_num_threads()
    );
}
