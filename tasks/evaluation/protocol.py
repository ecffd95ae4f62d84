"""The evaluation protocol: split the labelled corpus, run every selection on the pool, score it on the test split.

Hold out a test split stratified by the finest label given (e.g. the prompt template, else the task label);
select from the remaining rows (the pool) with each sampler at each budget and seed, *exactly as
`selectflow select` runs it*: the sampler sees the embeddings, an index over the pool, and the quality and
group columns when the corpus gives them, but never the labels it is graded on. A sampler that uses labels
can be given a labels column of its own (`sampler_label_column`), as `select --labels` would; those runs are
separate rows named "NAME + labels COLUMN".

Each selection is scored on the test split: macro-F1 of a proxy classifier (multinomial logistic
regression on the selected rows' embeddings and labels), the share of labels and of fine labels present in
the selection, the mean cosine distance from each test row to its nearest selected row, and the share of
selected rows that have a near-duplicate (cosine > 0.95) in the selection. `random` is the baseline;
`kmeans-medoids` (k = budget, one medoid per cluster) and `facility-location` (lazy greedy over a k-NN
graph) are the coverage baselines. Every selection runs over the same seeds, so each cell is a mean ± std.

The split is made once (`split_seed`), so every sampler, budget and seed sees the same pool and test rows
and the comparison is paired.

Plain code: no Prefect import and no files; the caller passes arrays and gets a JSON-able dict back.
"""

import math
import time
import warnings
from typing import Callable

import numpy as np

from ..errors import ConfigError, InputError, SelectflowError
from ..reporting.metrics import NEAR_DUPLICATE_SIMILARITY, coverage_distance, near_duplicate_rate
from ..samplers import SAMPLERS, SelectionInput, get_sampler, resolve_budget
from .config import BASELINE, BASELINES, EvaluationConfig, check_config

# Stream key mixed into the split seed, so the split never shares random numbers with a sampler's seed.
_SPLIT_STREAM = 0x5E1EC7
METRICS = {
    "macro_f1": "Macro-F1 on the test split (higher is better)",
    "label_coverage": "Label coverage: distinct labels in the selection / labels in the pool (higher is better)",
    "fine_label_coverage": "Fine-label coverage: distinct fine labels in the selection / fine labels in the pool (higher is better)",
    "test_distance": "Mean cosine distance from each test row to its nearest selected row (lower is better)",
    "near_duplicates": f"Near-duplicate rate: share of selected rows with another selected row at cosine > {NEAR_DUPLICATE_SIMILARITY} (lower is better)",
}
HIGHER_IS_BETTER = {"macro_f1": True, "label_coverage": True, "fine_label_coverage": True,
                    "test_distance": False, "near_duplicates": False}


# --- labels and the split --------------------------------------------------------------------------


def single_labels(labels: list, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One label per row: (labels of the labelled rows as a str array, positions of those rows).

    Rows with no label are left out of the evaluation (the caller counts them); a row with several
    labels is an error, since the proxy classifier is single-label.
    """
    kept, values = [], []
    for row, value in enumerate(labels):
        tags = [value] if isinstance(value, str) else [t for t in (value or []) if t is not None]
        if len(tags) > 1:
            name = f"row {row}" + (f" (id {ids[row]!r})" if ids is not None else "")
            raise InputError(
                f"{name} has {len(tags)} labels {tags[:3]!r}; the evaluation needs one label per row, "
                "so pass a single-label column with --labels."
            )
        if tags:
            kept.append(row)
            values.append(str(tags[0]))
    return np.asarray(values, dtype=object), np.asarray(kept, dtype=np.int64)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the pool and of the test split, stratified by label; both sorted and disjoint.

    Each label with n >= 2 rows puts round(test_fraction * n) of them, but at least 1 and at most n - 1,
    in the test split; a label with one row stays in the pool.
    """
    if not 0 < test_fraction < 1:
        raise ConfigError(f"--test-fraction must be between 0 and 1; got {test_fraction!r}.")
    labels = np.asarray(labels, dtype=object)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_STREAM]))
    pool, test = [], []
    for label in sorted(set(labels.tolist())):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_test = 0 if len(rows) < 2 else min(max(math.floor(test_fraction * len(rows) + 0.5), 1), len(rows) - 1)
        test.append(rows[:n_test])
        pool.append(rows[n_test:])
    pool_rows, test_rows = np.sort(np.concatenate(pool)), np.sort(np.concatenate(test))
    if len(test_rows) == 0:
        raise InputError("No label has 2 or more rows, so no test split can be held out; the evaluation needs repeated labels.")
    return pool_rows, test_rows


