"""Single-op and whole-step prediction, every precision, and the software-efficiency layer.

No measured data is needed: single ops are priced by the datasheet GPU (a roofline) and by
a calibrated GPU whose software profile is the default curves; the paths are checked
against each other and against the formulas.
"""

import json

import numpy as np
import pytest

import hwcost
import nets
from hwcost import (CalibratedGPU, Efficiency, calibrated, gemm_op, item_kernels, load_data, load_preset, op_workload,
                    predict, save_preset, software, split_heldout)

H100 = hwcost.gpu("h100")
OURS = calibrated(hwcost.gpu("h200"), software("ours", Efficiency.default()), "h200-ours")


def _latency(target, work) -> float:
    return float(target.cost(work).latency_s)


def test_every_precision_is_priced_at_its_datasheet_rate():
    n = 16384  # compute-bound at every format: the roofline is the FLOPs over that format's peak
    flops = 2.0 * n ** 3
    for dtype, peak in (("fp32", 67e12), ("tf32", 494.7e12), ("bf16", 989e12), ("fp8", 1979e12), ("int8", 1979e12),
                        ("fp4", 1979e12)):  # no FP4 before Blackwell: the FP8 rate
        t = _latency(H100, gemm_op(n, n, n, dtype))
        # the smooth max sits at most 5% above the sharp roofline at a tie; far from one it is the compute time
        assert flops / peak <= t <= 1.01 * flops / peak, dtype
    b200 = hwcost.gpu("b200")
    assert _latency(b200, gemm_op(n, n, n, "fp4")) == pytest.approx(flops / 9e15, rel=0.01)
    # the calibrated target uses the same rates: an FP32 GEMM is not priced at the BF16 rate
    assert _latency(OURS, gemm_op(n, n, n, "fp32")) > 10 * _latency(OURS, gemm_op(n, n, n, "bf16"))
    # storage decides the bytes: TF32 stores 32 bits, so a memory-bound TF32 GEMV costs what FP32's does
    assert _latency(H100, gemm_op(1, 8192, 8192, "tf32")) == pytest.approx(_latency(H100, gemm_op(1, 8192, 8192, "fp32")),
                                                                           rel=1e-3)


def test_single_ops_and_steps_price_through_the_one_protocol():
    ops = [hwcost.gemm_op(512, 4096, 4096), hwcost.norm_op(4096, 4096), hwcost.elementwise_op(1 << 24, reads=2),
           hwcost.moe_op(512, 32, 4)]
    ops += [hwcost.attention_op(kind, phase, 4, 1024) for kind, phase in (("gqa", "decode"), ("mla", "train"))]
    cfg = nets.zoo.get("codesign-default")
    ops += [hwcost.workload(cfg, hwcost.Scenario(phase="decode", batch=2, context_len=256))]
    for work in ops:
        roof, ours = _latency(hwcost.gpu("h200"), work), _latency(OURS, work)
        assert 0 < roof <= ours * (1 + 1e-6)
    train, prefill = (_latency(H100, hwcost.attention_op("gqa", p, 4, 1024)) for p in ("train", "prefill"))
    assert train == pytest.approx(3 * prefill, rel=1e-4)
    with pytest.raises(ValueError, match=r"^dtype='fp6': must be one of"):
        hwcost.gemm_op(1, 2, 3, "fp6")
    with pytest.raises(ValueError, match=r"^attention='mqa': must be one of"):
        hwcost.attention_op("mqa", "decode", 1, 16)
    with pytest.raises(ValueError, match=r"^m=0: must be a positive"):
        hwcost.gemm_op(0, 2, 3)


