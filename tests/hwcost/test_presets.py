"""The TPU and B200 presets, and the per-precision peak table of the GPU roofline.

The precision checks price whole zoo workloads whose every op has one operand precision on
a preset made compute-bound (HBM bandwidth 1e30 bytes/s, sharp roofline): latency is then
sum(FLOPs) / peak(bits), so the latency ratio of two precisions is the inverse ratio of the
preset's own peaks, which the test reads from the preset (never a datasheet number here).
"""

import dataclasses
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hwcost
import nets

NEW = ("b200", "tpu-v4", "tpu-v5e", "tpu-v5p", "tpu-v6e", "tpu7x")
ALIASES = {"v5p": "tpu-v5p", "trillium": "tpu-v6e", "ironwood": "tpu7x", "v4": "tpu-v4", "v5e": "tpu-v5e"}
MODELS = ("codesign-default", "deepseek-v3")  # GQA dense + MoE; MLA with routed experts
CHEAP_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
# every format's anchor (4, 8, 16, 19, 32 bits) and points between them, one per layer
BITS = (4.0, 6.0, 8.0, 12.0, 16.0, 17.5, 19.0, 25.0, 32.0)


def test_new_presets_are_target_names_with_their_aliases():
    names = hwcost.target_names()
    for name in NEW:
        assert name in names and hwcost.get_target(name).name == name
    for alias, name in ALIASES.items():
        assert hwcost.get_target(alias).name == name
    with pytest.raises(ValueError, match=r"^target='tpu-v9': must be one of .*tpu-v5p"):
        hwcost.get_target("tpu-v9")


def _stacked(names):
    """The presets `names` as one GPU whose fields carry a leading preset axis (one compile for all)."""
    chips = [hwcost.get_target(name) for name in names]
    fields = {f.name: jnp.stack([getattr(c, f.name) for c in chips]) for f in dataclasses.fields(hwcost.GPU)
              if f.name != "name"}
    return hwcost.GPU(name="presets", **fields)


@pytest.mark.parametrize("model", MODELS)
def test_new_presets_give_finite_costs_and_gradients(model):
    """log latency + log energy, and its gradient w.r.t. every hardware float and every knob,
    finite for every new preset, with per-layer bits at and between every precision anchor."""
    cfg = nets.zoo.get(model)
    scenario = hwcost.Scenario(phase="decode", batch=8, context_len=128)
    layer_bits = jnp.asarray([BITS[i % len(BITS)] for i in range(cfg.n_layers)])
    knobs = dataclasses.replace(hwcost.Knobs.default(cfg.n_layers, scenario), weight_bits=layer_bits,
                                act_bits=layer_bits[::-1], kv_bits=layer_bits)

    def objective(chip, knobs):
        cost = chip.cost(hwcost.workload(cfg, scenario, knobs))
        return jnp.log(cost.latency_s) + jnp.log(cost.energy_j)

    one = jax.value_and_grad(objective, argnums=(0, 1))
    stacked = _stacked(NEW)
    chips, static = eqx.partition(stacked, eqx.is_inexact_array)
    fn = jax.jit(jax.vmap(lambda p, k: one(eqx.combine(p, static), k), in_axes=(0, None)))
    values, (g_chip, g_knobs) = fn.lower(chips, knobs).compile(CHEAP_COMPILE)(chips, knobs)
    assert values.shape == (len(NEW),) and np.all(np.isfinite(values)), dict(zip(NEW, np.asarray(values)))
    for leaf in jax.tree.leaves(g_chip) + jax.tree.leaves(g_knobs):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert np.all(np.asarray(g_chip.peak_flops_bf16) != 0) and np.all(np.asarray(g_chip.mem_bandwidth) != 0)
    assert np.any(np.asarray(g_knobs.weight_bits) != 0)
    for name in NEW:  # and each preset on its own, outside vmap (the CLI's path)
        cost = hwcost.get_target(name).cost(hwcost.workload(cfg, scenario))
        assert all(math.isfinite(float(getattr(cost, f))) and float(getattr(cost, f)) > 0
                   for f in ("latency_s", "energy_j", "dollars", "memory_bytes")), name


def _compute_bound_latency(name: str, bits: float) -> float:
    """Latency of a whole codesign-default prefill with every op at `bits`, compute-bound."""
    chip = hwcost.gpu(name, mem_bandwidth=1e30, sharpness=math.inf)
    scenario = hwcost.Scenario(phase="prefill", batch=2, context_len=256, weight_bits=bits, kv_bits=bits,
                               act_bits=bits)
    work = hwcost.workload(nets.zoo.get("codesign-default"), scenario)
    compute, memory, _ = chip.op_times(work)
    assert float(jnp.sum(memory)) < 1e-12 * float(jnp.sum(compute))  # the limit holds
    return float(chip.cost(work).latency_s)


