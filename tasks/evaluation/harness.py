"""Evaluate samplers on a labelled corpus against random selection and strong coverage baselines.

The protocol: hold out a test split stratified by the finest label given (e.g. the prompt template, else
the task label); select from the remaining rows (the pool) with each sampler at each budget and seed,
*exactly as `selectflow select` runs it*: the sampler sees the embeddings, an index over the pool, and the
quality and group columns when the corpus gives them, but never the labels it is graded on. A sampler
that uses labels can be given a labels column of its own (`sampler_label_column`), as `select --labels`
would; those runs are separate rows named "NAME + labels COLUMN".

Each selection is scored on the test split: macro-F1 of a proxy classifier (multinomial logistic
regression on the selected rows' embeddings and labels), the share of labels and of fine labels present in
the selection, the mean cosine distance from each test row to its nearest selected row, and the share of
selected rows that have a near-duplicate (cosine > 0.95) in the selection. `random` is the baseline;
`kmeans-medoids` (k = budget, one medoid per cluster) and `facility-location` (lazy greedy over a k-NN
graph) are the coverage baselines. Every selection runs over the same seeds, so each cell is a mean ± std.

The split is made once (`split_seed`), so every sampler, budget and seed sees the same pool and test rows
and the comparison is paired.

Plain code: no Prefect import; the caller passes arrays, and the output helpers at the end write files.
"""

import math
import re
import time
import warnings
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError, InputError, SelectflowError
from ..io.atomic import write_text
from ..reporting.metrics import NEAR_DUPLICATE_SIMILARITY, coverage_distance, near_duplicate_rate
from ..samplers import SAMPLERS, SelectionInput, get_sampler, resolve_budget

BASELINE = "random"
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
SHORT_NAMES = {"macro_f1": "F1 ↑", "label_coverage": "labels ↑", "fine_label_coverage": "fine labels ↑",
               "test_distance": "cover ↓", "near_duplicates": "dup ↓"}
# Strong baselines beside random: coverage methods a sampler should be compared with, not only random.
BASELINES = ("kmeans-medoids", "facility-location")
README_START = "<!-- eval-table:start -->"
README_END = "<!-- eval-table:end -->"

Budget = Union[
    Annotated[int, Field(ge=1, description="A whole number of pool rows.")],
    Annotated[float, Field(gt=0, lt=1, description="A fraction of the pool rows.")],
]


def default_samplers() -> list[str]:
    """Every registered sampler except the random baseline (which always runs)."""
    return [name for name in SAMPLERS if name != BASELINE]


def uses_labels(name: str) -> bool:
    """Whether a sampler reads a labels column (it then also runs with `sampler_label_column`, as a separate row)."""
    return "label_source" in SAMPLERS[name].Options.model_fields


def labelled_name(name: str, column: str) -> str:
    return f"{name} + labels {column}"


