"""Conformal p-values for ATTS: is a draft chunk's score unusually high against a bank?

ATTS (arXiv 2509.15148) scores every draft chunk with the target model's perplexity (a
nonconformity score: higher means less plausible) and compares it with a calibration bank
of scores. With N valid bank scores b_1..b_N and a test score s, write
G = #{b_i > s} and E = #{b_i == s}. Two p-values are offered:

* randomised ("smoothed") conformal p-value, U ~ Uniform[0, 1) drawn from an explicit key:

      p = (G + U * (1 + E)) / (N + 1)

  If the N + 1 scores are exchangeable, p is exactly Uniform(0, 1), so
  P(p <= alpha) = alpha for every alpha, whether the scores are continuous or discrete
  with ties (Vovk, Gammerman & Shafer 2005, "Algorithmic Learning in a Random World",
  eq. 2.20; the random tie-break is what ATTS' "randomised tie-break" refers to).
* unrandomised p-value (ATTS section 3, p = (1 + #{b >= s}) / (N + 1)):

      p = (1 + G + E) / (N + 1)

  It is conservative: P(p <= alpha) = floor(alpha (N + 1)) / (N + 1) for continuous
  scores, and smaller when ties occur.

Reject (the target takes the turn over) when p <= alpha.

Two layers, so that value checks and `jit` coexist:
* `_p_values_kernel` is pure, jit-able and vmap-able; it never raises on values, because
  traced arrays have no values. Given an empty bank it returns U (randomised) or 1
  (unrandomised), both still valid p-values.
* `conformal_p_values` / `reject` are the checked public entry points. They always check
  shapes; when the arrays are concrete (eager call) they also check values (finite
  scores, non-empty banks, alpha in (0, 1)) and raise `ValueError` naming the argument.
  Called under `jit`/`vmap` the value checks are skipped (the arrays are tracers):
  validate once eagerly before entering a jitted loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

__all__ = ["conformal_p_values", "reject", "tail_counts"]


# ---------------------------------------------------------------------------- checks

def concrete(x) -> np.ndarray | None:
    """The value of `x` as a NumPy array, or None when `x` is a tracer (inside jit/vmap)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_finite(name: str, values, valid=None) -> None:
    """Raise ValueError if a concrete array holds NaN or +-inf where `valid` is True."""
    arr = concrete(values)
    if arr is None:
        return
    mask = np.ones(arr.shape, bool) if valid is None else concrete(valid)
    if mask is None:
        return
    bad = ~np.isfinite(arr) & np.broadcast_to(mask.astype(bool), arr.shape)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}[{idx}]={arr[idx]!r}: scores must be finite real numbers "
                         f"(no NaN or inf); {int(bad.sum())} of {arr.size} entries are not")


def check_alpha(name: str, alpha) -> None:
    """Raise ValueError unless every (concrete) alpha lies in the open interval (0, 1)."""
    arr = concrete(alpha)
    if arr is None:
        return
    arr = np.asarray(arr, dtype=np.float64)
    bad = ~((arr > 0.0) & (arr < 1.0))
    if bad.any():
        raise ValueError(f"{name}={arr.tolist()!r}: a significance level must lie in the open "
                         "interval (0, 1)")


def check_nonempty(name: str, valid_BxN) -> None:
    """Raise ValueError if any (concrete) bank has no valid score."""
    arr = concrete(valid_BxN)
    if arr is None:
        return
    if arr.shape[-1] == 0:
        raise ValueError(f"{name} has shape {arr.shape}: a calibration bank needs at least "
                         "one score (last axis length >= 1)")
    n_valid = arr.astype(bool).sum(-1)
    if (n_valid == 0).any():
        idx = tuple(int(i) for i in np.argwhere(n_valid == 0)[0])
        raise ValueError(f"{name}: bank {idx} has 0 valid scores; a calibration bank needs "
                         "at least 1 valid score")


def check_tie_break(scores, key, uniforms, randomized: bool):
    """Check the tie-break inputs: exactly one of key / uniforms when randomised, uniforms of
    the shape of `scores` with values in [0, 1). Returns `uniforms` as a float32 array or None."""
    if not randomized:
        return None
    if (key is None) == (uniforms is None):
        raise ValueError("key/uniforms: randomised p-values need exactly one of `key` (a PRNG "
                         f"key) or `uniforms` (got key={key is not None}, "
                         f"uniforms={uniforms is not None})")
    if uniforms is None:
        return None
    uniforms = jnp.asarray(uniforms, dtype=jnp.float32)
    if uniforms.shape != scores.shape:
        raise ValueError(f"uniforms.shape={uniforms.shape}: must equal scores.shape={scores.shape}")
    u = concrete(uniforms)
    if u is not None and not ((u >= 0) & (u < 1)).all():
        raise ValueError("uniforms: every entry must lie in [0, 1)")
    return uniforms


def draw_tie_break(scores, key, uniforms, randomized: bool):
    """The U of every test score: zeros (unrandomised), the given ones, or drawn from `key`.
    Called after every check has passed, so no key is spent on a call that raises."""
    if not randomized:
        return jnp.zeros(scores.shape, jnp.float32)
    if uniforms is None:
        return jax.random.uniform(key, scores.shape, dtype=jnp.float32)
    return uniforms


