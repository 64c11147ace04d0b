"""Attention of every kind: causality, cached (and MLA absorbed) decoding, cache sizes; layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nets import (ModelConfig, zoo, Attention, cache_bytes_per_token_per_layer, cache_shapes, cache_slots,
                  init_layer_cache as init_cache, MLP, apply_rope, make_norm, init_cache as init_model_cache,
                  attention_params, mlp_params, norm_params)

TOL = 1e-5


def assert_close(actual, expected, tol=TOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=tol, rtol=tol)


KINDS = {
    "mha": dict(kind="mha", n_heads=4, n_kv_heads=4, head_dim=8),
    "gqa": dict(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=8),
    "gqa-qknorm": dict(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=8, qk_norm=True),
    "mfa": dict(kind="mfa", n_heads=4, n_kv_heads=1, head_dim=8, q_rank=16),
    "mla": dict(kind="mla", n_heads=4, n_kv_heads=4, head_dim=8, q_rank=16, kv_rank=16, rope_dim=4),
    "mla-fullq": dict(kind="mla", n_heads=4, n_kv_heads=4, head_dim=8, kv_rank=16, rope_dim=4),
}


def small_cfg(kind: str, **changes) -> ModelConfig:
    return ModelConfig(d_model=32, n_layers=1, vocab_size=64, max_seq_len=32).replace(attention=KINDS[kind], **changes)


def inputs(batch=2, length=7, d=32, seed=1):
    x = jax.random.normal(jax.random.key(seed), (batch, length, d))
    return x, jnp.broadcast_to(jnp.arange(length), (batch, length))


@pytest.mark.parametrize("kind", KINDS)
def test_parameter_structure_matches_analytic_count(kind):
    for changes in ({}, {"use_bias": True, "norm": "layernorm"}):
        cfg = small_cfg(kind, **changes)
        attn = Attention(cfg, rngs=nnx.Rngs(0))
        n = sum(p.size for p in jax.tree.leaves(nnx.state(attn, nnx.Param)))
        linear, norms = attention_params(cfg)
        assert n == linear + norms


@pytest.mark.parametrize("kind", KINDS)
def test_decoder_is_causal(kind):
    cfg = small_cfg(kind)
    attn = Attention(cfg, rngs=nnx.Rngs(0))
    x, pos = inputs()
    t = 4
    x2 = x.at[:, t].add(1.0)
    y, _ = attn(x, positions_BxL=pos)
    y2, _ = attn(x2, positions_BxL=pos)
    assert y.shape == x.shape
    assert_close(y2[:, :t], y[:, :t])
    assert np.all(np.abs(np.asarray(y2[:, t:] - y[:, t:])).max(axis=-1) > 1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_encoder_is_bidirectional(kind):
    cfg = small_cfg(kind, causal=False)
    attn = Attention(cfg, rngs=nnx.Rngs(0))
    x, pos = inputs()
    y, _ = attn(x, positions_BxL=pos)
    y2, _ = attn(x.at[:, 4].add(1.0), positions_BxL=pos)
    assert np.all(np.abs(np.asarray(y2 - y)).max(axis=-1) > 1e-4)
    with pytest.raises(ValueError, match="causal"):
        init_cache(cfg, 2, 8)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("use_bias", [False, True])
def test_cached_decoding_equals_full_forward(kind, use_bias):
    """Token by token, and prefill + chunk, on a cache longer than needed (unfilled slots masked)."""
    cfg = small_cfg(kind, use_bias=use_bias)
    attn = Attention(cfg, rngs=nnx.Rngs(0))
    x, pos = inputs(length=7)
    full, _ = attn(x, positions_BxL=pos)
    step = jax.jit(lambda a, xt, pt, c, i: nnx.merge(*a)(xt, positions_BxL=pt, cache=c, cache_index=i))
    split = nnx.split(attn)
    cache = init_cache(cfg, 2, 10)
    outs = []
    for t in range(7):
        y, cache = step(split, x[:, t:t + 1], pos[:, t:t + 1], cache, jnp.int32(t))
        outs.append(y)
    assert_close(jnp.concatenate(outs, axis=1), full)
    cache = init_cache(cfg, 2, 10)
    y_pre, cache = attn(x[:, :3], positions_BxL=pos[:, :3], cache=cache, cache_index=0)
    y_rest, cache = attn(x[:, 3:], positions_BxL=pos[:, 3:], cache=cache, cache_index=3)
    assert_close(jnp.concatenate([y_pre, y_rest], axis=1), full)


def test_mla_caches_only_latent_and_rope_key():
    cfg = small_cfg("mla")
    cache = init_cache(cfg, 2, 10)
    assert {k: v.shape for k, v in cache.items()} == {"latent": (2, 16, 16), "k_rope": (2, 16, 4)}  # 10 -> 16 slots
    attn = Attention(cfg, rngs=nnx.Rngs(0))
    x, pos = inputs(length=3)
    _, new = attn(x, positions_BxL=pos, cache=cache, cache_index=0)
    # The cached latent is the normalised down-projection: the absorbed form works on it alone.
    kv_a = attn.wkv_a(x)
    assert_close(new["latent"][:, :3], attn.kv_norm(kv_a[..., :16]))
    assert_close(new["latent"][:, 3:], jnp.zeros((2, 13, 16)))


def _model_cache_bytes_per_token_per_layer(cfg: ModelConfig) -> float:
    cache = init_model_cache(cfg, 1, 2, dtype=jnp.float8_e4m3fn)  # a real 8-bit cache of every layer
    total = sum(leaf.nbytes for leaf in jax.tree.leaves(cache))
    return total / (cfg.n_layers * 1 * cache_slots(2))  # 16 slots: a cache is rounded up to whole kernel tiles


@pytest.mark.parametrize("name,expected", [
    ("step-3", lambda a: 512),                                   # step3.md: MFA, 2*256 B at 8 bits
    ("deepseek-v3", lambda a: 576),                              # step3.md: MLA, 512 + 64 B
    ("qwen3-235b-a22b", lambda a: 2 * a.n_kv_heads * a.head_dim),  # step3.md / duplex.md: GQA 2*n_kv*d_h
    ("mixtral-8x7b", lambda a: 2 * a.n_kv_heads * a.head_dim),
    ("llama-2-7b", lambda a: 2 * a.n_kv_heads * a.head_dim),
])
def test_cache_bytes_match_step3_table(name, expected):
    cfg = zoo.get(name)
    want = expected(cfg.attention)
    assert _model_cache_bytes_per_token_per_layer(cfg) == want
    assert cache_bytes_per_token_per_layer(cfg, 1) == want
    assert cache_bytes_per_token_per_layer(cfg, 2) == 2 * want
    layer = jax.eval_shape(lambda: init_cache(cfg, 3, 5, jnp.int8))
    assert sum(np.prod(s.shape) for s in jax.tree.leaves(layer)) == 3 * cache_slots(5) * want  # slots rounded up
    assert {k: v.shape for k, v in layer.items()} == cache_shapes(cfg, 3, 5)


def test_bad_inputs_name_the_field():
    with pytest.raises(ValueError, match="qk_norm"):
        Attention(small_cfg("mla").replace(attention={"qk_norm": True}), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="bytes_per_value"):
        cache_bytes_per_token_per_layer(small_cfg("gqa"), 0)
    with pytest.raises(ValueError, match="max_len"):
        init_cache(small_cfg("gqa"), 2, 0)
    attn = Attention(small_cfg("gqa"), rngs=nnx.Rngs(0))
    x, pos = inputs()
    with pytest.raises(ValueError, match="cache_index"):
        attn(x, positions_BxL=pos, cache=init_cache(small_cfg("gqa"), 2, 8))


# ---- layers ------------------------------------------------------------------------------
def test_rope_scores_depend_only_on_relative_position():
    q = jax.random.normal(jax.random.key(0), (1, 1, 1, 16))
    k = jax.random.normal(jax.random.key(1), (1, 1, 1, 16))

    def score(m, n):
        qm = apply_rope(q, jnp.array([[m]]), 10000.0)
        kn = apply_rope(k, jnp.array([[n]]), 10000.0)
        return float(jnp.sum(qm * kn))

    assert score(5, 2) == pytest.approx(score(13, 10), rel=1e-5, abs=1e-5)
    assert score(0, 0) == pytest.approx(float(jnp.sum(q * k)), rel=1e-6)
    assert abs(score(5, 2) - score(5, 4)) > 1e-3
    # a rotation: norms are kept
    assert float(jnp.linalg.norm(apply_rope(q, jnp.array([[7]]), 10000.0))) == pytest.approx(
        float(jnp.linalg.norm(q)), rel=1e-6)


@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
def test_norms(norm):
    cfg = ModelConfig(norm=norm, norm_eps=1e-6)
    layer = make_norm(cfg, 8, rngs=nnx.Rngs(0))
    assert sum(p.size for p in jax.tree.leaves(nnx.state(layer, nnx.Param))) == norm_params(cfg, 8)
    x = jax.random.normal(jax.random.key(0), (3, 8)) * 3 + 1
    y = layer(x)
    if norm == "rmsnorm":
        assert_close(jnp.mean(y ** 2, axis=-1), jnp.ones(3), tol=1e-4)
    else:
        assert_close(jnp.mean(y, axis=-1), jnp.zeros(3), tol=1e-5)
        assert_close(jnp.var(y, axis=-1), jnp.ones(3), tol=1e-4)


@pytest.mark.parametrize("activation", ["swiglu", "gelu", "relu"])
@pytest.mark.parametrize("use_bias", [False, True])
def test_mlp(activation, use_bias):
    cfg = ModelConfig(d_model=16, use_bias=use_bias).replace(ffn={"activation": activation, "d_ff": 24})
    mlp = MLP(cfg, 24, use_bias=use_bias, rngs=nnx.Rngs(0))
    assert sum(p.size for p in jax.tree.leaves(nnx.state(mlp, nnx.Param))) == mlp_params(cfg, 24, use_bias)
    x = jax.random.normal(jax.random.key(0), (2, 3, 16))
    act = {"swiglu": jax.nn.silu, "gelu": jax.nn.gelu, "relu": jax.nn.relu}[activation]
    h = act(mlp.gate(x)) * mlp.up(x) if activation == "swiglu" else act(mlp.up(x))
    assert_close(mlp(x), h @ mlp.down.kernel[...] + (mlp.down.bias[...] if use_bias else 0.0))
    assert hasattr(mlp, "gate") == (activation == "swiglu")


# ---- fused attention (nets._sdpa) against the einsum reference ------------------------------------
FUSED_KINDS = ["mha", "gqa", "gqa-qknorm", "mfa"]


def _output_and_grads(cfg, implementation, monkeypatch):
    monkeypatch.setenv("CODESIGN_ATTENTION", implementation)
    attn = Attention(cfg, rngs=nnx.Rngs(0))
    x, pos = inputs(length=9)
    cotangent = jax.random.normal(jax.random.key(7), x.shape)

    def loss(model, x):
        return jnp.sum(model(x, positions_BxL=pos)[0] * cotangent)

    y, _ = jax.jit(lambda m, x: m(x, positions_BxL=pos))(attn, x)
    grad_params, grad_x = nnx.grad(loss, argnums=(0, 1))(attn, x)
    return y, grad_x, jax.tree.leaves(nnx.state(grad_params, nnx.Param))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("kind", FUSED_KINDS)
def test_fused_attention_call_equals_einsum_path(kind, causal, monkeypatch):
    """jax.nn.dot_product_attention as the module calls it (grouped K/V, scale, mask) = the einsum path."""
    with jax.default_matmul_precision("highest"):
        cfg = small_cfg(kind, causal=causal)
        y_ref, gx_ref, gp_ref = _output_and_grads(cfg, "einsum", monkeypatch)
        y, gx, gp = _output_and_grads(cfg, "xla", monkeypatch)
    assert_close(y, y_ref)
    assert_close(gx, gx_ref)
    assert len(gp) == len(gp_ref)
    for g, g_ref in zip(gp, gp_ref):
        assert_close(g, g_ref)


def test_fused_attention_is_chosen_in_one_place(monkeypatch):
    from nets import attention_implementation

    monkeypatch.delenv("CODESIGN_ATTENTION", raising=False)
    on_gpu = jax.default_backend() == "gpu"
    assert attention_implementation(jnp.bfloat16, 64, 64, cached=False) == ("cudnn" if on_gpu else "einsum")
    assert attention_implementation(jnp.float32, 64, 64, cached=False) == "einsum"  # cuDNN refuses float32
    assert attention_implementation(jnp.bfloat16, 256, 256, cached=False) == "einsum"  # head_dim over 128
    assert attention_implementation(jnp.bfloat16, 64, 64, cached=True) == "einsum"  # KV cache: einsum
    assert attention_implementation(jnp.bfloat16, 72, 64, cached=False) == "einsum"  # MLA-like V head dim
    assert attention_implementation(jnp.float32, 64, 64, cached=True, implementation="xla") == "einsum"
    with pytest.raises(ValueError, match="implementation='cudnn' cannot run here"):
        attention_implementation(jnp.float32, 64, 64, cached=False, implementation="cudnn")
    monkeypatch.setenv("CODESIGN_ATTENTION", "flash")
    with pytest.raises(ValueError, match="CODESIGN_ATTENTION='flash'"):
        attention_implementation(jnp.bfloat16, 64, 64, cached=False)