def test_an_item_and_its_workload_are_priced_alike():
    """A data file's `describe` (what a measurement records) and the op's Workload give the same time.

    (A whole step's item against its workload: test_calibrate's test_calibrated_gpu_cost_matches_item_prediction.)
    """
    cases = [({"type": "gemm", "m": 64, "n": 4096, "k": 1024, "bits_in": 32, "bits_out": 32, "compute_bits": 19},
              hwcost.gemm_op(64, 4096, 1024, "tf32", "fp32")),
             ({"type": "norm", "tokens": 4096, "width": 2048, "bits": 16}, hwcost.norm_op(4096, 2048)),
             ({"type": "grouped_gemm", "rows": 4096, "groups": 8, "n": 1024, "k": 2048, "bits": 16},
              None)]
    for describe, work in cases:
        work = work or op_workload(describe)[0]
        item = {"id": "x", "kind": "gemm", "describe": describe, "timing": {"median_s": 1.0}}
        data = load_data({"schema": hwcost.DATA_SCHEMA, "items": [item, item | {"id": "y"}]})
        for target in (OURS, hwcost.gpu("h200")):
            sw = target.software if isinstance(target, CalibratedGPU) else None
            device = target.device if isinstance(target, CalibratedGPU) else target
            assert float(predict(device, sw, data)[0]) == pytest.approx(_latency(target, work), rel=1e-5), describe
        assert op_workload(describe)[0].phase == work.phase


def test_software_layer_is_apart_from_the_hardware(tmp_path):
    cfg = nets.zoo.get("codesign-100m")
    step = hwcost.workload(cfg, hwcost.Scenario(phase="decode", batch=8, context_len=2048))
    attention = step.select(hwcost.ATTENTION_CORE)
    h200 = hwcost.gpu("h200")
    roofline = calibrated(h200, software("roofline"))
    # the roofline profile is the datasheet GPU itself
    for work in (step, attention, hwcost.gemm_op(8, 4096, 4096)):
        assert _latency(roofline, work) == pytest.approx(_latency(h200, work), rel=1e-5)
    # our program's KV-cache copies are charged to a whole decode step only, never to one attention op
    no_copies = calibrated(h200, software("ours", Efficiency.default(), kv_cache_copies=0.0))
    assert _latency(OURS, attention) == pytest.approx(_latency(no_copies, attention), rel=1e-6)
    assert _latency(OURS, step) > _latency(no_copies, step)
    kv = item_kernels({"type": "workload", "config": cfg.to_dict(),
                       "scenario": {"phase": "decode", "batch": 8, "context_len": 2048}})
    assert kv["copy"].sum() == cfg.n_layers or kv["launches"][kv["copy"] == 1].sum() == cfg.n_layers
    # the same software on other hardware (transfer): only the datasheet changes
    moved = hwcost.transfer(OURS, "h100-sxm")
    assert moved.software is OURS.software and moved.device.name == "h100-sxm"
    assert _latency(moved, step) > _latency(OURS, step)  # less bandwidth, same kernels
    # a preset keeps the two apart and reads back
    path = save_preset(OURS, tmp_path / "ours.json")
    body = json.loads(path.read_text())
    assert body["software"]["kv_cache_copies"] == hwcost.SCAN_CACHE_COPIES and "efficiency" not in body["gpu"]
    loaded = load_preset(path)
    assert _latency(loaded, step) == pytest.approx(_latency(OURS, step), rel=1e-6)


def test_split_holds_out_whole_models_and_shape_families():
    ids = tuple(f"gemm/bf16/m{m}_n{n}_k{k}" for m in (1, 64, 4096) for n, k in ((1024, 1024), (4096, 4096),
                                                                               (8192, 2048), (14336, 4096)))
    kinds = ("gemm",) * len(ids)
    families = tuple(i.split("/m")[0] + "/" + i.split("_", 1)[1] for i in ids)
    models = [f"model/m{j}" for j in range(6)]
    ids += tuple(f"{p}/{m}" for m in models for p in ("decode_step", "prefill_step", "train_step"))
    kinds += tuple(p for _ in models for p in ("decode_step", "prefill_step", "train_step"))
    families += tuple(m for m in models for _ in range(3))
    held = split_heldout(ids, kinds, 0.25, families)
    assert np.array_equal(held, split_heldout(ids, kinds, 0.25, families))
    by_family: dict[str, set] = {}
    for f, h in zip(families, held):
        by_family.setdefault(f, set()).add(bool(h))
    assert all(len(sides) == 1 for sides in by_family.values())  # a family is never split
    steps = np.asarray([k.endswith("_step") for k in kinds])
    assert held[steps].any() and not held[steps].all()
    assert held[~steps].any() and not held[~steps].all()
