"""The per-turn guarantee: how large a turn's bank must be, and the experiment that checks the
per-turn takeover rate of every calibrator on synthetic scores.

A conformal test is exact *marginally* (over the draw of the bank). One calibration followed by
many test chunks measures the rate *given* the bank, which for N exchangeable continuous scores
lies between two order statistics of N uniforms, the l-th and (l+1)-th largest, l = floor(alpha
(N + 1)): Beta(l, N + 1 - l) and Beta(l + 1, N - l) (Vovk 2012, "Conditional validity of inductive
conformal predictors"). So a per-turn rate within a tolerance of alpha needs a large bank *per
turn*; `bank_size_for` gives the size, `turn_rate_experiment` measures the rates.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nets import InputError
from codesign.atts._calibrators import Mondrian, StaticBank
from codesign.atts._pooled import PooledMondrian, pool_windows

TURN_CALIBRATORS = ("static", "mondrian", "pooled")


def bank_size_for(alpha: float, tolerance: float = 0.02, confidence: float = 0.95, *, max_n: int = 200_000) -> int:
    """The smallest bank size N from which on (every N' >= N up to max_n) the rejection rate given a
    bank of N exchangeable continuous scores lies within `tolerance` of `alpha` with probability at
    least `confidence`, for randomised and unrandomised p-values.

    Sufficient condition used: both bracketing laws, Beta(l, N + 1 - l) and Beta(l + 1, N - l),
    leave [alpha - tolerance, alpha + tolerance] with total probability <= 1 - confidence (the
    randomised rate is a mix of the two). N counts exchangeable scores: with m samples per question
    whose scores are correlated, count questions, not chunks.
    """
    for name, value, lo in (("alpha", alpha, 0.0), ("tolerance", tolerance, 0.0), ("confidence", confidence, 0.0)):
        if not isinstance(value, (int, float)) or not lo < value < 1.0:
            raise InputError(name, value, "must lie in the open interval (0, 1)")
    z = math.sqrt(2) * _erfinv(confidence)   # the two-sided normal quantile: N is about a (1 - a) (z / tol)^2
    top = min(max_n, int(4 * alpha * (1 - alpha) * (z / tolerance) ** 2) + 64)
    n = np.arange(1, top + 1, dtype=np.float64)
    l = np.floor(alpha * (n + 1) + 1e-9)   # + 1e-9: alpha (N + 1) an integer in exact arithmetic stays one

    def outside(a, b):   # P(Beta(a, b) outside the band); a = 0 is a point mass at 0 (always outside)
        size = max(1024, 1 << (top - 1).bit_length())   # padded: one compile per power of two
        pad = lambda x: jnp.asarray(np.pad(np.maximum(x, 1.0), (0, size - top), constant_values=1.0), jnp.float32)
        band = _beta_band(pad(a), pad(b), jnp.float32(max(alpha - tolerance, 0.0)),
                          jnp.float32(min(alpha + tolerance, 1.0)))
        return np.where(a >= 1, 1.0 - np.asarray(band, np.float64)[:top], 1.0)

    miss = outside(l, n + 1 - l) + outside(l + 1, np.maximum(n - l, 1.0))
    bad = np.flatnonzero(miss > 1.0 - confidence)
    if bad.size and bad[-1] == top - 1:
        raise InputError("tolerance", tolerance, f"needs a bank larger than {top} (max_n={max_n})")
    return int(bad[-1] + 2) if bad.size else 1


@jax.jit
def _beta_band(a, b, lo, hi):
    """P(lo <= Beta(a, b) <= hi), elementwise."""
    return jax.scipy.special.betainc(a, b, hi) - jax.scipy.special.betainc(a, b, lo)


def _erfinv(y: float) -> float:
    """The inverse error function by bisection (float64; erf is increasing)."""
    lo, hi = 0.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.erf(mid) < y else (lo, mid)
    return (lo + hi) / 2


def default_calibration_counts(n_turns: int = 13, first: int = 6400, ratio: float = 0.6) -> list[int]:
    """Calibration scores per turn thinning geometrically (6400 at turn 0, 14 at turn 12): few samples
    reach late turns, as in the ATTS pipeline where long problems are rarer."""
    return [max(1, round(first * ratio**t)) for t in range(n_turns)]


def joint_min_bank(alpha: float, n_turns: int, tolerance: float = 0.02, confidence: float = 0.95) -> int:
    """The per-turn bank size that holds *every* one of `n_turns` turns' rates within `tolerance` of
    alpha with probability >= `confidence` (union bound: `bank_size_for` at 1 - (1 - confidence) / n_turns)."""
    return bank_size_for(alpha, tolerance, 1.0 - (1.0 - confidence) / n_turns)


def normal_tv(shift: float) -> float:
    """d_TV(Normal(0, 1), Normal(shift, 1)) = 2 Phi(|shift| / 2) - 1."""
    return math.erf(abs(shift) / (2 * math.sqrt(2)))


def turn_rate_experiment(*, alphas: Sequence[float] = (0.1, 0.25), calibration_counts: Sequence[int] | None = None,
                         n_test: int = 2000, n_splits: int = 1, drift_per_turn: float = 0.0,
                         tolerance: float = 0.02, min_bank: int | None = None, seed: int = 0) -> dict:
    """Per-turn takeover rate of `TURN_CALIBRATORS` on synthetic scores, against alpha.

    Turn t's scores are exp(Normal(-drift_per_turn * t, 1)), independent: exchangeable within a turn,
    exchangeable across turns when drift_per_turn = 0. Each split draws one calibration bank
    (`calibration_counts[t]` scores of turn t) and `n_test` test scores per turn, decided against the
    fixed bank (no update), as a run that calibrates once and then serves many chunks. Calibrators:
    static (turn-0 bank), mondrian (own turn), pooled (`PooledMondrian`, min_bank = `min_bank` or
    `joint_min_bank(alpha, turns, tolerance)`: every turn within `tolerance` with probability 0.95).

    Per calibrator and alpha: rate_by_turn (mean over splits), se_by_turn (binomial sqrt(a(1-a)/n)
    with n = n_test when n_splits = 1; the spread across splits / sqrt(n_splits), which includes the
    banks' randomness, otherwise), turns_beyond (|rate - alpha| - 0.02 > 2 SE), and for pooled the
    pools and the bound 2 sum n_t' d_TV(F_t', F_t) / (N + 1) on |P(reject | turn t) - alpha|.
    """
    counts = list(calibration_counts or default_calibration_counts())
    if not counts or min(counts) < 1:
        raise InputError("calibration_counts", counts, "must be a non-empty list of integers >= 1")
    for name, value in (("n_test", n_test), ("n_splits", n_splits)):
        if not isinstance(value, int) or value < 1:
            raise InputError(name, value, "must be an integer >= 1")
    n_turns, capacity = len(counts), max(counts)
    shift_T = -drift_per_turn * np.arange(n_turns)
    valid = jnp.arange(capacity)[None, :] < jnp.asarray(counts)[:, None]
    turns = jnp.broadcast_to(jnp.arange(n_turns, dtype=jnp.int32)[:, None], (n_turns, capacity)).reshape(-1)
    test_turns = jnp.repeat(jnp.arange(n_turns, dtype=jnp.int32), n_test)
    min_banks = {a: int(min_bank or joint_min_bank(a, n_turns, tolerance)) for a in alphas}
    cals = {"static": StaticBank(counts[0]), "mondrian": Mondrian(n_turns, capacity),
            **{f"pooled_{n}": PooledMondrian(n_turns, capacity, n) for n in sorted(set(min_banks.values()))}}

    def one_split(key):   # p-values of every calibrator (one compile for all alphas)
        k_cal, k_test, k_u = jax.random.split(key, 3)
        loc_T = jnp.asarray(shift_T, jnp.float32)
        cal_TxC = jnp.exp(loc_T[:, None] + jax.random.normal(k_cal, (n_turns, capacity)))
        test = jnp.exp(loc_T[test_turns] + jax.random.normal(k_test, test_turns.shape))
        u = jax.random.uniform(k_u, test.shape)
        p = {}
        for name, cal in cals.items():
            if name == "static":
                p[name] = cal.p_values(cal.init_state(cal_TxC[0, :counts[0]]), test, uniforms=u)
            else:
                state = cal.init_state(cal_TxC.reshape(-1), valid=valid.reshape(-1), turn_ids=turns)
                p[name] = cal.p_values(state, test, uniforms=u, turn_ids=test_turns)
        return {k: v.reshape(n_turns, n_test) for k, v in p.items()}

    keys = jax.random.split(jax.random.key(seed), n_splits)
    alphas_A = jnp.asarray(alphas, jnp.float32)
    rates = jax.jit(lambda ks: jax.lax.map(
        lambda k: {n: (p[None] <= alphas_A[:, None, None]).mean(-1) for n, p in one_split(k).items()}, ks))(keys)
    rates = {k: np.asarray(v) for k, v in rates.items()}   # (splits, alphas, turns)
    out = {"calibration_counts": counts, "n_test": n_test, "n_splits": n_splits, "drift_per_turn": drift_per_turn,
           "tolerance": tolerance, "rows": []}
    for a_index, alpha in enumerate(alphas):
        pooled_name = f"pooled_{min_banks[alpha]}"
        binomial_se = math.sqrt(alpha * (1 - alpha) / n_test)
        for name in TURN_CALIBRATORS:
            r_SxT = rates[pooled_name if name == "pooled" else name][:, a_index]
            rate = r_SxT.mean(0)
            se = (r_SxT.std(0, ddof=1) / math.sqrt(n_splits) if n_splits > 1 else np.full(n_turns, binomial_se))
            row = {"calibrator": name, "alpha": float(alpha), "rate_by_turn": rate.tolist(), "se_by_turn": se.tolist(),
                   "max_abs_dev": float(np.abs(rate - alpha).max()),
                   "turns_beyond": int((np.abs(rate - alpha) - 0.02 > 2 * se).sum())}
            if name == "pooled":
                pools = np.asarray(pool_windows(jnp.asarray(counts), min_banks[alpha]))
                n_pool = pools.astype(np.int64) @ np.asarray(counts)
                borrowed = [sum(counts[v] * normal_tv(shift_T[v] - shift_T[t]) for v in np.flatnonzero(pools[t]))
                            for t in range(n_turns)]
                row.update(min_bank=min_banks[alpha], pool_size_by_turn=n_pool.tolist(),
                           pool_turns=[np.flatnonzero(p).tolist() for p in pools],
                           tv_bound_by_turn=[float(2 * b / (n + 1)) for b, n in zip(borrowed, n_pool)])
            out["rows"].append(row)
    return out
