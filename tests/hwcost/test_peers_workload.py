"""Our GPU cost of the peers' workload (Llama-2-7B on an A100-80GB spec, scripts/bench/peers*.py).

Checks our roofline against first-principles byte counts and against GenZ, an independent
roofline, where both count an operation the same way; checks that every tool is handed the
same hardware spec; and checks the script's readers of measured and calibrated JSON.
"""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

import hwcost
import nets

_PATH = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "peers.py"
_spec = importlib.util.spec_from_file_location("peers_bench", _PATH)
peers = importlib.util.module_from_spec(_spec)
sys.modules["peers_bench"] = peers  # dataclasses resolve their module by name
_spec.loader.exec_module(peers)

A100 = peers.A100_80GB
PREFILL, DECODE_1, DECODE_20 = (peers.Case(A100, "prefill", 1, 2048), peers.Case(A100, "decode", 1, 2048),
                                peers.Case(A100, "decode", 20, 2048))


def _ours(case):
    return peers.ours(case, peers.our_gpu(case.spec))["rows_ms"]


def test_decode_batch1_is_the_weight_and_cache_read_time():
    # Llama-2-7B (Touvron et al. 2023, Table 1 / HF config): every BF16 weight and the whole
    # 2048-token BF16 KV cache cross HBM once per decoded token; nothing else is large.
    d, layers, d_ff, vocab, context = 4096, 32, 11008, 32000, 2048
    layer_weights = 4 * d * d + 3 * d * d_ff + 2 * d  # Q, K, V, O; SwiGLU's three; two RMSNorm scales
    weight_bytes = 2 * (layers * layer_weights + vocab * d + d + d)  # + LM head, final norm, one embedding row
    kv_bytes = 2 * layers * 2 * d * context
    floor_ms = 1e3 * (weight_bytes + kv_bytes) / A100.mem_bandwidth
    total = _ours(DECODE_1)["total"]
    assert floor_ms <= total <= 1.02 * floor_ms, (floor_ms, total)


def test_prefill_ffn_is_compute_bound_at_peak():
    # 2048 tokens x 3 matrices of 4096 x 11008 x 2 FLOPs x 32 layers at 312 TFLOP/s
    flops = 2048 * 3 * 4096 * 11008 * 2 * 32
    assert _ours(PREFILL)["ffn"] == pytest.approx(1e3 * flops / A100.peak_flops_bf16, rel=0.01)


def test_spec_fields_and_case_validation():
    with pytest.raises(ValueError, match=r"^case='decode:x:2048':"):
        peers.parse_case("decode:x:2048", A100)
    with pytest.raises(ValueError, match=r"^phase='train':"):
        peers.Case(A100, "train", 1, 2048)
    with pytest.raises(ValueError, match=r"^batch=0:"):
        peers.Case(A100, "decode", 0, 2048)
    with pytest.raises(ValueError, match=r"^mem_bandwidth=-1.0:"):
        peers.Spec("x", 1e12, -1.0, 1e9, "a800", "test")
    assert [c.label for c in peers.default_cases(gpu="h100")] == [
        "h100-sxm prefill b=1 ctx=2048", "h100-sxm decode b=1 ctx=2048", "h100-sxm decode b=20 ctx=2048"]
    with pytest.raises(ValueError, match=r"^gpu='v100':"):
        peers.default_cases(gpu="v100")
    g = peers.our_gpu(A100)
    assert (float(g.peak_flops_bf16), float(g.mem_bandwidth), float(g.mem_capacity)) == pytest.approx(
        (A100.peak_flops_bf16, A100.mem_bandwidth, A100.mem_capacity), rel=1e-7)
    assert g.name == A100.name


def test_every_tool_holds_the_same_spec(monkeypatch):
    pytest.importorskip("GenZ")
    pytest.importorskip("llm_analysis")
    records = peers._check_specs([A100, peers.H100, peers.H200])
    for record in records:
        for tool in ("ours", "genz", "llm_analysis"):
            held = record["as_held_by_each_tool_si"][tool]
            assert held["mem_bandwidth"] == pytest.approx(record["spec"]["mem_bandwidth"], rel=1e-6)
    # a unit slip (GenZ's GB/s read as 1e9 instead of 2^30) is caught
    real = peers.peers_tools.genz_system
    monkeypatch.setattr(peers.peers_tools, "genz_system",
                        lambda spec: {**real(spec), "Memory_BW": spec.mem_bandwidth / 1e9})
    with pytest.raises(ValueError, match=r"^genz\.mem_bandwidth="):
        peers._check_specs([A100])


def test_ours_agrees_with_genz_where_both_count_alike():
    pytest.importorskip("GenZ")
    for case in (DECODE_1, DECODE_20):
        ours, genz = _ours(case), peers.genz(case)["rows_ms"]
        for row in ("attn_core", "attn_proj", "ffn", "embed_head", "total"):
            assert ours[row] == pytest.approx(genz[row], rel=0.02), (case.label, row)
    ours, genz = _ours(PREFILL), peers.genz(PREFILL)["rows_ms"]
    for row in ("attn_proj", "ffn"):
        assert ours[row] == pytest.approx(genz[row], rel=0.02), row
    # causal prefill: we count (c + 1) / 2 attended tokens on average, GenZ all c
    assert ours["attn_core"] == pytest.approx(genz["attn_core"] * (2049 / 2) / 2048, rel=0.02)


