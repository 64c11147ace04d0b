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

from types import SimpleNamespace

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from codesign import TrainConfig, Trainer
from codesign.data import load_byte_corpus, sample_batch
from codesign.parallel import make_mesh
from codesign.training import MetricsWriter

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "parallel" / "multihost_cpu.py"


def test_per_process_batch_rows_are_the_one_process_batch():
    # what `Trainer.step_data` / `Trainer.sample` read, without building a network (cheap): the
    # process's view of a multi-process run, here over this process's devices
    mesh = make_mesh("")
    tc = TrainConfig(steps=4, batch=8, seq_len=32, warmup_steps=1)
    view = SimpleNamespace(tc=tc, corpus=load_byte_corpus(), data_key=jax.random.fold_in(jax.random.key(0), 1),
                           batch_sharded=NamedSharding(mesh, P("data")), per_process_batches=True)
    for step in (0, 3):
        inputs, targets = Trainer.step_data(view, step)
        assert inputs.sharding.is_equivalent_to(view.batch_sharded, 2)
        want = sample_batch(view.corpus.train, jax.random.fold_in(view.data_key, step), tc.batch, tc.seq_len)
        np.testing.assert_array_equal(np.asarray(inputs), np.asarray(want[0]))
        np.testing.assert_array_equal(np.asarray(targets), np.asarray(want[1]))
        got = Trainer.sample(view, (inputs, targets), step)  # the step reads the batch as it comes
        assert got[0] is inputs and got[1] is targets
    view.per_process_batches = False  # one process: the data on the devices, the batch drawn in the step
    view.train_data = object()
    assert Trainer.step_data(view, 0) is view.train_data


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
