"""The cost suite's board power per item (scripts/bench/power.py, cost_suite.py --power) and its training MoE items."""

import importlib.util
import json
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import hwcost

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}_test", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def suite():
    return _script("cost_suite")


class CpuPower:
    """A stand-in power source: 100 W idle plus 100 W times the fraction of the window this process was on a CPU."""

    method = "test: 100 W + 100 W x CPU busy fraction"

    def start(self):
        self.t0, self.cpu0 = time.perf_counter(), time.process_time()

    def stop(self):
        t1 = time.perf_counter()
        busy = min(1.0, (time.process_time() - self.cpu0) / max(t1 - self.t0, 1e-9))
        return [(t, 100.0 + 100.0 * busy) for t in np.arange(self.t0, t1, 0.01)]


def test_smi_lines_parse_to_time_and_watts_and_bad_lines_are_dropped():
    power = _script("power")
    when, watts = power.parse_smi_line("2026/12/07 19:15:02.250, 245.31")
    assert watts == 245.31 and when % 1 == pytest.approx(0.25, abs=1e-6)
    assert power.parse_smi_line("2026/12/07 19:15:02.250, [N/A]") is None
    assert power.parse_smi_line("timestamp, power.draw [W]") is None


def test_sample_power_drops_the_settle_readings():
    power = _script("power")

    class Steps:  # 100 W for the first 0.2 s of the loop, then 300 W
        method = "test"

        def start(self):
            pass

        def stop(self):
            times = np.arange(self.begin - 0.1, time.perf_counter(), 0.01)
            return [(t, 100.0 if t < self.begin + 0.2 else 300.0) for t in times]

    source = Steps()

    def busy(start):
        source.begin = start
        time.sleep(0.4)
        return "done"

    reading = power.sample_power(source, busy, settle_s=0.2)
    assert reading["mean_w"] == 300.0 and reading["result"] == "done" and reading["samples"] >= 15
    assert reading["window_s"] == pytest.approx(reading["wall_s"] - 0.2)
    assert power.mean_power_w(lambda: None, None)[0] is None  # no source: the work runs, no reading


def test_nvml_source_polls_power_and_reads_the_energy_counter_around_the_work():
    power = _script("power")

    class FakeNvml:  # a 250 W board; its energy counter [mJ] runs with the clock
        t0 = time.perf_counter()

        @staticmethod
        def nvmlDeviceGetPowerUsage(handle):
            return 250_000  # mW

        @classmethod
        def nvmlDeviceGetTotalEnergyConsumption(cls, handle):
            return 250.0 * (time.perf_counter() - cls.t0) * 1e3

    reading = power.sample_power(power.NvmlSource(FakeNvml, None), lambda start: time.sleep(0.3), settle_s=0.1)
    assert reading["mean_w"] == 250.0 and reading["samples"] >= 2
    assert reading["counter_j"] == pytest.approx(250.0 * reading["wall_s"], rel=0.05)


def test_item_power_repeats_the_call_past_the_window_and_prices_each_instance(suite, monkeypatch):
    monkeypatch.setattr(suite, "POWER_SETTLE_S", 0.05)
    x = jnp.ones((64, 64))
    calls = []

    def call():
        calls.append(1)
        return x @ x

    record = suite.item_power(call, CpuPower(), copies=2, seconds_per_call=1e-4, idle_w=100.0, window_s=0.2)
    assert record["wall_s"] >= 0.25 and record["calls"] == len(calls) and record["samples"] > 0
    assert record["seconds_per_call"] == pytest.approx(record["wall_s"] / (2 * len(calls)))
    assert record["energy_above_idle_j"] == pytest.approx((record["mean_w"] - 100.0) * record["seconds_per_call"])
    assert record["mean_w"] > 100.0 and record["energy_j"] > record["energy_above_idle_j"] > 0


