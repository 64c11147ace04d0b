"""ATTS conformal calibration: p-values, calibrators, ordinal levels, guarantee and drift."""

import collections
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codesign.atts import (ACI, Mondrian, OrdinalThresholds, SlidingWindow, StaticBank, alpha_from_budget,
                           conformal_p_values, drift_experiment, guarantee_experiment, ordinal_levels, reject,
                           CATEGORICAL_PROBS, beta_binomial_pmf, binomial_pmf, categorical_unrandomized_count_pmf,
                           exact_unrandomized_rate, kolmogorov_sf, ks_discrete, ks_monte_carlo_p, randomized_count_pmf)

RTOL = ATOL = 1e-6


def assert_close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               rtol=RTOL, atol=ATOL)


def _brute_p(bank, valid, scores, u, randomized):
    b = bank[valid]
    out = []
    for s, ui in zip(scores, u):
        g, e = (b > s).sum(), (b == s).sum()
        out.append((g + ui * (1 + e)) / (len(b) + 1) if randomized else (1 + g + e) / (len(b) + 1))
    return np.array(out)


# ---------------------------------------------------------------------------- p-values

@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=20), st.lists(st.integers(0, 6), min_size=1,
       max_size=8), st.integers(0, 2**31 - 1), st.booleans())
def test_p_values_match_brute_force_counts_with_ties_and_mask(bank, scores, seed, randomized):
    rng = np.random.default_rng(seed)
    bank = np.array(bank, np.float32)
    valid = rng.random(bank.size) < 0.7
    valid[rng.integers(bank.size)] = True
    scores = np.array(scores, np.float32)
    u = rng.random(scores.size).astype(np.float32)
    padded = np.where(valid, bank, np.float32(rng.normal()))  # padding value must not matter
    p = conformal_p_values(padded, scores, uniforms=u if randomized else None, valid=valid,
                           randomized=randomized)
    assert_close(p, _brute_p(bank, valid, scores, u, randomized))


def test_batched_banks_match_one_bank_at_a_time_and_jit_matches_eager():
    key_bank, key_test, key_u = jax.random.split(jax.random.key(0), 3)
    bank_BxN = jnp.round(jax.random.normal(key_bank, (5, 30)) * 2)
    scores_BxM = jnp.round(jax.random.normal(key_test, (5, 7)) * 2)
    valid_BxN = jnp.arange(30)[None, :] < jnp.array([30, 1, 12, 29, 5])[:, None]
    u_BxM = jax.random.uniform(key_u, (5, 7))
    batched = conformal_p_values(bank_BxN, scores_BxM, uniforms=u_BxM, valid=valid_BxN)
    jitted = jax.jit(lambda b, s, u, v: conformal_p_values(b, s, uniforms=u, valid=v))(
        bank_BxN, scores_BxM, u_BxM, valid_BxN)
    vmapped = jax.vmap(lambda b, s, u, v: conformal_p_values(b, s, uniforms=u, valid=v))(
        bank_BxN, scores_BxM, u_BxM, valid_BxN)
    for i in range(5):
        one = conformal_p_values(bank_BxN[i], scores_BxM[i], uniforms=u_BxM[i], valid=valid_BxN[i])
        assert_close(batched[i], one)
    assert_close(jitted, batched)
    assert_close(vmapped, batched)
    assert batched.shape == (5, 7)


def test_randomised_p_spans_the_tie_interval_and_unrandomised_is_its_top():
    bank = jnp.array([1.0, 2.0, 2.0, 2.0, 3.0])
    score = jnp.array([2.0])
    low = conformal_p_values(bank, score, uniforms=jnp.zeros(1))
    top = conformal_p_values(bank, score, randomized=False)
    assert_close(low, [1 / 6])          # G = 1 above, none of the 3 ties counted
    assert_close(top, [(1 + 1 + 3) / 6])  # ATTS' (1 + #{b >= s}) / (N + 1)
    p = conformal_p_values(bank, jnp.full(4000, 2.0), key=jax.random.key(1))
    assert float(p.min()) >= 1 / 6 and float(p.max()) < 5 / 6
    assert abs(float(p.mean()) - 0.5) < 0.01  # uniform on (1/6, 5/6): mean 1/2
    assert bool(reject(jnp.array([0.1, 0.3]), 0.25)[0]) and not bool(reject(jnp.array([0.3]), 0.25)[0])


