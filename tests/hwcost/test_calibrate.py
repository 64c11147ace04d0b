"""Calibration of the GPU target: fit on kernel data, held-out error, the roofline as a lower bound.

The H200 tests read results/kernels_h200.json (measured by scripts/bench/kernels.py on the
lent H200) and skip, saying so, where it is absent. The others need no measured data: they
fit synthetic measurements generated from known efficiency curves.
"""

import dataclasses
import json
import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hwcost
import nets
from hwcost import (CEILING_KIND, DATA_SCHEMA, KERNEL_GROUPS, SCAN_CACHE_COPIES, CalibratedGPU, Efficiency, calibrate,
                    calibrated, error_table, get_target, item_kernels, load_data, load_preset, predict, roofline_seconds,
                    save_preset, split_heldout, workload_kernels)

H200_DATA = Path(__file__).resolve().parents[2] / "results" / "kernels_h200.json"
FIT_STEPS = 1500  # the CLI test uses the same count, so the compiled fit is reused


def _truth() -> Efficiency:
    """A plausible 'true' GPU, different from Efficiency.default() in every group.

    Given for the five parent families (gemm, gemm_fp8, attention, moe, elementwise); the
    per-kind attention families and norm take their parent's curves (`Efficiency.from_dict`).
    """
    parents = ("gemm", "gemm_fp8", "attention", "moe", "elementwise")
    values = {"compute_max": [0.8, 0.6, 0.5, 0.7, 0.4], "compute_half_flops": [3e9, 5e9, 1e9, 2e9, 1e7],
              "compute_exponent": [0.9, 1.0, 0.7, 1.0, 1.0], "memory_max": [0.9, 0.9, 0.7, 0.8, 0.85],
              "memory_half_bytes": [4e6, 4e6, 8e6, 2e6, 1e6], "memory_exponent": [1.0, 1.0, 0.6, 1.0, 0.9],
              "waste_exponent": [0.3, 0.3, 0.3, 0.9, 0.3], "launch_s": [4e-6, 4e-6, 6e-6, 8e-6, 3e-6]}
    return Efficiency.from_dict({k: dict(zip(parents, v)) for k, v in values.items()})


def _describes() -> list[tuple[str, str, dict]]:
    small = nets.zoo.get("codesign-100m")
    llama = nets.zoo.get("llama-2-7b").replace(d_model=1024, n_layers=4, attention=dict(n_heads=8, n_kv_heads=8,
                                                                                        head_dim=128))
    out = []
    for m in (1, 8, 64, 512, 4096):
        for n, k in ((1024, 1024), (4096, 4096), (14336, 4096)):
            out.append(("gemm", f"gemm/bf16/m{m}_n{n}_k{k}", {"type": "gemm", "m": m, "n": n, "k": k,
                                                               "bits_in": 16, "bits_out": 16}))
    for t in (1, 64, 4096, 32768):
        out.append(("norm", f"norm/t{t}", {"type": "norm", "tokens": t, "width": 4096, "bits": 16}))
    for cfg in (small, llama):
        for batch, ctx in ((1, 1024), (8, 4096), (64, 2048)):
            out.append(("attention", f"attention/{cfg.name}/b{batch}_c{ctx}", {
                "type": "workload", "config": cfg.to_dict(), "scenario": {"phase": "decode", "batch": batch,
                                                                          "context_len": ctx},
                "ops": ["attn_score", "attn_value", "q_proj", "kv_proj", "o_proj"]}))
        out.append(("attention", f"attention/{cfg.name}/prefill", {
            "type": "workload", "config": cfg.to_dict(), "scenario": {"phase": "prefill", "batch": 2, "context_len": 1024},
            "ops": ["attn_score", "attn_value", "q_proj", "kv_proj", "o_proj"]}))
    for tokens in (1, 32, 512, 4096):
        out.append(("moe", f"moe/t{tokens}", {"type": "workload", "config": small.to_dict(),
                                              "scenario": {"phase": "decode", "batch": tokens},
                                              "ops": ["moe_routed", "router"]}))
    for cfg in (small, llama):
        out.append(("decode_step", f"decode/{cfg.name}", {"type": "workload", "config": cfg.to_dict(),
                                                          "scenario": {"phase": "decode", "batch": 4, "context_len": 1024}}))
        out.append(("prefill_step", f"prefill/{cfg.name}", {
            "type": "workload", "config": cfg.to_dict(), "scenario": {"phase": "prefill", "batch": 1, "context_len": 512},
            "lm_head_positions": "all"}))
    return out


