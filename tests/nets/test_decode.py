"""Decode-step attention kernels (nets._decode) against the einsum reference: same numbers, same cache."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nets import Attention, ModelConfig, cache_slots, init_layer_cache

TOL = 1e-5
KINDS = {
    "mha": dict(kind="mha", n_heads=4, n_kv_heads=4, head_dim=16),
    "gqa": dict(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=16),
    "mfa": dict(kind="mfa", n_heads=4, n_kv_heads=1, head_dim=16, q_rank=16),
    "mla": dict(kind="mla", n_heads=4, n_kv_heads=4, head_dim=8, q_rank=16, kv_rank=16, rope_dim=4),
    # widths the fused MLA kernel takes (powers of two >= 16)
    "mla16": dict(kind="mla", n_heads=4, n_kv_heads=4, head_dim=8, q_rank=16, kv_rank=32, rope_dim=16),
}
PATHS = {"mha": ("folded", "xla"), "gqa": ("folded", "xla"), "mfa": ("folded", "xla"), "mla": ("folded",),
         "mla16": ()}
DEFAULT_SUITE = {("gqa", "xla"), ("mfa", "folded"), ("mla", "folded")}  # one case per new code path; the rest slow


@functools.cache
def _decode_tokens(kind: str, implementation: str, use_bias: bool, n_tokens: int = 5, max_len: int = 12,
                   exact: bool = False):
    """Outputs of `n_tokens` one-token decode steps (prefill of 2 first) and the final cache.

    exact: a cache of exactly `max_len` slots (not rounded up by `cache_slots`): the reference.
    """
    cfg = ModelConfig(d_model=32, n_layers=1, vocab_size=64, max_seq_len=32, use_bias=use_bias).replace(
        attention=KINDS[kind])
    attn = Attention(cfg, rngs=nnx.Rngs(0), decode_implementation=implementation)
    x = jax.random.normal(jax.random.key(1), (2, 2 + n_tokens, 32))
    pos = jnp.broadcast_to(jnp.arange(2 + n_tokens), (2, 2 + n_tokens))
    graph, state = nnx.split(attn)
    step = jax.jit(lambda st, xt, pt, c, i: nnx.merge(graph, st)(xt, positions_BxL=pt, cache=c, cache_index=i))
    cache = init_layer_cache(cfg, 2, max_len)
    if exact:
        cache = {name: value[:, :max_len] for name, value in cache.items()}
    y, cache = step(state, x[:, :2], pos[:, :2], cache, jnp.int32(0))
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


@pytest.mark.slow  # interpret mode, 5-6 s a kind; the MLA kernel's default-suite case is the edge test below
@pytest.mark.parametrize("kind", ["gqa", "mfa", "mla16"])
def test_pallas_decode_kernel_in_interpret_mode_equals_reference(kind):
    """The Pallas-Triton split-K kernels (interpret mode on CPU) with their length mask, on a cache of
    context + 1 = 49 tokens (64 slots after rounding) = the einsum reference on an exact 49-slot cache.
    MLA with biases: the key bias, a per-head constant, cancels in the fused kernel's softmax."""
    use_bias = kind == "mla16"
    with jax.default_matmul_precision("highest"):
        ref, ref_cache = _decode_tokens(kind, "einsum", use_bias=use_bias, n_tokens=2, max_len=49, exact=True)
        out, cache = _decode_tokens(kind, "pallas", use_bias=use_bias, n_tokens=2, max_len=49)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=TOL, rtol=TOL)
    for name in ref_cache:
        assert cache[name].shape[1] == cache_slots(49) == 64
        np.testing.assert_array_equal(np.asarray(cache[name][:, :49]), np.asarray(ref_cache[name]))
        assert not np.asarray(cache[name][:, 49:]).any()  # the rounding slots are never written


@pytest.mark.parametrize("kind", [pytest.param(k, marks=() if k in ("mfa", "mla") else pytest.mark.slow)
                                  for k in ("mha", "gqa", "mfa", "mla")])
