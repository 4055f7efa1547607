"""Near-duplicate lookup at fleet scale: the LSH index against a NumPy brute-force scan.

Random 64-bit perceptual hashes stand in for a labeling pool; each query is a pool
hash with up to ``--distance`` bits flipped. Both methods are timed in the same run
and must return the same neighbours.

    .venv/bin/python bench/dedup.py [--pool 100000] [--queries 1000] [--distance 8]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from alscout.trainer.fleet.dedup import NearDuplicateIndex


def brute_force(pool: np.ndarray, query: int, distance: int) -> list[tuple[int, int]]:
    """(hamming distance, pool index) of every pool hash within ``distance``, sorted."""
    counts = np.bitwise_count(np.bitwise_xor(pool, np.uint64(query)))
    near = np.nonzero(counts <= distance)[0]
    return sorted((int(counts[i]), int(i)) for i in near)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--distance", type=int, default=8)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    pool = rng.integers(0, 2**64, args.pool, dtype=np.uint64)
    index = NearDuplicateIndex(args.distance)
    start = time.perf_counter()
    for i, value in enumerate(pool):
        index.add(i, int(value))
    build_s = time.perf_counter() - start

    queries = []
    for i in rng.integers(0, args.pool, args.queries):
        flips = rng.choice(64, size=int(rng.integers(0, args.distance + 1)), replace=False)
        queries.append(int(pool[i]) ^ sum(1 << int(b) for b in flips))

    start = time.perf_counter()
    found = [sorted((d, k) for k, d in index.query(q)) for q in queries]
    lsh_s = time.perf_counter() - start
    start = time.perf_counter()
    expected = [brute_force(pool, q, args.distance) for q in queries]
    brute_s = time.perf_counter() - start
    if found != expected:
        raise SystemExit("LSH and brute force disagree")

    per_query = 1e3 / args.queries
    print(
        f"pool {args.pool}, {args.queries} queries, distance <= {args.distance}: "
        f"build {build_s:.2f} s; LSH {lsh_s * per_query:.3f} ms/query; "
        f"NumPy scan {brute_s * per_query:.3f} ms/query; scan/LSH {brute_s / lsh_s:.2f}x; "
        "same neighbours"
    )


if __name__ == "__main__":
    main()
