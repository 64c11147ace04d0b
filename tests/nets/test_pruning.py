"""SpAtten pruning: exactness at keep 1, top-k of accumulated importance, cascade, pruned-cache decoding,
progressive quantization (both paths, error bound), the relaxation and the paper's schedule."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from nets import (ModelConfig, TransformerLM, PrunedLM, PrunePlan, monotone_keep, ProgressiveQuant, attended_keep,
                  kept_count, local_value_prune, paper_schedule, progressive_probs, quantize_split, select_tokens,
                  soft_keep_mask, softmax_l1_bound, token_importance)

TOL = 1e-5
KINDS = {
    "mha": dict(kind="mha", n_heads=4, n_kv_heads=4, head_dim=8),
    "gqa": dict(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=8, qk_norm=True),
    "mfa": dict(kind="mfa", n_heads=4, n_kv_heads=1, head_dim=8, q_rank=16),
    "mla": dict(kind="mla", n_heads=4, n_kv_heads=4, head_dim=8, q_rank=16, kv_rank=16, rope_dim=4),
}


def assert_close(actual, expected, tol=TOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=tol, rtol=tol)


def small_cfg(kind="gqa", causal=True, n_layers=2, moe=False):
    ffn = dict(kind="moe", d_ff=32, n_experts=4, top_k=2, d_expert=16, moe_start=1) if moe else dict(d_ff=32)
    return ModelConfig().replace(vocab_size=64, d_model=32, n_layers=n_layers, max_seq_len=64,
                                 attention=KINDS[kind], ffn=ffn, causal=causal)


def hard(model, tokens, plan, n_prunable=None):
    return nnx.jit(lambda m, t: m(t, plan=plan, n_prunable=n_prunable))(model, tokens)


def tokens_of(shape, seed=1):
    return jax.random.randint(jax.random.key(seed), shape, 0, 64)


# ---- exactness at keep ratio 1 ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gqa", pytest.param("mha", marks=pytest.mark.slow),
                                  pytest.param("mfa", marks=pytest.mark.slow), pytest.param("mla", marks=pytest.mark.slow)])
def test_keep_one_equals_the_unpruned_model(kind):
    cfg = small_cfg(kind, causal=kind != "mha", moe=kind == "mfa")  # MHA as encoder, MFA with MoE
    model = TransformerLM(cfg, rngs=nnx.Rngs(0))
    pruned = PrunedLM.from_model(model)
    tokens = tokens_of((2, 10))
    expected, _ = nnx.jit(lambda m, t: m(t))(model, tokens)
    logits, aux = hard(pruned, tokens, PrunePlan.none(cfg.n_layers))
    assert_close(logits, expected)
    assert all(p.shape == (2, 10) for p in aux["kept_positions"])
    soft, _ = nnx.jit(lambda m, t: m.soft(t, token_keep=jnp.ones(2), head_keep=jnp.ones(2), temperature=1e-3))(
        pruned, tokens)
    assert_close(soft, expected)


# ---- cascade token pruning -------------------------------------------------------------------
def test_importance_accumulates_over_heads_rows_and_layers_naively():
    rng = np.random.default_rng(0)
    probs = [rng.random((2, 3, 5, 6)) for _ in range(3)]
    rows = (rng.random((2, 5)) > 0.3).astype(np.float32)
    heads = np.array([[1, 0, 1], [1, 1, 1]], np.float32)
    got = sum(token_importance(jnp.asarray(p), jnp.asarray(rows), jnp.asarray(heads)) for p in probs)
    want = np.zeros((2, 6))
    for p in probs:
        for b in range(2):
            for h in range(3):
                for i in range(5):
                    for j in range(6):
                        want[b, j] += p[b, h, i, j] * rows[b, i] * heads[b, h]
    assert_close(got, want)
    idx = np.asarray(select_tokens(jnp.asarray(want), 4))
    for b in range(2):
        assert list(idx[b]) == sorted(np.argsort(-want[b], kind="stable")[:4])


@pytest.mark.parametrize("causal", [pytest.param(True, marks=pytest.mark.slow), False])
def test_kept_tokens_are_the_top_k_and_never_reappear(causal):
    cfg = small_cfg("mfa", causal=causal, n_layers=3)
    model = PrunedLM(cfg, rngs=nnx.Rngs(0))
    tokens = tokens_of((2, 12))
    plan = PrunePlan(token_keep=(0.75, 0.5, 0.25), head_keep=(1.0, 0.75, 0.5))
    _, aux = hard(model, tokens, plan)
    alive = np.tile(np.arange(12), (2, 1))
    for layer, (imp, kept) in enumerate(zip(aux["importance"], aux["kept_positions"])):
        imp, kept = np.asarray(imp), np.asarray(kept)
        k = kept_count(12, plan.token_keep[layer])
        assert kept.shape == (2, k)
        for b in range(2):
            top = np.sort(alive[b][np.argsort(-imp[b], kind="stable")[:k]])
            assert list(kept[b]) == list(top)
            assert set(kept[b]) <= set(alive[b])  # a pruned token never comes back
        alive = kept
    for layer, mask in enumerate(aux["head_masks"]):
        assert np.all(np.asarray(mask).sum(-1) == kept_count(4, plan.head_keep[layer]))
        if layer:
            assert np.all(np.asarray(mask) <= np.asarray(aux["head_masks"][layer - 1]))


@pytest.mark.slow
def test_pruned_tokens_leave_later_layers():
    """A token pruned after layer 0 keeps its layer-0 output whatever the later layers do."""
    cfg = small_cfg("gqa", causal=False, n_layers=2)
    model = PrunedLM(cfg, rngs=nnx.Rngs(0))
    tokens = tokens_of((1, 10))
    plan = PrunePlan(token_keep=(0.5, 0.5), head_keep=(1.0, 1.0))
    before, aux = hard(model, tokens, plan)
    kept = set(np.asarray(aux["kept_positions"][0])[0])
    pruned = [j for j in range(10) if j not in kept]
    later = model.blocks[1]
    later.ffn.down.kernel[...] = later.ffn.down.kernel[...] * 3.0 + 0.1
    after, _ = hard(model, tokens, plan)
    assert_close(after[0, pruned], before[0, pruned])
    assert not np.allclose(np.asarray(after[0, sorted(kept)]), np.asarray(before[0, sorted(kept)]))


@pytest.mark.parametrize("kind", ["gqa", pytest.param("mla", marks=pytest.mark.slow)])
def test_decoding_with_a_pruned_cache_equals_the_full_pruned_pass(kind):
    cfg = small_cfg(kind, n_layers=3)
    model = PrunedLM(cfg, rngs=nnx.Rngs(0))
    P, G = 10, 4
    tokens = tokens_of((2, P + G))
    plan = PrunePlan(token_keep=(0.8, 0.5, 0.3), head_keep=(1.0, 0.75, 0.5), value_keep=0.7,
                     progressive=ProgressiveQuant(4, 4, 0.3))
    full, _ = hard(model, tokens, plan, n_prunable=P)
    logits, cache = nnx.jit(lambda m, t: m.prefill(t, plan=plan, max_new_tokens=G))(model, tokens[:, :P])
    assert_close(logits, full[:, :P])
    assert [c["kv"][next(iter(c["kv"]))].shape[1] for c in cache["layers"]] == [P + G, 8 + G, 5 + G]
    step = nnx.jit(lambda m, t, c: m.decode_step(t, c, plan=plan))
    for g in range(G - 1):
        next_logits, cache = step(model, tokens[:, P + g], cache)
        assert_close(next_logits, full[:, P + g], 2e-5)
    assert float(cache["layers"][2]["importance"].sum()) > 0  # generation steps accumulate importance


# ---- local value pruning and progressive quantization ---------------------------------------
def test_local_value_pruning_keeps_the_largest_per_row():
    p = jax.nn.softmax(jax.random.normal(jax.random.key(0), (2, 3, 4, 10)), -1)
    out = np.asarray(local_value_prune(p, 0.3))
    assert np.all((out > 0).sum(-1) == 3)
    kept_min = np.where(out > 0, out, np.inf).min(-1)
    dropped_max = np.where(out > 0, 0, np.asarray(p)).max(-1)
    assert np.all(kept_min >= dropped_max)
    assert np.array_equal(np.asarray(local_value_prune(p, 1.0)), np.asarray(p))


def _qk(seed, L=6, T=8, K=8):
    kq, kk = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kq, (L, K)), jax.random.normal(kk, (T, K))


def _scores(qp, kp):
    return qp[0] @ kp[0].T


def test_progressive_quantization_both_paths():
    q, k = _qk(0)
    q = q.at[0].mul(6.0)  # row 0 confident (peaked), the others flatter
    visible = jnp.ones((6, 8), bool)
    pq = ProgressiveQuant(msb_bits=4, lsb_bits=4, threshold=0.5)
    probs, recompute = progressive_probs(_scores, (q,), (k,), visible, pq)
    q_msb, q_full = quantize_split(q, 4, 4)
    k_msb, k_full = quantize_split(k, 4, 4)
    p_msb = jax.nn.softmax(q_msb @ k_msb.T, -1)
    p_full = jax.nn.softmax(q_full @ k_full.T, -1)
    recompute = np.asarray(recompute)
    assert recompute.any() and not recompute.all()
    assert np.array_equal(recompute, np.asarray(p_msb.max(-1) < 0.5))
    assert_close(np.asarray(probs)[~recompute], np.asarray(p_msb)[~recompute])
    assert_close(np.asarray(probs)[recompute], np.asarray(p_full)[recompute])
    none, flags = progressive_probs(_scores, (q,), (k,), visible, ProgressiveQuant(4, 4, 0.0))
    assert not np.asarray(flags).any() and np.allclose(none, p_msb, atol=1e-6)


def test_quantize_split_levels_and_msb_error():
    x = jax.random.normal(jax.random.key(3), (5, 16))
    msb, full = quantize_split(x, 6, 4)
    scale = np.abs(np.asarray(x)).max(-1, keepdims=True) / (2 ** 9 - 1)
    ints = np.asarray(full) / scale
    assert np.allclose(ints, np.round(ints), atol=1e-3) and np.abs(ints).max() <= 2 ** 9 - 1 + 1e-3
    err = np.abs(np.asarray(full) - np.asarray(msb))
    assert np.all(err < 2 ** 4 * scale + 1e-6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), msb=st.integers(2, 8), width=st.floats(0.1, 8.0))
def test_probability_error_bound(seed, msb, width):
    """sum_j |dp_j| <= (max ds - min ds)/2 for MSB-only scores and for arbitrary score errors."""
    q, k = _qk(seed)
    s_full = quantize_split(q, msb, 4)[1] @ quantize_split(k, msb, 4)[1].T
    s_msb = quantize_split(q, msb, 4)[0] @ quantize_split(k, msb, 4)[0].T
    ds_rand = width * jax.random.uniform(jax.random.key(seed + 1), s_full.shape, minval=-1, maxval=1)
    for ds in (s_msb - s_full, ds_rand):
        l1 = jnp.abs(jax.nn.softmax(s_full + ds, -1) - jax.nn.softmax(s_full, -1)).sum(-1)
        assert np.all(np.asarray(l1) <= np.asarray(softmax_l1_bound(ds)) + 1e-5)


# ---- the relaxation and the schedule ------------------------------------------------------------
def test_soft_mask_hardens_to_the_top_k():
    imp = jax.random.uniform(jax.random.key(0), (3, 20))
    candidate = jnp.arange(20)[None, :] < 16  # the last 4 are never pruned
    for keep in (0.2, 0.5, 0.9):
        m = np.asarray(soft_keep_mask(imp, keep, 1e-4, jnp.broadcast_to(candidate, (3, 20)), 16))
        idx = np.asarray(select_tokens(imp[:, :16], kept_count(16, keep)))
        for b in range(3):
            assert set(np.flatnonzero(m[b] > 0.5)) == set(idx[b]) | {16, 17, 18, 19}
        assert np.all((m < 1e-6) | (m > 1 - 1e-6))


def test_soft_forward_is_the_hard_forward_at_low_temperature_and_differentiable_in_keep():
    cfg = small_cfg("mla", causal=False, n_layers=3)
    model = PrunedLM(cfg, rngs=nnx.Rngs(0))
    tokens = tokens_of((2, 12))
    keep, heads = jnp.asarray([0.75, 0.5, 0.25]), jnp.asarray([1.0, 0.75, 0.5])
    want, _ = hard(model, tokens, PrunePlan.from_keep(keep, heads))
    graphdef, state = nnx.split(model)
    soft = jax.jit(lambda k, h, temp: nnx.merge(graphdef, state).soft(tokens, token_keep=k, head_keep=h,
                                                                         temperature=temp))
    got, aux = soft(keep, heads, 1e-4)
    assert_close(got, want, 2e-5)
    assert_close(aux["token_keep"], [kept_count(12, 0.75) / 12, 6 / 12, 3 / 12])

    def f(k):
        logits, aux = soft(k, heads, 0.3)
        return jnp.sum(logits ** 2) * 1e-3 + aux["token_keep"].sum()

    g = jax.grad(f)(keep)
    assert np.all(np.isfinite(g)) and np.any(np.abs(g) > 0)
    eps = 1e-2
    direction = jnp.asarray([1.0, -1.0, 0.5])
    fd = (f(keep + eps * direction) - f(keep - eps * direction)) / (2 * eps)
    assert abs(float(fd) - float(g @ direction)) <= 0.05 * abs(float(fd)) + 1e-3


def test_paper_schedule():
    keep = paper_schedule(12, 0.5)
    first = math.ceil(0.15 * 12)
    assert np.all(keep[:first] == 1.0)
    assert np.all(np.diff(keep) <= 1e-12)
    assert math.isclose(1 - keep[first:].mean(), 0.5, rel_tol=1e-9)
    assert math.isclose((1 - keep[first]) + (1 - keep[-1]), 2 * 0.5, rel_tol=1e-9)
    heads = paper_schedule(12, 0.9, start_fraction=0.30)
    assert np.all(heads[:4] == 1.0) and heads[-1] < 1.0
    plan = PrunePlan.paper(12, 0.5, 0.9)
    assert plan.token_keep == tuple(keep) and plan.head_keep == tuple(heads)


def test_attended_keep_and_monotone_keep():
    assert_close(attended_keep(jnp.asarray([0.9, 0.5, 0.4])), [1.0, 0.9, 0.5])
    assert_close(monotone_keep(jnp.asarray([0.9, 0.95, 0.4, 0.6])), [0.9, 0.9, 0.4, 0.4])


@pytest.mark.parametrize("call, message", [
    (lambda: kept_count(10, 0.0), "keep=0.0: must be a kept fraction"),
    (lambda: paper_schedule(0, 0.5), "n_layers=0: must be a positive integer"),
    (lambda: PrunePlan(token_keep=(1.0, 0.5), head_keep=(1.0,)), "head_keep="),
    (lambda: PrunePlan(token_keep=(1.0,), head_keep=(1.0,), value_keep=1.5), "value_keep=1.5:"),
    (lambda: ProgressiveQuant(msb_bits=1), "msb_bits=1:"),
    (lambda: ProgressiveQuant(threshold=2.0), "threshold=2.0:"),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_model_rejects_bad_calls():
    model = PrunedLM(small_cfg("gqa", causal=False), rngs=nnx.Rngs(0))
    tokens = tokens_of((1, 6))
    with pytest.raises(ValueError, match="plan.token_keep: 3 entries"):
        model(tokens, plan=PrunePlan.none(3))
    with pytest.raises(ValueError, match="n_prunable=9:"):
        model(tokens, plan=PrunePlan.none(2), n_prunable=9)
    with pytest.raises(ValueError, match="causal=False:"):
        model.prefill(tokens, plan=PrunePlan.none(2), max_new_tokens=2)