def _synthetic(noise: float = 0.02, seed: int = 0) -> dict:
    """A kernel data file whose times come from `_truth()` on the H200 preset, with lognormal noise."""
    rng = np.random.default_rng(seed)
    items = [{"id": i, "kind": k, "dtype": "bf16", "describe": d, "timing": {"median_s": 1.0}}
             for k, i, d in _describes()]
    data = load_data({"schema": DATA_SCHEMA, "items": items, "device": {"kind": "synthetic"}})
    true_s = np.asarray(predict(hwcost.gpu("h200"), _truth(), data))
    for item, t in zip(items, true_s):
        item["timing"]["median_s"] = float(t * math.exp(noise * rng.standard_normal()))
    return {"schema": DATA_SCHEMA, "items": items, "device": {"kind": "synthetic"}}


@pytest.fixture(scope="module")
def synthetic_fit():
    data = load_data(_synthetic())
    target, report = calibrate(data, "h200", steps=FIT_STEPS)
    return data, target, report


def test_fit_recovers_synthetic_held_out_times(synthetic_fit):
    data, target, report = synthetic_fit
    cal, start = report["calibrated"], error_table(hwcost.gpu("h200"), Efficiency.default(), data)
    assert cal["end_to_end"]["n"] >= 1 and cal["kernels_heldout"]["n"] >= 4
    # 2% measurement noise: the held-out error must come down to a few percent from the start's
    assert cal["end_to_end"]["mape"] < 0.05, cal["end_to_end"]
    assert cal["kernels_heldout"]["mape"] < 0.06, cal["kernels_heldout"]
    assert start["end_to_end"]["mape"] > 4 * cal["end_to_end"]["mape"]
    assert report["fit"]["loss"][1] < 0.1 * report["fit"]["loss"][0]


def test_calibrated_gpu_cost_matches_item_prediction(synthetic_fit):
    data, target, _ = synthetic_fit
    cfg = nets.zoo.get("codesign-100m")
    scenario = hwcost.Scenario(phase="decode", batch=4, context_len=1024)
    item = data.subset(np.asarray([i == "decode/codesign-100m" for i in data.ids]))
    via_items = float(predict(hwcost.gpu("h200"), target.software, item)[0])
    via_cost = float(eqx.filter_jit(lambda t: t.cost(hwcost.workload(cfg, scenario)).latency_s)(target))
    assert via_cost == pytest.approx(via_items, rel=1e-5)
    # and the uncalibrated path of the same code is the preset GPU's own cost
    plain = float(eqx.filter_jit(lambda t: t.cost(hwcost.workload(cfg, scenario)).latency_s)(hwcost.gpu("h200")))
    assert roofline_seconds(_describes()[-4][2], hwcost.gpu("h200")) == pytest.approx(plain, rel=1e-5)
    assert float(predict(hwcost.gpu("h200"), None, item)[0]) == pytest.approx(plain, rel=1e-5)


def test_calibrated_cost_is_differentiable_in_knobs_and_efficiency(synthetic_fit):
    _, target, _ = synthetic_fit
    cfg = nets.zoo.get("codesign-default")
    scenario = hwcost.Scenario(phase="decode", batch=8, context_len=256)
    knobs = hwcost.Knobs.default(cfg.n_layers, scenario)

    @jax.jit
    def latency(knobs, eff):
        sw = dataclasses.replace(target.software, efficiency=eff)
        return dataclasses.replace(target, software=sw).cost(hwcost.workload(cfg, scenario, knobs)).latency_s

    g_knobs, g_eff = jax.jit(jax.grad(latency, argnums=(0, 1)))(knobs, target.efficiency)
    assert np.all(np.isfinite(np.asarray(g_knobs.weight_bits)))
    assert float(jnp.sum(g_knobs.weight_bits)) > 0  # more bits, more bytes, more time
    assert float(jnp.sum(g_eff.launch_s)) > 0
    # finite difference on one launch cost
    bumped = dataclasses.replace(target.efficiency, launch_s=target.efficiency.launch_s.at[0].add(1e-6))
    fd = (latency(knobs, bumped) - latency(knobs, target.efficiency)) / 1e-6
    assert float(g_eff.launch_s[0]) == pytest.approx(float(fd), rel=1e-2)


