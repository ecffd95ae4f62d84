"""The HTML report escapes every piece of corpus text."""

import numpy as np

from selectflow.tasks.reporting.build import build_report
from tests.samplers.conftest import clustered_embeddings

HOSTILE = ['<script>alert("x")</script>', '<img src=x onerror=alert(1)>', '"><svg onload=alert(2)>']


def test_hostile_rows_show_as_text():
    x = clustered_embeddings(60, 8, 3, seed=0)
    ids = [HOSTILE[i % 3] + str(i) for i in range(60)]
    rows = np.arange(0, 60, 6)
    report, page = build_report(
        embeddings=x, rows=rows, scores=np.zeros(len(rows)), analysis_clusters=np.arange(60) % 3, ids=ids,
        texts_by_row=lambda rs: [HOSTILE[r % 3] for r in rs], groups=[HOSTILE[i % 3] for i in range(60)],
        labels=None, diagnostics={"note": HOSTILE[0]}, summary={"sampler": HOSTILE[1], "input_name": HOSTILE[2],
        "selected": 10, "usable_rows": 60}, data_problems={"rows_read": 60, "rows_excluded": 0, "excluded": {},
        "truncated_texts": 0, "exact_duplicate_rows": 0}, sampler_options={"x": HOSTILE[2]}, timings={"select": 0.1},
    )
    lowered = page.lower()
    assert "<script" not in lowered
    assert "<img" not in lowered
    assert "<svg onload" not in lowered
    assert "&lt;script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_report_reads_well_headline_rounded_numbers_and_explained_columns():
    import json
    import re

    from tests.reporting.test_verdict import max_significant_digits

    x = clustered_embeddings(120, 8, 4, seed=1)
    rows = np.arange(0, 120, 4)
    diagnostics = {"inertia": 71.53211312368512, "cluster_weights": [0.0629166666666666 + i / 97 for i in range(22)],
                   "next_round_options": {"k": 6, "previous_cluster_weights": [0.10666666666666667, 0.16]},
                   "partition_size_min_median_max": [5, 15, 33], "most_selected_labels": ["a", "b"]}
    report, page = build_report(
        embeddings=x, rows=rows, scores=np.linspace(0.1, 0.2, len(rows)), analysis_clusters=np.arange(120) % 4,
        ids=[f"r{i}" for i in range(120)], texts_by_row=lambda rs: [f"text {r}" for r in rs],
        groups=[f"g{i % 5}" for i in range(120)], labels=[[f"l{i % 7}"] for i in range(120)], diagnostics=diagnostics,
        summary={"sampler": "kmeans", "input_name": "x", "selected": len(rows), "usable_rows": 120, "duration_seconds": 1.23456},
        data_problems={"rows_read": 120, "rows_excluded": 0, "excluded": {}, "truncated_texts": 0, "exact_duplicate_rows": 0},
        sampler_options={"k": None, "weights": [0.333333333333] * 9}, timings={"select": 0.1},
    )
    # report.json keeps its keys and gains the verdict and the measures behind it.
    assert {"summary", "sampler_options", "data_problems", "diversity_coverage", "composition", "diagnostics", "map",
            "timings", "changes_since_previous", "examples", "verdict"} <= set(report)
    assert set(report["verdict"]["measures"]) == {"coverage", "near_duplicates", "label_coverage"}
    assert report["diversity_coverage"]["label_coverage"]["column"] == "labels"
    json.dumps(report)  # still plain JSON
    # The headline sits at the top of the summary, before the summary table.
    summary = page[page.index('<section id="summary">'):page.index("</section>")]
    assert report["verdict"]["headline"] in summary and summary.index("headline") < summary.index("field")
    text = re.sub(r"<(style|svg)\b.*?</\1>", " ", page, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    assert max_significant_digits(text) <= 4, max_significant_digits(text)
    diag = page[page.index("Sampler diagnostics"):page.index("Map of pool")]
    assert "[" not in re.sub(r"<[^>]+>", " ", diag) and "{" not in re.sub(r"<[^>]+>", " ", diag)
    assert "22 values: min 0.06292" in diag and "next round options" in diag and 'class="kv inner"' in diag
    # Every table explains its columns, the score column by sampler.
    assert page.count("<table") - page.count('class="kv inner"') == page.count('<ul class="colnotes">')
    assert "<b>score</b>: for kmeans: the row&#x27;s draw probability within its cluster" in page
