"""Semantic dedup (tasks/samplers/semantic_dedup.py) at 100k and 1M rows x 384 dims on clustered synthetic embeddings.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_dedup.py [--sizes 100000,1000000] [--thresholds 0.9,0.95]

bench.common.clustered_embeddings (200 centres; two rows of one centre sit at cosine ~0.74, so the base data has
no near-duplicates at 0.9), then `planted` of the rows are overwritten by near-copies of other random rows
(cosine ~0.97 to their source) and a tenth of those by exact copies. Each size runs in a fresh process
(bench.common.measure): wall time of the semantic_dedup call only; peak RSS of the whole process, the
embedding matrix included (1.5 GiB at 1M). Recall: the share of planted pairs of which one row was dropped.
"""

import argparse
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import clustered_embeddings, measure, write_results  # noqa: E402


QUALITY_HEADING = "## Does dedup on by default help?"


def plant(x: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Overwrite share*N rows with near-copies (cosine ~0.97) or, one in ten, exact copies of other rows."""
    rng = np.random.default_rng(seed + 7)
    n, d = x.shape
    m = int(share * n)
    picks = rng.choice(n, 2 * m, replace=False)
    sources, targets = picks[:m], picks[m:]
    for start in range(0, m, 50_000):
        s, t = sources[start : start + 50_000], targets[start : start + 50_000]
        block = x[s] + (0.25 / np.sqrt(d)) * rng.standard_normal((len(s), d), dtype=np.float32)
        exact = rng.random(len(s)) < 0.1
        block[exact] = x[s[exact]]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[t] = block
    return sources, targets


def run(n: int, d: int = 384, threshold: float = 0.9, planted: float = 0.05, seed: int = 0) -> dict:
    import time

    from selectflow.tasks.samplers.semantic_dedup import semantic_dedup

    x = clustered_embeddings(n, d, seed=seed)
    sources, targets = plant(x, planted, seed)
    ids = np.array([f"row-{i}" for i in range(n)], dtype=object)
    t0 = time.perf_counter()
    result = semantic_dedup(x, threshold, ids=ids, seed=seed)
    wall = time.perf_counter() - t0
    dropped = np.zeros(n, dtype=bool)
    dropped[result.dropped] = True
    recall = float(np.mean(dropped[sources] | dropped[targets]))
    return {"wall_s": wall, "n": n, "dropped": int(len(result.dropped)), "planted": int(len(targets)),
            "recall": recall, "min_similarity": float(result.similarity.min()) if len(result.dropped) else None,
            "diagnostics": result.diagnostics}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--thresholds", default="0.9,0.95")
    ap.add_argument("--append", default="", help="extra markdown appended to the results file")
    args = ap.parse_args(argv)
    rows = []
    for n, t in [(int(s), float(t)) for s in args.sizes.split(",") for t in args.thresholds.split(",")]:
        r = measure("bench.bench_dedup", "run", {"n": n, "threshold": t}, timeout=3600)
        g = r["diagnostics"]
        rows.append(f"| {n:,} | {t:g} | {g['n_clusters']} | {g['probing_rows']:,} | {r['wall_s']:.1f} | {g['seconds_clustering']:.1f} | {r['peak_rss_gib']:.2f} | "
                    f"{r['planted']:,} | {r['dropped']:,} | {r['recall']:.4f} | {g['pairs_found']:,} | {g['largest_cluster']:,} |")
        print(rows[-1], flush=True)
    md = ("# Semantic dedup benchmark\n\n" + __doc__.split("\n\n", 1)[1].strip() + "\n\n"
          "Seed 0, default options (n_clusters = ceil(N/1000), probes 2, range search, greedy rule), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}.\n\n"
          "| N | threshold | clusters | rows probing a 2nd cluster | wall s | of which k-means s | peak RSS GiB | planted | dropped | recall | pairs found | largest cluster |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + ("\n\n" + args.append if args.append else ""))
    from bench.common import RESULTS_DIR

    existing = RESULTS_DIR / "dedup.md"
    if existing.exists() and QUALITY_HEADING in existing.read_text():  # keep the quality measurement (tune_quality.py)
        kept = existing.read_text().split(QUALITY_HEADING, 1)[1]
        kept = re.sub(r"\n*_Measured [^\n]* on \d+ cores\._\s*$", "", kept)  # the previous run's footer, not the section's own
        md += "\n\n" + QUALITY_HEADING + kept.rstrip()
    print(write_results("dedup", md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
