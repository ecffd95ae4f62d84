"""Benchmark MIG: wall time and peak memory at scale, and lazy sparse greedy vs the reference code's dense loop.

    python bench/bench_mig.py [--sizes 10000 100000 1000000] [--compare-sizes 10000 100000] [--quality-data demo]

Data: clustered synthetic unit-norm embeddings (D=384, 200 centres), a DEITA-like quality column
uniform in [1, 5], no labels column (tag-free k-means labels), budget 5% of N.

The comparison runs the reference code's formulation on the same propagated vectors: a dense N x K
matrix E_hat, the linearised gain <e_hat_d, phi'(x)> of every row at every step, argmax (masking
picked rows with -inf rather than copying the unpicked ones, which only makes it faster).

The quality comparison runs the evaluation protocol of bench/tune_quality.py (cached embeddings of the
demo data, 20% test split per template, seeds 0-2, random over seeds 0-4) for MIG's default and for the
reference code's formulation on tag-free cluster labels: row-stochastic propagation (Eq. 6), tau = 0.9 on
the label embeddings (uncentred unit centroids, as the code uses unit tag embeddings), alpha = 1,
phi = x^0.8, the linearised gain in the dense loop, constant quality, argmax ties to the lowest row.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import clustered_embeddings, measure, write_results  # noqa: E402

D = 384
BUDGET_FRACTION = 0.05


def _input(n: int, quality: bool):
    from selectflow.tasks.samplers import SelectionInput

    x = clustered_embeddings(n, D, seed=0)
    q = np.random.default_rng(1).uniform(1.0, 5.0, size=n) if quality else None
    return SelectionInput(embeddings=x, quality=q)


def run_sampler(n: int, gain: str = "exact", quality: bool = True) -> dict:
    """The whole sampler (k-means labels, graph, propagation, lazy greedy) as a pipeline would call it."""
    from selectflow.tasks.samplers.mig import MIGOptions, MIGSampler

    data = _input(n, quality)
    budget = int(round(BUDGET_FRACTION * n))
    t = time.perf_counter()
    sel = MIGSampler(MIGOptions(gain=gain)).select(data, budget, seed=0)
    wall = time.perf_counter() - t
    d = sel.diagnostics
    return {
        "wall_s": wall,
        "budget": budget,
        "n_labels": d["n_labels"],
        "label_sets": d["distinct_label_sets"],
        "evaluations": d["gain_evaluations"],
        "labels_covered": d["labels_covered"],
    }


def run_greedy(n: int, method: str, dtype: str = "float64") -> dict:
    """Only the selection loop on a shared problem: 'sparse' (lazy, this module) or 'dense' (reference loop)."""
    from selectflow.tasks.samplers.mig import MIGOptions, build_problem, greedy

    data = _input(n, quality=True)
    budget = int(round(BUDGET_FRACTION * n))
    problem = build_problem(data, MIGOptions(gain="linearized"), seed=0, budget=budget)
    if method == "sparse":
        t = time.perf_counter()
        result = greedy(problem.candidates, budget, problem.phi, gain="linearized", lazy=True)
        return {"wall_s": time.perf_counter() - t, "rows": result.rows.tolist(), "k": problem.candidates.unit.shape[1]}
    ehat = problem.candidates.ehat_rows().toarray().astype(dtype)
    t = time.perf_counter()
    rows = _dense_reference(ehat, budget, problem.phi.b)
    return {"wall_s": time.perf_counter() - t, "rows": rows, "dense_gib": ehat.nbytes / 2**30}


REFERENCE_OPTIONS = dict(
    propagation="paper",
    similarity_threshold=0.9,
    center_label_embeddings=False,
    prop_weight=1.0,
    tie_break="row",
    central_share=1.0,
    gain="linearized",
    phi="pow",
    phi_b=0.8,
)


def reference_rows(inp, budget: int, seed: int, labels: str) -> np.ndarray:
    """The reference code's formulation on tag-free labels: 'default' = the labels MIG's default builds
    (k-means levels from the budget), 'cube-root' = the former labels (round(N^(1/3)) x {1, 2, 4})."""
    from selectflow.tasks.samplers.mig import MIGOptions, build_problem

    opts = dict(REFERENCE_OPTIONS)
    if labels == "cube-root":
        opts["base_clusters"] = max(2, round(inp.n_rows ** (1 / 3)))
    problem = build_problem(inp, MIGOptions(**opts), seed=seed, budget=budget)
    ehat = problem.candidates.ehat_rows().toarray().astype(np.float32)
    return np.asarray(_dense_reference(ehat, budget, problem.phi.b))


def run_quality(embeddings: str, data: str, budgets: list[float]) -> dict:
    """Scores of random, MIG's default and the reference formulation (F1, tpl, cover, dup; mean over seeds)."""
    from bench.tune_quality import load
    from selectflow.tasks.embedding.faiss_index import build_index, choose_params, searcher
    from selectflow.tasks.evaluation import proxy_macro_f1, stratified_split
    from selectflow.tasks.reporting.metrics import coverage_distance, near_duplicate_rate
    from selectflow.tasks.samplers import SelectionInput, get_sampler

    vectors, frame = load(embeddings, data)
    labels = np.asarray(frame["source"].cast(str).to_list(), dtype=object)
    fine = np.asarray(frame["template"].cast(str).to_list(), dtype=object)
    pool, test = stratified_split(fine, 0.2, 0)
    pv = np.ascontiguousarray(vectors[pool])
    # Ids as bench/tune_quality.py passes them: samplers run on rows sorted by id, so the two agree exactly.
    ids = np.asarray(frame["id"].to_list(), dtype=object)[pool] if "id" in frame.columns else None
    inp = SelectionInput(embeddings=pv, ids=ids, knn=searcher(build_index(pv, choose_params(len(pool)), seed=0)))
    n_templates = len(set(fine[pool].tolist()))

    def score(rows):
        sel = pool[np.asarray(rows)]
        return [
            proxy_macro_f1(vectors, labels, sel, test),
            len(set(fine[sel].tolist())) / n_templates,
            coverage_distance(vectors, sel, test),
            near_duplicate_rate(vectors, sel),
        ]

    methods = {
        "random": (lambda b, s: get_sampler("random").select(inp, b, s).rows, [0, 1, 2, 3, 4]),
        "mig default": (lambda b, s: get_sampler("mig").select(inp, b, s).rows, [0, 1, 2]),
        "reference code, same labels as the default": (lambda b, s: reference_rows(inp, b, s, "default"), [0, 1, 2]),
        "reference code, former labels N^(1/3) x {1,2,4}": (lambda b, s: reference_rows(inp, b, s, "cube-root"), [0, 1, 2]),
    }
    out = {"pool": len(pool), "rows": []}
    for fraction in budgets:
        budget = max(1, round(fraction * len(pool)))
        for name, (select, seeds) in methods.items():
            t = time.perf_counter()
            scores = np.mean([score(select(budget, s)) for s in seeds], axis=0)
            out["rows"].append([fraction, name, *scores.tolist(), (time.perf_counter() - t) / len(seeds)])
    return out


