"""Smooth maximum for roofline kinks, with a (learnable) sharpness p.

    smooth_max2(a, b; p) = ( a + b + sqrt((a - b)^2 + ((a + b) / p)^2) ) / 2      for a, b >= 0

the classic smooth |x| = sqrt(x^2 + eps^2) inside max(a, b) = (a + b + |a - b|) / 2, with
eps = (a + b) / p proportional to the operands. Properties:
- homogeneous of degree one: seconds in, seconds out, no unit-dependent temperature (a
  log-sum-exp over raw seconds would need one);
- never below the true maximum and at most max * (1 + 1/p) above it (the gap is largest at a
  tie and falls off as (a+b)^2 / (4 p^2 |a-b|) away from it);
- infinitely differentiable (a constant of 1e-36 under the root keeps the gradient finite at
  a = b = 0, and is subtracted back so that smooth_max2(0, 0) = 0);
- p = inf gives max(a, b) (up to float rounding): the sharp limit that reproduces published tables, with a
  finite gradient (1/p = 0 there);
- one square root per element and no branches, so a vmapped cost + gradient stays cheap.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

_TINY = 1e-36


@jax.custom_jvp
def smooth_max2_inv(a: Array, b: Array, inv_sharpness: Array) -> Array:
    """smooth_max2 with 1/p given (1/p = 0 is the sharp limit): no division per element.

    The derivative is written out (custom JVP, so forward and reverse mode both use it) with
    one reciprocal square root per element: the roofline is evaluated for every layer and
    operation of every design point, so this is the hot loop of a vmapped cost + gradient.
    """
    total = a + b
    gap = a - b
    spread = total * inv_sharpness
    root = jnp.sqrt(gap * gap + spread * spread + _TINY)
    return 0.5 * (total + root) - 0.5 * jnp.sqrt(jnp.asarray(_TINY, root.dtype))


@smooth_max2_inv.defjvp
def _smooth_max2_inv_jvp(primals, tangents):
    a, b, inv_p = primals
    da, db, dinv_p = tangents
    total = a + b
    gap = a - b
    spread = total * inv_p
    squared = gap * gap + spread * spread + _TINY
    half_inv_root = 0.5 * jax.lax.rsqrt(squared)
    out = 0.5 * total + squared * half_inv_root - 0.5 * jnp.sqrt(jnp.asarray(_TINY, squared.dtype))
    gap_term = gap * half_inv_root
    spread_term = spread * inv_p * half_inv_root
    d_a = 0.5 + gap_term + spread_term
    d_b = 0.5 - gap_term + spread_term
    d_inv_p = spread * total * half_inv_root
    return out, d_a * da + d_b * db + d_inv_p * dinv_p


def smooth_max2(a: Float[Array, "..."], b: Float[Array, "..."], sharpness: Float[Array, "..."]) -> Float[Array, "..."]:
    """Smooth max of two non-negative arrays, elementwise (see the module docstring)."""
    return smooth_max2_inv(a, b, 1.0 / jnp.asarray(sharpness))


def smooth_max(xs: Float[Array, "n ..."], sharpness: Float[Array, "..."]) -> Float[Array, "..."]:
    """Smooth max over the leading axis of non-negative `xs` (e.g. AFD's three pipeline stages).

    Folded pairwise, so it lies between the max and max * (1 + 1/p)^(n-1); exact for p = inf.
    """
    inv_sharpness = 1.0 / jnp.asarray(sharpness)
    return functools.reduce(lambda acc, x: smooth_max2_inv(acc, x, inv_sharpness), list(xs))