class EvaluationConfig(BaseModel):
    """What to evaluate: samplers, budgets, seeds, the test split and the proxy classifier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samplers: list[str] = Field(default_factory=default_samplers, description="Samplers to compare with random. Empty: every registered sampler except random.")
    budgets: list[Budget] = Field(default=[0.01, 0.02, 0.05, 0.1], min_length=1, description="Budgets: fractions below 1 of the pool (the non-test rows) or whole row counts.")
    seeds: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(default=[0, 1, 2], min_length=1, description="Sampler seeds; every sampler (random included) runs once per seed and budget.")
    test_fraction: float = Field(default=0.2, gt=0, lt=1, description="Share of each label's rows held out as the test split.")
    split_seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the stratified split (one split for the whole evaluation).")
    sampler_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Options per sampler name, e.g. {\"kmeans\": {\"k\": 16}}.")
    # Unit-norm embeddings have a small feature scale: at C = 1 a 19-row model mostly predicts the class
    # prior (macro-F1 0.24 for random at 1% of the bundled corpus, 0.44 at C = 10, 0.49 at C = 100).
    classifier_c: float = Field(default=10.0, gt=0, description="Inverse L2 regularisation strength of the proxy logistic regression.")
    classifier_max_iter: int = Field(default=1000, ge=10, description="L-BFGS iterations of the proxy logistic regression.")
    random_draws: int = Field(
        default=10, ge=1, le=1000, description="Random selections per budget (seeds 0..n-1, or the given seeds if more): "
                                               "random's mean is the reference every selection is held to, so it gets more draws than one seed list.")
    baselines: list[Literal["kmeans-medoids", "facility-location"]] = Field(
        default=list(BASELINES), description="Coverage baselines run beside random: k-means medoids (k = budget) and facility location.")
    fine_label_column: str | None = Field(
        default=None, description="A finer label column (e.g. template): its coverage is reported, and the test split is stratified by it.")
    sampler_label_column: str | None = Field(
        default=None, description="Give this column to the samplers that use labels, as `select --labels` would; "
                                  "those runs are extra rows named 'NAME + labels COLUMN'. None: samplers never see labels.")

    def sampler_names(self) -> list[str]:
        """The random baseline first, then the compared samplers in the order given (without repeats)."""
        names = [BASELINE]
        for name in self.samplers or default_samplers():
            if name not in names:
                names.append(name)
        return names

    def baseline_seeds(self) -> list[int]:
        """The seeds of the random baseline: the given seeds, extended with 0, 1, ... to `random_draws` draws."""
        seeds = list(dict.fromkeys(self.seeds))
        extra = (s for s in range(2**31) if s not in seeds)
        while len(seeds) < self.random_draws:
            seeds.append(next(extra))
        return seeds

    def selection_names(self) -> list[str]:
        """Every row of the results: random, the coverage baselines, the samplers, then the labelled variants."""
        names = [BASELINE] + [b for b in self.baselines if b not in self.sampler_names()]
        names += [n for n in self.sampler_names() if n != BASELINE]
        if self.sampler_label_column:
            names += [labelled_name(n, self.sampler_label_column) for n in self.sampler_names()
                      if n in SAMPLERS and uses_labels(n)]
        return names


def check_config(config: EvaluationConfig) -> None:
    """Checks that need the registry: known samplers and valid options, before any work is done."""
    for name in config.sampler_names():
        if name not in SAMPLERS:
            raise ConfigError(f"Unknown sampler {name!r} in --samplers; choose from: {', '.join(SAMPLERS)}.")
    for name, options in config.sampler_options.items():
        if name not in config.sampler_names():
            raise ConfigError(f"Options were given for sampler {name!r}, which is not evaluated; add it to --samplers or drop its options.")
        try:
            get_sampler(name, options)
        except ValidationError as exc:  # unknown option or value out of bounds
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"Invalid option {name}.{where} (from -o): {first['msg']}; "
                              f"`selectflow select --help` lists {name}'s options.") from None


def check_request(config: EvaluationConfig, label_column: str | None) -> None:
    """Everything that can be checked before embedding: a label column is set, samplers and options are valid."""
    if not label_column:
        raise ConfigError("The evaluation needs a label column: pass --labels COL (e.g. --labels source for the bundled corpus).")
    check_config(config)


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


def proxy_macro_f1(embeddings: np.ndarray, labels: np.ndarray, train_rows: np.ndarray, test_rows: np.ndarray,
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


def measure_selection(embeddings: np.ndarray, labels: np.ndarray, pool_rows: np.ndarray, test_rows: np.ndarray,
                      selected_rows: np.ndarray, c: float = 10.0, max_iter: int = 1000,
                      fine_labels: np.ndarray | None = None) -> dict[str, float]:
    """The metrics of one selection; all row arguments are positions in `embeddings`/`labels`/`fine_labels`."""
    selected_rows = np.asarray(selected_rows, dtype=np.int64)
    pool_labels = set(labels[pool_rows].tolist())
    measured = {
        "macro_f1": proxy_macro_f1(embeddings, labels, selected_rows, test_rows, c, max_iter),
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
                    run.update(measure_selection(emb, label_values, pool_rows, test_rows, selected,
                                                 config.classifier_c, config.classifier_max_iter, fine))
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
    reference = measure_selection(emb, label_values, pool_rows, test_rows, pool_rows, config.classifier_c,
                                  config.classifier_max_iter, fine)
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


# --- rendering -------------------------------------------------------------------------------------


def _cell(stats: dict | None) -> str:
    if stats is None:
        return "n/a"
    return f"{stats['mean']:.3f}" if stats["std"] is None else f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def render_markdown(result: dict, context: dict | None = None) -> str:
    """evaluation.md: a title, the conditions, then one table per budget (rows: selections; columns: metrics).

    In each column the best mean is bold; the last column says whether the selection beats random on every
    metric, or names the metrics where it does not. `context` may name the input, label columns and encoder.
    """
    context = context or {}
    cfg, rows = result["config"], result["rows"]
    metrics = result.get("metrics", [m for m in METRICS if m != "fine_label_coverage"])
    title = f"# Sampler evaluation: {context.get('input_name', 'corpus')}"
    labels_from = f"labels from `{context['label_column']}`" if context.get("label_column") else "labels"
    n_labels = len(result["labels"]["pool"])
    fine = ""
    if result.get("fine_labels") and cfg.get("fine_label_column"):
        fine = f" and {result['fine_labels']['pool']} fine labels from `{cfg['fine_label_column']}`"
    seeds = ", ".join(str(s) for s in cfg["seeds"])
    sees = (f"Samplers run as `selectflow select` runs them and never see the labels they are graded on; rows named "
            f"'+ labels `{cfg['sampler_label_column']}`' give label-using samplers that column."
            if cfg.get("sampler_label_column") else
            "Samplers run as `selectflow select` runs them (no labels column), so they never see the labels they are graded on.")
    conditions = (
        f"{rows['labelled']:,} labelled rows, {labels_from} ({n_labels} labels){fine}; a test split of "
        f"{rows['test']:,} rows ({100 * cfg['test_fraction']:g}% of each {'fine ' if fine else ''}label, split seed {cfg['split_seed']}) "
        f"is held out and samplers select from the other {rows['pool']:,}. {sees} F1: macro-F1 of a logistic regression "
        f"(C = {cfg['classifier_c']:g}) on {context.get('encoder', 'the')} embeddings of the selected rows. cover: mean cosine "
        f"distance from each test row to its nearest selected row. dup: share of selected rows with a near-duplicate "
        f"(cosine > {NEAR_DUPLICATE_SIMILARITY}) in the selection. Each cell is the mean ± std over seeds {seeds} "
        f"(random: {max(cfg.get('random_draws', 1), len(set(cfg['seeds'])))} draws). "
        f"`random` is the baseline; `kmeans-medoids` and `facility-location` are coverage baselines. "
        f"\"vs random\" names the metrics where a selection's mean does not beat random's (✓: beats it on all)."
    )
    if rows["unlabelled_excluded"]:
        conditions += f" {rows['unlabelled_excluded']:,} rows without a label were left out."
    lines = [title, "", conditions]
    reference = result["reference_all_pool"]
    lost = verdicts(result)
    errors: list[str] = []
    header = "| selection | " + " | ".join(SHORT_NAMES[m] for m in metrics) + " | vs random |"
    rule = "|---|" + "---:|" * len(metrics) + "---|"
    for b in result["budgets"]:
        key = str(b["requested"])
        lines += ["", f"**{b['label']}**", "", header, rule]
        best = {}
        for metric in metrics:
            means = [result["summary"][s][key][metric] for s in result["samplers"]]
            means = [m["mean"] for m in means if m is not None]
            if means:
                best[metric] = max(means) if HIGHER_IS_BETTER[metric] else min(means)
        for name in result["samplers"]:
            cell = result["summary"][name][key]
            cells = []
            for metric in metrics:
                text = _cell(cell[metric])
                if cell[metric] is not None and math.isclose(cell[metric]["mean"], best[metric], rel_tol=0, abs_tol=5e-4):
                    text = f"**{text}**"
                cells.append(text)
            if name == BASELINE:
                verdict = "baseline"
            else:
                verdict = "✓" if not lost[name][key] else "✗ " + ", ".join(SHORT_NAMES[m].split()[0] for m in lost[name][key])
            if cell["errors"]:
                verdict += " ¹"
                errors += [f"{name} at {b['label']}: {e}" for e in cell["errors"]]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {verdict} |")
        lines.append(f"| *whole pool ({rows['pool']:,} rows)* | " + " | ".join(f"*{reference[m]:.3f}*" for m in metrics) + " | |")
    if errors:
        lines += ["", "¹ some seeds failed: " + "; ".join(sorted(set(errors)))]
    return "\n".join(lines) + "\n"


# --- outputs and the README block -------------------------------------------------------------------

OUTPUT_FILES = ("evaluation.json", "evaluation.md")


def check_evaluation_dir(out_dir: str | Path, run_key: str, overwrite: bool) -> Path:
    """Refuse to mix runs: a folder holding other files or another evaluation is only replaced with overwrite=True.

    A folder holding the evaluation of the same configuration (same run key) is refreshed in place.
    """
    import json

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"Output path {out} is a file; pass a folder with --out.")
    if out.exists() and not overwrite:
        others = [p.name for p in out.iterdir() if p.name not in OUTPUT_FILES]
        previous = None
        if (out / "evaluation.json").exists():
            try:
                previous = json.loads((out / "evaluation.json").read_text()).get("run_key")
            except ValueError:
                previous = None
        if others or (previous is not None and previous != run_key) or (previous is None and any(out.iterdir())):
            raise ConfigError(
                f"Output folder {out} already holds {'another evaluation' if previous else 'other files'}; "
                "pass --overwrite to replace it, or choose another --out."
            )
    out.mkdir(parents=True, exist_ok=True)
    return out


def readme_block(markdown: str) -> str:
    """The part of evaluation.md that goes into a README: everything after its title line."""
    lines = markdown.strip("\n").splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(lines).strip("\n")


def _marker_span(text: str, path: Path) -> tuple[int, int]:
    starts = [m.start() for m in re.finditer(re.escape(README_START), text)]
    ends = [m.start() for m in re.finditer(re.escape(README_END), text)]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ConfigError(
            f"{path}: expected one line {README_START} followed by one line {README_END} marking where the "
            f"evaluation table goes; found {len(starts)} start and {len(ends)} end marker(s). Add or fix them."
        )
    return starts[0] + len(README_START), ends[0]


def check_readme(path: str | Path) -> Path:
    """Fail before any work when the README cannot take the table (missing file or markers)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: README file not found; pass an existing file with --readme.")
    _marker_span(path.read_text(encoding="utf-8"), path)
    return path


def update_readme(path: str | Path, markdown: str) -> Path:
    """Replace what lies between the eval-table markers of `path` with `markdown`'s table block (atomic write)."""
    path = check_readme(path)
    text = path.read_text(encoding="utf-8")
    start, end = _marker_span(text, path)
    return write_text(path, text[:start] + "\n" + readme_block(markdown) + "\n" + text[end:])
