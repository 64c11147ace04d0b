"""Static (idle) power in the GPU energy model, and the deployment check's energy comparison."""

import importlib.util
import json
import sys
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest

import hwcost
import nets

ROOT = Path(__file__).resolve().parents[2]
STORED = ROOT / "results" / "deploy_check" / "h100_1557" / "deploy_check_NVIDIA_H100_80GB_HBM3.json"
TINY = nets.ModelConfig(name="tiny", vocab_size=64, d_model=32, n_layers=2, max_seq_len=64,
                        attention=nets.zoo.AttentionConfig(kind="mha", n_heads=4, n_kv_heads=4, head_dim=8),
                        ffn=nets.zoo.FFNConfig(kind="dense", activation="gelu", d_ff=128), norm="layernorm")
DECODE = hwcost.workload(TINY, hwcost.Scenario(phase="decode", batch=8, context_len=32))


def _deploy_check():
    sys.path.insert(0, str(ROOT / "scripts" / "bench"))  # the script imports its sibling gpu_speed
    spec = importlib.util.spec_from_file_location("deploy_check_bench", ROOT / "scripts" / "bench" / "deploy_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("calibrated", [False, True])
def test_energy_rises_by_exactly_static_power_times_latency(calibrated):
    def target(static_w):
        chip = hwcost.gpu("h100-sxm", static_power_w=static_w)
        return hwcost.calibrated(chip, hwcost.Efficiency.default()) if calibrated else chip

    base, powered = target(0.0).cost(DECODE), target(250.0).cost(DECODE)
    assert float(powered.latency_s) == float(base.latency_s) > 0
    np.testing.assert_allclose(float(powered.energy_j) - float(base.energy_j), 250.0 * float(base.latency_s),
                               rtol=1e-5)


def test_static_power_gradients_are_finite_and_the_static_one_is_the_latency():
    chip = hwcost.gpu("h100-sxm")
    params, static = eqx.partition(chip, eqx.is_inexact_array)
    grads = jax.grad(lambda p: eqx.combine(p, static).cost(DECODE).energy_j)(params)
    leaves = jax.tree.leaves(grads)
    assert leaves and all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    np.testing.assert_allclose(float(grads.static_power_w), float(chip.cost(DECODE).latency_s), rtol=1e-5)


def test_h100_static_power_is_the_measured_idle_and_full_rate_still_draws_the_tdp():
    static_w, source = hwcost.STATIC_POWER_W["h100-sxm"]
    # the two idle draws the deployment check stored (W), averaged
    idle = [json.loads(p.read_text())["measured"]["idle_power_w"]
            for p in (STORED, ROOT / "results" / "deploy_check" / "deploy_check_NVIDIA_H100_80GB_HBM3.json")]
    assert static_w == pytest.approx(np.mean(idle), abs=0.05) and "deploy_check" in source
    chip = hwcost.gpu("h100")
    assert float(chip.static_power_w) == static_w
    full_rate = (float(chip.static_power_w) + float(chip.energy_per_flop_bf16) * float(chip.peak_flops_bf16)
                 + float(chip.energy_per_byte) * float(chip.mem_bandwidth))
    assert full_rate == pytest.approx(700.0, rel=1e-5)  # the H100 SXM datasheet's board power
    assert float(hwcost.gpu("h200").static_power_w) == 0.0  # none measured


def test_old_preset_files_load_with_their_static_power_or_none(tmp_path):
    stored = hwcost.load_preset(ROOT / "results" / "calibration" / "h200-calibrated.json")  # written before
    assert float(stored.device.static_power_w) == 0.0
    path = hwcost.save_preset(hwcost.calibrated(hwcost.gpu("h100-sxm"), hwcost.Efficiency.default()),
                              tmp_path / "h100.json")
    saved = hwcost.load_preset(path)
    assert float(saved.device.static_power_w) == 176.0
    body = json.loads(path.read_text())
    del body["gpu"]["static_power_w"]  # a file without the field prices no static power
    path.write_text(json.dumps(body))
    loaded = hwcost.load_preset(path)
    assert float(loaded.device.static_power_w) == 0.0
    cost, with_static = loaded.cost(DECODE), saved.cost(DECODE)
    np.testing.assert_allclose(float(with_static.energy_j) - float(cost.energy_j), 176.0 * float(cost.latency_s),
                               rtol=1e-5)


def test_deploy_check_compare_splits_static_and_dynamic_energy():
    dc = _deploy_check()
    measured = json.loads(STORED.read_text())["measured"]
    latency, dynamic, static_w = 593.5e-6, 2.0e-3, 176.0
    rows = dc.compare(measured, [("with static", {"latency_s": latency, "energy_j": dynamic + static_w * latency},
                                  static_w),
                                 ("unknown static", {"latency_s": latency, "energy_j": dynamic}, None)])
    total, above = measured["energy_step_j"], measured["energy_step_above_idle_j"]
    row = rows[0]
    assert row["latency_error"] == pytest.approx(latency / measured["step_s"] - 1)
    assert row["energy_static_j"] == pytest.approx(static_w * latency)
    assert row["energy_dynamic_j"] == pytest.approx(dynamic)
    assert row["energy_error"] == pytest.approx((dynamic + static_w * latency) / total - 1)
    assert row["energy_error_without_static"] == pytest.approx(dynamic / total - 1)
    assert row["energy_error_above_idle"] == pytest.approx(dynamic / above - 1)
    assert "energy_error_above_idle" not in rows[1] and rows[1]["energy_error"] == pytest.approx(dynamic / total - 1)
    assert len(dc.table(measured, rows)) == 2 + len(rows)