# --- one selection's measurements ----------------------------------------------------------------


def proxy_macro_f1(embeddings: np.ndarray, labels: np.ndarray, train_rows: np.ndarray, test_rows: np.ndarray, *,
                   c: float = 10.0, max_iter: int = 1000) -> float:
    """Macro-F1 on `test_rows` of a logistic regression trained on `train_rows`.

    The average runs over every label of the test split: a label the training rows never show is never
    predicted, so its F1 is 0 (a miss), not skipped.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    y_train, y_test = labels[train_rows].astype(str), labels[test_rows].astype(str)
    classes = np.unique(y_train)
    if len(classes) == 1:
        # One label cannot train a classifier; the only sensible prediction is that label.
        predicted = np.full(len(test_rows), classes[0], dtype=object).astype(str)
    else:
        model = LogisticRegression(C=c, max_iter=max_iter, random_state=0)  # lbfgs, multinomial
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(np.asarray(embeddings[train_rows], dtype=np.float64), y_train)
        predicted = model.predict(np.asarray(embeddings[test_rows], dtype=np.float64))
    return float(f1_score(y_test, predicted, labels=np.unique(y_test), average="macro", zero_division=0))


def measure_selection(embeddings: np.ndarray, labels: np.ndarray, *, pool_rows: np.ndarray, test_rows: np.ndarray,
                      selected_rows: np.ndarray, c: float = 10.0, max_iter: int = 1000,
                      fine_labels: np.ndarray | None = None) -> dict[str, float]:
    """The metrics of one selection; all row arguments are positions in `embeddings`/`labels`/`fine_labels`."""
    selected_rows = np.asarray(selected_rows, dtype=np.int64)
    pool_labels = set(labels[pool_rows].tolist())
    measured = {
        "macro_f1": proxy_macro_f1(embeddings, labels, selected_rows, test_rows, c=c, max_iter=max_iter),
        "label_coverage": len(set(labels[selected_rows].tolist())) / len(pool_labels),
    }
    if fine_labels is not None:
        measured["fine_label_coverage"] = len(set(fine_labels[selected_rows].tolist())) / len(set(fine_labels[pool_rows].tolist()))
    measured["test_distance"] = coverage_distance(embeddings, selected_rows, test_rows)
    measured["near_duplicates"] = near_duplicate_rate(embeddings, selected_rows)
    return measured


# --- the whole evaluation ----------------------------------------------------------------------------


def pool_input(embeddings: np.ndarray, pool_rows: np.ndarray, *, quality: np.ndarray | None = None,
               groups: np.ndarray | None = None, ids: np.ndarray | None = None,
               sampler_labels: list | None = None, seed: int = 0) -> SelectionInput:
    """What the samplers see, as `select` gives it: the pool rows only, re-numbered 0..P-1, with an index over
    the pool alone. Labels only when the configuration gives the samplers a labels column (`sampler_labels`)."""
    from ..embedding.faiss_index import build_index, choose_params, searcher

    vectors = np.ascontiguousarray(embeddings[pool_rows], dtype=np.float32)
    return SelectionInput(
        embeddings=vectors,
        quality=None if quality is None else np.asarray(quality)[pool_rows],
        labels=None if sampler_labels is None else [label_tuple(sampler_labels[i]) for i in pool_rows],
        groups=None if groups is None else np.asarray(groups)[pool_rows],
        ids=None if ids is None else np.asarray(ids)[pool_rows],
        knn=searcher(build_index(vectors, choose_params(len(pool_rows)), seed=seed)),
    )


def label_tuple(value) -> tuple[str, ...]:
    """One row's labels as `select` reads a labels column: a string, or a list of strings (nulls dropped)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value if v is not None)