def test_rounded_cache_gives_the_exact_length_outputs(kind):
    """A cache rounded up (12 tokens -> 16 slots) gives the outputs of one of exactly 12 slots (reference path)."""
    with jax.default_matmul_precision("highest"):
        ref, ref_cache = _decode_tokens(kind, "einsum", use_bias=True, exact=True)
        out, cache = _decode_tokens(kind, "einsum", use_bias=True)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=TOL, rtol=TOL)
    assert {v.shape[1] for v in ref_cache.values()} == {12} and {v.shape[1] for v in cache.values()} == {16}


def test_cache_slots_tile_every_length():
    """Every requested length gets slots that both split-K kernels can tile, at most one multiple more."""
    from nets import MLATiles, mla_tiles, pallas_split

    for max_len in [*range(1, 300), 1009, 1023, 1024, 1025, 2049, 4097, 8192, 8193, 32769]:
        slots = cache_slots(max_len)
        multiple = 16 if max_len < 1024 else 128
        assert max_len <= slots < max_len + multiple and slots % multiple == 0
        for head_dim in (64, 128, 256):
            block_k, k_splits = pallas_split(slots, head_dim)
            assert slots % (block_k * k_splits) == 0 and block_k >= 16
        tiles = mla_tiles(slots, 128)
        assert slots % (tiles.block_k * tiles.k_splits) == 0 and tiles.block_h == MLATiles().block_h
    assert pallas_split(cache_slots(8193), 256) == (64, 10)  # 8320 slots: the best block, 10 splits


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
    assert decode_implementation("mla", jnp.bfloat16, 512, slots=8192, rope_dim=64) == "pallas"  # swept tile
    assert decode_implementation("mla", jnp.bfloat16, 512, slots=8193, rope_dim=64) == "einsum"  # no tile divides
    assert decode_implementation("mla", jnp.bfloat16, 576, rope_dim=64) == "einsum"  # not a power of two
    assert decode_implementation("mla", jnp.bfloat16, 512, "pallas", slots=8320, rope_dim=64) == "pallas"
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
    with pytest.raises(ValueError, match="rope_dim=4: the Pallas-Triton MLA kernel"):
        decode_implementation("mla", jnp.bfloat16, 512, "pallas", rope_dim=4)
    with pytest.raises(ValueError, match="cache slots=8193: the Pallas-Triton MLA kernel"):
        decode_implementation("mla", jnp.bfloat16, 512, "pallas", slots=8193, rope_dim=64)
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


def _mla_reference(q_lat, q_rope, latent, rope, kv_len, scale):
    s = (jnp.einsum("bhr,btr->bht", q_lat, latent) + jnp.einsum("bhp,btp->bht", q_rope, rope)) * scale
    s = jnp.where(jnp.arange(latent.shape[1]) < kv_len, s, -jnp.inf)
    return jnp.einsum("bht,btr->bhr", jax.nn.softmax(s, axis=-1), latent)


def test_mla_kernel_edges_in_interpret_mode():
    """The fused MLA kernel (interpret mode): heads padded to a whole block (20 -> 32), one written
    slot, splits with nothing written (skipped and given no weight), and a full cache."""
    from nets import MLATiles, mla_decode

    k = jax.random.split(jax.random.key(0), 4)
    B, H, R, P, T = 2, 20, 32, 16, 96
    q_lat, q_rope = jax.random.normal(k[0], (B, H, R)), jax.random.normal(k[1], (B, H, P))
    latent, rope = jax.random.normal(k[2], (B, T, R)), jax.random.normal(k[3], (B, T, P))
    run = jax.jit(lambda *a: mla_decode(*a, scale=0.3, tiles=MLATiles(16, 16, 3, 4, 2)))  # one compile, kv_len traced
    with jax.default_matmul_precision("highest"):
        for kv_len in (1, 37, T):
            out = run(q_lat, q_rope, latent, rope, jnp.int32(kv_len))
            ref = _mla_reference(q_lat, q_rope, latent, rope, kv_len, 0.3)
            np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=TOL, rtol=TOL)
    with pytest.raises(ValueError, match="cache slots=96"):
        mla_decode(q_lat, q_rope, latent, rope, 5, scale=0.3, tiles=MLATiles(16, 32, 2, 4, 2))


