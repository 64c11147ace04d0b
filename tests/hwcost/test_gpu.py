"""GPU target: smooth roofline, Step-3's unit costs and Table 6, the Table 9 lower bound, jit + vmap."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hwcost
import nets
from hwcost import ATTENTION_SIDE, Scenario, gpu, smooth_max, smooth_max2, workload

CHIPS = ("h800", "h20", "a800", "ascend-910b")
# Step-3 Table 5 unit costs (USD/FLOP at FP8-or-BF16, USD/byte) and Table 6 (USD per 1M tokens:
# attention @8K, attention @32K, FFN; for H800, H20, A800, 910B), AFD totals @8K / @32K.
UNIT = {"h800": (2.80e-19, 1.66e-16), "h20": (7.51e-19, 5.56e-17), "a800": (6.68e-19, 1.04e-16),
        "ascend-910b": (6.65e-19, 1.16e-16)}
TABLE6 = {
    "step-3": ((.048, .040, .040, .043), (.176, .114, .120, .133), (.015, .040, .036, .035)),
    "deepseek-v3": ((.054, .128, .114, .113), (.197, .460, .409, .407), (.014, .036, .032, .032)),
    "qwen3-235b-a22b": ((.135, .054, .091, .101), (.527, .185, .338, .376), (.008, .021, .019, .019)),
}
AFD_TOTALS = {"step-3": (0.055, 0.129), "deepseek-v3": (0.068, 0.211), "qwen3-235b-a22b": (0.062, 0.193)}
# Table 9: measured attention-layer time (us), batch 256 on 4 GPUs; None = not reported.
TABLE9 = {("step-3", 8192): (281, 438, 531), ("step-3", 32768): (791, 1452, 1484),
          ("deepseek-v3", 8192): (372, 1252, None), ("deepseek-v3", 32768): (1125, 4817, None),
          ("qwen3-235b-a22b", 8192): (382, 812, 791), ("qwen3-235b-a22b", 32768): (1391, 3042, 3010)}


def test_smooth_max_bounds_and_sharp_limit():
    rng = np.random.default_rng(0)
    a, b = jnp.asarray(rng.uniform(0, 2, 100)), jnp.asarray(rng.uniform(0, 2, 100))
    exact = np.maximum(a, b)
    for p in (2.0, 16.0, 100.0):
        s = np.asarray(smooth_max2(a, b, jnp.asarray(p)))
        assert np.all(s >= exact * (1 - 1e-6)) and np.all(s <= exact * (1 + 1 / p) * (1 + 1e-6))
        np.testing.assert_allclose(s, np.asarray(smooth_max(jnp.stack([a, b]), jnp.asarray(p))), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(smooth_max2(a, b, jnp.asarray(jnp.inf))), exact, rtol=1e-6)  # float32 rounding
    # zero inputs (an op with no FLOPs or no bytes): zero value and finite gradients
    assert float(smooth_max2(jnp.asarray(0.0), jnp.asarray(0.0), jnp.asarray(8.0))) == 0.0
    g = jax.grad(lambda x: smooth_max2(x, 0.0 * x, jnp.asarray(8.0)))(jnp.asarray(0.0))
    assert np.isfinite(float(g))
    g3 = jax.grad(lambda x: smooth_max(jnp.stack([x, x, x]), jnp.asarray(8.0)).sum())(jnp.zeros(3))
    assert np.all(np.isfinite(np.asarray(g3)))


@pytest.mark.parametrize("chip", CHIPS)
def test_unit_costs_table5(chip):
    target = gpu(chip)
    usd_flop, usd_byte = UNIT[chip]
    assert float(target.usd_per_flop(8.0)) == pytest.approx(usd_flop, rel=0.01)
    assert float(target.usd_per_byte()) == pytest.approx(usd_byte, rel=0.01)


def test_no_fp8_falls_back_to_bf16():
    for chip in ("a800", "ascend-910b"):
        assert float(gpu(chip).usd_per_flop(8.0)) == float(gpu(chip).usd_per_flop(16.0))
    h800 = gpu("h800")
    assert float(h800.usd_per_flop(8.0)) == pytest.approx(float(h800.usd_per_flop(16.0)) / 2, rel=0.01)


@pytest.mark.parametrize("model", list(TABLE6))
def test_table6_every_cell_and_afd_totals(model):
    cfg = nets.zoo.get(model)
    targets = {chip: gpu(chip) for chip in CHIPS}
    att8, att32, ffn = TABLE6[model]
    for i, chip in enumerate(CHIPS):
        c8 = hwcost.decode_cost_per_token(cfg, targets[chip], 8192)
        c32 = hwcost.decode_cost_per_token(cfg, targets[chip], 32768)
        assert abs(1e6 * float(c8["attention"]) - att8[i]) <= 0.001, (chip, "8K")
        assert abs(1e6 * float(c32["attention"]) - att32[i]) <= 0.001, (chip, "32K")
        assert abs(1e6 * float(c8["ffn"]) - ffn[i]) <= 0.001, (chip, "ffn")
    for ctx, paper in zip((8192, 32768), AFD_TOTALS[model]):
        best = hwcost.cheapest_per_side(cfg, targets, ctx)
        assert abs(1e6 * float(best["total_usd"]) - paper) <= 0.001, ctx


@pytest.mark.parametrize("key", list(TABLE9))
def test_table9_roofline_never_exceeds_measured(key):
    model, ctx = key
    cfg = nets.zoo.get(model)
    work = workload(cfg, Scenario(batch=256 // 4, context_len=ctx, weight_bits=8, kv_bits=8, act_bits=8))
    for chip, measured in zip(("h800", "h20", "a800"), TABLE9[key]):
        if measured is None:
            continue
        for target in (gpu(chip), hwcost.paper_accounting(gpu(chip))):  # smooth default and sharp limit
            layer_us = float(target.cost(work).of_ops(ATTENTION_SIDE, "op_latency_s")) / cfg.n_layers * 1e6
            assert 0 < layer_us <= measured, (chip, layer_us, measured)


def test_smooth_roofline_is_at_least_sharp_and_close():
    cfg = nets.zoo.get("codesign-100m")
    work = workload(cfg, Scenario(batch=8, context_len=512))
    smooth = gpu("h200").cost(work)
    sharp = eqx.tree_at(lambda g: g.activation_traffic, hwcost.paper_accounting(gpu("h200")), jnp.asarray(1.0)).cost(work)
    assert float(sharp.latency_s) < float(smooth.latency_s) <= float(sharp.latency_s) * (1 + 1 / 20) * 1.0001


def test_cost_fields_are_consistent():
    cfg = nets.zoo.get("step-3")
    target = gpu("h800")
    cost = target.cost(workload(cfg, Scenario(batch=64, context_len=8192)))
    assert float(cost.dollars) == pytest.approx(float(cost.latency_s) * 2.0 / 3600, rel=1e-6)
    assert float(jnp.sum(cost.op_latency_s)) == pytest.approx(float(cost.latency_s), rel=1e-6)
    assert float(cost.energy_j) > 0 and float(cost.area_mm2) == 814.0
    # 316B parameters at 16 bits do not fit in one 80 GB H800
    assert float(cost.memory_bytes) > 600e9 and not bool(target.fits(workload(cfg, Scenario())))
    by_op = cost.by_op()
    assert max(by_op, key=lambda op: float(by_op[op])) == "moe_routed"


def test_bad_targets_name_field():
    with pytest.raises(ValueError, match=r"^target='tpu': must be one of h800"):
        gpu("tpu")
    with pytest.raises(ValueError, match=r"^h800\.mem_bandwidth=-1\.0"):
        gpu("h800", mem_bandwidth=-1.0)
    with pytest.raises(ValueError, match=r"^bogus: not a GPU parameter"):
        gpu("h800", bogus=1.0)


def test_jit_and_vmap_over_design_points():
    cfg = nets.zoo.get("codesign-default")
    scenario = Scenario(batch=16, context_len=256)
    n = 64
    rng = np.random.default_rng(1)
    knobs = hwcost.Knobs(*(jnp.asarray(rng.uniform(lo, hi, (n, cfg.n_layers)), jnp.float32)
                           for lo, hi in ((4, 16), (4, 16), (8, 16), (0.3, 1), (0.3, 1), (0.3, 1))))
    base = gpu("h200")
    bandwidth = jnp.asarray(rng.uniform(1e12, 5e12, n), jnp.float32)
    traces = []

    def one(k, bw):
        traces.append(1)
        target = eqx.tree_at(lambda g: g.mem_bandwidth, base, bw)
        cost = target.cost(workload(cfg, scenario, k))
        return jnp.stack([cost.latency_s, cost.energy_j, cost.dollars, cost.memory_bytes])

    batched = jax.jit(jax.vmap(one))
    out = np.asarray(batched(knobs, bandwidth))
    out_again = np.asarray(batched(knobs, bandwidth * 1.5))
    assert len(traces) == 1  # compiled once
    assert np.all(out_again[:, 0] < out[:, 0])
    for i in (0, 17, n - 1):
        k = jax.tree.map(lambda x: x[i], knobs)
        np.testing.assert_allclose(out[i], np.asarray(one(k, bandwidth[i])), rtol=2e-5)