def test_calibrated_never_faster_than_roofline(synthetic_fit):
    data, target, _ = synthetic_fit
    roof = np.asarray(predict(hwcost.gpu("h200"), None, data))
    cal = np.asarray(predict(hwcost.gpu("h200"), target.software, data))
    assert np.all(cal >= roof * (1 - 1e-6))


def test_split_is_deterministic_and_keeps_both_sides():
    items = _synthetic()["items"]
    ids, kinds = tuple(i["id"] for i in items), tuple(i["kind"] for i in items)
    held = split_heldout(ids, kinds)
    assert np.array_equal(held, split_heldout(ids, kinds))
    steps = np.asarray([k.endswith("_step") for k in kinds])
    assert held[steps].any() and not held[steps].all()
    for kind in set(kinds) - {"decode_step", "prefill_step"}:
        mask = np.asarray(kinds) == kind
        assert held[mask].any() and not held[mask].all(), kind


def test_preset_round_trip(tmp_path, synthetic_fit):
    _, target, report = synthetic_fit
    path = save_preset(target, tmp_path / "h200-cal.json", report)
    loaded = get_target(str(path))
    assert isinstance(loaded, CalibratedGPU) and loaded.name == target.name
    for field in ("compute_max", "launch_s", "memory_half_bytes"):
        np.testing.assert_allclose(getattr(loaded.efficiency, field), getattr(target.efficiency, field), rtol=1e-6)
    assert type(get_target("h200")) is hwcost.GPU


