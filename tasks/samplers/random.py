"""Uniform random selection: the baseline every report compares against."""

import numpy as np

from .base import Sampler, SamplerOptions, Selection, SelectionInput


class RandomOptions(SamplerOptions):
    """Random selection has no options."""


class RandomSampler(Sampler):
    name = "random"
    description = "Uniform random rows without replacement (the baseline)."
    Options = RandomOptions

    def _select(self, data: SelectionInput, budget: int, seed: int) -> Selection:
        rng = np.random.default_rng(seed)
        rows = rng.permutation(data.n_rows)[:budget]
        return Selection(
            rows=rows,
            scores=np.zeros(budget),
            weights=np.ones(budget),
            diagnostics={"method": "uniform without replacement"},
        )
