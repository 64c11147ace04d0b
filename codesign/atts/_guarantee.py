"""Experiments that check the conformal guarantee, and the exact laws they are checked against.

Guarantee (exchangeable scores, bank of N, l = floor(alpha (N + 1))):
* randomised p-values: P(reject) = alpha exactly, continuous or discrete scores;
* unrandomised p-values: P(reject) = l / (N + 1) for continuous scores; for discrete scores
  the exact rate is sum_j P(b_(l) = v_j) P(X > v_j), b_(l) the l-th largest bank score
  (ties make it smaller than l / (N + 1)).
Spread across splits (n_test test scores per split, counts of rejections):
* continuous, unrandomised: the rate given the bank is Beta(l, N + 1 - l), so the count is
  BetaBinomial(n_test, l, N + 1 - l) (Vovk 2012, "Conditional validity of inductive
  conformal predictors"; Angelopoulos & Bates 2021, section 3.2);
* continuous, randomised: with f = alpha (N + 1) - l, a test score lands above the l-th
  largest bank score (always rejected), between the l-th and (l+1)-th (rejected with
  probability f) or below; the three counts are DirichletMultinomial(n_test; l, 1, N - l),
  so count = A + Binomial(C, f);
* discrete, unrandomised: a mixture over b_(l) of Binomial(n_test, P(X > b_(l)));
* discrete, randomised: no closed form here; only the mean is checked.
The KS statistic of the observed counts against the law uses the discrete CDF (sup over the
integers) and the asymptotic Kolmogorov p-value, which is conservative for discrete laws.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from codesign.atts._calibrators import ACI, Mondrian, SlidingWindow, StaticBank
from codesign.atts._conformal import _p_values_kernel

# A quantised, skewed score with heavy ties (like a perplexity rounded to a coarse grid).
CATEGORICAL_VALUES = (1.0, 2.0, 3.0, 4.0, 5.0)
CATEGORICAL_PROBS = (0.35, 0.25, 0.2, 0.12, 0.08)
DISTRIBUTIONS = ("lognormal", "categorical")

_lgamma = np.frompyfunc(math.lgamma, 1, 1)


def _log_rising(a: float, x: np.ndarray) -> np.ndarray:
    """log Gamma(a + x) - log Gamma(a), with the a = 0 limit (0 if x == 0 else -inf)."""
    x = np.asarray(x, dtype=np.float64)
    if a == 0:
        return np.where(x == 0, 0.0, -np.inf)
    return np.asarray(_lgamma(a + x), dtype=np.float64) - math.lgamma(a)


def binomial_pmf(n: int, q: float) -> np.ndarray:
    """P(K = k), k = 0..n, K ~ Binomial(n, q)."""
    k = np.arange(n + 1)
    if q <= 0.0 or q >= 1.0:
        return (k == (0 if q <= 0.0 else n)).astype(np.float64)
    log_choose = math.lgamma(n + 1) - _lgamma(k + 1).astype(float) - _lgamma(n - k + 1).astype(float)
    return np.exp(log_choose + k * math.log(q) + (n - k) * math.log1p(-q))


def beta_binomial_pmf(n: int, a: float, b: float) -> np.ndarray:
    """P(K = k), k = 0..n, K ~ BetaBinomial(n, a, b) (a = 0 gives a point mass at 0)."""
    k = np.arange(n + 1)
    if a == 0:
        return (k == 0).astype(np.float64)
    log_choose = math.lgamma(n + 1) - _lgamma(k + 1).astype(float) - _lgamma(n - k + 1).astype(float)
    return np.exp(log_choose + _log_rising(a, k) + _log_rising(b, n - k) - _log_rising(a + b, n))


def rank_index(alpha: float, bank_size: int) -> tuple[int, float]:
    """(l, f): l = floor(alpha (N + 1)) computed in exact rationals, f = alpha (N + 1) - l."""
    exact = Fraction(alpha).limit_denominator(10**9) * (bank_size + 1)
    l = math.floor(exact)
    return l, float(exact - l)


def randomized_count_pmf(n_test: int, bank_size: int, alpha: float) -> np.ndarray:
    """Law of the rejection count of n_test test scores against one bank (continuous scores)."""
    l, f = rank_index(alpha, bank_size)
    a = np.arange(n_test + 1)[:, None]
    c = np.arange(n_test + 1)[None, :]
    rest = n_test - a - c
    ok = rest >= 0
    rest = np.where(ok, rest, 0)
    log_dm = (math.lgamma(n_test + 1) - _lgamma(a + 1).astype(float) - _lgamma(c + 1).astype(float)
              - _lgamma(rest + 1).astype(float) + _log_rising(l, a) + _log_rising(1.0, c)
              + _log_rising(bank_size - l, rest) - _log_rising(bank_size + 1.0, n_test))
    weight_AxC = np.where(ok, np.exp(log_dm), 0.0)
    pmf = np.zeros(n_test + 1)
    for ai in range(n_test + 1):
        for ci in range(n_test + 1 - ai):
            if weight_AxC[ai, ci] > 0:
                pmf[ai:ai + ci + 1] += weight_AxC[ai, ci] * binomial_pmf(ci, f)
    return pmf


def _categorical_order_stat(bank_size: int, alpha: float, probs) -> tuple[np.ndarray, np.ndarray]:
    """(P(b_(l) = v_j), P(X > v_j)) for the l-th largest of bank_size categorical scores."""
    probs = np.asarray(probs, dtype=np.float64)
    l, _ = rank_index(alpha, bank_size)
    survival = np.clip(1.0 - np.cumsum(probs), 0.0, 1.0)
    if l == 0:  # never rejects: put all the mass on the top value, whose survival is 0
        return np.eye(len(probs))[-1], survival
    cdf = np.array([binomial_pmf(bank_size, q)[:l].sum() for q in survival])  # P(b_(l) <= v_j)
    return np.diff(np.concatenate([[0.0], cdf])), survival


def exact_unrandomized_rate(bank_size: int, alpha: float, probs=None) -> float:
    """Exact P(reject) of the unrandomised p-value: l/(N+1) (continuous) or the tie-aware sum."""
    if probs is None:
        return rank_index(alpha, bank_size)[0] / (bank_size + 1)
    weights, survival = _categorical_order_stat(bank_size, alpha, probs)
    return float((weights * survival).sum())


def categorical_unrandomized_count_pmf(n_test: int, bank_size: int, alpha: float, probs) -> np.ndarray:
    weights, survival = _categorical_order_stat(bank_size, alpha, probs)
    return sum(w * binomial_pmf(n_test, q) for w, q in zip(weights, survival))


def kolmogorov_sf(x: float) -> float:
    """P(sup |Brownian bridge| > x), the asymptotic KS p-value (Kolmogorov 1933)."""
    if x <= 0:
        return 1.0
    if x < 1.0:  # Jacobi theta form converges fast for small x
        s = sum(math.exp(-((2 * j - 1) ** 2) * math.pi**2 / (8 * x * x)) for j in range(1, 20))
        return 1.0 - math.sqrt(2 * math.pi) / x * s
    return 2.0 * sum((-1) ** (j - 1) * math.exp(-2 * j * j * x * x) for j in range(1, 101))


def ks_discrete(counts: np.ndarray, pmf: np.ndarray) -> tuple[float, float]:
    """(D, p): sup_k |F_n(k) - F(k)| over the integers and the Kolmogorov p-value with
    Stephens' (1970) small-sample correction; conservative for discrete F."""
    counts = np.asarray(counts).astype(int)
    n = counts.size
    empirical = np.cumsum(np.bincount(counts, minlength=len(pmf))[: len(pmf)]) / n
    d = float(np.abs(empirical - np.cumsum(pmf)).max())
    root_n = math.sqrt(n)
    return d, kolmogorov_sf((root_n + 0.12 + 0.11 / root_n) * d)