def test_cli_calibrate_then_cost(tmp_path, codesign_main):
    data_file = tmp_path / "kernels.json"
    data_file.write_text(json.dumps(_synthetic()))
    out = tmp_path / "preset.json"
    result = codesign_main("calibrate", str(data_file), "--target", "h200", "--out", str(out), "--steps", str(FIT_STEPS),
                           "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["calibrated"]["end_to_end"]["n"] >= 1
    result = codesign_main("cost", "codesign-100m", "--target", str(out), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["target"] == "h200-calibrated"


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"^data='.*nope.json': no such file"):
        load_data(str(tmp_path / "nope.json"))
    with pytest.raises(ValueError, match=r"^data.schema='other': must be"):
        load_data({"schema": "other", "items": []})
    with pytest.raises(ValueError, match=r"^efficiency.compute_max=1.5: must be in \(0, 1\]"):
        dataclasses.replace(Efficiency.default(), compute_max=jnp.full((len(KERNEL_GROUPS),), 1.5))
    with pytest.raises(ValueError, match=r"^describe.type='conv': must be one of"):
        item_kernels({"type": "conv"})
    with pytest.raises(ValueError, match=r"^fraction=1.5: must be in \(0, 1\)"):
        split_heldout(("a", "b"), ("gemm", "gemm"), fraction=1.5)
    bad = tmp_path / "preset.json"
    bad.write_text(json.dumps({"schema": "nope"}))
    with pytest.raises(ValueError, match=r"preset.json: target.schema='nope': must be"):
        load_preset(bad)
    with pytest.raises(ValueError, match=r"^target='h300': must be one of"):
        get_target("h300")
    with pytest.raises(ValueError, match=r"^base=.*already calibrated"):
        calibrate(load_data(_synthetic()), calibrated(hwcost.gpu("h200"), Efficiency.default()), steps=1)


# ---- the measured H200 ------------------------------------------------------------------------------
_NO_DATA = (f"{H200_DATA} is absent: run `PYTHONPATH=. python scripts/bench/kernels.py --out "
            "results/kernels_h200.json` on the H200 and commit it")


@pytest.fixture(scope="module")
def h200():
    if not H200_DATA.is_file():
        pytest.skip(_NO_DATA)
    data = load_data(H200_DATA)
    target, report = calibrate(data, "h200", steps=FIT_STEPS)
    return data, target, report


def test_h200_roofline_is_a_lower_bound_of_every_measurement(h200):
    data, _, _ = h200
    roof = np.asarray(predict(hwcost.gpu("h200"), None, data))
    above = [(i, r, m) for i, r, m in zip(data.ids, roof, data.measured_s) if r > m]
    assert not above, f"roofline above measured for {len(above)} items, e.g. {above[:3]}"


def test_h200_fit_beats_the_roofline_and_fits_the_moe_waste(h200):
    data, target, report = h200
    cal = report["calibrated"]
    # never faster than the roofline, on every item
    assert np.all(np.asarray(cal["predicted_s"]) >= np.asarray(report["roofline"]["predicted_s"]) * (1 - 1e-6))
    # the fit beats the uncalibrated roofline on the held-out whole-model steps by far
    assert cal["end_to_end"]["mape"] < 0.3 * report["roofline"]["end_to_end"]["mape"]
    # the MoE waste exponent is fitted, not fixed: the dense-expanded ragged_dot costs ~E x the routed FLOPs
    assert 0.8 < float(target.efficiency.waste_exponent[KERNEL_GROUPS.index("moe")]) < 1.2


# The issue's goal on held-out shape families and whole models (better than LLMCompass' 4.1% / 10.4%).
# Measured with FIT_STEPS on results/kernels_h200.json (split by `hwcost.item_family`, 21 held-out kernels, one
# held-out model's 3 steps): end to end 5.3% (decode steps 1.7%, prefill 12.5%); held out per kind: attention
# 22.4%, gemm 15.3%, gemm_fp8 40.7%, moe 7.1%, norm 12.1%. Causes, from the per-item table
# (scripts/calibration_report.py writes calibration_h200_items.txt): the e4m3 GEMMs XLA runs take 0.56 to 12x
# the bf16 GEMM's time of the same shape (m=256 n=k=4096: 6.6x; m=16384: 0.63x), a kernel choice no curve of
# shape follows, so the profile prices them at the bf16 rate (`Software.gemm_rate_bits`); bf16 GEMMs reading
# the same 33.5 MB of weights take 13.1 to 22.7 us with m from 1 to 256 (cuBLAS's kernel choice); the held-out
# MHA and MFA decode families (batch 64) are the only ones of their kinds past the launch floor, so their
# bandwidth is not identified by the training items; the held-out prefill step (+12%) carries the fitted
# prefill fusion share of its norms. xfail(strict): fails once met.
@pytest.mark.xfail(strict=True, reason="goal missed on the stored H200 data: end to end 5.3%, per kind up to "
                   "41% (FP8 GEMMs erratic in shape, attention decode families): see the comment above")
def test_h200_held_out_error_meets_the_goal(h200):
    _, _, report = h200
    cal = report["calibrated"]
    assert cal["end_to_end"]["n"] >= 1
    assert cal["end_to_end"]["mape"] <= 0.05, cal["end_to_end"]
    for kind, row in cal["by_kind"].items():
        if row["heldout"]["n"]:
            assert row["heldout"]["mape"] <= 0.08, (kind, row["heldout"])


# Regression bounds of the current model on the same split and FIT_STEPS: what the fit reaches today (held-out
# MAPE rounded up to the next whole percent), NOT the goal (5% / 8%, test above). A change that makes the
# held-out error worse fails here.
REACHED = {"end_to_end": 0.06, "kernels": 0.25, "attention": 0.23, "gemm": 0.16, "gemm_fp8": 0.41, "moe": 0.08,
           "norm": 0.13, "decode_step": 0.02, "prefill_step": 0.13}


def test_h200_held_out_error_stays_within_the_current_models_bounds(h200):
    _, _, report = h200
    cal = report["calibrated"]
    assert cal["end_to_end"]["n"] == 3 and cal["end_to_end"]["mape"] <= REACHED["end_to_end"], cal["end_to_end"]
    assert cal["kernels_heldout"]["n"] == 21 and cal["kernels_heldout"]["mape"] <= REACHED["kernels"]
    held = {kind: row["heldout"] for kind, row in cal["by_kind"].items() if row["heldout"]["n"]}
    assert sorted(held) == sorted(set(REACHED) - {"end_to_end", "kernels"})
    for kind, row in held.items():
        assert row["mape"] <= REACHED[kind], (kind, row)


# ---- the measured H100 (the full cost suite of 2026-12-07 16:05, the network's current kernels) ----------------
H100_DATA = Path(__file__).resolve().parents[2] / "results" / "kernels_h100_20261207T16_suite.json"


@pytest.fixture(scope="module")
def h100():
    if not H100_DATA.is_file():
        pytest.skip(f"{H100_DATA} is absent: run scripts/bench/cost_suite.py on an H100 and commit it")
    data = load_data(H100_DATA)
    return data, *calibrate(data, "h100-sxm", steps=FIT_STEPS)


# Measured with FIT_STEPS (split by rule: 26 held-out kernels, one held-out model's decode, prefill and train
# steps): end to end 9.6% (decode 12.9%, prefill 2.9%, train 13.2%); per kind up to 46.5% (FP8 GEMMs, the
# kernel XLA picks per shape), MoE layers 40.0%, grouped GEMMs 27.1%. Causes: results/calibration/README.md.
@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="goal missed on the stored H100 suite: end to end 9.6%, per kind up to 47%")
def test_h100_held_out_error_meets_the_goal(h100):
    _, _, report = h100
    cal = report["calibrated"]
    assert cal["end_to_end"]["mape"] <= 0.05, cal["end_to_end"]
    for kind, row in cal["by_kind"].items():
        if row["heldout"]["n"]:
            assert row["heldout"]["mape"] <= 0.08, (kind, row["heldout"])