@pytest.mark.parametrize("slots", [8192, 8320])
def test_mla_kernel_lowers_to_triton_at_deepseek_widths(slots):
    """Lowered for CUDA on the CPU (no GPU needed): the Triton lowering of every op succeeds at
    DeepSeek-V3's widths (128 heads, latent 512, RoPE key 64), where the shipped kernel's 576-wide
    key is refused (Triton arrays must have a power-of-two size), also on a rounded 8193-token cache."""
    from nets import MLATiles, mla_decode, mla_tiles

    sd = jax.ShapeDtypeStruct
    args = [sd((2, 128, 512), jnp.bfloat16), sd((2, 128, 64), jnp.bfloat16), sd((2, slots, 512), jnp.bfloat16),
            sd((2, slots, 64), jnp.bfloat16)]
    f = jax.jit(lambda *a: mla_decode(*a, 8193, scale=0.1, interpret=False))
    exported = jax.export.export(f, platforms=["cuda"], disabled_checks=[
        jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(*args)
    assert "xla.gpu.triton" in exported.mlir_module()
    assert mla_tiles(slots, 128).block_h == MLATiles().block_h  # the default tile at 128 heads


def _per_row_calls(kind: str, implementation: str):
    """Three sequences at different positions in one call per step (cache_index of shape (batch,)), and the same
    calls one sequence at a time (scalar cache_index): outputs of a window of 3 tokens, then of one-token steps."""
    cfg = ModelConfig(d_model=32, n_layers=1, vocab_size=64, max_seq_len=32, use_bias=kind == "mla").replace(
        attention=KINDS[kind])
    attn = Attention(cfg, rngs=nnx.Rngs(0), decode_implementation=implementation)
    graph, state = nnx.split(attn)
    step = jax.jit(lambda st, xt, pt, c, i: nnx.merge(graph, st)(xt, positions_BxL=pt, cache=c, cache_index=i))
    x = jax.random.normal(jax.random.key(2), (3, 12, 32))
    cache = {n: jax.random.normal(jax.random.key(3), v.shape, v.dtype)   # stale values past each row's position
             for n, v in init_layer_cache(cfg, 3, 16).items()}
    rows = [{n: v[b:b + 1] for n, v in cache.items()} for b in range(3)]
    starts = np.array([4, 0, 7])
    batched, single = [], []
    for width in (3, 1, 1):
        idx = jnp.asarray(starts, jnp.int32)
        pos = idx[:, None] + jnp.arange(width)
        xs = jnp.stack([x[b, s:s + width] for b, s in enumerate(starts)])
        y, cache = step(state, xs, pos, cache, idx)
        batched.append(y)
        ys = []
        for b in range(3):
            yb, rows[b] = step(state, xs[b:b + 1], pos[b:b + 1], rows[b], jnp.int32(starts[b]))
            ys.append(yb)
        single.append(jnp.concatenate(ys))
        starts = starts + width
    return batched, single, cache, rows


@pytest.mark.parametrize("kind,implementation", [("mha", "einsum"), ("mla", "einsum")] + [
    pytest.param(k, p, marks=() if (k, p) in DEFAULT_SUITE else pytest.mark.slow)
    for k in KINDS if k != "mla16" for p in PATHS[k]] + [  # the Pallas kernels' per-row lengths, interpret mode
    pytest.param(k, "pallas", marks=pytest.mark.slow) for k in ("gqa", "mla16")])
def test_sequences_at_different_positions_share_a_call(kind, implementation):
    """A (batch,) cache_index gives each sequence what a call of its own gives: outputs and cache."""
    with jax.default_matmul_precision("highest"):
        batched, single, cache, rows = _per_row_calls(kind, implementation)
    for y, ref in zip(batched, single):
        np.testing.assert_allclose(np.asarray(y), np.asarray(ref), atol=TOL, rtol=TOL)
    for name in cache:  # the projections of a batch of 3 and of 1 round differently (matmul blocking): not bit-equal
        np.testing.assert_allclose(np.asarray(cache[name]), np.concatenate([np.asarray(r[name]) for r in rows]),
                                   atol=TOL, rtol=TOL)
