"""Evaluation of samplers on a labelled corpus (plain code, no Prefect).

config.py: what to evaluate (`EvaluationConfig`) and the checks made before any work; protocol.py: the split,
running every selection on the pool and scoring it on the test split; rendering.py: evaluation.md's tables,
the README block and the output folder.
"""

from .config import BASELINE, BASELINES, EvaluationConfig, check_config, check_request
from .protocol import evaluate, measure_selection, proxy_macro_f1, stratified_split, verdicts
from .rendering import (
    EVALUATION_OUTPUT,
    README_END,
    README_START,
    check_evaluation_dir,
    check_readme,
    render_markdown,
    update_readme,
)

__all__ = ["BASELINE", "BASELINES", "EVALUATION_OUTPUT", "README_END", "README_START", "EvaluationConfig", "check_config",
           "check_evaluation_dir", "check_readme", "check_request", "evaluate", "measure_selection", "proxy_macro_f1",
           "render_markdown", "stratified_split", "update_readme", "verdicts"]
