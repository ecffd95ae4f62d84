"""The verdict against random, the number formatting of the report, artifact keys and report links (plain code)."""

import re

import numpy as np
import pytest

from selectflow.tasks.reporting.formatting import number, percent, value_html
from selectflow.tasks.reporting.links import artifact_key, https_url, slug
from selectflow.tasks.reporting.metrics import diversity_and_coverage, label_coverage, near_duplicate_rate, near_duplicate_share
from selectflow.tasks.reporting.verdict import margin_text, score_meaning, verdict_against_random, verdict_markdown


def _dc(coverage, near, labels=None):
    """A diversity_coverage section: (selected, random mean, random std) per measure."""
    dc = {"selected": {"coverage_distance": coverage[0], "near_duplicate_rate": near[0]},
          "random": {"coverage_distance": {"mean": coverage[1], "std": coverage[2]},
                     "near_duplicate_rate": {"mean": near[1], "std": near[2]}}}
    if labels:
        dc["label_coverage"] = {"column": "labels", "distinct": 8, "selected_count": round(8 * labels[0]),
                                "selected": labels[0], "random": {"mean": labels[1], "std": labels[2]}}
    return dc


def test_better_worse_and_on_par_with_margins():
    v = verdict_against_random(_dc((0.40, 0.45, 0.005), (0.10, 0.02, 0.01), (1.0, 0.875, 0.05)))
    m = v["measures"]
    assert m["coverage"]["verdict"] == "better" and m["coverage"]["margin"] == pytest.approx(0.05)
    assert m["coverage"]["relative_margin"] == pytest.approx(0.05 / 0.45)
    assert m["near_duplicates"]["verdict"] == "worse" and m["near_duplicates"]["margin"] == pytest.approx(-0.08)
    assert m["label_coverage"]["verdict"] == "better" and m["label_coverage"]["margin"] == pytest.approx(0.125)
    assert v["headline"] == "Better than random on coverage and label coverage; worse than random on near-duplicates."
    assert margin_text(m["coverage"]) == "0.05 lower (11.1%)"
    assert margin_text(m["near_duplicates"]) == "8 points more"
    assert margin_text(m["label_coverage"]) == "12.5 points more"
    md = verdict_markdown(v)
    assert md.startswith("**Against random selections of the same size: Better than random on coverage")
    assert "- coverage better than random (mean distance 0.4 against 0.45 ± 0.005, 11.1% lower)" in md
    assert "- near-duplicates worse than random (10% of picks against 2% ± 1%, 8 points more)" in md
    assert "- label coverage better than random (100% of 8 labels represented against 87.5% ± 5%, 12.5 points more)" in md


def test_within_the_spread_of_random_is_on_par_and_missing_labels_are_said():
    v = verdict_against_random(_dc((0.44, 0.45, 0.01), (0.0, 0.0, 0.0)))
    assert {k: m["verdict"] for k, m in v["measures"].items()} == {"coverage": "on par", "near_duplicates": "on par"}
    assert v["headline"].startswith("On par with random on coverage and near-duplicates.")
    assert "label coverage not measured" in v["headline"]
    assert margin_text(v["measures"]["near_duplicates"]) == "none: equal to random"
    assert "(0% of picks against 0% ± 0%, the same)" in verdict_markdown(v)
    # A report written before near-duplicates were measured: the verdict covers what it has.
    old = {"selected": {"coverage_distance": 0.3}, "random": {"coverage_distance": {"mean": 0.5, "std": 0.01}}}
    assert list(verdict_against_random(old)["measures"]) == ["coverage"]


def test_numbers_read_at_four_significant_digits():
    assert number(0.0629166666666666) == "0.06292" and number(14.478451143623799) == "14.48"
    assert number(58387.37163679022) == "58,390" and number(2.4341046810150146e-05) == "2.434e-05"
    assert number(7) == "7" and number(123456) == "123,456" and number(True) == "yes" and number(float("nan")) == "n/a"
    assert percent(0.125) == "12.5%" and percent(1.0) == "100%" and percent(0.0) == "0%" and percent(1 / 3) == "33.3%"


def test_vectors_and_dicts_render_without_python_reprs():
    long = [0.0629166666666666 + i / 100 for i in range(22)]
    cell = value_html(long)
    assert "22 values: min 0.06292, median 0.1679, max 0.2729" in cell and '<svg class="spark"' in cell
    assert value_html([5, 15, 33]) == "5, 15, 33"
    nested = value_html({"k": 6, "previous_cluster_weights": [0.10666666666666667, 0.16], "inner": {"a": None}})
    assert nested.startswith('<table class="kv inner">') and "previous cluster weights" in nested
    assert "0.1067, 0.16" in nested and "none" in nested
    text = re.sub(r"<[^>]+>", " ", nested + cell + value_html(["a", ["b", "c"]] * 6))
    assert "[" not in text and "{" not in text and max_significant_digits(text) <= 4