def ks_monte_carlo_p(counts: np.ndarray, pmf: np.ndarray, *, n_draws: int = 2000,
                     seed: int = 0) -> float:
    """Exact-size KS p-value for a discrete law: the fraction of n_draws samples of the same
    size drawn from `pmf` whose D is at least the observed one (parametric Monte Carlo)."""
    counts = np.asarray(counts).astype(int)
    n = counts.size
    d_obs, _ = ks_discrete(counts, pmf)
    hist = np.random.default_rng(seed).multinomial(n, pmf / pmf.sum(), size=n_draws)
    d_sim = np.abs(np.cumsum(hist, axis=1) / n - np.cumsum(pmf)).max(axis=1)
    return float((1 + (d_sim >= d_obs - 1e-12).sum()) / (n_draws + 1))


def sample_scores(key: jax.Array, distribution: str, shape) -> jax.Array:
    """i.i.d. scores: 'lognormal' (continuous, perplexity-like) or 'categorical' (ties)."""
    if distribution == "lognormal":
        return jnp.exp(0.5 * jax.random.normal(key, shape))
    if distribution == "categorical":
        idx = jax.random.categorical(key, jnp.log(jnp.asarray(CATEGORICAL_PROBS)), shape=shape)
        return jnp.asarray(CATEGORICAL_VALUES, jnp.float32)[idx]
    raise ValueError(f"distribution={distribution!r}: must be one of {DISTRIBUTIONS}")


