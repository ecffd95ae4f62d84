"""The one-line verdict of a selection against random selections of its size, with the margins.

verdict_against_random  from report.json's `diversity_coverage` section: coverage, near-duplicates and label coverage,
                        each better, worse or on par with random, its margin, and a headline sentence
verdict_markdown        the same as Markdown lines (the selection-summary artifact)
score_meaning           what the `score` column means for a sampler
Plain code, no Prefect: build.py puts the verdict in report.json, html.py shows it, tasks/report.py publishes it.
"""

from .formatting import number, percent

# A difference within this many standard deviations of the random draws is 'on par': random itself varies that much.
SPREAD = 2.0

MEASURES = {
    "coverage": "coverage: mean cosine distance from a pool row to its nearest selected row (lower is better)",
    "near_duplicates": "near-duplicates: share of picks with another pick at cosine similarity above 0.95 (lower is better)",
    "label_coverage": "label coverage: share of the pool's distinct {column} with at least one selected row (higher is better)",
}


def _compare(name: str, selected: float, random_mean: float, random_std: float, *, lower_is_better: bool) -> dict:
    gain = (random_mean - selected) if lower_is_better else (selected - random_mean)  # > 0: better than random
    tolerance = max(SPREAD * (random_std or 0.0), 1e-9)
    verdict = "on par" if abs(gain) <= tolerance else ("better" if gain > 0 else "worse")
    return {"measure": name, "selected": float(selected), "random_mean": float(random_mean),
            "random_std": float(random_std or 0.0), "margin": float(gain),
            "relative_margin": float(gain / random_mean) if random_mean else None,
            "lower_is_better": lower_is_better, "verdict": verdict}


def verdict_against_random(dc: dict) -> dict:
    """Better, worse or on par with random (within SPREAD standard deviations of its draws) on coverage, near-duplicates
    and label coverage, with margins (positive = better than random), and a headline.

    `dc` is report.json's `diversity_coverage`: `selected` and `random` (mean, std) of `coverage_distance` and
    `near_duplicate_rate`, and `label_coverage` when the corpus has labels or groups. A measure the section lacks
    (a report written before it was measured) is left out.
    """
    sel, rnd = dc.get("selected", {}), dc.get("random", {})
    out: dict = {"measures": {}}
    if "coverage_distance" in sel:
        r = rnd["coverage_distance"]
        out["measures"]["coverage"] = _compare("coverage", sel["coverage_distance"], r["mean"], r["std"], lower_is_better=True)
    if "near_duplicate_rate" in sel:
        r = rnd["near_duplicate_rate"]
        out["measures"]["near_duplicates"] = _compare("near_duplicates", sel["near_duplicate_rate"], r["mean"], r["std"],
                                                      lower_is_better=True)
    lc = dc.get("label_coverage")
    if lc:
        item = _compare("label_coverage", lc["selected"], lc["random"]["mean"], lc["random"]["std"], lower_is_better=False)
        item.update(column=lc.get("column", "labels"), distinct=lc.get("distinct"), selected_count=lc.get("selected_count"))
        out["measures"]["label_coverage"] = item
    out["headline"] = headline(out["measures"])
    out["spread"] = SPREAD
    return out


def describe(item: dict) -> str:
    """One measure's comparison in words, with its margin: 'coverage: better than random (distance 0.412 against
    0.455 ± 0.006, 9.45% lower)'."""
    name, v = item["measure"], item["verdict"]
    against = "on par with random" if v == "on par" else f"{v} than random"
    sel, mean, std = item["selected"], item["random_mean"], item["random_std"]
    if name == "coverage":
        rel = item["relative_margin"]
        way = "lower" if item["margin"] >= 0 else "higher"
        margin = f", {percent(abs(rel))} {way}" if rel is not None else ""
        return f"coverage {against} (mean distance {number(sel)} against {number(mean)} ± {number(std)}{margin})"
    points = 100 * abs(sel - mean)
    if name == "near_duplicates":
        way = "fewer" if sel <= mean else "more"
        margin = f"{number(points, 3)} points {way}" if points else "the same"
        return f"near-duplicates {against} ({percent(sel)} of picks against {percent(mean)} ± {percent(std)}, {margin})"
    column = item.get("column", "labels")
    of = f" of {item['distinct']} {column}" if item.get("distinct") is not None else ""
    way = "more" if sel >= mean else "fewer"
    margin = f"{number(points, 3)} points {way}" if points else "the same"
    return f"label coverage {against} ({percent(sel)}{of} represented against {percent(mean)} ± {percent(std)}, {margin})"


