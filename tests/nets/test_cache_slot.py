"""The model's stacked KV cache is written in place: a decode step touches one slot per layer and copies nothing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import nets
from nets import TransformerLM, init_cache, layer_segments
from tests.hlo_ops import ops_of_shapes
from tests.nets.test_model import scaled_down, small_cfg, tokens


def _step(graphdef):
    def step(state, tokens_BxL, cache, cache_index):
        logits, aux = nnx.merge(graphdef, state)(tokens_BxL, cache=cache, cache_index=cache_index)
        return logits, aux["cache"]
    return step


@pytest.mark.parametrize("cfg", [scaled_down("glam-64e"), scaled_down("deepseek-v3"), small_cfg("mla", n_layers=3)],
                         ids=["two-layer-units", "two-segments", "mla"])
def test_a_decode_step_writes_exactly_its_slot_in_every_layer(cfg):
    model = TransformerLM(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    step = jax.jit(_step(graphdef))
    toks = tokens(length=5)
    cache = init_cache(model, 2, 8)
    _, cache = step(state, toks[:, :4], cache, jnp.int32(0))   # prefill slots 0..3
    _, after = step(state, toks[:, 4:5], cache, jnp.int32(4))   # decode slot 4
    assert len(after) == len(layer_segments(cfg))
    for seg_before, seg_after in zip(cache, after):
        for name in seg_before:
            before_a, after_a = np.asarray(seg_before[name]), np.asarray(seg_after[name])
            changed = np.any(before_a != after_a, axis=tuple(i for i in range(before_a.ndim) if i not in (0, 1, 3)))
            # (repeats, unit_length, slots): every layer changed at slot 4 and nowhere else
            assert changed[:, :, 4].all(), name
            assert not np.delete(changed, 4, axis=2).any(), name
            np.testing.assert_array_equal(np.delete(after_a, 4, axis=3), np.delete(before_a, 4, axis=3))


def test_a_donated_decode_step_makes_no_copy_of_the_cache():
    """Compiled on the CPU: no copy or fill of a whole stacked cache array (the layer scan used to slice each
    layer's cache out of the stack, stack the updated layers into a fresh zero-filled output and copy it)."""
    cfg = small_cfg("gqa", n_layers=4)
    model = TransformerLM(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    cache = init_cache(model, 2, 64)
    stacked = {tuple(a.shape) for a in jax.tree.leaves(cache)}
    hlo = jax.jit(_step(graphdef), donate_argnums=(2,)).lower(
        state, tokens(length=1), cache, jnp.int32(3)).compile().as_text()
    whole = ops_of_shapes(hlo, stacked)
    assert whole, "the test should see the stacked cache in the compiled step"
    moved = [op.line for op in whole if op.opcode == "copy" or "broadcast" in op.line.split("(")[0]]
    assert not moved, "\n".join(moved)
    # the same shapes, written one slot at a time: a slice of one layer stays allowed, a copy of the stack does not
    assert all(op.opcode in ("fusion", "dynamic-update-slice", "parameter", "get-tuple-element", "bitcast", "tuple")
               for op in whole), whole


def test_cache_slot_reads_its_layer_after_the_write():
    stack = {"k": jnp.zeros((2, 3, 1, 4, 2))}
    slot = nets._cache_slot.CacheSlot(stack, jnp.int32(1), 2)
    new = jnp.ones((1, 2, 2))
    slot = slot.write({"k": new}, jnp.int32(1))
    layer = np.asarray(slot["k"])
    np.testing.assert_array_equal(layer[:, 1:3], 1.0)
    assert layer.sum() == 4.0
    full = np.asarray(slot.stack["k"])
    assert full.sum() == 4.0 and full[1, 2].sum() == 4.0


@pytest.mark.parametrize("cfg", [scaled_down("glam-64e"), small_cfg("mla", n_layers=2)], ids=["two-layer-units", "mla"])
def test_the_model_takes_one_position_per_sequence(cfg):
    """cache_index of shape (batch,): each sequence's logits and cache are those of a call of its own."""
    model = TransformerLM(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    step = jax.jit(_step(graphdef))
    toks = tokens(batch=3, length=12)
    cache = init_cache(model, 3, 16)
    rows = [jax.tree.map(lambda c: c[:, :, b:b + 1], cache) for b in range(3)]
    starts = np.array([0, 3, 5])
    for width in (3, 1, 2):
        window = jnp.stack([toks[b, s:s + width] for b, s in enumerate(starts)])
        logits, cache = step(state, window, cache, jnp.asarray(starts, jnp.int32))
        for b in range(3):
            ref, rows[b] = step(state, window[b:b + 1], rows[b], jnp.int32(starts[b]))
            np.testing.assert_allclose(np.asarray(logits[b:b + 1]), np.asarray(ref), atol=1e-5, rtol=1e-5)
        starts = starts + width
    joined = jax.tree.map(lambda *r: jnp.concatenate(r, axis=2), *rows)
    for got, ref in zip(jax.tree.leaves(cache), jax.tree.leaves(joined)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cache_index shape"):
        model(toks[:, :1], cache=cache, cache_index=jnp.zeros((2,), jnp.int32))