def simulate_splits(key: jax.Array, distribution: str, bank_size: int, n_test: int,
                    n_splits: int) -> tuple[jax.Array, jax.Array]:
    """(randomised p, unrandomised p), each (n_splits, n_test): one fresh i.i.d. draw of
    bank_size + n_test scores per split, split into bank and test, vmapped over splits."""

    def one_split(split_key):
        score_key, tie_key = jax.random.split(split_key)
        pool = sample_scores(score_key, distribution, (bank_size + n_test,))
        bank, test = pool[:bank_size], pool[bank_size:]
        valid = jnp.ones(bank_size, bool)
        u = jax.random.uniform(tie_key, (n_test,))
        return (_p_values_kernel(bank, valid, test, u, True),
                _p_values_kernel(bank, valid, test, u, False))

    keys = jax.random.split(key, n_splits)
    return jax.jit(jax.vmap(one_split))(keys)


def guarantee_experiment(*, alphas: Sequence[float] = (0.1, 0.25, 0.4),
                         bank_sizes: Sequence[int] = (16, 64, 1600), n_splits: int = 1000,
                         n_test: int = 64, distributions: Sequence[str] = DISTRIBUTIONS,
                         seed: int = 0) -> list[dict]:
    """One row per (distribution, bank size, alpha, p-value kind): observed vs exact rate.

    Row fields: mean_rate, expected_rate, std_error (across splits), z (in std errors),
    ks_d / ks_p against the exact count law (None where no closed form; ks_p asymptotic,
    ks_p_mc its Monte Carlo exact-size counterpart), and ks_p_binomial
    against Binomial(n_test, expected_rate), the law that ignores the bank's randomness
    (a check that the KS test has power).
    """
    rows = []
    root = jax.random.key(seed)
    for d_index, distribution in enumerate(distributions):
        probs = CATEGORICAL_PROBS if distribution == "categorical" else None
        for bank_size in bank_sizes:
            key = jax.random.fold_in(jax.random.fold_in(root, d_index), bank_size)
            p_rand, p_det = (np.asarray(x) for x in simulate_splits(key, distribution, bank_size,
                                                                   n_test, n_splits))
            for alpha in alphas:
                for kind, p in (("randomized", p_rand), ("unrandomized", p_det)):
                    counts = (p <= np.float32(alpha)).sum(axis=1)
                    rate_per_split = counts / n_test
                    if kind == "randomized":
                        expected = float(alpha)
                        law = None if probs else randomized_count_pmf(n_test, bank_size, alpha)
                    else:
                        expected = exact_unrandomized_rate(bank_size, alpha, probs)
                        law = (categorical_unrandomized_count_pmf(n_test, bank_size, alpha, probs)
                               if probs else beta_binomial_pmf(n_test, *_beta_params(alpha, bank_size)))
                    se = float(rate_per_split.std(ddof=1) / math.sqrt(n_splits))
                    mean = float(rate_per_split.mean())
                    ks_d, ks_p = ks_discrete(counts, law) if law is not None else (None, None)
                    ks_p_mc = ks_monte_carlo_p(counts, law, seed=seed) if law is not None else None
                    rows.append(dict(
                        distribution=distribution, bank_size=int(bank_size), alpha=float(alpha),
                        kind=kind, n_splits=int(n_splits), n_test=int(n_test), mean_rate=mean,
                        expected_rate=expected, floor_rate=exact_unrandomized_rate(bank_size, alpha),
                        std_error=se, z=(mean - expected) / se if se > 0 else 0.0,
                        ks_d=ks_d, ks_p=ks_p, ks_p_mc=ks_p_mc,
                        ks_p_binomial=ks_discrete(counts, binomial_pmf(n_test, expected))[1]))
    return rows


def _beta_params(alpha: float, bank_size: int) -> tuple[int, int]:
    l, _ = rank_index(alpha, bank_size)
    return l, bank_size + 1 - l