def max_significant_digits(text: str) -> int:
    """The most significant digits of any decimal number in `text` (leading zeros do not count: 0.06292 has 4)."""
    digits = [len(re.sub(r"^0+", "", m.replace(".", ""))) for m in re.findall(r"\d+\.\d+", text.replace(",", ""))]
    return max(digits, default=0)


def test_significant_digits_are_counted_as_a_reader_would():
    assert max_significant_digits("0.06292 and 14.48 and 58,390") == 4
    assert max_significant_digits("22 values: 0.0629166666666666") == 15


def test_score_column_is_explained_per_sampler():
    assert "draw probability" in score_meaning("kmeans")
    assert "distance to the selected set" in score_meaning("kmeans", {"method": "kcenter"})
    assert "information gain" in score_meaning("mig") and "always 0" in score_meaning("random")
    assert score_meaning("sensitivity", {"score_definition": "ℓ2 leverage τ"}).endswith("ℓ2 leverage τ")
    assert score_meaning("someone-elses") == "the score the sampler gave the row when it picked it"


def test_artifact_keys_follow_prefects_rules_and_keep_histories_apart():
    assert slug("Nightly kMQ (prod)") == "nightly-kmq-prod" and slug("__") == "unnamed"
    keys = {artifact_key("selection-summary", d, s) for d in ("nightly kMQ", "weekly_MIG", None) for s in ("kmeans", "mig")}
    assert len(keys) == 6 and "selection-summary-cli-kmeans" in keys and "selection-summary-weekly-mig-mig" in keys
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", k) for k in keys)


def test_report_links_on_object_storage_are_https(monkeypatch):
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    assert https_url("s3://bucket/runs/a b/report.html") == "https://bucket.s3.amazonaws.com/runs/a%20b/report.html"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert https_url("s3://bucket/r/report.html") == "https://bucket.s3.eu-west-1.amazonaws.com/r/report.html"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://minio.example:9000/")
    assert https_url("s3://bucket/r/report.html") == "https://minio.example:9000/bucket/r/report.html"
    assert https_url("gs://b/r/report.html") == "https://storage.googleapis.com/b/r/report.html"


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_near_duplicate_share_matches_the_exact_rate_and_is_measured_against_random():
    x = _unit(np.random.default_rng(0).standard_normal((40, 8)))
    twins = _unit(np.vstack([x, x[:4] + 0.001]))
    rows = np.arange(44)
    assert near_duplicate_share(twins, rows) == pytest.approx(near_duplicate_rate(twins, rows)) == pytest.approx(8 / 44)
    sampled = near_duplicate_share(twins, rows, sample=20, seed=1)  # 20 of the 44 picks searched: an estimate
    assert 0.0 <= sampled <= 0.5
    dc = diversity_and_coverage(twins, np.arange(10), seed=0)
    assert dc["selected"]["near_duplicate_rate"] == 0.0 and len(dc["random"]["near_duplicate_rate"]["values"]) == 5


def test_label_coverage_against_the_same_random_draws():
    labels = [("a",), ("b",), ("c", "d")] * 10 + [("rare",)]
    lc = label_coverage(labels, np.array([0, 3, 6]), seed=0)
    assert lc["distinct"] == 5 and lc["selected"] == pytest.approx(1 / 5) and lc["selected_count"] == 1
    assert len(lc["random"]["values"]) == 5 and 0 < lc["random"]["mean"] <= 1
    assert label_coverage(labels, np.array([0, 1, 2, 30]))["selected"] == 1.0


def test_nearest_selected_above_the_exact_limit_is_an_ivf_search_close_to_exact_and_reproducible(monkeypatch):
    """Above EXACT_NEAREST_MAX picks the report's nearest-pick search is an IVF index (the exact one is O(B²)):
    it agrees with the exact search on nearly every row, is the same on every call, and on 1 or 2 FAISS threads."""
    import faiss

    from selectflow.tasks.reporting import metrics

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 32)).astype(np.float32)
    emb = centres[rng.integers(0, 40, 4000)] + 0.3 * rng.standard_normal((4000, 32)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rows = np.sort(rng.choice(4000, 3000, replace=False))
    exact_pick, exact_sim = metrics.nearest_selected(emb, rows, seed=3)
    monkeypatch.setattr(metrics, "EXACT_NEAREST_MAX", 1000)
    pick, sim = metrics.nearest_selected(emb, rows, seed=3)
    assert np.mean(pick == exact_pick) > 0.9 and np.nanmax(sim - exact_sim) < 1e-5  # never better than exact
    again = metrics.nearest_selected(emb, rows, seed=3)
    saved = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(2)
        two_threads = metrics.nearest_selected(emb, rows, seed=3)
    finally:
        faiss.omp_set_num_threads(saved)
    for other in (again, two_threads):
        np.testing.assert_array_equal(other[0], pick)
        np.testing.assert_array_equal(other[1], sim)