@pytest.mark.parametrize("name", ("h100-sxm", "b200", "tpu-v5p", "a800"))
def test_fp32_and_tf32_are_slower_than_bf16_by_the_presets_peak_ratio(name):
    chip = hwcost.gpu(name)
    bf16 = _compute_bound_latency(name, 16.0)
    for bits, field in ((32.0, "peak_flops_fp32"), (19.0, "peak_flops_tf32")):
        expected = float(chip.peak_flops_bf16) / float(getattr(chip, field))
        assert expected > 1.5  # every one of these presets has a real, slower wide rate
        assert _compute_bound_latency(name, bits) / bf16 == pytest.approx(expected, rel=1e-5), (name, bits)
    # between anchors the time per FLOP is the linear blend of its neighbours
    mid = _compute_bound_latency(name, 25.5)
    assert mid == pytest.approx((_compute_bound_latency(name, 19.0) + _compute_bound_latency(name, 32.0)) / 2,
                                rel=1e-5)


def test_fp8_is_faster_than_bf16_on_h100_by_its_peak_ratio():
    chip = hwcost.gpu("h100")
    ratio = _compute_bound_latency("h100", 8.0) / _compute_bound_latency("h100", 16.0)
    assert ratio < 1 and ratio == pytest.approx(float(chip.peak_flops_bf16) / float(chip.peak_flops_fp8), rel=1e-5)


def test_fp4_rate_is_used_on_b200_and_runs_as_fp8_on_h100():
    b200, h100 = hwcost.gpu("b200"), hwcost.gpu("h100")
    b200_ratio = _compute_bound_latency("b200", 4.0) / _compute_bound_latency("b200", 8.0)
    assert b200_ratio == pytest.approx(float(b200.peak_flops_fp8) / float(b200.peak_flops_fp4), rel=1e-5)
    assert b200_ratio < 0.75
    # no FP4 tensor cores: dequantised onto the FP8 path, so 4-bit operands run at the FP8 rate
    assert _compute_bound_latency("h100", 4.0) == pytest.approx(_compute_bound_latency("h100", 8.0), rel=1e-6)
    assert float(h100.peak_flops_fp4) == float(h100.peak_flops_fp8)


def test_a_chip_without_a_wide_rate_prices_it_at_bf16_and_gradients_stay_finite_at_anchors():
    # Ascend 910B has no published FP32/TF32 figure: the fallback rule prices them at BF16
    assert _compute_bound_latency("ascend-910b", 32.0) == pytest.approx(_compute_bound_latency("ascend-910b", 16.0),
                                                                        rel=1e-6)
    chip = hwcost.gpu("b200")
    grads = jax.vmap(jax.grad(chip.seconds_per_flop))(jnp.asarray(BITS + (2.0, 40.0)))
    assert np.all(np.isfinite(np.asarray(grads)))
    # time per FLOP never falls as bits grow (every preset's wider formats are no faster)
    for name in hwcost.PRESETS:
        times = np.asarray(jax.vmap(hwcost.gpu(name).seconds_per_flop)(jnp.linspace(2.0, 34.0, 65)))
        assert np.all(np.diff(times) >= -1e-9 * times[:-1]), name


def test_energy_per_flop_follows_the_same_compute_power_at_each_peak():
    for name in NEW + ("h100-sxm",):
        chip = hwcost.gpu(name)
        power = {fmt: float(getattr(chip, f"energy_per_flop_{fmt}")) * float(getattr(chip, f"peak_flops_{fmt}"))
                 for fmt in ("fp4", "fp8", "bf16", "tf32", "fp32")}
        assert max(power.values()) == pytest.approx(min(power.values()), rel=1e-5), (name, power)


def test_a_preset_file_without_the_precision_fields_still_loads(tmp_path):
    target = hwcost.calibrated(hwcost.gpu("h200"), hwcost.Efficiency.default(), name="old")
    path = hwcost.save_preset(target, tmp_path / "old.json")
    body = json.loads(path.read_text())
    assert "peak_flops_fp32" in body["gpu"]  # written now
    for field in ("peak_flops_fp4", "peak_flops_tf32", "peak_flops_fp32", "energy_per_flop_fp4",
                  "energy_per_flop_tf32", "energy_per_flop_fp32"):
        del body["gpu"][field]
    path.write_text(json.dumps(body))
    loaded = hwcost.get_target(str(path))
    assert float(loaded.device.peak_flops_fp32) == float(loaded.device.peak_flops_bf16)
    assert float(loaded.device.peak_flops_fp4) == float(loaded.device.peak_flops_fp8)
    body["gpu"]["bogus"] = 1.0
    path.write_text(json.dumps(body))
    # one line naming the file, the entry and the unknown field (the loader's InputError wraps the field check)
    with pytest.raises(ValueError, match=r"old\.json: target=.*target\.gpu=.*'bogus'"):
        hwcost.get_target(str(path))
