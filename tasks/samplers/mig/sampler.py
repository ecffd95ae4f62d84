"""The MIG sampler and its diagnostics."""

import math

import numpy as np

from ...errors import InputError
from ..base import Sampler, Selection, SelectionInput
from .greedy import GreedyResult, greedy
from .options import MIGOptions
from .problem import MIGProblem, build_problem


MAX_CURVE_POINTS = 500


class MIGSampler(Sampler):
    name = "mig"
    description = "MIG: greedy maximisation of information gain over a label graph (tags, or k-means clusters when there are none)."
    Options = MIGOptions
    requires_positive_quality = False
    handles_previous_rows = True

    def quality_requirement(self) -> str | None:
        # Quality scales label mass (MIG) or enters as quality^theta (DPP): negative scores have no meaning there.
        return ">= 0"

    def _select(self, data: SelectionInput, budget: int, seed: int) -> Selection:
        opts = self.options
        problem = build_problem(data, opts, seed, budget)
        cands = problem.candidates
        previous = None
        x0 = None
        if data.previous_rows is not None and len(data.previous_rows):
            previous = np.unique(np.asarray(data.previous_rows, dtype=np.int64))
            if previous.min() < 0 or previous.max() >= data.n_rows:
                raise InputError(f"previous_rows has rows outside 0..{data.n_rows - 1}; pass rows of this corpus.")
            # Rows picked in earlier rounds already hold their information: start from it, never pick them again.
            x0 = np.asarray(cands.ehat_rows(previous).sum(axis=0)).ravel()
        result = greedy(cands, budget, problem.phi, gain=opts.gain, x0=x0, excluded_rows=previous, lazy=True)
        return Selection(
            rows=result.rows,
            scores=result.gains,
            weights=np.ones(budget),
            clusters=None if problem.labels.coarse_assignments is None else problem.labels.coarse_assignments[result.rows],
            diagnostics=_diagnostics(problem, result, opts, previous),
        )


def _diagnostics(problem: MIGProblem, result: GreedyResult, opts: MIGOptions, previous: np.ndarray | None) -> dict:
    labels, graph = problem.labels, problem.graph
    k_labels = len(labels.names)
    indicator = labels.indicator
    selected_labels = indicator[result.rows]
    per_label = np.asarray(selected_labels.sum(axis=0)).ravel()
    covered = int(np.count_nonzero(per_label))
    top = np.lexsort((np.arange(k_labels), -per_label))[: min(10, covered)]
    degrees = np.diff(graph.offdiag.indptr)
    curve_at = np.unique(np.linspace(0, len(result.rows) - 1, min(len(result.rows), MAX_CURVE_POINTS)).round().astype(int))
    edges = np.unique(np.linspace(0, max(int(degrees.max(initial=0)), 1), 21).round())
    counts, edges = np.histogram(degrees, bins=edges)
    diagnostics = {
        "label_source": labels.source,
        "n_labels": k_labels,
        "labels_per_row_mean": float(np.diff(indicator.indptr).mean()),
        "rows_without_labels": int(np.count_nonzero(np.diff(indicator.indptr) == 0)),
        "distinct_label_sets": int(problem.candidates.unit.shape[0]),
        "similarity_threshold": [None if not math.isfinite(t) else float(t) for t in graph.thresholds],
        "threshold_calibrated": opts.similarity_threshold is None,
        "target_degree": opts.target_degree,
        "average_degree": float(graph.offdiag.nnz / max(k_labels, 1)),
        "prop_weight": problem.prop_weight,
        "propagation": opts.propagation,
        "relative_degree": opts.relative_degree,
        "central_share": opts.central_share,
        "phi": f"x^{opts.phi_b:g}" if opts.phi == "pow" else f"1-exp(-{opts.phi_alpha:g}x)",
        "gain": opts.gain,
        "labels_covered": covered,
        "labels_covered_fraction": covered / max(k_labels, 1),
        "labels_reached": int(np.count_nonzero(result.x > 0)),
        "most_selected_labels": [labels.names[k] for k in top],
        "information": float(result.information[-1]),
        "gain_evaluations": int(result.evaluations),
        "bound_violations": int(result.bound_violations),
        "previous_rows": 0 if previous is None else int(len(previous)),
        "curves": {
            "Information E(S) by rows selected": [float(v) for v in result.information[curve_at]],
            "Marginal gain by rank": [float(v) for v in result.gains[curve_at]],
        },
        "histograms": {"Label graph degree": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}},
    }
    if labels.cluster_sizes is not None:
        diagnostics["cluster_levels"] = labels.cluster_sizes
        diagnostics["nested_clusters"] = labels.nested
    return diagnostics