# ---------------------------------------------------------------------------- exact laws

def test_exact_laws_are_distributions_with_the_right_means():
    for n_test, bank_size, alpha in [(32, 16, 0.1), (20, 64, 0.4), (10, 7, 0.25)]:
        l = math.floor(alpha * (bank_size + 1))
        k = np.arange(n_test + 1)
        bb = beta_binomial_pmf(n_test, l, bank_size + 1 - l)
        rnd = randomized_count_pmf(n_test, bank_size, alpha)
        cat = categorical_unrandomized_count_pmf(n_test, bank_size, alpha, CATEGORICAL_PROBS)
        for pmf in (bb, rnd, cat):
            assert (pmf >= -1e-15).all() and abs(pmf.sum() - 1) < 1e-9
        assert abs((k * bb).sum() / n_test - l / (bank_size + 1)) < 1e-9
        assert abs((k * rnd).sum() / n_test - alpha) < 1e-9
        exact = exact_unrandomized_rate(bank_size, alpha, CATEGORICAL_PROBS)
        assert abs((k * cat).sum() / n_test - exact) < 1e-9


def test_tie_aware_unrandomised_rate_agrees_with_a_second_derivation():
    # P(reject) = sum_v P(X = v) P(#{bank >= v} <= l - 1): conditions on the test score
    # instead of on the bank's l-th largest score.
    probs = np.array(CATEGORICAL_PROBS)
    at_least = 1 - np.concatenate([[0], np.cumsum(probs)[:-1]])
    for bank_size, alpha in [(16, 0.1), (64, 0.25), (200, 0.4)]:
        l = math.floor(alpha * (bank_size + 1))
        other = sum(pv * binomial_pmf(bank_size, q)[:l].sum() for pv, q in zip(probs, at_least))
        assert abs(exact_unrandomized_rate(bank_size, alpha, probs) - other) < 1e-12
        assert exact_unrandomized_rate(bank_size, alpha, probs) < l / (bank_size + 1)  # ties


def test_kolmogorov_sf_against_scipy_and_ks_has_power():
    xs = [0.3, 0.6, 0.9, 0.999, 1.0, 1.36, 2.0]
    ours = [kolmogorov_sf(x) for x in xs]
    assert all(a >= b for a, b in zip(ours, ours[1:]))
    scipy_stats = pytest.importorskip("scipy.stats")
    assert_close(ours, scipy_stats.kstwobign.sf(xs))
    rng = np.random.default_rng(0)
    law = beta_binomial_pmf(40, 5, 60)
    counts = rng.choice(41, size=1000, p=law)
    assert ks_discrete(counts, law)[1] > 0.01 and ks_monte_carlo_p(counts, law) > 0.01
    assert ks_discrete(counts, binomial_pmf(40, 5 / 65))[1] < 0.01


# ---------------------------------------------------------------------------- guarantee

def _check_guarantee_rows(rows):
    for r in rows:
        where = f"{r['distribution']} N={r['bank_size']} alpha={r['alpha']} {r['kind']}"
        assert abs(r["z"]) <= 3.0, where
        if r["kind"] == "randomized":
            assert r["expected_rate"] == r["alpha"]
        elif r["distribution"] == "lognormal":
            assert r["expected_rate"] == math.floor(r["alpha"] * (r["bank_size"] + 1)) / (r["bank_size"] + 1)
        if r["ks_p"] is not None:
            assert r["ks_p"] > 0.01, where
    # the spread test has power: ignoring the bank's randomness is rejected for small banks
    assert all(r["ks_p_binomial"] < 0.01 for r in rows if r["bank_size"] == 16)


