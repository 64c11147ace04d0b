"""The ATTS engine moves no whole KV cache: `forward_some` (a call on a bucket of rows) writes what an all-rows call
writes, without the copy a conditional whose branches all wrote the cache made XLA take once per branch; and the
whole compiled pipeline loop has no whole-cache copy or transpose."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import nets
from codesign.atts import (PipelineConfig, StaticBank, compiled_pipelines, forward_some, row_buckets, row_forward,
                           run_pipeline)
from codesign.data import make_problem
from tests.hlo_ops import ops_of_shapes

S, L, W = 64, 48, 3   # rows, cache slots, tokens per call
VOCAB = 64


@pytest.fixture(scope="module")
def target():
    cfg = nets.ModelConfig(name="t", d_model=16, n_layers=2, vocab_size=VOCAB, max_seq_len=L,
                           attention=nets.AttentionConfig(n_heads=2, n_kv_heads=2, head_dim=8),
                           ffn=nets.FFNConfig(d_ff=32))
    return nets.TransformerLM(cfg, rngs=nnx.Rngs(params=3))


def _inputs(model):
    keys = jax.random.split(jax.random.key(0), 3)
    buf = jax.random.randint(keys[0], (S, L), 0, VOCAB)                # the bytes each row holds
    cache = jax.tree.map(lambda c: jax.random.normal(keys[1], c.shape, c.dtype), nets.init_cache(model, S, L))
    pos = jax.random.randint(keys[2], (S,), 0, L - W - 1)              # each row's position: W tokens fit
    return buf, cache, pos


@pytest.mark.parametrize("served", [5, 20, 50])   # buckets of 16, 32 and all 64 rows
def test_a_bucket_call_writes_what_the_all_rows_call_writes_for_its_rows(target, served):
    gd, state = nnx.split(target)
    buf, cache, pos = _inputs(target)
    mask = jnp.zeros(S, bool).at[jax.random.permutation(jax.random.key(served), S)[:served]].set(True)
    logits, out = forward_some(gd, state, buf, cache, mask, pos, W, L - W, row_buckets(S))
    ref_logits, ref = row_forward(gd, state, jax.vmap(lambda r, p: jax.lax.dynamic_slice(r, (p,), (W,)))(buf, pos),
                                  cache, pos)
    m = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(logits)[m], np.asarray(ref_logits)[m], atol=1e-5, rtol=1e-5)
    if served <= 32:   # a bucket: zero logits for the rows it does not serve (all rows: they ran on scratch slots)
        assert not np.asarray(logits)[~m].any()
    for got, want, before in zip(jax.tree.leaves(out), jax.tree.leaves(ref), jax.tree.leaves(cache)):
        got, want, before = (np.asarray(x) for x in (got, want, before))
        np.testing.assert_allclose(got[:, :, m], want[:, :, m], atol=1e-5, rtol=1e-5)
        if served <= 32:   # a bucket leaves the other rows' caches as they were
            np.testing.assert_array_equal(got[:, :, ~m], before[:, :, ~m])


def test_a_bucket_call_copies_no_whole_cache(target):
    gd, state = nnx.split(target)
    buf, cache, pos = _inputs(target)
    fn = jax.jit(lambda st, c, mask: forward_some(gd, st, buf, c, mask, pos, W, L - W, row_buckets(S)),
                 donate_argnums=1)
    hlo = fn.lower(state, cache, jnp.arange(S) < 5).compile().as_text()
    whole = ops_of_shapes(hlo, {tuple(x.shape) for x in jax.tree.leaves(cache)})
    assert whole, "the test should find the cache in the compiled call"
    assert not [op for op in whole if op.opcode in ("copy", "transpose")], whole


def test_the_pipeline_loop_moves_no_whole_cache():
    """Inside the compiled pipeline's loop (32 slots: calls on buckets of 16 rows too), no copy or transpose of a
    whole stacked KV cache: every model call writes its rows' tokens in place (nets' CacheSlot, one cache position
    per row), and only one branch of the bucket conditional writes the cache. 7ab43f5 had 24 such ops here
    (vmapped batch-1 calls, and every bucket branch writing the cache); with only the first fixed, 17."""
    def decoder(name, seed, layers):
        cfg = nets.ModelConfig(name=name, d_model=16, n_layers=layers, max_seq_len=128,
                               attention=nets.AttentionConfig(n_heads=2, n_kv_heads=2, head_dim=8),
                               ffn=nets.FFNConfig(d_ff=32))
        return nets.TransformerLM(cfg, rngs=nnx.Rngs(params=seed))

    draft, target = decoder("draft", 1, 2), decoder("target", 2, 3)
    problems, bank = [make_problem(i, 3) for i in range(2)], 64
    cfg = PipelineConfig(mode="atts", alpha=0.25, m=16, max_turns=3, max_chunk=4, buf_len=96)  # 32 slots: buckets
    cal = StaticBank(bank)
    known = {id(c) for c in compiled_pipelines()}
    run_pipeline(draft, target, problems, cfg, key=jax.random.key(0), calibrator=cal,
                 cal_state=cal.init_state(jnp.full(bank, 1.0)))
    (compiled,) = [c for c in compiled_pipelines() if id(c) not in known]
    slots = cfg.m * len(problems)
    shapes = {tuple(x.shape) for m in (draft, target) for x in jax.tree.leaves(nets.init_cache(m, slots, 96))}
    whole = ops_of_shapes(compiled.as_text(), shapes)
    assert whole, "the test should find the caches in the compiled program"
    moved = [op.line for op in whole if op.opcode in ("copy", "transpose") and op.computation != "ENTRY"]
    assert not moved, "\n".join(moved)   # ENTRY: the run's input caches, copied once per run
