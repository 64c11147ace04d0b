"""Ordinal decisions for ATTS: a graded level per candidate from its own p-value.

ATTS' "ordinal classification" (arXiv 2509.15148, section 3) replaces the yes/no
conformal test by ordered thresholds alpha_1 > alpha_2 > ... > alpha_K in (0, 1):

    level = #{k : p <= alpha_k}      (0 .. K)

With K = 2: level 0 (p > alpha_1) accept the draft chunk, level 1 (alpha_2 < p <= alpha_1)
the target continues the turn, level 2 (p <= alpha_2) the target regenerates it. Because
each level is a function of the candidate's own p-value only, a candidate never waits for
its siblings (no batch barrier, no ranking), and P(level >= k) = alpha_k exactly under
exchangeability with randomised p-values. A larger score gives a smaller p-value, hence a
level at least as high.

Budget form: with a takeover budget of B out of m parallel samples, alpha = B / m makes the
expected number of takeovers B (ATTS section 3).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from codesign.atts._conformal import concrete

__all__ = ["OrdinalThresholds", "alpha_from_budget", "ordinal_levels"]


def alpha_from_budget(budget: float, m: int) -> float:
    """alpha = B / m: expected takeovers B among m samples (ATTS "budget form").

    `budget` may be fractional (an expected count) and must lie in [0, m]; `m` is a positive
    integer. B = 0 and B = m give alpha = 0 and 1: the degenerate never / always policies,
    which need no conformal test and are rejected by `reject`.
    """
    if not isinstance(m, (int, np.integer)) or isinstance(m, bool) or m < 1:
        raise ValueError(f"m={m!r}: the number of parallel samples must be an integer >= 1")
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise ValueError(f"budget={budget!r}: must be a real number in [0, m={m}]")
    if not np.isfinite(budget) or not 0 <= budget <= m:
        raise ValueError(f"budget={budget!r}: takeover budget must lie in [0, m={m}]")
    return float(budget) / float(m)


@dataclasses.dataclass(frozen=True)
class OrdinalThresholds:
    """Strictly decreasing levels alpha_1 > ... > alpha_K, all in (0, 1); names optional.

    `names` has K + 1 entries, level 0 first (default: accept / target_continues /
    target_regenerates for K = 2).
    """

    alphas: tuple[float, ...]
    names: tuple[str, ...] | None = None

    def __post_init__(self):
        alphas = tuple(float(a) for a in self.alphas)
        object.__setattr__(self, "alphas", alphas)
        if len(alphas) == 0:
            raise ValueError("OrdinalThresholds.alphas=(): need at least one threshold")
        for i, a in enumerate(alphas):
            if not 0.0 < a < 1.0:
                raise ValueError(f"OrdinalThresholds.alphas[{i}]={a!r}: must lie in (0, 1)")
        if any(a <= b for a, b in zip(alphas, alphas[1:])):
            raise ValueError(f"OrdinalThresholds.alphas={alphas!r}: must be strictly "
                             "decreasing (alpha_1 > alpha_2 > ...)")
        names = self.names
        if names is None and len(alphas) == 2:
            names = ("accept", "target_continues", "target_regenerates")
        if names is None:
            names = tuple(f"level_{k}" for k in range(len(alphas) + 1))
        if len(names) != len(alphas) + 1:
            raise ValueError(f"OrdinalThresholds.names={names!r}: need len(alphas) + 1 = "
                             f"{len(alphas) + 1} names, level 0 first")
        object.__setattr__(self, "names", tuple(names))

    @classmethod
    def from_budgets(cls, budgets, m: int, names=None) -> "OrdinalThresholds":
        """Thresholds alpha_k = B_k / m from decreasing budgets B_1 > B_2 > ... (each in (0, m))."""
        return cls(tuple(alpha_from_budget(b, m) for b in budgets), names)


def ordinal_levels(p_values: Float[Array, "..."], thresholds: OrdinalThresholds) -> Int[Array, "..."]:
    """Level of every candidate, #{k : p <= alpha_k} (int32, shape of `p_values`).

    Elementwise, so permuting a batch permutes its levels and a candidate's level never
    depends on another candidate. Jit-able; concrete inputs are checked.
    """
    if not isinstance(thresholds, OrdinalThresholds):
        raise ValueError(f"thresholds={thresholds!r}: must be an OrdinalThresholds")
    p_arr = concrete(p_values)
    if p_arr is not None and (np.isnan(p_arr).any() or (p_arr < 0).any() or (p_arr > 1).any()):
        raise ValueError("p_values: every p-value must lie in [0, 1] (got NaN or out of range)")
    p = jnp.asarray(p_values, jnp.float32)
    alphas = jnp.asarray(thresholds.alphas, jnp.float32)
    return (p[..., None] <= alphas).sum(-1, dtype=jnp.int32)