def test_guarantee_on_exchangeable_scores_fast():
    rows = guarantee_experiment(alphas=(0.1, 0.25, 0.4), bank_sizes=(16, 64, 1600),
                                n_splits=1000, n_test=32, seed=0)
    assert len(rows) == 2 * 3 * 3 * 2
    _check_guarantee_rows(rows)


@pytest.mark.slow
def test_guarantee_on_exchangeable_scores_full_size():
    rows = guarantee_experiment(n_splits=10000, n_test=100, seed=1)
    _check_guarantee_rows(rows)


# ---------------------------------------------------------------------------- calibrators

def test_sliding_window_and_mondrian_keep_the_last_scores_like_a_deque():
    rng = np.random.default_rng(3)
    window, cal = SlidingWindow(5), Mondrian(3, 4)
    ws, ms = window.init_state(), cal.init_state()
    ref_w = collections.deque(maxlen=5)
    ref_m = [collections.deque(maxlen=4) for _ in range(3)]
    update_w, update_m = jax.jit(window.update), jax.jit(cal.update)
    for size in (3, 0, 8, 1, 6, 2):
        scores = rng.normal(size=size).astype(np.float32)
        valid = rng.random(size) < 0.8
        turns = rng.integers(0, 3, size).astype(np.int32)
        ws = update_w(ws, scores, valid=valid)
        ms = update_m(ms, scores, valid=valid, turn_ids=turns)
        for s, v, t in zip(scores, valid, turns):
            if v:
                ref_w.append(s)
                ref_m[t].append(s)
        assert sorted(np.asarray(ws.scores)[np.asarray(ws.valid)]) == sorted(ref_w)
        for t in range(3):
            assert sorted(np.asarray(ms.scores[t])[np.asarray(ms.valid[t])]) == sorted(ref_m[t])


def test_static_bank_is_fixed_and_mondrian_compares_within_the_turn():
    static = StaticBank(4)
    state = static.init_state(jnp.array([1.0, 2.0, 3.0]))
    assert static.update(state, jnp.array([9.0, 9.0])) is state
    assert_close(static.p_values(state, jnp.array([2.5]), randomized=False), [2 / 4])
    cal = Mondrian(2, 8)
    ms = cal.init_state(jnp.array([1.0, 2.0, 10.0, 20.0]), turn_ids=jnp.array([0, 0, 1, 1]))
    p = cal.p_values(ms, jnp.array([1.5, 15.0, 1.5]), turn_ids=jnp.array([0, 1, 1]),
                     randomized=False)
    assert_close(p, [2 / 3, 2 / 3, 1.0])


def test_aci_level_follows_the_gibbs_candes_recursion():
    aci = ACI(0.25, 0.1, StaticBank(8))
    state = aci.init_state(jnp.arange(8.0))
    state = aci.update(state, jnp.zeros(4), rejected=jnp.array([True, True, False, False]))
    assert_close(aci.level(state), 0.25 + 0.1 * (0.25 - 0.5))
    state = aci.update(state, jnp.zeros(2), rejected=jnp.array([True, True]),
                       valid=jnp.array([False, False]))  # no valid decision: level unchanged
    assert_close(aci.level(state), 0.225)


def test_drift_mondrian_holds_every_turn_static_drifts_aci_converges():
    out = drift_experiment(alpha=0.4, n_turns=8, n_batches=320, gamma=0.05, seed=0)
    cals, alpha = out["calibrators"], out["alpha"]
    assert out["scores_per_turn"] >= 20000
    assert cals["mondrian"]["max_turn_deviation"] <= 0.02
    static_turns = np.array(cals["static"]["per_turn_rate"])
    assert np.abs(static_turns[4:] - alpha).min() > 0.1  # later turns far from alpha
    aci = cals["aci_static_gamma_0.05"]
    running = np.array(aci["running_rate"])
    steps = np.arange(1, running.size + 1)
    bound = (max(alpha, 1 - alpha) + out["gamma"]) / (out["gamma"] * steps)
    assert (np.abs(running - alpha) <= bound + 1e-6).all()  # Gibbs & Candes Prop. 4.1
    assert abs(aci["overall_rate"] - alpha) <= out["aci_bound"]
    assert abs(cals["static"]["overall_rate"] - alpha) > 10 * out["aci_bound"]


