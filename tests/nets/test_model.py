"""TransformerLM: causality, cached decoding, parameter counts vs the analytic count, compile-once, generate."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nets import ModelConfig, count_params, zoo, TransformerLM, generate, init_cache, layer_segments, param_count

TOL = 1e-5


def assert_close(actual, expected, tol=TOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=tol, rtol=tol)


KINDS = {
    "mha": dict(kind="mha", n_heads=4, n_kv_heads=4, head_dim=8),
    "gqa": dict(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=8, qk_norm=True),
    "mfa": dict(kind="mfa", n_heads=4, n_kv_heads=1, head_dim=8, q_rank=16),
    "mla": dict(kind="mla", n_heads=4, n_kv_heads=4, head_dim=8, q_rank=16, kv_rank=16, rope_dim=4),
}
VOCAB = 64


def small_cfg(kind: str, ffn: dict | None = None, **changes) -> ModelConfig:
    return ModelConfig(d_model=32, n_layers=2, vocab_size=VOCAB, max_seq_len=16).replace(
        attention=KINDS[kind], ffn={"d_ff": 48, **(ffn or {})}, **changes)


def tokens(batch=2, length=8, seed=0):
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, VOCAB)


@nnx.jit
def forward(model, tokens_BxL):
    return model(tokens_BxL)[0]


@nnx.jit
def forward_with_aux(model, tokens_BxL):
    return model(tokens_BxL)


@nnx.jit
def decode_step(model, tokens_BxL, cache, cache_index):
    logits, aux = model(tokens_BxL, cache=cache, cache_index=cache_index)
    return logits, aux["cache"]


@pytest.mark.parametrize("kind", KINDS)
def test_decoder_causal_and_encoder_bidirectional(kind):
    toks = tokens()
    t = 5
    changed = toks.at[:, t].set((toks[:, t] + 1) % VOCAB)
    decoder = TransformerLM(small_cfg(kind), rngs=nnx.Rngs(0))
    y, y2 = forward(decoder, toks), forward(decoder, changed)
    assert y.shape == (2, 8, VOCAB)
    assert_close(y2[:, :t], y[:, :t])
    assert np.all(np.abs(np.asarray(y2[:, t:] - y[:, t:])).max(axis=-1) > 1e-6)
    encoder = TransformerLM(small_cfg(kind, causal=False, positions="learned"), rngs=nnx.Rngs(0))
    e, e2 = forward(encoder, toks), forward(encoder, changed)
    assert np.all(np.abs(np.asarray(e2[:, :t] - e[:, :t])).max(axis=-1) > 1e-6)
    with pytest.raises(ValueError, match="causal"):
        init_cache(encoder, 2, 8)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", ["rope", "gpt"])
def test_cached_decoding_equals_full_forward(kind, variant):
    changes = {} if variant == "rope" else dict(positions="learned", norm="layernorm", use_bias=True,
                                                tie_embeddings=True, ffn={"activation": "gelu"})
    model = TransformerLM(small_cfg(kind, **changes), rngs=nnx.Rngs(0))
    toks = tokens(length=8)
    full = forward(model, toks)
    cache = init_cache(model, 2, 12)
    logits, cache = decode_step(model, toks[:, :3], cache, jnp.int32(0))  # prefill
    outs = [logits]
    for t in range(3, 8):
        logits, cache = decode_step(model, toks[:, t:t + 1], cache, jnp.int32(t))
        outs.append(logits)
    assert_close(jnp.concatenate(outs, axis=1), full)


def scaled_down(name: str) -> ModelConfig:
    """A zoo config shrunk in width, depth, heads, experts and vocab, keeping its kinds and MoE pattern."""
    cfg = zoo.get(name)
    a, f = cfg.attention, cfg.ffn
    kv = 4 if a.n_kv_heads == a.n_heads else (1 if a.n_kv_heads == 1 else 2)
    attention = dict(n_heads=4, n_kv_heads=kv, head_dim=8, q_rank=16 if a.q_rank else 0,
                     kv_rank=16 if a.kv_rank else 0, rope_dim=4 if a.rope_dim else 0)
    ffn = dict(d_ff=48)
    n_layers = 3
    if f.kind == "moe":
        n_layers = 4
        ffn.update(n_experts=4, top_k=min(f.top_k, 2), d_expert=24, moe_start=min(f.moe_start, 1),
                   moe_end=3 if f.moe_end else 0)
    return cfg.replace(d_model=32, n_layers=n_layers, vocab_size=96, max_seq_len=16, attention=attention, ffn=ffn)


FAMILIES = ["deepseek-v3", "qwen3-235b-a22b", "step-3", "mixtral-8x7b", "glam-64e", "llama-2-7b", "opt-6.7b",
            "gpt2-small", "bert-base", "codesign-default"]


@pytest.mark.parametrize("name", FAMILIES)
def test_analytic_count_equals_module(name):
    cfg = scaled_down(name)
    original = zoo.get(name)
    assert (cfg.attention.kind, cfg.ffn.activation, cfg.norm, cfg.use_bias, cfg.tie_embeddings, cfg.causal) == (
        original.attention.kind, original.ffn.activation, original.norm, original.use_bias,
        original.tie_embeddings, original.causal)
    assert ("moe" in cfg.layer_kinds) == ("moe" in original.layer_kinds)
    assert ("dense" in cfg.layer_kinds) == ("dense" in original.layer_kinds)
    abstract = nnx.eval_shape(lambda: TransformerLM(cfg, rngs=nnx.Rngs(0)))
    assert param_count(abstract) == count_params(cfg).total


def test_full_size_step3_counted_without_allocation():
    cfg = zoo.get("step-3")
    start = time.perf_counter()
    abstract = nnx.eval_shape(lambda: TransformerLM(cfg, rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16))
    leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)  # nothing allocated
    assert param_count(abstract) == count_params(cfg).total
    assert time.perf_counter() - start < 60


def test_layer_segments_cover_layers_in_order():
    for name in zoo.names():
        cfg = zoo.get(name)
        segments = layer_segments(cfg)
        assert sum((unit * repeats for unit, repeats in segments), ()) == cfg.layer_kinds
    assert layer_segments(zoo.get("deepseek-v3")) == ((("dense",), 3), (("moe",), 58))
    assert layer_segments(zoo.get("glam-64e")) == ((("dense", "moe"), 16),)


def test_one_compilation_per_shape():
    model = TransformerLM(small_cfg("mfa", n_layers=3), rngs=nnx.Rngs(0))
    traces = []

    @nnx.jit
    def step(model, tokens_BxL, cache, cache_index):
        traces.append(1)  # runs only while tracing
        logits, aux = model(tokens_BxL, cache=cache, cache_index=cache_index)
        return logits, aux["cache"]

    cache = init_cache(model, 2, 8)
    for t in range(3):
        _, cache = step(model, tokens(length=1, seed=t), cache, jnp.int32(t))
    assert len(traces) == 1
    fwd_traces = []

    @nnx.jit
    def fwd(model, tokens_BxL):
        fwd_traces.append(1)
        return model(tokens_BxL)[0]

    fwd(model, tokens(seed=1))
    fwd(model, tokens(seed=2))
    assert len(fwd_traces) == 1


@pytest.mark.parametrize("kind", ["gqa", "mla"])
def test_generate_greedy_equals_repeated_full_forward(kind):
    model = TransformerLM(small_cfg(kind), rngs=nnx.Rngs(0))
    prompt = tokens(length=4)
    out = generate(model, prompt, 4, key=jax.random.key(0))
    assert out.shape == (2, 8)
    assert np.array_equal(np.asarray(out[:, :4]), np.asarray(prompt))
    seq = prompt
    for _ in range(4):
        nxt = jnp.argmax(forward(model, seq)[:, -1], axis=-1)
        seq = jnp.concatenate([seq, nxt[:, None].astype(seq.dtype)], axis=1)
    assert np.array_equal(np.asarray(out), np.asarray(seq))


def test_generate_sampling():
    model = TransformerLM(small_cfg("mfa"), rngs=nnx.Rngs(0))
    prompt = tokens(length=3)
    a = generate(model, prompt, 6, key=jax.random.key(1), temperature=1.0)
    b = generate(model, prompt, 6, key=jax.random.key(1), temperature=1.0)
    c = generate(model, prompt, 6, key=jax.random.key(2), temperature=1.0)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert int(a.min()) >= 0 and int(a.max()) < VOCAB
    cold = generate(model, prompt, 6, key=jax.random.key(1), temperature=1e-4)
    assert np.array_equal(np.asarray(cold), np.asarray(generate(model, prompt, 6, key=jax.random.key(1))))
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompt, 2, key=jax.random.key(0), temperature=-1.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, prompt, 0, key=jax.random.key(0))


def test_moe_model_reports_load_balance_and_decodes():
    cfg = scaled_down("codesign-default")
    model = TransformerLM(cfg, rngs=nnx.Rngs(0))
    toks = tokens(length=6)
    logits, aux = forward_with_aux(model, toks)
    assert logits.shape == (2, 6, 96)
    assert float(aux["load_balance_loss"]) > 0
    _, dense_aux = forward_with_aux(TransformerLM(small_cfg("gqa"), rngs=nnx.Rngs(0)), toks)
    assert float(dense_aux["load_balance_loss"]) == 0.0
    cache = init_cache(model, 2, 6)
    outs = []
    for t in range(6):
        step_logits, cache = decode_step(model, toks[:, t:t + 1], cache, jnp.int32(t))
        outs.append(step_logits)
    assert_close(jnp.concatenate(outs, axis=1), logits)


def test_scan_equals_explicit_loop_over_layers():
    """The scanned stack applies each layer's own parameters, in order (checked eagerly, unjitted)."""
    model = TransformerLM(small_cfg("gqa", n_layers=3), rngs=nnx.Rngs(0))
    toks = tokens(length=5)
    (kinds, repeats), = model.segments_plan
    assert (kinds, repeats) == (("dense",), 3)
    graphdef, state = nnx.split(model.segments[0])
    kernels = [np.asarray(jax.tree.map(lambda v: v[r], state)["blocks"][0]["attn"]["wq"]["kernel"][...])
               for r in range(repeats)]
    assert not np.allclose(kernels[0], kernels[1])  # layers are initialised independently
    x = model.embed(toks)
    positions = jnp.broadcast_to(jnp.arange(5), (2, 5))
    for r in range(repeats):
        unit = nnx.merge(graphdef, jax.tree.map(lambda v: v[r], state))
        assert type(unit) is type(model.segments[0])   # one layer of the stack, not the stacked segment
        x, _, _ = unit(x, positions_BxL=positions, cache=None, cache_index=None)
    loop_logits = model.lm_head(model.final_norm(x))
    assert_close(model(toks)[0], loop_logits)
    assert_close(forward(model, toks), loop_logits)


