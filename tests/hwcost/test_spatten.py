"""SpAtten target: the paper's SRAM size, DRAM reduction at its average pruning, consistency with the
general workload, differentiability in knobs and hardware parameters, invariants and errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hwcost
import nets
from hwcost import (PAPERS, Scenario, ATTENTION_CORE, Knobs, workload, SpAtten, SpAttenWorkload, dram_reduction,
                    kv_sram_bytes, pruning_knobs, spatten_knobs, spatten_workload)

GPT2 = nets.zoo.get("gpt2-small")
DECODE = Scenario(phase="decode", batch=1, context_len=992, gen_len=32, kv_bits=12)


def test_kv_sram_from_the_papers_sizes():
    # 1024 tokens x head size 64 x 12-bit fixed point, double-buffered (SpAtten section V)
    assert kv_sram_bytes(max_tokens=1024, head_dim=64, bits=12, buffers=2) == 196_608
    assert float(SpAtten().kv_sram_bytes) == 196_608
    assert float(SpAtten().max_tokens) == 1024


def test_dram_reduction_at_the_papers_average_pruning():
    """Tokens/values 3.8x, heads 1.1x, 5.9% LSB re-fetch on GPT-2, against the reported 10.0x.

    Assumptions (the SpAtten reproduction, hwcost.reproductions): fp32 unpruned baseline, 8+4-bit Q/K, V at 12 bits,
    the average keep on every layer. Pruning alone composes to 3.8 x 1.1; the precision adds the rest.
    """
    knobs = spatten_knobs(12, DECODE, token_keep=1 / 3.8, head_keep=1 / 1.1)
    pruning_only = float(dram_reduction(GPT2, DECODE, knobs, baseline_bits=12.0, lsb_fraction=1.0))
    assert math.isclose(pruning_only, 3.8 * 1.1, rel_tol=0.02)
    total = float(dram_reduction(GPT2, DECODE, knobs, lsb_fraction=0.059))
    # K/V at 12 bits with K at 8 + 0.059*4 bits, from 32-bit floats: 64 / (8.236 + 12) of the pruned traffic
    assert math.isclose(total, pruning_only * 64 / (8 + 0.059 * 4 + 12), rel_tol=0.01)
    # GPT-2's own pruning against the all-benchmark 10.0x: outside the 25% rule (a measured miss, not loosened)
    assert abs(total / 10.0 - 1) > hwcost.Row.SIMULATED
    rows = PAPERS["spatten"]()
    assert [row.name for row in rows if row.failed] == [
        "GPT-2-small decode DRAM reduction vs fp32 (tokens 3.8x, heads 1.1x, 8+4 bits, 5.9% LSB)"]
    assert [row.kind for row in rows].count("counted") == 2 and all(row.why for row in rows if row.kind != "counted")
    assert all(row.ok for row in rows if not row.name.startswith("GPT-2-small"))


@pytest.mark.parametrize("name", ["gpt2-small", "codesign-default", "llama-2-7b", "deepseek-v3"])
@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_unpruned_full_precision_matches_the_general_workload(name, phase):
    cfg = nets.zoo.get(name)
    sc = Scenario(phase=phase, batch=2, context_len=256, gen_len=8, kv_bits=16)
    # prefill: SpAtten also drops pruned tokens as queries, the general workload does not; compare unpruned
    knobs = spatten_knobs(cfg.n_layers, sc, token_keep=0.5 if phase == "decode" else 1.0)
    ours = spatten_workload(cfg, sc, knobs, lsb_bits=0)
    general = workload(cfg, sc, knobs)
    if phase == "decode" or cfg.attention.kind != "mla":
        np.testing.assert_allclose(2 * float(ours.qk_macs.sum()), float(general.total_flops(("attn_score",))),
                                   rtol=1e-5)
    if phase == "decode":
        np.testing.assert_allclose(float((ours.k_bytes + ours.v_bytes).sum()),
                                   float(general.total_bytes("kv", ATTENTION_CORE)), rtol=1e-5)


def test_fewer_tokens_heads_and_bits_cost_less():
    target = SpAtten()
    cost = lambda **kw: target.attention_cost(spatten_workload(GPT2, DECODE, spatten_knobs(12, DECODE, **kw)))  # noqa: E731
    full, fewer_tokens, fewer_heads = cost(), cost(token_keep=0.5), cost(head_keep=0.5)
    for c in (fewer_tokens, fewer_heads):
        assert float(c.dram_bytes) < float(full.dram_bytes)
        assert float(c.latency_s) < float(full.latency_s) and float(c.energy_j) < float(full.energy_j)
    msb_only = target.attention_cost(spatten_workload(GPT2, DECODE, None, lsb_fraction=0.0))
    all_lsb = target.attention_cost(spatten_workload(GPT2, DECODE, None, lsb_fraction=1.0))
    assert float(msb_only.dram_bytes) == pytest.approx(float(full.dram_bytes))  # the default re-fetches nothing
    assert float(msb_only.dram_bytes) < float(all_lsb.dram_bytes)


def test_latency_is_the_bottleneck_engine_at_the_sharp_limit():
    sharp = SpAtten(sharpness=1e9)
    w = spatten_workload(GPT2, DECODE, None)
    per_layer = [float(w.dram_bytes[0] / sharp.hbm_bytes_per_s), float(w.qk_macs[0] / (512 * 1e9)),
                 float(w.pv_macs[0] / (512 * 1e9)), float(w.topk_elements[0] / (16 * 1e9))]
    np.testing.assert_allclose(float(sharp.attention_cost(w).layer_latency_s[0]), max(per_layer), rtol=1e-5)


def test_gradients_in_knobs_and_hardware_match_finite_differences():
    sc = Scenario(phase="prefill", batch=1, context_len=512, kv_bits=12)
    base = Knobs.default(12, sc)

    def latency(keep, target):
        return target.attention_cost(spatten_workload(GPT2, sc, pruning_knobs(base, keep, keep), lsb_fraction=0.1)).latency_s

    keep = jnp.full((12,), 0.6)
    g_keep, g_target = jax.grad(latency, argnums=(0, 1))(keep, SpAtten())
    assert np.all(np.isfinite(g_keep)) and np.all(np.asarray(g_keep)[:-1] > 0)
    assert float(g_keep[-1]) == 0.0  # the last layer's keep affects no attention
    direction = jnp.linspace(0.5, 1.0, 12)
    eps = 1e-3
    fd = (latency(keep + eps * direction, SpAtten()) - latency(keep - eps * direction, SpAtten())) / (2 * eps)
    np.testing.assert_allclose(float(g_keep @ direction), float(fd), rtol=2e-2)
    assert float(g_target.qk_multipliers) < 0 and np.isfinite(float(g_target.hbm_bytes_per_s_per_channel))


def test_pruning_knobs_shift_the_network_knob_by_one_layer():
    knobs = pruning_knobs(Knobs.default(3, DECODE), jnp.asarray([0.8, 0.5, 0.4]), jnp.asarray([1.0, 0.75, 0.5]))
    np.testing.assert_allclose(np.asarray(knobs.token_keep), [1.0, 0.8, 0.5])
    np.testing.assert_allclose(np.asarray(knobs.head_keep), [1.0, 1.0, 0.75])


@pytest.mark.parametrize("call, message", [
    (lambda: SpAtten(clock_hz=0.0), "clock_hz=0.0: must be a finite positive number"),
    (lambda: SpAtten(kv_sram_bytes=100.0), "kv_sram_bytes=100.0: must hold"),
    (lambda: kv_sram_bytes(max_tokens=0), "max_tokens=0:"),
    (lambda: spatten_workload(GPT2, DECODE, None, lsb_fraction=1.5), "lsb_fraction=1.5:"),
    (lambda: spatten_workload(GPT2, DECODE, None, lsb_bits=12), "lsb_bits=12:"),
    (lambda: spatten_workload(GPT2, Scenario(phase="train"), None), "scenario.phase='train':"),
    (lambda: SpAtten().cost(None), "work=NoneType:"),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_workload_is_a_pytree_of_layer_arrays():
    w = spatten_workload(GPT2, DECODE, None)
    assert isinstance(w, SpAttenWorkload)
    assert all(leaf.shape == (12,) for leaf in jax.tree.leaves(w))