def test_power_needs_a_gpu_and_a_window_of_half_a_second(suite, tmp_path):
    with pytest.raises(SystemExit, match="backend 'cpu'"):
        suite.main(["--tiny", "--out", str(tmp_path), "--power"])
    with pytest.raises(SystemExit, match="power_s=0.2"):
        suite.main(["--tiny", "--out", str(tmp_path), "--power", "--power-s", "0.2"])
    with pytest.raises(SystemExit, match="power_s"):
        suite.run(tmp_path, 10.0, True, power=CpuPower(), power_s=0.1)


def test_training_moe_items_are_read_into_the_moe_family_at_three_times_the_forward_work(suite):
    for tiny in (True, False):
        plan = suite.plan(tiny)
        for kind in ("grouped_gemm", "moe"):
            forward = {json.dumps(i["shape"]) for i in plan if i["kind"] == kind and "phase" not in i}
            train = {json.dumps(i["shape"]) for i in plan if i["kind"] == kind and i.get("phase") == "train"}
            assert train == forward and forward, (kind, tiny)  # the same shapes, forward and training
    items = [dict(i, timing={"median_s": 1e-3}) for i in suite.plan(False) if i["kind"] in ("grouped_gemm", "moe")]
    data = hwcost.load_data({"schema": hwcost.DATA_SCHEMA, "device": {"kind": "test"}, "items": items})
    moe, gemm = hwcost.KERNEL_GROUPS.index("moe"), hwcost.KERNEL_GROUPS.index("gemm")
    by_id = {i["id"]: i for i in items}
    for n, item_id in enumerate(data.ids):
        item = by_id[item_id]
        rows = data.item_of_row == n
        groups = set(data.kernels["group"][rows].astype(int))
        assert groups == ({moe} if item["kind"] == "grouped_gemm" else {moe, gemm}), item_id  # experts; the router
        assert data.kinds[n] == item["kind"]  # reported with the forward items of their kind
        if item.get("phase") != "train":
            continue
        twin = next(i for i in items if i["kind"] == item["kind"] and "phase" not in i and i["shape"] == item["shape"])
        f = data.ids.index(twin["id"])
        flops = data.kernels["flops"] * data.kernels["launches"]
        work = [float(np.sum(flops[data.item_of_row == m])) for m in (n, f)]
        assert work[0] == pytest.approx(3 * work[1], rel=1e-6), item_id  # forward + both gradients
        # one shape family with the forward item: held out (or trained on) together
        assert hwcost.item_family(item) == hwcost.item_family(twin) and data.heldout[n] == data.heldout[f]
        assert item_id != twin["id"] and item_id.startswith(f"{item['kind']}/train/")


@pytest.mark.slow
def test_tiny_suite_with_power_writes_power_per_item_that_fit_energy_reads(suite, tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "POWER_SETTLE_S", 0.05)
    out = suite.run(tmp_path, 90.0, True, match=("grouped_gemm/", "moe/", "gemm/bf16/", "elementwise/"),
                    power=CpuPower(), power_s=0.5)
    body = json.loads(out.read_text())
    assert body["power"]["idle_w"] >= 100.0 and "idle_end_w" in body["power"]
    ids = {i["id"] for i in body["items"]}
    assert {"grouped_gemm/train/rows64_groups4_n64_k128",
            "moe/train/tokens16_experts4_top_k2_d_model128_d_expert64"} <= ids
    for item in body["items"]:
        p = item["power"]
        assert p["wall_s"] >= 0.55 and p["samples"] > 0 and p["idle_w"] == body["power"]["idle_w"]
        assert p["energy_j"] == pytest.approx(p["mean_w"] * p["seconds_per_call"])
    fit = hwcost.fit_energy(out)  # whatever this CPU's stand-in power gives: finite, non-negative terms
    assert all(np.isfinite(getattr(fit, t)) and getattr(fit, t) >= 0 for t in hwcost.ENERGY_TERMS)
