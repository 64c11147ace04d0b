"""Design-space knobs: the network and the workload read the same knobs, differentiably."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hwcost
import nets
from codesign import DesignSpace, soft_width_gate
from nets.formats import get_format

CFG = nets.zoo.default_config().replace(
    d_model=32, n_layers=3, max_seq_len=32, attention={"n_heads": 2, "head_dim": 16, "q_rank": 16},
    ffn={"d_ff": 64, "n_experts": 4, "top_k": 2, "d_expert": 32})


@pytest.fixture(scope="module")
def model_parts():
    model = nets.TransformerLM(CFG, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, params, rest


def _layer_kernels(params, cfg):
    """Every (layer, name, matrix) of the blocks, by walking the segments explicitly."""
    out, first = [], 0
    flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    for s, (unit, repeats) in enumerate(nets.layer_segments(cfg)):
        for key, value in flat.items():
            if key.startswith(f"['segments'][{s}]") and value.ndim >= 3 and "router" not in key:
                pos = int(key.split("['blocks'][")[1].split("]")[0])
                for r in range(repeats):
                    out.append((first + pos + r * len(unit), key, value[r]))
        first += len(unit) * repeats
    return out


def test_one_hot_format_knob_quantises_exactly_that_layer(model_parts):
    _, params, _ = model_parts
    space = DesignSpace(search_ffn_width=False)
    knobs = space.init(CFG)
    big = 50.0  # softmax -> one-hot up to float rounding
    w = jnp.zeros((3, 3)).at[0, 2].set(big).at[1, 0].set(big).at[2, 1].set(big)
    knobs["w_logits"] = w
    new = space.apply(CFG, params, knobs, temperature=0.1)
    expect = {0: "fp4_e2m1", 1: "bf16", 2: "fp8_e4m3"}
    before = {(l, k): v for l, k, v in _layer_kernels(params, CFG)}
    for layer, key, value in _layer_kernels(new, CFG):
        ref = get_format(expect[layer]).quantize(before[(layer, key)])
        np.testing.assert_allclose(np.asarray(value), np.asarray(ref), rtol=1e-6, atol=1e-7)


def test_width_gate_is_hard_at_low_temperature_and_zeroes_the_tail():
    g = soft_width_gate(jnp.asarray(0.5), 64, 1e-4)
    np.testing.assert_array_equal(np.asarray(g > 0.5), np.arange(64) < 32)
    assert float(g[:31].min()) > 0.999 and float(g[33:].max()) < 1e-3


def test_workload_reads_expected_bits_and_keep(model_parts):
    space = DesignSpace()
    knobs = space.init(CFG)
    scenario = hwcost.Scenario(phase="decode", batch=8, context_len=256)
    hk = space.workload_knobs(CFG, knobs, scenario)
    bits = np.mean([get_format(n).bits for n in space.formats])
    np.testing.assert_allclose(np.asarray(hk.weight_bits), bits, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(hk.ffn_keep), 0.95, rtol=1e-5)


def test_gradients_reach_knobs_through_network_and_cost(model_parts):
    graphdef, params, rest = model_parts
    space = DesignSpace()
    scenario = hwcost.Scenario(phase="decode", batch=8, context_len=256)
    target = hwcost.gpu("h200")
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, CFG.vocab_size)

    def task(knobs):
        model = nnx.merge(graphdef, space.apply(CFG, params, knobs, 0.1), rest)
        logits, _ = model(tokens[:, :-1])
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))

    def cost(knobs):
        return jnp.log(target.cost(hwcost.workload(CFG, scenario, space.workload_knobs(CFG, knobs, scenario))).latency_s)

    knobs = space.init(CFG)
    g_task = jax.jit(jax.grad(task))(knobs)
    g_cost = jax.jit(jax.grad(cost))(knobs)
    for g in (g_task, g_cost):
        for leaf in jax.tree.leaves(g):
            assert np.all(np.isfinite(np.asarray(leaf)))
    assert float(jnp.abs(g_task["w_logits"]).sum()) > 0 and float(jnp.abs(g_task["ffn_keep_logit"]).sum()) > 0
    # fewer bits and narrower FFNs are cheaper: the cost gradient pushes keep down and fp4 up
    assert float(g_cost["ffn_keep_logit"].sum()) > 0
    assert float(g_cost["w_logits"][:, 2].sum()) < 0 < float(g_cost["w_logits"][:, 0].sum())


def test_harden_rounds_widths_to_multiples():
    space = DesignSpace()
    knobs = space.init(CFG)
    knobs["ffn_keep_logit"] = jnp.asarray([10.0, 0.0, -10.0])
    hard = space.harden(CFG, knobs, multiple=8)
    kinds = CFG.layer_kinds
    full = [CFG.ffn.d_expert if k == "moe" else CFG.ffn.d_ff for k in kinds]
    assert hard["ffn_widths"][0] == full[0]
    assert hard["ffn_widths"][1] == int(round(0.5 * full[1] / 8)) * 8
    assert hard["ffn_widths"][2] == 8
    assert hard["formats"] == ["bf16"] * 3


def test_unknown_format_is_a_clear_error():
    with pytest.raises(ValueError, match="posit"):
        DesignSpace(formats=("bf16", "fp3"))


def test_straight_through_knobs_are_one_hot_forward_and_softmax_backward():
    space = DesignSpace(kv_formats=("bf16", "mxfp4"), search_ffn_width=False)
    logits = jnp.asarray([[0.3, 0.1, -0.2], [-1.0, 0.5, 0.4], [0.0, 0.0, 2.0]])
    hard = space.format_probs({"w_logits": logits, "hard": jnp.asarray(1.0)})
    np.testing.assert_array_equal(np.asarray(hard), np.eye(3)[[0, 1, 2]])
    weights = jnp.arange(9.0).reshape(3, 3)
    g_hard = jax.grad(lambda z: jnp.sum(space.format_probs({"w_logits": z, "hard": 1.0}) * weights))(logits)
    g_soft = jax.grad(lambda z: jnp.sum(space.format_probs({"w_logits": z}) * weights))(logits)
    np.testing.assert_allclose(np.asarray(g_hard), np.asarray(g_soft), rtol=1e-6)
    soft = space.format_probs({"w_logits": logits, "hard": jnp.asarray(0.0)})
    np.testing.assert_allclose(np.asarray(soft), np.asarray(jax.nn.softmax(logits, -1)), rtol=1e-6)


@pytest.mark.slow  # 65 s on the loaded 2-core machine (every format's eager fake-quantisation twice)
def test_apply_with_hard_knobs_and_widths_is_apply_hard(model_parts):
    """The design as data (one-hot knobs, a width mask) builds the same network as the design as a constant."""
    _, params, _ = model_parts
    space = DesignSpace(formats=("bf16", "posit(8,0)@channel", "fp4_e2m1@channel", "mxfp4"), kv_formats=())
    hardened = {"formats": ["mxfp4", "bf16", "fp4_e2m1@channel"], "kv_formats": [], "act_formats": [],
                "ffn_widths": [8, 32, 16]}
    data = space.apply(CFG, params, space.hard_knobs(hardened), 1.0, widths=jnp.asarray([8.0, 32.0, 16.0]))
    const = space.apply_hard(CFG, params, hardened)
    for a, b in zip(jax.tree.leaves(data), jax.tree.leaves(const)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
