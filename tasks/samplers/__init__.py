"""Selection samplers: plain functions of arrays behind one contract (base.py) and one registry (registry.py)."""

from .base import Sampler, SamplerOptions, Selection, SelectionInput
from .budget import resolve_budget
from .registry import SAMPLERS, get_sampler

__all__ = ["SAMPLERS", "Sampler", "SamplerOptions", "Selection", "SelectionInput", "get_sampler", "resolve_budget"]
