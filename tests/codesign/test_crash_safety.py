"""Crash safety: commands SIGKILLed at random instants, rerun, end bit for bit where a clean run ends.

Runs `scripts/crash_harness.py` (it must start and kill real processes, three JAX starts per
kill at least). Default suite: 1 kill of a tiny `codesign train`, aimed inside a checkpoint or
file write (more would exceed the default suite's time budget on 2 cores). Slow suite: 3 kills
of train, and at least 50 kills of each of train, sweep, calibrate and atts calibrate, at least
10 of them inside writes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _harness(tmp_path, commands: str, kills: int, aim: float, timeout: int) -> list[dict]:
    report = tmp_path / "crash.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, str(ROOT / "scripts" / "crash_harness.py"), "--commands", commands,
                    "--kills", str(kills), "--aim", str(aim), "--out", str(tmp_path / "h"), "--json", str(report)],
                   check=True, env=env, cwd=ROOT, timeout=timeout)
    return json.loads(report.read_text())["commands"]


def _check(result: dict, kills: int, in_writes: int) -> None:
    assert result["kills"] >= kills, result
    assert result["in_writes"] >= in_writes, result["phases"]
    assert result["bitwise_equal"] == result["trials"], result["failures"]
    assert result["partial_files"] == 0, result["failures"]


def test_train_killed_inside_a_write_resumes_bitwise(tmp_path):
    (result,) = _harness(tmp_path, "train", kills=1, aim=1.0, timeout=900)
    _check(result, kills=1, in_writes=1)


@pytest.mark.slow
def test_train_killed_three_times_resumes_bitwise(tmp_path):
    (result,) = _harness(tmp_path, "train", kills=3, aim=0.67, timeout=1800)
    _check(result, kills=3, in_writes=1)


@pytest.mark.slow
def test_every_long_command_killed_fifty_times(tmp_path):
    for result in _harness(tmp_path, "train,sweep,calibrate,atts-calibrate", kills=50, aim=0.4, timeout=6 * 3600):
        _check(result, kills=50, in_writes=10)
