"""Statistics of the ATTS experiments: paired bootstrap intervals and the takeover rate per turn."""

from __future__ import annotations

import numpy as np

from nets import InputError


def paired_bootstrap(a, b, *, n_boot: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over paired items and its 95% percentile bootstrap interval (Efron &
    Tibshirani 1993, ch. 13), resampling items with replacement. a, b: per-question 0/1 scores."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise InputError("a.shape", a.shape, f"must be a non-empty vector of the shape of b {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, diff.size, (n_boot, diff.size))].mean(1)
    return float(diff.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def turn_rates(levels_QxmxT, alpha: float, min_n: int) -> dict:
    """Takeover rate per turn against alpha. "holds_within_0.02": every judged turn (n >= min_n) within
    0.02 of alpha, as measured. With n chunks a rate has a binomial standard error sqrt(a(1-a)/n)
    (0.031 at n = 200, alpha 0.25), so a turn is also tested: "turns_drifting" counts the judged
    turns whose distance beyond the 0.02 band exceeds 2 standard errors (a drift the sample size
    can resolve).

    The m samples of a question are not independent: they share the prompt, and on the arithmetic
    task their chunk of a turn, hence its score, is nearly the same (intra-question correlation of
    the takeover indicator 0.5-0.97 in CPU banks), so n chunks carry about the information of the
    questions they come from. "se_by_turn" is therefore the cluster-robust (questions as the unit)
    standard error of the rate (a ratio estimator: sqrt(Q/(Q-1) sum_q (k_q - r n_q)^2) / n), never
    below the binomial one, which is kept as "se_binomial_by_turn". Neither counts the calibration
    bank's own sampling error."""
    scored = levels_QxmxT >= 0
    n_T = scored.sum((0, 1))
    rej_T = ((levels_QxmxT > 0) & scored).sum((0, 1))
    rate_T = np.where(n_T > 0, rej_T / np.maximum(n_T, 1), np.nan)
    judged = n_T >= min_n
    worst = float(np.nanmax(np.abs(rate_T[judged] - alpha))) if judged.any() else float("nan")
    binomial_T = np.sqrt(alpha * (1 - alpha) / np.maximum(n_T, 1))
    n_qT = scored.sum(1)
    k_qT = ((levels_QxmxT > 0) & scored).sum(1)
    q_T = (n_qT > 0).sum(0)
    resid = k_qT - np.nan_to_num(rate_T)[None, :] * n_qT
    cluster_T = np.sqrt(q_T / np.maximum(q_T - 1, 1) * (resid ** 2).sum(0)) / np.maximum(n_T, 1)
    se_T = np.maximum(binomial_T, cluster_T)
    drifting = judged & (np.abs(rate_T - alpha) - 0.02 > 2 * se_T)
    return {"rate_by_turn": [None if np.isnan(r) else float(r) for r in rate_T], "n_by_turn": n_T.tolist(),
            "se_by_turn": se_T.tolist(), "se_binomial_by_turn": binomial_T.tolist(), "overall": float(rej_T.sum() / max(n_T.sum(), 1)), "max_abs_dev": worst,
            "turns_judged": int(judged.sum()), "holds_within_0.02": bool(judged.any() and worst <= 0.02),
            "turns_drifting": int(drifting.sum())}
