"""The real console script: help lists the subcommands, zoo --json prints computed counts."""

import json
import subprocess
import sys

import nets


def _codesign(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codesign", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_subcommands():
    proc = _codesign("--help")
    assert proc.returncode == 0, proc.stderr
    for name in ("run", "train", "zoo"):
        assert name in proc.stdout


def test_zoo_json_has_counts_computed_from_configs():
    proc = _codesign("zoo", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == set(nets.zoo.names())
    for name, row in rows.items():
        counts = nets.count_params(nets.zoo.get(name))
        assert (row["params_total"], row["params_active"]) == (counts.total, counts.active)
    assert abs(rows["deepseek-v3"]["params_total"] / 671e9 - 1) < 0.02


def test_bad_model_name_is_one_line_error():
    proc = _codesign("train", "--model", "no-such-model", "--steps", "1", "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "model='no-such-model': not in the zoo" in proc.stderr
