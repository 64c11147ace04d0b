"""Per-layer KV-cache and activation fake quantisation through the model's `quant` argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import nets
from nets.formats import fake_quant

CFG = nets.zoo.default_config().replace(
    name="lq-tiny", d_model=64, n_layers=3, max_seq_len=32,
    attention={"n_heads": 2, "head_dim": 32, "q_rank": 32},
    ffn={"d_ff": 128, "n_experts": 4, "top_k": 2, "d_expert": 32})


def _model(cfg=CFG):
    return nets.TransformerLM(cfg, rngs=nnx.Rngs(0))


def _tokens(length=12):
    return (jnp.arange(2 * length).reshape(2, length) * 7) % CFG.vocab_size


def test_no_quant_equals_default_and_fp8_kv_changes_logits():
    model = _model()
    x = _tokens()
    plain = model(x)[0]
    assert np.array_equal(np.asarray(model(x, quant=None)[0]), np.asarray(plain))
    q = nets.one_hot_quant(CFG.n_layers, kv_formats=("bf16", "fp4_e2m1"), kv_choice=["fp4_e2m1"] * CFG.n_layers)
    assert float(jnp.abs(model(x, quant=q)[0] - plain).max()) > 1e-3


def test_cache_holds_exactly_the_quantised_keys_and_values():
    """Decoding with a quantised cache equals the full quantised forward, and the cache values are fp8 values."""
    model = _model()
    x = _tokens(10)
    q = nets.one_hot_quant(CFG.n_layers, kv_formats=("fp8_e4m3",), kv_choice=["fp8_e4m3"] * CFG.n_layers)
    full = model(x, quant=q)[0]
    cache = nets.init_cache(model, 2, 10)
    logits_pre, aux = model(x[:, :6], cache=cache, cache_index=0, quant=q)
    cache = aux["cache"]
    steps = [logits_pre]
    for t in range(6, 10):
        out, aux = model(x[:, t:t + 1], cache=cache, cache_index=t, quant=q)
        cache = aux["cache"]
        steps.append(out)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(steps, axis=1)), np.asarray(full), atol=1e-4)
    k = np.asarray(cache[0]["k"])
    np.testing.assert_array_equal(k, np.asarray(fake_quant(jnp.asarray(k), "fp8_e4m3")))


def test_gradient_reaches_format_probabilities_and_inputs_stay_differentiable():
    model = _model()
    graphdef, state = nnx.split(model)
    x = _tokens()

    def loss(state, kv_probs, act_probs):
        q = nets.LayerQuant(kv_probs=kv_probs, act_probs=act_probs, kv_formats=("bf16", "fp8_e4m3", "mxfp4"),
                            act_formats=("bf16", "fp8_e4m3"))
        logits = nnx.merge(graphdef, state)(x, quant=q)[0]
        return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])

    g_state, g_kv, g_act = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(
        state, jnp.full((CFG.n_layers, 3), 1 / 3), jnp.full((CFG.n_layers, 2), 0.5))
    assert np.all(np.isfinite(np.asarray(g_kv))) and np.abs(np.asarray(g_kv)).sum() > 0
    assert np.abs(np.asarray(g_act)).sum() > 0
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(g_state))


def test_bad_quant_is_a_clear_error():
    model = _model()
    with pytest.raises(ValueError, match="^kv_probs shape="):
        model(_tokens(), quant=nets.LayerQuant(kv_probs=jnp.ones((2, 2)), kv_formats=("bf16", "fp8_e4m3")))
    with pytest.raises(ValueError, match="^kv_formats entry='fp3'"):
        nets.one_hot_quant(CFG.n_layers, kv_formats=("bf16",), kv_choice=["fp3"] * CFG.n_layers)
    with pytest.raises(ValueError, match="^quant="):
        model(_tokens(), quant={"kv": 1})
