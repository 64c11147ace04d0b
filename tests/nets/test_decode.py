"""Decode-step attention kernels (nets._decode) against the einsum reference: same numbers, same cache."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nets import Attention, ModelConfig, init_layer_cache

TOL = 1e-5
KINDS = {
    "mha": dict(kind="mha", n_heads=4, n_kv_heads=4, head_dim=16),
    "gqa": dict(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=16),
    "mfa": dict(kind="mfa", n_heads=4, n_kv_heads=1, head_dim=16, q_rank=16),
    "mla": dict(kind="mla", n_heads=4, n_kv_heads=4, head_dim=8, q_rank=16, kv_rank=16, rope_dim=4),
}
PATHS = {"mha": ("folded", "xla"), "gqa": ("folded", "xla"), "mfa": ("folded", "xla"), "mla": ("folded",)}
DEFAULT_SUITE = {("gqa", "xla"), ("mfa", "folded"), ("mla", "folded")}  # one case per new code path; the rest slow


@functools.cache
def _decode_tokens(kind: str, implementation: str, use_bias: bool, n_tokens: int = 5, max_len: int = 12):
    """Outputs of `n_tokens` one-token decode steps (prefill of 2 first) and the final cache."""
    cfg = ModelConfig(d_model=32, n_layers=1, vocab_size=64, max_seq_len=32, use_bias=use_bias).replace(
        attention=KINDS[kind])
    attn = Attention(cfg, rngs=nnx.Rngs(0), decode_implementation=implementation)
    x = jax.random.normal(jax.random.key(1), (2, 2 + n_tokens, 32))
    pos = jnp.broadcast_to(jnp.arange(2 + n_tokens), (2, 2 + n_tokens))
    graph, state = nnx.split(attn)
    step = jax.jit(lambda st, xt, pt, c, i: nnx.merge(graph, st)(xt, positions_BxL=pt, cache=c, cache_index=i))
    y, cache = step(state, x[:, :2], pos[:, :2], init_layer_cache(cfg, 2, max_len), jnp.int32(0))
    outs = [y]
    for t in range(2, 2 + n_tokens):
        y, cache = step(state, x[:, t:t + 1], pos[:, t:t + 1], cache, jnp.int32(t))
        outs.append(y)
    return jnp.concatenate(outs, axis=1), cache


@pytest.mark.parametrize("kind,implementation", [
    pytest.param(k, p, marks=() if (k, p) in DEFAULT_SUITE else pytest.mark.slow) for k in KINDS for p in PATHS[k]])
def test_decode_path_equals_einsum_reference(kind, implementation):
    """Every decode kernel gives the reference's outputs on a cache longer than the tokens (masked slots)."""
    with jax.default_matmul_precision("highest"):
        ref, ref_cache = _decode_tokens(kind, "einsum", use_bias=kind == "mla")
        out, cache = _decode_tokens(kind, implementation, use_bias=kind == "mla")
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=TOL, rtol=TOL)
    for name in ref_cache:
        np.testing.assert_array_equal(np.asarray(cache[name]), np.asarray(ref_cache[name]))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gqa", "mfa"])
def test_pallas_decode_kernel_in_interpret_mode_equals_reference(kind):
    """The Pallas-Triton split-K kernel (interpret mode on CPU) with its kv_seq_len mask = the reference."""
    with jax.default_matmul_precision("highest"):
        ref, _ = _decode_tokens(kind, "einsum", use_bias=False, n_tokens=2, max_len=48)
        out, _ = _decode_tokens(kind, "pallas", use_bias=False, n_tokens=2, max_len=48)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=TOL, rtol=TOL)


def test_decode_path_is_chosen_in_one_place(monkeypatch):
    from nets import decode_implementation

    monkeypatch.delenv("CODESIGN_DECODE_ATTENTION", raising=False)
    assert decode_implementation("gqa", jnp.bfloat16, 128) == "einsum"   # not a GPU: the reference
    # the GPU rule (measured fastest per kind), checked here by pretending to be on a GPU
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert decode_implementation("gqa", jnp.bfloat16, 128) == "cudnn"
    assert decode_implementation("mha", jnp.bfloat16, 128) == "cudnn"
    assert decode_implementation("mfa", jnp.bfloat16, 256) == "pallas"  # cuDNN: head_dim over 128
    assert decode_implementation("mfa", jnp.bfloat16, 256, slots=8192) == "pallas"
    assert decode_implementation("mfa", jnp.bfloat16, 256, slots=2049) == "einsum"  # no block divides 2049
    assert decode_implementation("gqa", jnp.bfloat16, 256) == "einsum"  # pallas would transpose the cache
    assert decode_implementation("mla", jnp.bfloat16, 512) == "einsum"  # folded measured slower
    assert decode_implementation("gqa", jnp.float32, 128) == "einsum"  # no fused path for a float32 cache
    monkeypatch.undo()
    monkeypatch.delenv("CODESIGN_DECODE_ATTENTION", raising=False)
    with pytest.raises(ValueError, match="'cudnn' cannot run here"):
        decode_implementation("mha", jnp.float32, 64, "cudnn")
    with pytest.raises(ValueError, match="'pallas' cannot run here: head_dim=72"):
        decode_implementation("gqa", jnp.bfloat16, 72, "pallas")
    with pytest.raises(ValueError, match="'pallas' cannot run here: cache slots=2049"):
        decode_implementation("mfa", jnp.bfloat16, 256, "pallas", slots=2049)
    with pytest.raises(ValueError, match="kind='mla'"):
        decode_implementation("mla", jnp.bfloat16, 512, "xla")
    monkeypatch.setenv("CODESIGN_DECODE_ATTENTION", "flash")
    with pytest.raises(ValueError, match="CODESIGN_DECODE_ATTENTION='flash'"):
        decode_implementation("gqa", jnp.bfloat16, 128)


def test_pallas_takes_every_cache_the_kernel_can_tile(monkeypatch):
    """The split-K kernel reshapes the cache into whole blocks per split: any slot count that is a
    multiple of 16 is taken (the interpret-mode test runs one of 48 slots: 3 splits of 16), others refused."""
    from nets import decode_implementation

    monkeypatch.delenv("CODESIGN_DECODE_ATTENTION", raising=False)
    for slots in (16, 48, 96, 2048, 2064, 2176, 4112, 8192, 8208):
        for head_dim in (64, 128, 256):
            assert decode_implementation("mfa", jnp.bfloat16, head_dim, "pallas", slots=slots) == "pallas"
    for slots in (2049, 4097, 8200):
        with pytest.raises(ValueError, match=f"cache slots={slots}"):
            decode_implementation("mfa", jnp.bfloat16, 128, "pallas", slots=slots)