def baseline_selector(name: str) -> Callable[[SelectionInput, int, int], np.ndarray]:
    """A coverage baseline as a function (pool input, budget, seed) -> selected pool rows."""
    from ..samplers.coverage import facility_location, kmeans_medoids

    if name == "kmeans-medoids":
        return lambda data, budget, seed: kmeans_medoids(data.embeddings, budget, seed)
    if name == "facility-location":
        return lambda data, budget, seed: facility_location(data.embeddings, budget, seed, knn=data.knn)
    raise ConfigError(f"Unknown baseline {name!r}; choose from: {', '.join(BASELINES)}.")


def _spread(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else None, "values": arr.tolist()}


def budget_label(requested: float | int, rows: int) -> str:
    if isinstance(requested, float) and requested < 1:
        return f"{100 * requested:g}% ({rows} rows)"
    return f"{rows} rows"


def evaluate(
    embeddings: np.ndarray,
    labels: list,
    config: EvaluationConfig,
    *,
    fine_labels: list | None = None,
    sampler_labels: list | None = None,
    quality: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    ids: np.ndarray | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Run every selection (random, baselines, samplers) x budget x seed on the pool and measure it on the test split.

    `embeddings` (N, D) unit-norm float32 and `labels` (N entries: a string, or a list of at most one
    string) describe the whole usable corpus; `fine_labels` (N single labels, optional) is the finer label
    column, and `sampler_labels` (N strings or lists, optional) the labels column given to samplers that use
    labels when `config.sampler_label_column` is set. Returns a JSON-serialisable dict: the split, each run's
    metrics and selected rows (positions in the corpus), the mean ± std over seeds per selection and budget,
    and a reference classifier trained on the whole pool.
    """
    check_config(config)
    if len(labels) != embeddings.shape[0]:
        raise InputError(f"Got {len(labels)} label entries for {embeddings.shape[0]} embedded rows; they must match.")
    label_values, labelled = single_labels(labels, ids)
    if len(labelled) == 0:
        raise InputError("No row has a label; pass a label column with --labels (e.g. --labels source for the bundled corpus).")
    fine = None
    if fine_labels is not None:
        if len(fine_labels) != embeddings.shape[0]:
            raise InputError(f"Got {len(fine_labels)} fine-label entries for {embeddings.shape[0]} embedded rows; they must match.")
        fine = np.asarray(["" if v is None else str(v) for v in fine_labels], dtype=object)[labelled]
    if config.sampler_label_column and sampler_labels is None:
        raise ConfigError(f"sampler_label_column is {config.sampler_label_column!r} but no sampler labels were passed.")
    # Work on the labelled rows only; positions below are into these arrays, mapped back to corpus rows on output.
    emb = np.ascontiguousarray(embeddings[labelled], dtype=np.float32)
    sub = lambda arr: None if arr is None else np.asarray(arr, dtype=object if isinstance(arr, list) else None)[labelled]  # noqa: E731
    pool_rows, test_rows = stratified_split(fine if fine is not None else label_values, config.test_fraction, config.split_seed)
    n_pool = len(pool_rows)
    budgets = [(b, resolve_budget(b, n_pool)) for b in config.budgets]
    data = pool_input(emb, pool_rows, quality=sub(quality), groups=sub(groups), ids=sub(ids), seed=config.split_seed)
    labelled_data = None
    if config.sampler_label_column:
        given = [sampler_labels[i] for i in labelled]
        labelled_data = pool_input(emb, pool_rows, quality=sub(quality), groups=sub(groups), ids=sub(ids),
                                   sampler_labels=given, seed=config.split_seed)

    selectors: dict[str, tuple[Callable, SelectionInput]] = {}
    for name in config.selection_names():
        if name in BASELINES and name not in SAMPLERS:
            selectors[name] = (baseline_selector(name), data)
        else:  # a sampler, or "NAME + labels COLUMN": the same sampler given the labels column
            base = name if name in SAMPLERS else name.split(" + labels ")[0]
            sampler = get_sampler(base, config.sampler_options.get(base))
            selectors[name] = ((lambda s: lambda d, b, seed: s.select(d, b, seed).rows)(sampler),
                               data if name in SAMPLERS else labelled_data)

    names = list(selectors)
    seeds_of = {name: config.baseline_seeds() if name == BASELINE else list(config.seeds) for name in names}
    runs, total, done = [], len(budgets) * sum(len(v) for v in seeds_of.values()), 0
    for name in names:
        select, inp = selectors[name]
        for requested, n_rows in budgets:
            for seed in seeds_of[name]:
                t0 = time.perf_counter()
                run = {"sampler": name, "budget": requested, "budget_rows": n_rows, "seed": seed}
                try:
                    chosen = select(inp, n_rows, seed)
                except SelectflowError as exc:
                    # A budget or input a sampler cannot serve is reported in the table, not fatal to the other runs.
                    run["error"] = str(exc)
                else:
                    run["seconds"] = round(time.perf_counter() - t0, 3)
                    selected = pool_rows[chosen]
                    run.update(measure_selection(emb, label_values, pool_rows=pool_rows, test_rows=test_rows,
                                                 selected_rows=selected, c=config.classifier_c,
                                                 max_iter=config.classifier_max_iter, fine_labels=fine))
                    run["selected_rows"] = labelled[selected].tolist()
                run.setdefault("seconds", round(time.perf_counter() - t0, 3))
                runs.append(run)
                done += 1
                if progress is not None:
                    progress(done, total, f"{name} at {budget_label(requested, n_rows)}, seed {seed}")

    metrics = [m for m in METRICS if m != "fine_label_coverage" or fine is not None]
    summary: dict[str, dict[str, dict]] = {}
    for name in names:
        summary[name] = {}
        for requested, n_rows in budgets:
            mine = [r for r in runs if r["sampler"] == name and r["budget"] == requested]
            ok = [r for r in mine if "error" not in r]
            cell = {metric: _spread([r[metric] for r in ok]) if ok else None for metric in metrics}
            cell["errors"] = sorted({r["error"] for r in mine if "error" in r})
            summary[name][str(requested)] = cell

    counts = lambda values: {k: int(v) for k, v in zip(*np.unique(values.astype(str), return_counts=True))}  # noqa: E731
    reference = measure_selection(emb, label_values, pool_rows=pool_rows, test_rows=test_rows, selected_rows=pool_rows,
                                  c=config.classifier_c, max_iter=config.classifier_max_iter, fine_labels=fine)
    return {
        "config": config.model_dump(),
        "samplers": names,
        "metrics": metrics,
        "rows": {"usable": int(embeddings.shape[0]), "labelled": int(len(labelled)),
                 "unlabelled_excluded": int(embeddings.shape[0] - len(labelled)),
                 "pool": int(n_pool), "test": int(len(test_rows))},
        "labels": {"pool": counts(label_values[pool_rows]), "test": counts(label_values[test_rows])},
        "fine_labels": None if fine is None else {"pool": len(set(fine[pool_rows].tolist())), "test": len(set(fine[test_rows].tolist()))},
        "test_rows": labelled[test_rows].tolist(),
        "budgets": [{"requested": b, "rows": n, "label": budget_label(b, n)} for b, n in budgets],
        "runs": runs,
        "summary": summary,
        "reference_all_pool": reference,
    }


def verdicts(result: dict) -> dict[str, dict[str, list[str]]]:
    """Per selection and budget, the metrics on which its mean does not beat random's mean.

    Beating means: not below random for higher-is-better metrics, strictly below for lower-is-better ones
    (a selection as spread out as random is no better than random), except at zero, which nothing goes below.
    Empty list: better on every metric.
    """
    out: dict[str, dict[str, list[str]]] = {}
    metrics = result.get("metrics", list(METRICS))
    for name in result["samplers"]:
        out[name] = {}
        for b in result["budgets"]:
            key = str(b["requested"])
            mine, base = result["summary"][name][key], result["summary"][BASELINE][key]
            losses = []
            for metric in metrics:
                if mine[metric] is None or base[metric] is None:
                    losses.append(metric)
                    continue
                m, r = mine[metric]["mean"], base[metric]["mean"]
                # Nothing goes below zero: a lower-is-better metric at 0 where random is at 0 ties, and does not lose.
                if (m < r - 1e-12) if HIGHER_IS_BETTER[metric] else not (m < r or m <= 0 >= r):
                    losses.append(metric)
            out[name][key] = losses
    return out