def test_bfloat16_compute():
    model = TransformerLM(small_cfg("mla"), rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    logits = forward(model, tokens())
    assert logits.dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(logits.astype(jnp.float32))))
    assert init_cache(model, 1, 4)[0]["latent"].dtype == jnp.bfloat16


def test_remat_policies_give_the_same_loss_and_gradients():
    """What the backward pass keeps (nets.REMAT_POLICIES) never changes the numbers (float32)."""
    from nets import REMAT_POLICIES

    cfg = ModelConfig(d_model=32, n_layers=2, vocab_size=64, max_seq_len=8).replace(
        attention={"kind": "gqa", "n_heads": 4, "n_kv_heads": 2, "head_dim": 8})
    tokens = jax.random.randint(jax.random.key(0), (2, 8), 0, 64)

    def loss_and_grads(remat):
        model = TransformerLM(cfg, rngs=nnx.Rngs(0), remat=remat)
        return nnx.jit(nnx.value_and_grad(lambda m: jnp.mean(m(tokens)[0] ** 2)))(model)

    loss, grads = loss_and_grads("none")
    for remat in set(REMAT_POLICIES) - {"none"}:
        other_loss, other_grads = loss_and_grads(remat)
        np.testing.assert_allclose(float(other_loss), float(loss), rtol=1e-6)
        for a, b in zip(jax.tree.leaves(nnx.state(other_grads, nnx.Param)), jax.tree.leaves(nnx.state(grads, nnx.Param))):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="remat='some'"):
        TransformerLM(cfg, rngs=nnx.Rngs(0), remat="some")
    with pytest.raises(ValueError, match="decode_attention='flash'"):
        TransformerLM(cfg, rngs=nnx.Rngs(0), decode_attention="flash")