# ---------------------------------------------------------------------------- ordinal

def test_ordinal_levels_are_monotone_in_the_score_and_per_candidate():
    thresholds = OrdinalThresholds((0.4, 0.1))
    assert thresholds.names == ("accept", "target_continues", "target_regenerates")
    key_bank, key_s, key_u, key_perm = jax.random.split(jax.random.key(7), 4)
    bank = jax.random.normal(key_bank, (200,))
    scores = jnp.sort(jnp.round(jax.random.normal(key_s, (300,)), 1))
    u = jnp.full(300, 0.37)  # one shared tie-break: levels must not decrease with the score
    for randomized in (True, False):
        p = conformal_p_values(bank, scores, uniforms=u if randomized else None, randomized=randomized)
        levels = np.asarray(ordinal_levels(p, thresholds))
        assert (np.diff(levels) >= 0).all() and set(levels) == {0, 1, 2}
    u = jax.random.uniform(key_u, (300,))
    levels = ordinal_levels(conformal_p_values(bank, scores, uniforms=u), thresholds)
    perm = jax.random.permutation(key_perm, 300)
    permuted = ordinal_levels(conformal_p_values(bank, scores[perm], uniforms=u[perm]), thresholds)
    np.testing.assert_array_equal(np.asarray(permuted), np.asarray(levels)[np.asarray(perm)])
    others = scores.at[1:].set(scores[1:] + 100.0)  # siblings change, candidate 0 does not
    alone = ordinal_levels(conformal_p_values(bank, others, uniforms=u), thresholds)
    assert int(alone[0]) == int(levels[0])


def test_ordinal_level_frequencies_match_the_thresholds():
    thresholds = OrdinalThresholds.from_budgets((6, 2), m=16)
    assert thresholds.alphas == (6 / 16, 2 / 16)
    key_pool, key_u = jax.random.split(jax.random.key(11))
    pool = jax.random.normal(key_pool, (4000, 33))  # 4000 splits: bank 32, one test score
    u = jax.random.uniform(key_u, (4000, 1))
    p = conformal_p_values(pool[:, :32], pool[:, 32:], uniforms=u)
    levels = np.asarray(ordinal_levels(p, thresholds))[:, 0]
    for k, a in enumerate(thresholds.alphas, start=1):
        assert abs((levels >= k).mean() - a) < 3 * math.sqrt(a * (1 - a) / 4000)


def test_alpha_from_budget():
    assert alpha_from_budget(4, 16) == 0.25
    assert alpha_from_budget(2.5, 10) == 0.25
    assert alpha_from_budget(0, 16) == 0.0 and alpha_from_budget(16, 16) == 1.0


# ---------------------------------------------------------------------------- bad inputs

_BANK, _SCORES = jnp.arange(5.0), jnp.array([1.0, 2.0])


def _key():
    return jax.random.key(0)  # fresh per call: tests may run with jax_debug_key_reuse

