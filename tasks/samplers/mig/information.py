"""The concave information function phi of MIG (power or exponential), its derivative, and the information of a label vector."""

from dataclasses import dataclass
from typing import Literal

import numpy as np


# Keeps the power phi's derivative finite at 0 (reference code `phi_a`); phi'(0) = 0.8 * 1e-6^-0.2 ~ 12.7.
POW_DERIVATIVE_OFFSET = 1e-6


@dataclass(frozen=True)
class Phi:
    """phi and what the greedy needs of it; all functions are elementwise on float64 arrays."""

    kind: Literal["pow", "exp"] = "pow"
    b: float = 0.8
    alpha: float = 1.0

    @property
    def linear(self) -> bool:
        return self.kind == "pow" and self.b == 1.0

    def value(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "exp":
            return -np.expm1(-self.alpha * x)
        return x if self.linear else np.power(x, self.b)

    def derivative(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "exp":
            return self.alpha * np.exp(-self.alpha * x)
        if self.linear:
            return np.ones_like(x)
        return self.b * np.power(x + POW_DERIVATIVE_OFFSET, self.b - 1.0)

    def cache(self, x: np.ndarray) -> np.ndarray:
        """Per-label value that `increment` needs: phi(x) for pow, exp(-alpha x) for exp."""
        if self.kind == "exp":
            return np.exp(-self.alpha * x)
        return self.value(x)

    def increment(self, x: np.ndarray, cached: np.ndarray, e: np.ndarray) -> np.ndarray:
        """phi(x + e) - phi(x), given cached = self.cache(x)."""
        if self.kind == "exp":
            # exp(-a x) * (1 - exp(-a e)): a product, so it never increases with x even in floating point.
            return cached * -np.expm1(-self.alpha * e)
        if self.linear:
            return e
        return np.power(x + e, self.b) - cached


def information(x: np.ndarray, phi: Phi) -> float:
    """E = sum_k phi(x_k) for a propagated label-mass vector x."""
    return float(phi.value(np.asarray(x, dtype=np.float64)).sum())
