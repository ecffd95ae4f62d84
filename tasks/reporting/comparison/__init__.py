"""Comparing several selections of one corpus: overlap, diversity and coverage side by side, composition, one map.

runs.py reads the run folders (their manifests and cache files) and checks them and the output folder;
measures.py measures the selections against each other, every run in the embedding space of the first run,
so the numbers are comparable even when the runs were embedded with different encoders; page.py renders
compare.html; writing.py ties them together.

Outputs, each written atomically: compare.html (self-contained, like report.html), compare.json (every
number in the page) and overlap.parquet (one row per row picked by at least one run, with its rank in each).
"""

from .measures import compare_selections, merged_composition, overlap, overlap_frame
from .page import render_comparison
from .runs import (
    COMPARE_FILES,
    COMPARISON_OUTPUT,
    RunInfo,
    check_compare_output,
    check_same_corpus,
    load_run,
    prepare_comparison,
    selected_positions,
)
from .writing import compare_runs, write_comparison

__all__ = ["COMPARE_FILES", "COMPARISON_OUTPUT", "RunInfo", "check_compare_output", "check_same_corpus", "compare_runs",
           "compare_selections", "load_run", "merged_composition", "overlap", "overlap_frame", "prepare_comparison",
           "render_comparison", "selected_positions", "write_comparison"]