BAD_INPUTS = {
    "alpha=0": (lambda: reject(jnp.array([0.5]), 0.0), "alpha"),
    "alpha=1": (lambda: reject(jnp.array([0.5]), 1.0), "alpha"),
    "alpha=-0.1": (lambda: reject(jnp.array([0.5]), -0.1), "alpha"),
    "alpha=nan": (lambda: reject(jnp.array([0.5]), float("nan")), "alpha"),
    "aci alpha": (lambda: ACI(1.5, 0.1, StaticBank(4)), "ACI.alpha"),
    "aci gamma": (lambda: ACI(0.1, 0.0, StaticBank(4)), "ACI.gamma"),
    "budget<0": (lambda: alpha_from_budget(-1, 16), "budget"),
    "budget>m": (lambda: alpha_from_budget(17, 16), "budget"),
    "budget nan": (lambda: alpha_from_budget(float("nan"), 16), "budget"),
    "m=0": (lambda: alpha_from_budget(0, 0), "m="),
    "empty bank": (lambda: conformal_p_values(jnp.zeros(0), _SCORES, key=_key()), "bank"),
    "all invalid": (lambda: conformal_p_values(_BANK, _SCORES, key=_key(), valid=jnp.zeros(5, bool)), "bank"),
    "empty static": (lambda: StaticBank(4).p_values(StaticBank(4).init_state(), _SCORES, key=_key()), "bank"),
    "empty mondrian turn": (lambda: Mondrian(3, 4).p_values(
        Mondrian(3, 4).init_state(_SCORES, turn_ids=jnp.array([0, 0])), _SCORES,
        key=_key(), turn_ids=jnp.array([0, 2])), "turn_ids"),
    "batch shapes": (lambda: conformal_p_values(jnp.zeros((2, 5)), jnp.zeros((3, 2)), key=_key()), "bank.shape"),
    "valid shape": (lambda: conformal_p_values(_BANK, _SCORES, key=_key(), valid=jnp.ones(4, bool)), "valid.shape"),
    "uniforms shape": (lambda: conformal_p_values(_BANK, _SCORES, uniforms=jnp.zeros(3)), "uniforms.shape"),
    "uniforms range": (lambda: conformal_p_values(_BANK, _SCORES, uniforms=jnp.array([0.5, 1.0])), "uniforms"),
    "no key": (lambda: conformal_p_values(_BANK, _SCORES), "key"),
    "turn_ids shape": (lambda: Mondrian(3, 4).update(Mondrian(3, 4).init_state(), _SCORES,
                                                      turn_ids=jnp.array([0])), "turn_ids.shape"),
    "turn id range": (lambda: Mondrian(3, 4).update(Mondrian(3, 4).init_state(), _SCORES,
                                                     turn_ids=jnp.array([0, 3])), "turn_ids"),
    "rejected shape": (lambda: ACI(0.1, 0.1, StaticBank(8)).update(
        ACI(0.1, 0.1, StaticBank(8)).init_state(_BANK), _SCORES, rejected=jnp.ones(3, bool)), "rejected.shape"),
    "static overflow": (lambda: StaticBank(2).init_state(_BANK), "scores.shape"),
    "nan in bank": (lambda: conformal_p_values(_BANK.at[2].set(jnp.nan), _SCORES, key=_key()), "bank"),
    "inf in bank": (lambda: conformal_p_values(_BANK.at[0].set(jnp.inf), _SCORES, key=_key()), "bank"),
    "nan in scores": (lambda: conformal_p_values(_BANK, _SCORES.at[1].set(jnp.nan), key=_key()), "scores"),
    "-inf in scores": (lambda: conformal_p_values(_BANK, _SCORES.at[0].set(-jnp.inf), key=_key()), "scores"),
    "nan in stream": (lambda: SlidingWindow(4).update(SlidingWindow(4).init_state(),
                                                      _SCORES.at[0].set(jnp.nan)), "scores"),
    "nan in mondrian query": (lambda: Mondrian(1, 4).p_values(Mondrian(1, 4).init_state(
        _SCORES, turn_ids=jnp.zeros(2, jnp.int32)), jnp.array([jnp.nan]), key=_key(),
        turn_ids=jnp.zeros(1, jnp.int32)), "scores"),
    "window=0": (lambda: SlidingWindow(0), "SlidingWindow.window"),
    "capacity": (lambda: Mondrian(3, -1), "Mondrian.capacity"),
    "thresholds order": (lambda: OrdinalThresholds((0.1, 0.4)), "OrdinalThresholds.alphas"),
    "threshold range": (lambda: OrdinalThresholds((1.2, 0.4)), r"OrdinalThresholds.alphas\[0\]"),
    "p out of range": (lambda: ordinal_levels(jnp.array([1.5]), OrdinalThresholds((0.4, 0.1))), "p_values"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_value_error_naming_the_argument(case):
    fn, name = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=name):
        fn()


def test_padding_may_hold_nan_when_masked():
    p = conformal_p_values(_BANK.at[4].set(jnp.nan), _SCORES, valid=jnp.arange(5) < 4,
                           randomized=False)
    assert_close(p, [(1 + 3) / 5, (1 + 2) / 5])
