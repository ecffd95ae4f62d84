"""Quick quality sweep for tuning sampler defaults: the evaluation protocol on cached embeddings.

Runs samplers exactly as `selectflow select` runs them (no labels, no quality, an index over the pool)
on the demo data, and prints the four scores beside random (mean over seeds):
F1 (macro-F1 of a logistic regression predicting the family), tpl (share of templates selected),
cover (mean cosine distance from each test row to its nearest selected row), dup (near-duplicate rate).

    python bench/tune_quality.py --embeddings /tmp/demo_emb.parquet --data ../shared/data/instructions_demo.jsonl \
        kmeans kmeans:k=100 mig:target_degree=0.5

A spec is NAME or NAME:opt=value,opt=value (values parsed as JSON where they parse, else strings).
`--dedup T[,T...]` adds, for every spec (random included), a row "SPEC +dedup T" where semantic dedup
(tasks/samplers/semantic_dedup.py, seeded with the run's seed, as `select --dedup` runs it) drops near-duplicates from
the pool first and the sampler selects the same number of rows among the kept ones; the baseline row
"random" stays on the original pool.
A NAME with a dot is a plain function `module.function(embeddings, budget, seed, **options)` returning rows,
e.g. `selectflow.tasks.samplers.coverage.kmeans_medoids` or `...coverage.facility_location:n_neighbors=50`
(a function with a `knn` parameter gets the pool's index).
Use it to explore; the held-out judgement is `selectflow evaluate`.
"""

import argparse
import json
import sys
import time

import numpy as np
import polars as pl

from selectflow.tasks.embedding.faiss_index import build_index, choose_params, searcher
from selectflow.tasks.evaluation import proxy_macro_f1, stratified_split
from selectflow.tasks.reporting.metrics import coverage_distance, near_duplicate_rate
from selectflow.tasks.samplers import SelectionInput, get_sampler


class FunctionSampler:
    """A plain function of (embeddings, budget, seed, **options) -> rows, run like a sampler."""

    def __init__(self, path: str, options: dict):
        import importlib
        import inspect

        module, _, func = path.rpartition(".")
        self.fn = getattr(importlib.import_module(module), func)
        self.options = options
        self.takes_knn = "knn" in inspect.signature(self.fn).parameters

    def select(self, data, budget, seed):
        extra = {"knn": data.knn} if self.takes_knn else {}
        rows = np.asarray(self.fn(data.embeddings, budget, seed, **extra, **self.options), dtype=np.int64)
        assert len(rows) == budget and len(np.unique(rows)) == budget, "a candidate must return budget distinct rows"
        return type("FunctionSelection", (), {"rows": rows})()


def make_sampler(name: str, options: dict):
    return FunctionSampler(name, options) if "." in name else get_sampler(name, options)


def parse_spec(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.partition(":")
    options = {}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return name, options


def load(embeddings_path: str, data_path: str):
    emb = pl.read_parquet(embeddings_path)
    data = pl.read_ndjson(data_path) if data_path.endswith(".jsonl") else pl.read_parquet(data_path)
    vectors = np.asarray(emb["embedding"].to_list(), dtype=np.float32)
    return vectors, data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--embeddings", default="/tmp/demo_emb.parquet")
    ap.add_argument("--data", default="../shared/data/instructions_demo.jsonl")
    ap.add_argument("--label", default="source")
    ap.add_argument("--fine", default="template")
    ap.add_argument("--budgets", default="0.01,0.05,0.1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--random-seeds", default="0,1,2,3,4")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--dedup", default="", help="comma-separated dedup thresholds: also run every spec on the deduplicated pool")
    args = ap.parse_args(argv)

    vectors, data = load(args.embeddings, args.data)
    labels = np.asarray(data[args.label].cast(pl.Utf8).to_list(), dtype=object)
    fine = np.asarray(data[args.fine].cast(pl.Utf8).to_list(), dtype=object)
    pool, test = stratified_split(fine, 0.2, args.split_seed)
    pv = np.ascontiguousarray(vectors[pool])
    ids = np.asarray(data["id"].to_list(), dtype=object)[pool] if "id" in data.columns else None
    inp = SelectionInput(embeddings=pv, ids=ids, knn=searcher(build_index(pv, choose_params(len(pool)), seed=0)))
    pool_fine = set(fine[pool].tolist())
    budgets = [float(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]

    def score(rows):
        sel = pool[rows]
        return np.array([
            proxy_macro_f1(vectors, labels, sel, test),
            len(set(fine[sel].tolist())) / len(pool_fine),
            coverage_distance(vectors, sel, test),
            near_duplicate_rate(vectors, sel),
        ])

    base_specs = ["random"] + [s for s in args.specs if s != "random"]
    thresholds = [float(t) for t in args.dedup.split(",") if t.strip()]
    specs = base_specs + [f"{s} +dedup {t:g}" for t in thresholds for s in base_specs]
    deduped: dict = {}  # (threshold, seed) -> (kept rows, input restricted to them)

    def pool_for(threshold, seed):
        if threshold is None:
            return None, inp
        if (threshold, seed) not in deduped:
            from selectflow.tasks.samplers.base import subset_input
            from selectflow.tasks.samplers.semantic_dedup import semantic_dedup

            kept = semantic_dedup(pv, threshold, ids=ids, seed=seed).kept
            deduped[(threshold, seed)] = (kept, subset_input(inp, kept))
        return deduped[(threshold, seed)]

    def run(sampler, n, seed, threshold):
        kept, data = pool_for(threshold, seed)
        rows = sampler.select(data, n, seed).rows
        return rows if kept is None else kept[rows]

    results = {}
    for spec in specs:
        base, _, dd = spec.partition(" +dedup ")
        threshold = float(dd) if dd else None
        name, options = parse_spec(base)
        sampler = make_sampler(name, options)
        use_seeds = [int(s) for s in args.random_seeds.split(",")] if base == "random" else seeds
        for b in budgets:
            n = max(1, round(b * len(pool)))
            t0 = time.perf_counter()
            scores = np.array([score(run(sampler, n, s, threshold)) for s in use_seeds])
            results[(spec, b)] = (scores.mean(axis=0), scores.std(axis=0), (time.perf_counter() - t0) / len(use_seeds))
    print(f"pool {len(pool)} rows, test {len(test)}; seeds {seeds} (random {args.random_seeds})")
    for (t, seed), (kept, _) in sorted(deduped.items()):
        print(f"dedup {t:g}, seed {seed}: {len(kept)} of {len(pool)} pool rows kept")
    for b in budgets:
        print(f"\n## budget {b:g}\n| selection | F1 ↑ | tpl ↑ | cover ↓ | dup ↓ | s/run | beats random on all 4 |")
        print("|---|---|---|---|---|---|---|")
        base = results[("random", b)][0]
        for spec in specs:
            m, sd, sec = results[(spec, b)]
            wins = m[0] >= base[0] and m[1] >= base[1] and m[2] < base[2] and m[3] < base[3]
            mark = "" if spec == "random" else ("yes" if wins else "no")
            print(f"| {spec} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.4f} | {m[3]:.3f} | {sec:.2f} | {mark} |")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