# Regression bounds on the H100 suite (held-out MAPE at FIT_STEPS rounded up to the next whole percent), NOT the
# goal. The model before the training attention families and the grouped experts fails it on attention (28.5%),
# grouped GEMMs (39.4%) and MoE layers (44.5%).
REACHED_H100 = {"end_to_end": 0.10, "kernels": 0.26, "attention": 0.17, "decode_step": 0.13, "elementwise": 0.12,
                "gemm": 0.04, "gemm_fp32": 0.14, "gemm_fp8": 0.47, "gemm_int8": 0.29, "gemm_tf32": 0.12,
                "grouped_gemm": 0.28, "moe": 0.41, "norm": 0.07, "prefill_step": 0.03, "train_step": 0.14}


@pytest.mark.slow
def test_h100_held_out_error_stays_within_the_current_models_bounds(h100):
    data, _, report = h100
    cal = report["calibrated"]
    assert report["roofline"]["lower_bound"] == 1.0  # the uncalibrated roofline below every measurement
    assert cal["end_to_end"]["n"] == 3 and cal["end_to_end"]["mape"] <= REACHED_H100["end_to_end"]
    assert cal["kernels_heldout"]["n"] == 26 and cal["kernels_heldout"]["mape"] <= REACHED_H100["kernels"]
    held = {kind: row["heldout"] for kind, row in cal["by_kind"].items() if row["heldout"]["n"]}
    assert sorted(held) == sorted(set(REACHED_H100) - {"end_to_end", "kernels"})
    for kind, row in held.items():
        assert row["mape"] <= REACHED_H100[kind], (kind, row)
    assert data.program == {"dense_experts": False}  # the cost suite's MoE layers ran the grouped kernel


def test_software_norm_reads_and_gemm_rate_are_the_programs_not_the_roofline():
    """A norm of ours reads its input twice; our e4m3 GEMM computes at the bf16 rate; the roofline does neither."""
    device = hwcost.gpu("h200")
    eff = Efficiency.default()
    ours, single = hwcost.software("ours", eff), hwcost.software("ours", eff, norm_reads=1.0, gemm_rate_bits=0.0)
    norm = {"type": "norm", "tokens": 65536, "width": 4096, "bits": 16}
    k = item_kernels(norm)
    assert float(np.sum(k["extra_bytes"])) == pytest.approx(65536 * 4096 * 2)  # the input, read again

    def seconds(sw, describe):
        work, _ = hwcost.op_workload(describe)
        return float(calibrated(device, sw).cost(work).latency_s)

    # a large norm: three passes against two, at the same bandwidth curve
    launch = float(eff.launch_s[KERNEL_GROUPS.index("norm")])
    assert (seconds(ours, norm) - launch) == pytest.approx(1.5 * (seconds(single, norm) - launch), rel=0.02)
    fp8 = {"type": "gemm", "m": 8192, "n": 8192, "k": 8192, "bits_in": 8, "bits_out": 16}
    bf16 = fp8 | {"bits_in": 16}
    assert seconds(ours, fp8) == pytest.approx(seconds(ours, bf16), rel=0.05)  # compute-bound: the bf16 rate
    assert seconds(single, fp8) < 0.7 * seconds(ours, fp8)  # at its own rate, the FP8 group's curves
    assert roofline_seconds(fp8, device) < 0.6 * roofline_seconds(bf16, device)  # the roofline keeps the FP8 peak
    back = hwcost.Software.from_dict(ours.to_dict())
    assert (back.norm_reads, back.gemm_rate_bits) == (2.0, 16.0)
    assert (hwcost.software("roofline").norm_reads, hwcost.software("roofline").gemm_rate_bits) == (1.0, 0.0)


