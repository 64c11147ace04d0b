"""Per-turn calibration: pooled Mondrian banks, the bank size a per-turn rate needs, and the per-turn
guarantee on synthetic scores (exchangeable, and drifting against the total-variation bound)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codesign.atts import (Mondrian, PooledMondrian, bank_size_for, binomial_pmf, conformal_p_values, pool_windows,
                           run_stream, turn_rate_experiment)


def _reference_pools(counts, min_bank):
    T = len(counts)
    pools = np.zeros((T, T), bool)
    for t in range(T):
        r = next((r for r in range(T) if sum(counts[max(t - r, 0):t + r + 1]) >= min_bank), T - 1)
        pools[t, max(t - r, 0):t + r + 1] = True
    return pools


def test_pools_are_the_smallest_windows_holding_min_bank():
    rng = np.random.default_rng(0)
    for n_turns in (1, 2, 9):   # 300 random cases per size in one vmapped call
        counts = rng.integers(0, 50, (300, n_turns)) * (rng.random((300, n_turns)) < 0.8)
        min_bank = rng.integers(1, 120, 300)
        pools = np.asarray(jax.jit(jax.vmap(pool_windows))(jnp.asarray(counts), jnp.asarray(min_bank)))
        for case in range(300):
            np.testing.assert_array_equal(pools[case], _reference_pools(counts[case].tolist(), min_bank[case]))


def _bank(counts, seed=0):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=sum(counts)) * 2).astype(np.float32)   # ties on purpose
    turns = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    return scores, turns


def test_pooled_p_values_are_those_of_the_pooled_bank_and_mondrian_where_banks_are_full():
    counts = [30, 12, 0, 3, 25]
    scores, turns = _bank(counts)
    cal = PooledMondrian(5, 30, min_bank=20)
    state = cal.init_state(scores, turn_ids=turns)
    pools = np.asarray(cal.pools(state))
    np.testing.assert_array_equal(pools, _reference_pools(counts, 20))
    rng = np.random.default_rng(1)
    test = np.round(rng.normal(size=40) * 2).astype(np.float32)
    test_turns = rng.integers(0, 5, 40).astype(np.int32)
    u = rng.random(40).astype(np.float32)
    for randomized in (True, False):
        p = cal.p_values(state, test, uniforms=u if randomized else None, turn_ids=test_turns, randomized=randomized)
        for t in range(5):   # each turn's scores against the union of its pool's banks
            at = test_turns == t
            ref = conformal_p_values(scores, test[at], valid=pools[t][turns], randomized=randomized,
                                     uniforms=u[at] if randomized else None)
            np.testing.assert_allclose(np.asarray(p)[at], np.asarray(ref), rtol=1e-6)
    full = np.isin(test_turns, [0, 4])    # banks of >= min_bank scores: exactly Mondrian
    mondrian = Mondrian(5, 30)
    p_m = mondrian.p_values(mondrian.init_state(scores, turn_ids=turns), test[full], uniforms=u[full],
                            turn_ids=test_turns[full])
    p_pooled = cal.p_values(state, test, uniforms=u, turn_ids=test_turns)
    np.testing.assert_allclose(np.asarray(p_pooled)[full], np.asarray(p_m), rtol=1e-6)


def test_pooled_runs_online_under_scan_and_its_pools_shrink_as_banks_fill():
    cal = PooledMondrian(3, 64, min_bank=16)
    state = cal.init_state(jnp.arange(20.0), turn_ids=jnp.zeros(20, jnp.int32))   # turns 1, 2 empty
    assert np.asarray(cal.pools(state))[2].all()                                  # turn 2 borrows turn 0
    scores = jax.random.normal(jax.random.key(0), (12, 8))
    final, rejected = run_stream(cal, state, scores, jnp.tile(jnp.arange(3, dtype=jnp.int32), 4),
                                 jax.random.key(1), 0.25)
    assert rejected.shape == (12, 8)
    assert np.asarray(final.valid).sum(-1).tolist() == [20 + 32, 32, 32]
    np.testing.assert_array_equal(np.asarray(cal.pools(final)), np.eye(3, dtype=bool))


@pytest.mark.parametrize("bad, name", [(lambda: PooledMondrian(3, 8, 0), "PooledMondrian.min_bank"),
                                       (lambda: PooledMondrian(3, 8, 4).p_values(
                                           PooledMondrian(3, 8, 4).init_state(), jnp.ones(2), key=jax.random.key(0),
                                           turn_ids=jnp.zeros(2, jnp.int32)), "state"),
                                       (lambda: bank_size_for(1.5), "alpha"),
                                       (lambda: turn_rate_experiment(calibration_counts=[0, 3]), "calibration_counts")])
def test_bad_input_names_the_argument(bad, name):
    with pytest.raises(ValueError, match=name):
        bad()


# ---------------------------------------------------------------------------- bank size

def _beta_outside(a, b, lo, hi):
    """P(Beta(a, b) outside [lo, hi]) for integers a, b >= 1, exactly: P(Beta <= x) = P(Bin(a+b-1, x) >= a)."""
    cdf = lambda x: binomial_pmf(a + b - 1, x)[a:].sum()
    return 1.0 - (cdf(hi) - cdf(lo))


def test_bank_size_for_meets_its_definition_exactly():
    for alpha, tol in ((0.25, 0.02), (0.1, 0.02), (0.25, 0.05)):
        n = bank_size_for(alpha, tol, 0.95)
        approx = alpha * (1 - alpha) * (2.24 / tol) ** 2    # normal approximation, union of two tails
        assert 0.8 * approx < n < 1.2 * approx, (alpha, tol, n)
        for size, holds in ((n, True), (n - 1, False)):
            l = math.floor(alpha * (size + 1) + 1e-9)
            miss = (_beta_outside(l, size + 1 - l, alpha - tol, alpha + tol)
                    + _beta_outside(l + 1, size - l, alpha - tol, alpha + tol))
            assert (miss <= 0.05 + 1e-4) == holds, (alpha, tol, size, miss)
    assert bank_size_for(0.25, 0.01) > 3 * bank_size_for(0.25, 0.02)


# ---------------------------------------------------------------------------- per-turn guarantee

def test_per_turn_rate_within_0_02_of_alpha_on_exchangeable_scores():
    """One calibration (3200 scores at turn 0 thinning to 18 at turn 12), 2000 test chunks per turn,
    every turn's rate within 0.02 + 2 SE of alpha for the pooled calibrator at alpha 0.1 and 0.25;
    Mondrian, exact only marginally, misses on the turns with small banks (the check has power)."""
    out = turn_rate_experiment(alphas=(0.1, 0.25), n_test=2000, seed=0)
    assert out["n_test"] >= 2000 and min(out["calibration_counts"]) < 50
    rows = {(r["calibrator"], r["alpha"]): r for r in out["rows"]}
    for alpha in (0.1, 0.25):
        pooled = rows["pooled", alpha]
        assert pooled["turns_beyond"] == 0, pooled["rate_by_turn"]
        assert min(pooled["pool_size_by_turn"]) >= pooled["min_bank"]
        full = [t for t, c in enumerate(out["calibration_counts"]) if c >= pooled["min_bank"]]
        assert full and all(pooled["pool_turns"][t] == [t] for t in full)   # Mondrian where the bank suffices
        assert rows["mondrian", alpha]["turns_beyond"] >= 1


def test_pooled_bias_stays_within_the_total_variation_bound_under_drift():
    """Drifting turns (log-score location -0.03 per turn), 200 bank draws: every turn's pooled rate is
    within its bound 2 sum n_t' d_TV / (N + 1) (+ 3 SE) of alpha, and exactly alpha (bound 0) where the
    turn's own bank suffices; Mondrian is exact on every turn (marginally), the static bank is not."""
    out = turn_rate_experiment(alphas=(0.25,), calibration_counts=[1600, 960, 576, 346, 207, 124, 75, 45, 27],
                               min_bank=900, n_test=40, n_splits=200, drift_per_turn=0.03, seed=1)
    rows = {r["calibrator"]: r for r in out["rows"]}
    pooled = rows["pooled"]
    dev = np.abs(np.asarray(pooled["rate_by_turn"]) - 0.25)
    bound, se = np.asarray(pooled["tv_bound_by_turn"]), np.asarray(pooled["se_by_turn"])
    assert (dev <= bound + 3 * se).all(), (dev.round(4).tolist(), bound.round(4).tolist())
    assert bound[:2].tolist() == [0.0, 0.0] and 0 < bound.max() < 0.2   # turns 0, 1: own banks of >= 900
    mondrian = np.abs(np.asarray(rows["mondrian"]["rate_by_turn"]) - 0.25)
    assert (mondrian <= 3 * np.asarray(rows["mondrian"]["se_by_turn"])).all()
    assert abs(rows["static"]["rate_by_turn"][-1] - 0.25) > 0.04
