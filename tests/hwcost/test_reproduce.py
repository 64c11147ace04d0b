"""`reproduce` registry and the `codesign cost` / `codesign reproduce` commands."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import hwcost
import nets
from codesign.cli import app


def _codesign(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codesign", *args], capture_output=True, text=True, timeout=300)


def test_step3_rows_all_within_tolerance():
    rows = hwcost.reproduce("step3")
    assert len(rows) >= 90
    bad = [r.to_dict() for r in rows if not r.ok]
    assert not bad, bad
    names = " ".join(r.name for r in rows)
    for needle in ("KV bytes", "attention @32K on 910B", "AFD total", "minimum MoE sparsity", "stage budget",
                   "roofline <= measured", "unit cost per byte"):
        assert needle in names


def test_row_checks_can_fail():
    assert not hwcost.Row("x", 1.0, 1.02, "rel", 0.01).ok
    assert not hwcost.Row("x", 0.050, 0.0515, "abs", 0.001).ok
    assert not hwcost.Row("x", 10.0, 10.5, "at_most", 0.0).ok
    assert not hwcost.Row("x", 10.0, 9.5, "at_least", 0.0).ok
    assert not hwcost.Row("x", 10.0, float("nan"), "rel", 0.5).ok
    with pytest.raises(ValueError, match="^check='approx'"):
        hwcost.Row("x", 1.0, 1.0, "approx")
    with pytest.raises(ValueError, match="^paper='nope': must be one of .*step3"):
        hwcost.reproduce("nope")


def test_reproduce_cli_json_and_exit_status():
    proc = _codesign("reproduce", "step3", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    assert {"name", "paper", "ours", "rel_error", "ok"} <= set(rows[0])
    assert all(r["ok"] for r in rows)

    @hwcost.register("always-off")
    def _off():
        return [hwcost.Row("a number we miss", 1.0, 2.0, "rel", 0.01)]

    try:
        result = CliRunner().invoke(app, ["reproduce", "always-off"])
        assert result.exit_code == 1
        assert "BAD" in result.output and "0/1 rows" in result.output
    finally:
        del hwcost.PAPERS["always-off"]


def test_cost_cli_json_totals_and_config_path(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(nets.zoo.get("codesign-100m").to_json())
    proc = _codesign("cost", str(path), "--target", "h200", "--batch", "8", "--context", "512", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["model"] == "codesign-100m" and report["target"] == "h200"
    total = sum(r["latency_s"] for r in report["ops"])
    assert total == pytest.approx(report["totals"]["latency_s"], rel=1e-5)
    assert sum(r["flops"] for r in report["ops"]) == pytest.approx(report["totals"]["flops"], rel=1e-5)
    table = _codesign("cost", "step-3", "--target", "h20", "--batch", "16", "--context", "8192")
    assert table.returncode == 0 and "moe_routed" in table.stdout and "attn_score" in table.stdout


@pytest.mark.parametrize("args, message", [
    (["cost", "no-such-model"], "model='no-such-model': not in the zoo"),
    (["cost", "step-3", "--target", "tpu"], "target='tpu': must be one of"),
    (["cost", "step-3", "--phase", "serve"], "phase='serve': must be one of prefill, decode, train"),
    (["cost", "step-3", "--batch", "0"], "batch=0: must be a positive integer"),
    (["cost", "missing.json"], "model='missing.json': no such JSON config file"),
])
def test_cost_cli_bad_input_is_one_line(args, message):
    proc = _codesign(*args)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr
