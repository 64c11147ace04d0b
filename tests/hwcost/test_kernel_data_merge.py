"""Merging kernel data files of one GPU (`hwcost.merge_data`), the program a file measured (`hwcost.program_of`),
and the training attention families."""

import json

import numpy as np
import pytest

import hwcost
import nets
from hwcost import DATA_SCHEMA, KERNEL_GROUPS, Efficiency, load_data, merge_data, program_of


def _gemm(m: int, dtype: str = "bf16", seconds: float = 1e-4) -> dict:
    bits = 8 if dtype == "fp8" else 16
    return {"id": f"gemm/{dtype}/m{m}_n256_k256", "kind": "gemm", "dtype": dtype, "shape": {"m": m, "n": 256, "k": 256},
            "describe": {"type": "gemm", "m": m, "n": 256, "k": 256, "bits_in": bits, "bits_out": 16},
            "timing": {"median_s": seconds}}


def _norm(tokens: int, seconds: float = 1e-5) -> dict:
    return {"id": f"norm/bf16/tokens{tokens}_width256", "kind": "norm", "dtype": "bf16",
            "shape": {"tokens": tokens, "width": 256},
            "describe": {"type": "norm", "tokens": tokens, "width": 256, "bits": 16}, "timing": {"median_s": seconds}}


def _write(path, items, kind="NVIDIA H200", suite=None):
    body = {"schema": DATA_SCHEMA, "device": {"kind": kind}, "suite": suite or {}, "items": items,
            "ceilings": {"copy_bytes_per_s": 3e12, "copy_bytes": 1 << 30}}
    path.write_text(json.dumps(body))
    return str(path)


def test_merge_takes_the_kinds_asked_for_and_the_first_copy_of_an_item(tmp_path):
    new = _write(tmp_path / "new.json", [_norm(8, 2e-5), _norm(64), _gemm(8, seconds=5e-5)],
                 suite={"version": "cost-suite/1"})
    old = _write(tmp_path / "old.json", [_norm(8, 9e-5), _gemm(8, seconds=7e-5), _gemm(64), _gemm(8, "fp8")])
    merged = merge_data([new, f"{old}:gemm,gemm_fp8"])
    by_id = {i["id"]: i["timing"]["median_s"] for i in merged["items"]}
    # the first file's norms and GEMM; the second file gives only its GEMMs not already taken
    assert by_id == {"norm/bf16/tokens8_width256": 2e-5, "norm/bf16/tokens64_width256": 1e-5,
                     "gemm/bf16/m8_n256_k256": 5e-5, "gemm/bf16/m64_n256_k256": 1e-4, "gemm/fp8/m8_n256_k256": 1e-4}
    assert merged["suite"]["version"] == "cost-suite/1" and len(merged["suite"]["merged_from"]) == 2
    data = load_data([new, (old, ("gemm", "gemm_fp8"))])
    assert len(data.ids) == 5 + 1 and data.program == {"dense_experts": False}  # + the copy ceiling


def test_merge_refuses_two_gpus_and_unknown_kinds(tmp_path):
    a = _write(tmp_path / "a.json", [_gemm(8), _gemm(64)])
    b = _write(tmp_path / "b.json", [_gemm(128)], kind="NVIDIA H100 80GB HBM3")
    with pytest.raises(nets.InputError, match="same GPU kind"):
        merge_data([a, b])
    with pytest.raises(nets.InputError, match="attention"):
        merge_data([f"{a}:attention"])
    with pytest.raises(nets.InputError, match="kernel data file"):
        merge_data([str(tmp_path / "absent.json")])


def test_program_of_reads_the_suite_that_measured_the_file():
    assert program_of({"suite": {"version": "cost-suite/1"}}) == {"dense_experts": False}
    assert program_of({"suite": {}}) == {"dense_experts": True}  # kernels.py: XLA's dense ragged_dot
    assert program_of({"suite": {"version": "cost-suite/1", "grouped_matmul": "reference"}}) == {"dense_experts": True}
    assert program_of({"suite": {"grouped_matmul": "mosaic_gpu"}}) == {"dense_experts": False}


def test_training_attention_has_its_own_family_and_old_presets_price_it_as_prefill():
    for kind in ("mha", "gqa"):
        train = hwcost.workload_kernels(hwcost.attention_op(kind, "train", 1, 64))["attention"]["group"]
        prefill = hwcost.workload_kernels(hwcost.attention_op(kind, "prefill", 1, 64))["attention"]["group"]
        assert KERNEL_GROUPS[train] == f"attention_train_{kind}" and KERNEL_GROUPS[prefill] == f"attention_{kind}"
    old = Efficiency.default().to_dict()
    for field in old.values():
        field["attention_gqa"] = 0.123
        for g in [g for g in field if "_train_" in g]:
            del field[g]
    eff = Efficiency.from_dict(old)
    assert np.asarray(eff.compute_max)[KERNEL_GROUPS.index("attention_train_gqa")] == pytest.approx(0.123)
