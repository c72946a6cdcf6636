"""The same exact search as crates/clip/benches/search.rs, in NumPy: one matrix-vector
product over unit rows, then argpartition for the best k. Prints one JSON line."""

import json
import os
import sys
import time

import numpy as np


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    dim = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    rng = np.random.default_rng(1)
    images = rng.standard_normal((rows, dim), dtype=np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    queries = rng.standard_normal((32, dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    def search(query):
        scores = images @ query
        best = np.argpartition(-scores, 12)[:12]
        return best[np.argsort(-scores[best], kind="stable")]

    search(queries[0])
    times = []
    for query in queries:
        start = time.perf_counter()
        assert len(search(query)) == 12
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    print(json.dumps({
        "engine": "numpy " + np.__version__,
        "rows": rows,
        "dim": dim,
        "threads": os.environ.get("OMP_NUM_THREADS", "all"),
        "query_ms_median": round(times[len(times) // 2], 2),
    }))


if __name__ == "__main__":
    main()