def test_h200_ceilings_are_training_items(h200):
    data, _, _ = h200
    ceiling = np.asarray(data.kinds) == CEILING_KIND
    assert ceiling.sum() == 2 and not data.heldout[ceiling].any()


def test_routed_expert_waste_is_the_expert_count():
    for name in ("codesign-default", "deepseek-v3", "mixtral-8x7b"):
        cfg = nets.zoo.get(name)
        work = hwcost.workload(cfg, hwcost.Scenario(phase="decode", batch=3, context_len=64))
        assert work.n_experts == cfg.ffn.n_experts and work.top_k == cfg.ffn.top_k
        experts = np.asarray(workload_kernels(work)["moe_routed"]["waste"])
        moe = np.asarray([k == "moe" for k in cfg.layer_kinds] + [False])
        np.testing.assert_array_equal(experts[moe], cfg.ffn.n_experts)
        assert np.all(experts[~moe] == 1.0)


def test_whole_decode_step_pays_the_scan_cache_copies():
    cfg = nets.zoo.get("codesign-100m")
    base = {"type": "workload", "config": cfg.to_dict(),
            "scenario": {"phase": "decode", "batch": 4, "context_len": 1024}}
    whole = item_kernels(base)
    layer = item_kernels(base | {"ops": ["attn_score", "attn_value", "q_proj", "kv_proj", "o_proj"]})
    prefill = item_kernels(base | {"scenario": {"phase": "prefill", "batch": 1, "context_len": 256}})
    # one layer alone copies nothing; a whole step copies each layer's weights (copy=2), a decode step its cache (copy=1)
    assert not layer["copy"].any() and not (prefill["copy"] == 1).any()
    assert (prefill["copy"] == 2).any() and (whole["copy"] == 2).any()
    copies = whole["copy"] == 1
    work = hwcost.workload(cfg, hwcost.Scenario(phase="decode", batch=4, context_len=1024))
    cache_read = float(sum(jnp.sum(work.op_bytes["kv"].get(o, 0.0)) for o in ("attn_score", "attn_value")))
    moved = float(np.sum(whole["bytes"][copies] * whole["launches"][copies]))
    assert moved == pytest.approx(2 * cache_read, rel=1e-5)  # one copy's rows; the profile launches them
    assert hwcost.software("ours").kv_cache_copies == SCAN_CACHE_COPIES
    assert hwcost.software("roofline").kv_cache_copies == 0


def _bench_script(name: str):
    """scripts/bench/<name>.py as a module (scripts are not a package)."""
    import importlib.util
    path = Path(__file__).resolve().parents[2] / "scripts" / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_kernel_suite_tiny_writes_a_loadable_data_file(tmp_path):
    kernels = _bench_script("kernels")
    out = tmp_path / "kernels.json"
    kernels.run(out, budget_s=60.0, tiny=True, only=("gemm", "norm"))
    data = load_data(out)
    assert set(data.kinds) >= {"gemm", "norm"} and np.all(data.measured_s > 0)
    first = json.loads(out.read_text())["items"][0]
    assert first["timing"]["p10_s"] <= first["timing"]["median_s"] <= first["timing"]["p90_s"]
    assert first["copies"] >= 1 and first["describe"]["type"] in ("gemm", "norm")


@pytest.mark.slow
def test_cost_suite_tiny_writes_a_versioned_loadable_file(tmp_path):
    suite = _bench_script("cost_suite")
    out = suite.run(tmp_path, budget_s=90.0, tiny=True, only=("gemm", "grouped_gemm", "elementwise"))
    assert out.parent == tmp_path and out.name.startswith("kernels_") and out.suffix == ".json"
    body = json.loads(out.read_text())
    assert body["suite"]["version"] == suite.SUITE_VERSION and body["schema"] == DATA_SCHEMA
    data = load_data(out)
    assert {"gemm", "gemm_fp32", "gemm_fp8", "grouped_gemm", "elementwise"} <= set(data.kinds), set(data.kinds)
    # the datasheet roofline of any GPU stays below what this machine measured
    assert np.all(np.asarray(predict(hwcost.gpu("h200"), None, data)) <= data.measured_s)
    measured = {i["id"] for i in body["items"]} | {s["id"] for s in body["skipped"]}
    assert measured == {i["id"] for i in suite.plan(True) if i["kind"] in ("gemm", "grouped_gemm", "elementwise")}