def headline(measures: dict) -> str:
    """'Better than random on coverage and label coverage; on par on near-duplicates.' ('' without measures)."""
    names = {"coverage": "coverage", "near_duplicates": "near-duplicates", "label_coverage": "label coverage"}
    parts = []
    for verdict, words in (("better", "Better than random on"), ("worse", "Worse than random on"), ("on par", "On par with random on")):
        hit = [names[k] for k, m in measures.items() if m["verdict"] == verdict]
        if hit:
            joined = hit[0] if len(hit) == 1 else ", ".join(hit[:-1]) + " and " + hit[-1]
            parts.append(f"{words} {joined}")
    if not parts:
        return ""
    text = "; ".join(p if i == 0 else p[0].lower() + p[1:] for i, p in enumerate(parts)) + "."
    if "label_coverage" not in measures:
        text += " (No label or group column: label coverage not measured.)"
    return text


def verdict_markdown(verdict: dict) -> str:
    """The verdict as Markdown: the headline in bold, then one bullet per measure with its margin."""
    if not verdict.get("measures"):
        return ""
    lines = [f"**Against random selections of the same size: {verdict['headline']}**", ""]
    lines += [f"- {describe(m)}" for m in verdict["measures"].values()]
    return "\n".join(lines) + "\n"


# What the report's `score` column holds, per sampler (samplers/*: the `scores` each returns).
SCORES = {
    "random": "always 0: random picks carry no score",
    "kmeans": "the row's draw probability within its cluster (k-center greedy: its distance to the selected set when picked)",
    "mig": "the information gain the row added when it was picked (greedy order, diminishing)",
    "sensitivity": "the row's importance score (sensitivity or leverage) that set its sampling probability",
    "influence": "the row's influence score from the proxy model (the `score` option: EL2N, GraNd, forgetting, VoG or TracIn)",
    "dpp": "the log-det gain the row added when it was picked (higher = more new diversity)",
    "coverage": "the facility-location coverage gain the row added when it was picked",
}


def score_meaning(sampler: str, diagnostics: dict | None = None) -> str:
    """One line: what `score` means for this sampler (its own score definition when its diagnostics give one)."""
    diagnostics = diagnostics or {}
    if diagnostics.get("method") == "kcenter":
        return "the row's distance to the selected set when it was picked (k-center greedy)"
    if isinstance(diagnostics.get("score_definition"), str):
        return f"the row's importance score: {diagnostics['score_definition']}"
    return SCORES.get(sampler, "the score the sampler gave the row when it picked it")


def margin_text(item: dict) -> str:
    """The margin alone, signed the reader's way: '0.0431 lower (9.45%)', '2.5 points fewer', '12.5 points more'."""
    sel, mean = item["selected"], item["random_mean"]
    if abs(sel - mean) < 1e-12:
        return "none: equal to random"
    if item["measure"] == "coverage":
        rel = item["relative_margin"]
        way = "lower" if sel <= mean else "higher"
        return f"{number(abs(sel - mean), 3)} {way}" + (f" ({percent(abs(rel))})" if rel is not None else "")
    points = 100 * abs(sel - mean)
    if item["measure"] == "near_duplicates":
        return f"{number(points, 3)} points {'fewer' if sel <= mean else 'more'}"
    return f"{number(points, 3)} points {'more' if sel >= mean else 'fewer'}"