def _dense_reference(ehat: np.ndarray, budget: int, b: float) -> list[int]:
    x = np.zeros(ehat.shape[1], dtype=ehat.dtype)
    picked = np.zeros(ehat.shape[0], dtype=bool)
    rows = []
    for _ in range(budget):
        g = (b * (x + 1e-6) ** (b - 1)).astype(ehat.dtype)
        scores = ehat @ g
        scores[picked] = -np.inf
        d = int(np.argmax(scores))
        rows.append(d)
        picked[d] = True
        x += ehat[d]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    # 100k is left out: with budget-relative labels (K ~ 5,500) the reference's dense E_hat is 4.4 GiB in float64
    # and its loop reads it 5,000 times.
    parser.add_argument("--compare-sizes", type=int, nargs="*", default=[10_000])
    parser.add_argument("--timeout", type=int, default=1500)
    parser.add_argument("--quality-embeddings", default="/tmp/demo_emb.parquet")
    parser.add_argument("--quality-data", default="../shared/data/instructions_demo.jsonl")
    parser.add_argument("--quality-budgets", type=float, nargs="*", default=[0.01, 0.05, 0.1])
    args = parser.parse_args()
    mod = "bench.bench_mig"
    # The 2 cores are shared with other jobs; oversubscribed OpenMP/OpenBLAS threads were 3-10x slower
    # than one thread here, so every child runs single-threaded (set these variables to override).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    load_before = os.getloadavg()[0]

    scale_rows = []
    for n in args.sizes:
        for gain, quality in (("exact", True), ("linearized", True), ("exact", False)):
            if n >= 1_000_000 and (gain, quality) != ("exact", True):
                continue  # one configuration at 1M keeps the run within minutes
            r = measure(mod, "run_sampler", {"n": n, "gain": gain, "quality": quality}, timeout=args.timeout)
            scale_rows.append(
                f"| {n:,} | {gain} | {'uniform[1,5]' if quality else 'none'} | {r['budget']:,} | {r['n_labels']} | "
                f"{r['label_sets']:,} | {r['evaluations']:,} | {r['wall_s']:.1f} | {r['peak_rss_gib']:.2f} |"
            )
            print(scale_rows[-1], flush=True)

    quality_rows = []
    if args.quality_budgets and Path(args.quality_embeddings).exists():
        q = measure(
            mod,
            "run_quality",
            {"embeddings": args.quality_embeddings, "data": args.quality_data, "budgets": args.quality_budgets},
            timeout=args.timeout,
        )
        base = {}
        for fraction, name, f1, tpl, cover, dup, secs in q["rows"]:
            if name == "random":
                base[fraction] = (f1, tpl, cover, dup)
            r = base[fraction]
            wins = "" if name == "random" else ("yes" if f1 >= r[0] and tpl >= r[1] and cover < r[2] and dup < r[3] else "no")
            quality_rows.append(f"| {fraction:g} | {name} | {f1:.3f} | {tpl:.3f} | {cover:.4f} | {dup:.3f} | {secs:.2f} | {wins} |")
            print(quality_rows[-1], flush=True)
        quality_pool = q["pool"]

    compare_rows = []
    for n in args.compare_sizes:
        sparse = measure(mod, "run_greedy", {"n": n, "method": "sparse"}, timeout=args.timeout)
        for dtype in ("float64", "float32"):
            dense = measure(mod, "run_greedy", {"n": n, "method": "dense", "dtype": dtype}, timeout=args.timeout)
            a, b = np.array(sparse["rows"]), np.array(dense["rows"])
            same = bool(np.array_equal(a, b))
            diverge = "-" if same else str(int(np.flatnonzero(a != b)[0]))
            overlap = len(set(a.tolist()) & set(b.tolist())) / len(a)
            compare_rows.append(
                f"| {n:,} | {sparse['k']} | {len(a):,} | {dtype} ({dense['dense_gib']:.2f} GiB) | {sparse['wall_s']:.2f} | "
                f"{dense['wall_s']:.1f} | {dense['wall_s'] / sparse['wall_s']:.0f}x | {'yes' if same else 'no'} | {diverge} | {overlap:.4f} |"
            )
            print(compare_rows[-1], flush=True)

    markdown = "\n".join(
        [
            "# MIG benchmark",
            "",
            f"Clustered synthetic embeddings (D={D}, 200 centres), MIG's default options: tag-free labels (3 k-means levels,",
            "finest = budget clusters; flat k-means up to N x clusters = 3e7, nested beyond), no propagation between",
            "cluster labels, phi = x^0.5, budget 5% of N. Wall time is the `select` call only",
            "(data generation excluded); peak RSS is the whole child process, embeddings included (1M x 384 float32 = 1.4 GiB).",
            f"Threads: OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}. "
            f"Taken under load from other jobs on the same 2 cores (1-minute load average {load_before:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end): absolute times are pessimistic, ratios are fairer.",
            "",
            "## Sampler at scale",
            "",
            "Before the quality fixes (labels N^(1/3) x {1, 2, 4}, target degree 8, row-stochastic propagation, x^0.8,",
            "ties to the lowest row), the same table read 1.0-1.3 s at 10k, 4.8 s (exact), 8.1 s (linearized) and",
            "19.2 s (no quality) at 100k, 77 s at 1M. Budget-relative labels have ~B finest clusters (K = 5,534 at 100k",
            "against 322); at 100k the exact-gain run with quality is ~1.5x slower, the others and 1M are faster.",
            "",
            "| N | gain | quality | budget | labels K | label sets | gain evaluations | wall s | peak RSS GiB |",
            "|---|---|---|---|---|---|---|---|---|",
            *scale_rows,
            "",
            *(
                [
                    "## Selection quality: MIG's default vs the reference code's formulation on tag-free labels",
                    "",
                    f"Demo data ({args.quality_data}), pool {quality_pool:,} rows, protocol of bench/tune_quality.py: mean over",
                    "seeds 0-2 (random 0-4). F1: macro-F1 of a logistic regression on the selection, predicting the family;",
                    "tpl: share of templates selected; cover: mean cosine distance from a test row to its nearest selected row;",
                    "dup: share of selected rows with another at cosine > 0.95. The reference formulation: row-stochastic",
                    "propagation (Eq. 6), tau = 0.9 on uncentred centroids, alpha = 1, x^0.8, linearised gain, dense loop,",
                    "constant quality, ties to the lowest row; on the labels MIG's default builds, and on the former labels.",
                    "",
                    "| budget | selection | F1 ↑ | tpl ↑ | cover ↓ | dup ↓ | s/run | beats random on all 4 |",
                    "|---|---|---|---|---|---|---|---|",
                    *quality_rows,
                    "",
                ]
                if quality_rows
                else []
            ),
            "## Lazy sparse greedy vs the reference code's dense loop (selection loop only, same problem)",
            "",
            "Linearised gain, quality uniform[1,5]. The dense loop scores all N rows against phi'(x) at every step as",
            "`mig/sampler.py` does (the reference runs it in float32 on GPU). 'first difference' is the first rank where",
            "the two orders differ; 'overlap' is the share of rows selected by both.",
            "",
            "| N | K | budget | dense E_hat | lazy sparse s | dense s | speed-up | same selection | first difference | overlap |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *compare_rows,
        ]
    )
    print(write_results("mig", markdown))


if __name__ == "__main__":
    main()
