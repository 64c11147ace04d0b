"""The `codesign atts` commands on a saved (untrained, tiny) pair: calibrate writes a bank that run reads, both
print JSON; bad input is one line on stderr and exit 2. Through `main(argv)` in-process, but for one call of the
real console script."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

import nets
from codesign.atts import draft_config, save_model, target_config, task_for


@pytest.fixture
def atts(codesign_main):
    return lambda *args: codesign_main("atts", *args)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("atts-pair")
    meta = {"task": dataclasses.asdict(task_for("tiny"))}
    save_model(nets.TransformerLM(target_config("tiny"), rngs=nnx.Rngs(params=0)), folder / "target", meta)
    save_model(nets.TransformerLM(draft_config("tiny"), rngs=nnx.Rngs(params=1)), folder / "draft", meta)
    return str(folder)


def test_calibrate_writes_a_bank_that_run_uses_through_a_pool(ckpt, tmp_path, atts):
    bank = str(tmp_path / "bank.npz")
    proc = atts("calibrate", "--ckpt", ckpt, "--out", bank, "--n", "3", "--m", "2", "--max-turns", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    scores = np.load(bank)["scores"]
    assert report["shape"] == list(scores.shape) == [3, 2, 2]
    assert report["per_turn"][0]["n"] == int(np.isfinite(scores[:, :, 0]).sum()) > 0

    proc = atts("run", "--ckpt", ckpt, "--bank", bank, "--n", "3", "--m", "2", "--max-turns", "2",
                "--slots", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["questions"] == 3 and summary["mode"] == "atts"
    assert summary["prefill_calls"] > 0          # 6 samples through 2 slots: later ones were admitted
    assert len(summary["rejection_by_turn"]) == 2
    # the bank records what it was collected with: paragraph turns cannot use a one-line bank
    proc = atts("run", "--ckpt", ckpt, "--bank", bank, "--n", "3", "--m", "2", "--max-turns", "2",
                "--turn-end-prob", "0.5", "--json")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "bank=" in proc.stderr and "turn_end_prob: file 1.0, here 0.5" in proc.stderr


@pytest.mark.parametrize("args, field", [(["--alpha", "1.5"], "alpha"), (["--slots", "3"], "slots"),
                                         (["--mode", "fast"], "mode"), (["--devices", "2"], "devices")])
def test_bad_run_input_is_one_line_and_exit_2(ckpt, args, field, atts):
    proc = atts("run", "--ckpt", ckpt, "--n", "1", "--m", "2", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and f"{field}=" in proc.stderr


def test_console_script_bad_input_is_one_line_and_exit_2(ckpt):
    proc = subprocess.run([sys.executable, "-m", "codesign", "atts", "run", "--ckpt", ckpt, "--n", "1", "--m", "2",
                           "--alpha", "1.5"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "alpha=" in proc.stderr
