"""Evaluation of samplers on a labelled corpus (plain code, no Prefect): see harness.py."""

from .harness import (
    BASELINE,
    README_END,
    README_START,
    EvaluationConfig,
    check_config,
    check_evaluation_dir,
    check_readme,
    check_request,
    evaluate,
    measure_selection,
    render_markdown,
    stratified_split,
    update_readme,
)

__all__ = ["BASELINE", "README_END", "README_START", "EvaluationConfig", "check_config", "check_evaluation_dir",
           "check_readme", "check_request", "evaluate", "measure_selection", "render_markdown", "stratified_split", "update_readme"]