# ---------------------------------------------------------------------------- kernels

def tail_counts(bank_N: Float[Array, "N"], valid_N: Bool[Array, "N"],
                scores_M: Float[Array, "M"]) -> tuple[Int[Array, "M"], Int[Array, "M"], Int[Array, ""]]:
    """(G, E, n): #valid bank scores > s, == s, for every test score s, and #valid.

    Sorting the bank once makes this O((N + M) log N) instead of O(N M). Invalid slots are
    pushed to +inf and the counts clipped to n, so they never count (valid bank scores
    are finite by contract).
    """
    n_valid = valid_N.sum(dtype=jnp.int32)
    sorted_N = jnp.sort(jnp.where(valid_N, bank_N, jnp.inf))
    n_le = jnp.minimum(jnp.searchsorted(sorted_N, scores_M, side="right"), n_valid)
    n_lt = jnp.minimum(jnp.searchsorted(sorted_N, scores_M, side="left"), n_valid)
    return (n_valid - n_le).astype(jnp.int32), (n_le - n_lt).astype(jnp.int32), n_valid


def _p_values_kernel(bank_N, valid_N, scores_M, uniforms_M, randomized: bool):
    """p-values of M test scores against one bank (see the module docstring for the formula)."""
    greater, equal, n_valid = tail_counts(bank_N, valid_N, scores_M)
    denom = (n_valid + 1).astype(jnp.float32)
    if randomized:
        return (greater + uniforms_M * (1 + equal)) / denom
    return (1 + greater + equal).astype(jnp.float32) / denom


_p_values_batched = jax.jit(jax.vmap(_p_values_kernel, in_axes=(0, 0, 0, 0, None)),
                            static_argnums=4)


# ---------------------------------------------------------------------------- public API

def conformal_p_values(bank: Float[Array, "*batch N"], scores: Float[Array, "*batch M"], *,
                       key: jax.Array | None = None, uniforms: Float[Array, "*batch M"] | None = None,
                       valid: Bool[Array, "*batch N"] | None = None,
                       randomized: bool = True) -> Float[Array, "*batch M"]:
    """Conformal p-values of test `scores` against calibration `bank`(s); shape of `scores`.

    Args:
      bank: calibration scores, shape (*batch, N); one bank per leading index (several banks
        are handled by vmap inside). Unitless nonconformity scores (ATTS: perplexity).
      scores: test scores, shape (*batch, M), same leading shape as `bank`.
      key: PRNG key for the tie-breaking uniforms (randomised p-values). Give `key` or
        `uniforms`, not both; neither is needed when `randomized=False`.
      uniforms: explicit U in [0, 1) per test score, shape of `scores`, instead of `key`
        (lets a caller attach the randomisation to a candidate, e.g. to permute a batch).
      valid: mask of the bank entries that count, shape of `bank`; lets banks with a
        variable number of scores live in fixed-size arrays under jit. Default: all valid.
      randomized: True for the exact smoothed p-value, False for (1 + #{b >= s}) / (N + 1).

    Checked eagerly when the arrays are concrete; under jit only shapes are checked.
    """
    bank = jnp.asarray(bank, dtype=jnp.float32)
    scores = jnp.asarray(scores, dtype=jnp.float32)
    if bank.ndim < 1 or scores.ndim < 1:
        raise ValueError(f"bank.shape={bank.shape}, scores.shape={scores.shape}: both need a "
                         "last axis (bank (*batch, N), scores (*batch, M))")
    if bank.shape[:-1] != scores.shape[:-1]:
        raise ValueError(f"bank.shape={bank.shape} and scores.shape={scores.shape}: leading "
                         "(batch) axes must be equal, one bank per batch index")
    valid = jnp.ones(bank.shape, bool) if valid is None else jnp.asarray(valid, dtype=bool)
    if valid.shape != bank.shape:
        raise ValueError(f"valid.shape={valid.shape}: must equal bank.shape={bank.shape}")
    uniforms = check_tie_break(scores, key, uniforms, randomized)
    check_nonempty("bank", valid)
    check_finite("bank", bank, valid)
    check_finite("scores", scores)
    uniforms = draw_tie_break(scores, key, uniforms, randomized)
    batch = bank.shape[:-1]
    flat = lambda x: x.reshape((-1,) + x.shape[-1:])
    p = _p_values_batched(flat(bank), flat(valid), flat(scores), flat(uniforms), bool(randomized))
    return p.reshape(batch + scores.shape[-1:])


def reject(p_values: Float[Array, "..."], alpha) -> Bool[Array, "..."]:
    """Reject (the target takes over) where p <= alpha; alpha in (0, 1), broadcastable."""
    check_alpha("alpha", alpha)
    p_arr = concrete(p_values)
    if p_arr is not None and (np.isnan(p_arr).any() or (p_arr < 0).any() or (p_arr > 1).any()):
        raise ValueError("p_values: every p-value must lie in [0, 1] (got NaN or out of range)")
    return jnp.asarray(p_values) <= jnp.asarray(alpha, dtype=jnp.float32)
