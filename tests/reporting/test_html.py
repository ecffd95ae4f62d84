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