def test_flops_agree_across_tools_on_decode():
    pytest.importorskip("GenZ")
    ours = peers.ours(DECODE_20, peers.our_gpu(A100))["flops"]
    assert peers.genz(DECODE_20)["flops"] == pytest.approx(ours, rel=0.01)


def test_measured_reader_matches_the_measured_gpu_only(tmp_path):
    path = tmp_path / "measured.json"
    path.write_text(json.dumps({"device": "NVIDIA H200", "records": [
        {"model": "llama-2-7b", "phase": "decode", "batch": 20, "context_len": 2048, "median_s": 0.0123,
         "iqr_s": 0.0002},
        {"model": "llama-2-7b", "phase": "prefill", "batch": 1, "context_len": 2048, "median_ms": 45.0},
        {"model": "llama-2-7b", "phase": "decode", "batch": 1, "context_len": 2048, "median_s": 0.007,
         "device": "NVIDIA H100 80GB HBM3"}]}))
    header, records = peers.load_measured(str(path))
    assert header["device"] == "NVIDIA H200"

    def total(spec, phase, batch):
        got = peers.measured(peers.Case(spec, phase, batch, 2048), records, header["device"])
        return None if got is None else got["rows_ms"]["total"]

    got = peers.measured(peers.Case(peers.H200, "decode", 20, 2048), records, header["device"])
    assert got["rows_ms"]["total"] == pytest.approx(12.3) and got["spread_ms"] == pytest.approx(0.2)
    assert total(peers.H200, "prefill", 1) == 45.0
    assert total(peers.H200, "decode", 1) is None  # that record names its own GPU, the H100
    assert total(peers.H100, "decode", 1) == pytest.approx(7.0)
    assert total(peers.H100, "decode", 20) is None  # the file's H200 records are not the H100's
    assert peers.measured(DECODE_20, records, header["device"]) is None  # an A100 case has no measurement
    assert peers.spec_of_device("NVIDIA H100 80GB HBM3") is peers.H100 and peers.spec_of_device("cpu") is None
    errors = peers.errors_vs_measured({"ours": {"rows_ms": {"total": 11.0}}, "genz": None,
                                       "measured": {"rows_ms": {"total": 10.0}}})
    assert errors["ours"] == pytest.approx(0.1) and errors["genz"] is None
    with pytest.raises(ValueError, match=r"^measured='.*missing.json': no such file"):
        peers.load_measured(str(tmp_path / "missing.json"))


def test_calibrated_json_scales_the_memory_bound_decode(tmp_path):
    path = tmp_path / "preset.json"
    path.write_text(json.dumps({"target": "h200", "gpu": {"memory_efficiency": 0.8, "compute_efficiency": 0.6,
                                                          "peak_flops_bf16": 1.0}}))
    target = peers.calibrated_from_json(str(path))(A100)
    assert float(target.peak_flops_bf16) == pytest.approx(A100.peak_flops_bf16)  # spec numbers stay the case's
    calibrated = peers.ours(DECODE_1, target)["rows_ms"]["total"]
    assert calibrated == pytest.approx(_ours(DECODE_1)["total"] / 0.8, rel=0.01)
    path.write_text(json.dumps({"gpu": {"peak_flops_bf16": 1.0}}))
    with pytest.raises(ValueError, match=r"^calibrated='.*': holds none of the GPU efficiency fields"):
        peers.calibrated_from_json(str(path))


def test_like_for_like_throughput_runs_with_finite_gradients():
    result = peers.our_points_per_s(DECODE_20, points=256, chunk=64, repeats=1, grad=True, space="like_for_like")
    assert result["all_finite"] and result["points_per_s"] > 0 and result["points"] == 256


@pytest.mark.slow
def test_full_space_throughput_and_script_end_to_end(tmp_path):
    pytest.importorskip("GenZ")
    pytest.importorskip("llm_analysis")
    out = tmp_path / "peers.json"
    report = peers.main(["--points", "128", "--repeats", "1", "--peer-seconds", "0.2", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["cases"][0]["columns"]["ours_calibrated"] is None and len(saved["cases"]) == 4
    race = report["design_points_per_s"]["results"]
    assert {r["tool"] for r in race} == {"ours", "genz", "llm_analysis"}
    assert all(r["all_finite"] for r in race if r["tool"] == "ours")
    assert all(math.isfinite(r["points_per_s"]) and 0 < r["points_per_s"] <= r["best_points_per_s"] for r in race)
    ratios = saved["design_points_per_s"]["ours_over_fastest_peer"]["best_points_per_s"]
    assert ratios["ours_with_grad_like_for_like"] > 0 and ratios["ours_with_grad_full"] > 0


def test_calibrated_preset_is_the_preset_on_its_own_spec(tmp_path):
    preset = hwcost.calibrated(hwcost.gpu("h200"), hwcost.Efficiency.default(), name="h200-calibrated")
    path = hwcost.save_preset(preset, tmp_path / "h200.json")
    target = peers.load_calibrated(str(path))
    h200_case = peers.Case(peers.H200, "decode", 20, 2048)
    assert peers.ours(h200_case, target(peers.H200))["rows_ms"]["total"] == pytest.approx(
        peers.ours(h200_case, hwcost.load_preset(path))["rows_ms"]["total"], rel=1e-6)
    # transferred to the A100: the A100's datasheet numbers, the H200's fitted curves, never below the roofline
    a100 = target(A100)
    assert float(a100.device.mem_bandwidth) == pytest.approx(A100.mem_bandwidth, rel=1e-6)
    assert peers.ours(DECODE_20, a100)["rows_ms"]["total"] > _ours(DECODE_20)["total"]
