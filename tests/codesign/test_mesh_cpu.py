"""Sharded training on 8 forced CPU devices against one device, through scripts/parallel/sharding_cpu.py.

The device count is fixed when JAX starts, so the meshes run in ONE child process (the
script), which writes its figures as JSON; the tests read them. The default suite runs the
one mesh that uses every axis kind but data (fsdp 2 x tensor 2 x expert 2, the expert-parallel
all-to-all included) on the MFA+MoE config for 3 steps; the slow test runs the whole matrix
(two configs x five meshes, 20-step curves, a checkpoint restored onto another mesh) and
rewrites nothing in results/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "parallel" / "sharding_cpu.py"


def run_script(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "sharding_cpu.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           # conftest's cheap-compile flags kept, the device count added
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--workdir", str(tmp_path), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def check(results: dict, steps: int) -> None:
    assert results["devices"] == 8
    for config, entry in results["configs"].items():
        ref = entry["one_device"]
        assert ref["devices"] == 1 and ref["step_compilations"] == 1
        for mesh, r in entry["meshes"].items():
            where = f"{config} {mesh}"
            assert r["devices"] == 8, where
            assert r["step0_loss_abs_diff"] <= 1e-5, where
            assert r["step0_grad_max_abs_diff"] <= 1e-5, where
            assert r["routing_experts_equal"] and r["routing_tokens_per_expert_equal"], where
            assert r["moe_output_max_abs_diff"] <= 1e-5, where
            assert len(r["val_curve"]) == steps + 1 and r["val_curve_max_abs_diff"] <= 1e-3, where
            assert r["step_compilations"] == 1, where
            # bytes per device, measured from the shards, are what the mesh and rules imply ...
            assert r["param_bytes_per_device"] == r["param_bytes_per_device_expected"], where
            assert r["opt_bytes_per_device"] == r["opt_bytes_per_device_expected"], where
            # ... and fall below one device's wherever the mesh splits parameters
            if mesh == "data8":
                assert r["param_bytes_ratio"] == 1.0, where
            else:
                assert r["param_bytes_ratio"] > 1.1 and r["opt_bytes_ratio"] > 1.1, where
            # the experts are dispatched by all-to-all exactly where the mesh has an expert axis
            assert r["moe_all_to_all"] == ("expert" in mesh), where
            if mesh == "fsdp8":
                assert r["param_bytes_ratio"] > 6, where  # all but the few tiny vectors split 8 ways
        if "checkpoint_remesh" in entry:  # a sharded orbax checkpoint restored onto another mesh
            r = entry["checkpoint_remesh"]
            assert r["from_mesh"] != r["to_mesh"] and r["restored_on_new_mesh"]
            assert r["restored_max_abs_diff"] == 0 and r["next_loss_abs_diff"] <= 1e-5
    assert results["ok"]


def test_sharded_step_matches_one_device_on_the_mixed_mesh(tmp_path):
    check(run_script(tmp_path, "--configs", "mfa-moe", "--meshes", "fsdp2xtensor2xexpert2", "--steps", "3",
                     "--remesh", ""), 3)


@pytest.mark.slow
def test_every_mesh_matches_one_device_for_20_steps(tmp_path):
    results = run_script(tmp_path, "--steps", "20")
    assert "checkpoint_remesh" in results["configs"]["mfa-moe"]
    check(results, 20)
