"""`forward_some`, the ATTS engine's model call on a bucket of rows: what an all-rows call writes, and no copy of
the whole cache (a conditional whose branches all wrote the cache made XLA copy it once per branch)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import nets
from codesign.atts import forward_some, row_buckets, row_forward

S, L, W = 64, 48, 3


@pytest.fixture(scope="module")
def target():
    cfg = nets.ModelConfig(name="t", d_model=16, n_layers=2, vocab_size=64, max_seq_len=L,
                           attention=nets.AttentionConfig(n_heads=2, n_kv_heads=2, head_dim=8),
                           ffn=nets.FFNConfig(d_ff=32))
    return nets.TransformerLM(cfg, rngs=nnx.Rngs(params=3))


def _inputs(model):
    keys = jax.random.split(jax.random.key(0), 3)
    buf = jax.random.randint(keys[0], (S, L), 0, 64)
    cache = jax.tree.map(lambda c: jax.random.normal(keys[1], c.shape, c.dtype), nets.init_cache(model, S, L))
    pos = jax.random.randint(keys[2], (S,), 0, L - W - 1)
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
    shapes = {tuple(x.shape) for x in jax.tree.leaves(cache)}
    whole = []
    for line in hlo.splitlines():
        found = re.search(r"= f32\[([\d,]+)\]\S* (\S+)\(", line)
        if found and tuple(int(d) for d in found.group(1).split(",")) in shapes:
            whole.append((found.group(2), line.strip()[:160]))
    assert whole, "the test should find the cache in the compiled call"
    assert not [line for op, line in whole if op in ("copy", "transpose")], whole
