"""Gradients of every cost field w.r.t. every knob and hardware parameter: finite, and equal to
central finite differences (relative 1e-3) at random design points. Runs in float64 (scoped)."""


import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

import hwcost
import nets
from hwcost import Knobs, Scenario, gpu, workload

TINY_MLA = nets.ModelConfig(
    name="tiny-mla", vocab_size=64, d_model=64, n_layers=3, max_seq_len=128,
    attention=nets.AttentionConfig(kind="mla", n_heads=4, n_kv_heads=4, head_dim=16, q_rank=32, kv_rank=32, rope_dim=8),
    ffn=nets.FFNConfig(kind="moe", d_ff=128, n_experts=8, top_k=2, n_shared_experts=1, d_expert=32, moe_start=1))
CASES = {
    "mfa-moe-decode": (nets.zoo.get("codesign-default"), Scenario(batch=8, context_len=200, gen_len=5)),
    "mla-moe-decode": (TINY_MLA, Scenario(batch=3, context_len=100)),
    "gqa-dense-train": (nets.zoo.get("llama-2-7b").replace(n_layers=2), Scenario(phase="train", batch=2, context_len=64)),
}


def _x64():
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # older jax
    return enable_x64()


def _random_knobs(rng, n_layers):
    u = lambda lo, hi: jnp.asarray(rng.uniform(lo, hi, n_layers), jnp.float64)  # noqa: E731
    return Knobs(weight_bits=u(4.5, 15.5), kv_bits=u(4.5, 15.5), act_bits=u(8.5, 15.5), ffn_keep=u(0.2, 0.95),
                 token_keep=u(0.2, 0.95), head_keep=u(0.2, 0.95))


def _random_gpu(rng, name):
    base = gpu(name, dtype=jnp.float64)
    bf16 = float(base.peak_flops_bf16) * rng.uniform(0.5, 2)
    scale = lambda x: float(x) * rng.uniform(0.5, 2)  # noqa: E731
    return gpu(name, dtype=jnp.float64, peak_flops_bf16=bf16, peak_flops_fp8=bf16 * rng.uniform(1.0, 2.5),
               mem_bandwidth=scale(base.mem_bandwidth), price_per_hour=scale(base.price_per_hour),
               energy_per_flop_bf16=scale(base.energy_per_flop_bf16), energy_per_flop_fp8=scale(base.energy_per_flop_fp8),
               energy_per_byte=scale(base.energy_per_byte), static_power_w=rng.uniform(10, 200),
               compute_efficiency=rng.uniform(0.4, 0.95), memory_efficiency=rng.uniform(0.4, 0.95),
               activation_traffic=rng.uniform(0.1, 0.9), sharpness=rng.uniform(4, 30))


def _check_against_finite_differences(fn, params):
    """fn: pytree of arrays -> vector of cost fields. Compares jacrev with central differences."""
    flat, unravel = ravel_pytree(params)
    f = jax.jit(lambda v: fn(unravel(v)))
    value = np.asarray(f(flat))
    jac = np.asarray(jax.jit(jax.jacrev(lambda v: fn(unravel(v))))(flat))
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(jac))
    x = np.asarray(flat)
    for i in range(x.size):
        h = 1e-6 * max(abs(x[i]), 1e-30)
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        fd = (np.asarray(f(jnp.asarray(up))) - np.asarray(f(jnp.asarray(down)))) / (2 * h)
        # compare sensitivities d f / d log x relative to |f|, so parameters of any unit compare alike
        norm = abs(x[i]) / np.maximum(np.abs(value), 1e-300)
        ours, theirs = jac[:, i] * norm, fd * norm
        assert np.all(np.abs(ours - theirs) <= 1e-3 * np.abs(theirs) + 1e-8), (i, ours, theirs)


@pytest.mark.parametrize("case", sorted(CASES))
@settings(max_examples=2, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), chip=st.sampled_from(hwcost.PRESETS))
def test_gpu_cost_gradients_match_finite_differences(case, seed, chip):
    cfg, scenario = CASES[case]
    with _x64():
        rng = np.random.default_rng(seed)
        knobs, target = _random_knobs(rng, cfg.n_layers), _random_gpu(rng, chip)
        params, static = eqx.partition((knobs, target), eqx.is_array)

        def fields(p):
            k, t = eqx.combine(p, static)
            cost = t.cost(workload(cfg, scenario, k))
            return jnp.stack([getattr(cost, name) for name in hwcost.Cost.SCALARS])

        _check_against_finite_differences(fields, params)


@settings(max_examples=2, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1))
def test_afd_cost_gradients_match_finite_differences(seed):
    cfg = nets.zoo.get("codesign-default")
    scenario = Scenario(batch=24, context_len=300, dispatch_bits=8)
    with _x64():
        rng = np.random.default_rng(seed)
        target = hwcost.afd(_random_gpu(rng, "h20"), _random_gpu(rng, "h800"), link_gbps=rng.uniform(50, 400),
                            attention_gpus=4, ffn_gpus=2, ffn_instances=2, micro_batches=3,
                            sharpness=rng.uniform(4, 30))
        params, static = eqx.partition((_random_knobs(rng, cfg.n_layers), target), eqx.is_array)

        def fields(p):
            k, t = eqx.combine(p, static)
            c = t.deployment_cost(cfg, scenario, k)
            return jnp.stack([c.tpot_s, c.tokens_per_gpu_s, c.dollars_per_token, c.energy_j_per_token, c.sla_slack_s,
                              c.attention_memory_bytes, c.ffn_memory_bytes])

        _check_against_finite_differences(fields, params)