def run_stream(calibrator, state, scores_SxK, turns_S, key, alpha: float):
    """Online conformal decisions over S steps of K scores (one turn index per step).

    Each step: p-values against the current state, decisions (p <= alpha, or p <= alpha_t
    for ACI), then the state absorbs the step's scores. Runs as one `lax.scan`; returns the
    final state and the (S, K) rejections.
    """
    is_aci = isinstance(calibrator, ACI)

    def step(state, xs):
        scores_K, turn, step_key = xs
        turn_ids = jnp.full(scores_K.shape, turn, jnp.int32)
        p = calibrator.p_values(state, scores_K, key=step_key, turn_ids=turn_ids)
        rejected = calibrator.reject(state, p) if is_aci else p <= alpha
        state = calibrator.update(state, scores_K, turn_ids=turn_ids, rejected=rejected)
        return state, rejected

    keys = jax.random.split(key, scores_SxK.shape[0])
    return jax.jit(lambda s, xs: jax.lax.scan(step, s, xs))(state, (scores_SxK, turns_S, keys))


def drift_experiment(*, alpha: float = 0.4, n_turns: int = 8, m: int = 16,
                     questions_per_step: int = 4, n_batches: int = 320, n_calibration: int = 64,
                     drift_per_turn: float = 0.25, window: int = 64, gamma: float = 0.05,
                     seed: int = 0) -> dict:
    """Per-turn rejection rates of every calibrator on a drifting stream of scores.

    log-score at turn t ~ Normal(-drift_per_turn * t, 1), i.i.d. across questions and samples
    (exchangeable within a turn, shifting across turns: later turns look easier, as in ATTS'
    released runs where the achieved rate fell from 0.40 to 0.28 on turn 1). Questions run in
    batches of `questions_per_step` x m samples; a batch goes through turns 0..T-1, one
    step per turn. Calibration: n_calibration questions, all turns (StaticBank keeps turn 0).
    """
    key_cal, key_test, key_run = jax.random.split(jax.random.key(seed), 3)
    shift_T = -drift_per_turn * jnp.arange(n_turns)
    per_step = questions_per_step * m
    cal_TxK = jnp.exp(shift_T[:, None] + jax.random.normal(key_cal, (n_turns, n_calibration * m)))
    test_BxTxK = jnp.exp(shift_T[None, :, None]
                         + jax.random.normal(key_test, (n_batches, n_turns, per_step)))
    scores_SxK = test_BxTxK.reshape(n_batches * n_turns, per_step)
    turns_S = jnp.tile(jnp.arange(n_turns, dtype=jnp.int32), n_batches)
    cal_turns = jnp.repeat(jnp.arange(n_turns, dtype=jnp.int32), n_calibration * m)
    static = StaticBank(n_calibration * m)
    calibrators = {
        "static": (static, static.init_state(cal_TxK[0])),
        f"sliding_window_{window}": (SlidingWindow(window),
                                     SlidingWindow(window).init_state(cal_TxK.reshape(-1))),
        "mondrian": (Mondrian(n_turns, n_calibration * m),
                     Mondrian(n_turns, n_calibration * m).init_state(cal_TxK.reshape(-1),
                                                                     turn_ids=cal_turns)),
        f"aci_static_gamma_{gamma}": (ACI(alpha, gamma, static),
                                      ACI(alpha, gamma, static).init_state(cal_TxK[0])),
    }
    results = {}
    for index, (name, (cal, state)) in enumerate(calibrators.items()):
        run_key = jax.random.fold_in(key_run, index)
        _, rejected_SxK = run_stream(cal, state, scores_SxK, turns_S, run_key, alpha)
        rejected = np.asarray(rejected_SxK).reshape(n_batches, n_turns, per_step)
        per_turn = rejected.mean(axis=(0, 2))
        step_err = rejected.mean(axis=2).reshape(-1)  # in stream order
        results[name] = dict(
            per_turn_rate=per_turn.tolist(), overall_rate=float(rejected.mean()),
            max_turn_deviation=float(np.abs(per_turn - alpha).max()),
            running_rate=(np.cumsum(step_err) / np.arange(1, step_err.size + 1)).tolist())
    return dict(alpha=alpha, gamma=gamma, n_turns=n_turns, n_steps=int(scores_SxK.shape[0]),
                scores_per_turn=n_batches * per_step,
                aci_bound=(max(alpha, 1 - alpha) + gamma) / (gamma * scores_SxK.shape[0]),
                calibrators=results)
