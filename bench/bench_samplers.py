"""Every registered sampler at N = 10k, 100k and 1M (clustered synthetic embeddings, D = 384, budget 5%):
wall time and peak memory of one selection, each in a fresh process, written to bench/results/samplers.md.

Goal (issue #3): every sampler at 1M rows within 10 minutes and 8 GiB on 2 cores, with default options
(partitioned modes are chosen automatically where a sampler has them).

    python bench/bench_samplers.py [--sizes 10000 100000 1000000] [--samplers kmeans mig ...]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import measure, write_results  # noqa: E402

GOAL_SECONDS, GOAL_GIB = 600, 8.0


def run_one(sampler: str, n: int, seed: int = 0) -> dict:
    """Runs inside the measured subprocess: generate the data, then time the selection alone."""
    import time

    import numpy as np

    from bench.common import clustered_embeddings
    from selectflow.tasks.samplers import SelectionInput, get_sampler

    x = clustered_embeddings(n, 384, n_clusters=200, seed=seed)
    quality = np.random.default_rng(seed).uniform(1.0, 5.0, size=n)
    data = SelectionInput(embeddings=x, quality=quality)
    t0 = time.perf_counter()
    sel = get_sampler(sampler).select(data, int(0.05 * n), seed)
    return {"wall_s": time.perf_counter() - t0, "selected": int(len(sel.rows))}


def main() -> None:
    from selectflow.tasks.samplers import SAMPLERS

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--samplers", nargs="+", default=sorted(SAMPLERS))
    args = ap.parse_args()
    rows = []
    for sampler in args.samplers:
        for n in args.sizes:
            try:
                r = measure("bench.bench_samplers", "run_one", {"sampler": sampler, "n": n}, timeout=1800)
                ok = r["wall_s"] <= GOAL_SECONDS and r["peak_rss_gib"] <= GOAL_GIB
                rows.append(f"| {sampler} | {n:,} | {int(0.05 * n):,} | {r['wall_s']:.1f} | {r['peak_rss_gib']:.2f} | {'yes' if ok else 'no'} |")
            except Exception as exc:  # record the failure rather than hide it
                rows.append(f"| {sampler} | {n:,} | {int(0.05 * n):,} | failed | | {str(exc).splitlines()[-1][:80]} |")
            print(rows[-1], flush=True)
    text = "\n".join([
        "# Every sampler at 10k, 100k and 1M rows",
        "",
        "Clustered synthetic embeddings (200 clusters, D = 384, float32, unit norm), uniform quality in [1, 5],",
        "budget 5%, default options, seed 0. Wall time is the selection alone (data generation excluded); peak",
        "memory is the whole process, including the N x 384 x 4-byte embeddings (1.43 GiB at 1M).",
        f"Goal: {GOAL_SECONDS // 60} minutes and {GOAL_GIB:.0f} GiB at 1M rows on 2 cores.",
        "",
        "| sampler | rows | budget | wall (s) | peak RSS (GiB) | within goal |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    path = write_results("samplers", text)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
