"""Crash safety: commands SIGKILLed at random instants, rerun, end bit for bit where a clean run ends.

Uses `scripts/crash_harness.py`. Default suite: one kill of a tiny `codesign train`, aimed
inside its second checkpoint write, with one process start only: the reference and the
resuming rerun run in this process (`codesign_main`), only the killed run is a real process.
Slow suite: the whole harness, at least 50 kills of each of train, sweep, calibrate and atts
calibrate, at least 10 of them inside checkpoint or file writes.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("crash_harness", ROOT / "scripts" / "crash_harness.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)


def test_train_killed_inside_a_checkpoint_write_resumes_bitwise(tmp_path, codesign_main):
    (tmp_path / "model.json").write_text(harness._tiny_model())
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert codesign_main(*harness.command_argv("train", ref, tmp_path)).returncode == 0
    launcher = harness.Launcher({**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}, fork=False)
    log = tmp_path / "kill.phases"
    killed = harness.run_once(launcher, harness.command_argv("train", out, tmp_path), log,
                              kill=("write", 2, 0.0, ("checkpoint",)))
    assert killed["killed"], killed
    assert harness.last_phase(log) == "checkpoint"  # the kill landed inside the second checkpoint save
    assert harness.partial_files(out) == []
    assert (out / ".codesign.lock").exists()  # the dead run's lock: the rerun takes it over
    assert codesign_main(*harness.command_argv("train", out, tmp_path)).returncode == 0
    assert harness.fingerprint(out) == harness.fingerprint(ref)


@pytest.mark.slow
def test_every_long_command_killed_fifty_times(tmp_path):
    report = tmp_path / "crash.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, str(ROOT / "scripts" / "crash_harness.py"), "--kills", "50", "--chain", "8",
                    "--aim", "0.4", "--out", str(tmp_path / "h"), "--json", str(report)],
                   check=True, env=env, cwd=ROOT, timeout=8 * 3600)
    results = json.loads(report.read_text())["commands"]
    assert [r["command"] for r in results] == list(harness.COMMANDS)
    for result in results:
        assert result["kills"] >= 50, result["command"]
        assert result["in_writes"] >= 10, (result["command"], result["phases"])
        assert result["bitwise_equal"] == result["chains"], result["failures"]
        assert result["partial_files"] == 0, result["failures"]


def test_old_checkpoints_leave_through_the_trash(tmp_path, monkeypatch):
    """Old steps are renamed away whole (never deleted file by file in place, which a kill leaves as a
    listed step that cannot be restored); what a killed run left in the trash goes when the folder opens."""
    import numpy as np

    from codesign import Checkpointer

    with monkeypatch.context() as m:  # keep the trash to see what went there: step 1, whole
        m.setattr(Checkpointer, "_empty_trash", lambda self: None)
        ckpt = Checkpointer(tmp_path / "ckpt", max_to_keep=2)
        for step in (1, 2, 3):
            ckpt.save(step, {"w": np.full(4, step, np.float32)})
        assert ckpt.all_steps() == [2, 3]
        ckpt.close()
    assert (tmp_path / "ckpt" / ".deleted" / "1" / "_CHECKPOINT_METADATA").exists()
    (tmp_path / "ckpt" / ".deleted" / "1" / "_CHECKPOINT_METADATA").unlink()  # as a killed run's removal left it
    ckpt = Checkpointer(tmp_path / "ckpt", max_to_keep=2)
    assert not (tmp_path / "ckpt" / ".deleted").exists()
    assert [float(ckpt.restore(s, {"w": np.zeros(4, np.float32)})["w"][0]) for s in ckpt.all_steps()] == [2.0, 3.0]
    ckpt.close()
