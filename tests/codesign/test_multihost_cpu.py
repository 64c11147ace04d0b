"""Multi-process training: the per-process batch, and two processes killed and resumed on another mesh.

The default suite checks, in this process, what each process of a multi-process run feeds the
step: its rows of the step's batch, built from its own copy of the corpus, are the one-process
batch. The slow test runs scripts/parallel/multihost_cpu.py end to end (two `codesign train`
processes joined through `jax.distributed` on loopback, a one-process reference, a SIGKILL of one
process mid-run and a resume on one process with another mesh) and rewrites nothing in results/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from codesign import TrainConfig, Trainer
from codesign.data import sample_batch
from codesign.training import MetricsWriter

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "parallel" / "multihost_cpu.py"


def test_per_process_batch_rows_are_the_one_process_batch(tiny_json):
    tc = TrainConfig(model=tiny_json, steps=4, batch=8, seq_len=32, warmup_steps=1, eval_batches=1)
    trainer = Trainer(tc)
    assert trainer.per_process_batches is False  # one process: the batch is drawn inside the step
    trainer.per_process_batches = True  # what every process of a multi-process run does
    for step in (0, 3):
        inputs, targets = trainer.step_data(step)
        assert inputs.sharding.is_equivalent_to(trainer.batch_sharded, 2)
        want = sample_batch(trainer.corpus.train, jax.random.fold_in(trainer.data_key, step), tc.batch, tc.seq_len)
        np.testing.assert_array_equal(np.asarray(inputs), np.asarray(want[0]))
        np.testing.assert_array_equal(np.asarray(targets), np.asarray(want[1]))
        got = trainer.sample((inputs, targets), step)  # the step reads the batch as it comes
        assert got[0] is inputs and got[1] is targets


def test_metrics_of_the_other_processes_are_not_written(tmp_path):
    writer = MetricsWriter(tmp_path / "metrics.jsonl", enabled=False)
    writer.write({"step": 1, "loss": 1.0})
    writer.close()
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.slow
def test_two_processes_match_one_and_resume_on_another_mesh_after_a_kill(tmp_path):
    out = tmp_path / "multihost_cpu.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COORDINATOR")}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--steps", "16", "--ckpt-every", "8", "--out", str(out),
                           "--workdir", str(tmp_path / "work")], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=3600)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["runs"]["two"]["exit"] == [0, 0] and r["two_summary_processes"] == 2
    assert r["two_vs_one_steps_compared"] == 16 and r["two_vs_one_loss_max_abs_diff"] <= 1e-5
    assert r["checkpoint_has_process_1_files"]  # each process wrote its own shards
    kill = r["runs"]["killed"]
    assert kill["process_1_exit"] == -9 and not kill["summary_written"]
    assert r["resumed_from_step"] == 8 and r["runs"]["resumed"]["mesh"] != r["runs"]["two"]["mesh"]
    assert r["resumed_vs_one_steps_compared"] == 8 and r["resumed_vs_one_loss_max_abs_diff"] <= 1e-5
    assert r["ok"], proc.stdout[-3000:]
