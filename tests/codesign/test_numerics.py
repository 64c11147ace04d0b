"""The numerics guard: a NaN or inf in the loss or gradients stops the run (last good state checkpointed)
or skips that update, on the plain, joint and quantization-aware (hardened formats) training paths.

The NaN is injected through the `objective` hook: a subclass multiplies the objective by NaN
(or inf) at one chosen step, which poisons the loss and every gradient of that step only.
"""

import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codesign import (Checkpointer, DesignSpace, HardenedTrainer, JointConfig, JointTrainer, NonFiniteError,
                      TrainConfig, Trainer, read_metrics, train)

BAD = 4  # the poisoned step's loop index: the 5th update, "step 5" in metrics.jsonl


def _tc(tiny_json, **kw):
    base = dict(model=tiny_json, steps=8, batch=8, seq_len=32, warmup_steps=1, log_every=3, eval_every=8,
                eval_batches=1, ckpt_every=3)
    return TrainConfig(**{**base, **kw})


def _poisoned(cls, bad_step, value=float("nan")):
    """`cls` whose objective is multiplied by `value` at loop index `bad_step` (and by 1 elsewhere)."""
    class Poisoned(cls):
        def objective(self, params, inputs, targets, step):
            total, metrics = super().objective(params, inputs, targets, step)
            return total * jnp.where(step == bad_step, value, 1.0), metrics
    return Poisoned


def _qat_args(tc):
    """A hardened design with 8-bit and 4-bit weight formats: every forward pass fake-quantizes."""
    space = DesignSpace()
    hardened = dict(space.harden(tc.model_config(), space.init(tc.model_config())))
    hardened["formats"] = ["fp8_e4m3", "fp4_e2m1"]
    return (space, hardened)


PATHS = {
    "plain": lambda tc: (Trainer, ()),
    "joint": lambda tc: (JointTrainer, (JointConfig(lam=0.1, target="h200"),)),
    "qat": lambda tc: (HardenedTrainer, _qat_args(tc)),
}


def _make(path, tc, poison=None, value=float("nan")):
    cls, args = PATHS[path](tc)
    return (_poisoned(cls, poison, value) if poison is not None else cls)(tc, *args)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def _assert_tree_equal(a, b):
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)


def _clean_states(path, tc, n):
    """The (params, opt_state) of a clean run after each of the first `n` steps, stepped the loop's way.

    The clean run is the same instrumented program with the poison never firing (loop index -1), so
    the bitwise comparison sets like against like: a program without the hook may fuse the
    objective's arithmetic differently, and at XLA's cheapest CPU compile (the test session's)
    that alone moved 706 of 16,384 values by up to 3.7e-9.
    """
    from codesign import init_guard
    trainer = _make(path, tc, poison=-1)
    guard = jax.device_put(init_guard(), trainer.replicated)
    states = []
    for step in range(n):
        trainer.params, trainer.opt_state, m = trainer.step_fn(trainer.params, trainer.opt_state, trainer.train_data,
                                                               jnp.asarray(step, jnp.int32), guard)
        guard = {"skipped": m["skipped_steps"], "bad_step": m["bad_step"]}
        states.append(jax.device_get(trainer.state()))
    return states


# The joint and QAT trainers inherit the plain trainer's guarded step; their variants compile two more models
# each, so they run in the slow suite (`pytest -m slow`) and the plain variant in the default one.
SLOW_PATHS = [p if p == "plain" else pytest.param(p, marks=pytest.mark.slow) for p in PATHS]


@pytest.mark.parametrize("path", SLOW_PATHS)
def test_stop_names_the_step_and_keeps_the_last_good_checkpoint(path, tiny_json, tmp_path):
    tc = _tc(tiny_json)
    trainer = _make(path, tc, poison=BAD)
    with pytest.raises(NonFiniteError, match=f"at step {BAD + 1};.*last good state \\(step {BAD}\\)") as info:
        train(tc, tmp_path, progress=False, trainer=trainer)
    assert (info.value.step, info.value.last_good_step) == (BAD + 1, BAD)
    assert trainer.trace_count == 1
    ckpt = Checkpointer(tmp_path / "checkpoints")
    # the bad step 5 is seen at the sync of step 6; checkpoint 3 (regular) and 4 (the last good state) are on disk
    assert ckpt.all_steps() == [3, BAD]
    clean = _clean_states(path, tc, BAD)
    like = trainer.state()
    _assert_tree_equal(ckpt.restore(BAD, like), clean[BAD - 1])
    _assert_tree_equal(ckpt.restore(3, like), clean[2])
    ckpt.close()
    assert not (tmp_path / "summary.json").exists()
    assert all(r.get("step", 0) < BAD + 1 for r in read_metrics(tmp_path / "metrics.jsonl"))


@pytest.mark.parametrize("path", SLOW_PATHS)
def test_skip_leaves_the_state_unchanged_and_training_goes_on(path, tiny_json, tmp_path):
    tc = _tc(tiny_json, on_nonfinite="skip")
    trainer = _make(path, tc, poison=BAD)
    result = train(tc, tmp_path, progress=False, trainer=trainer)
    assert trainer.trace_count == 1
    assert np.isfinite(result.final_val_loss)
    assert all(np.all(np.isfinite(x)) for x in _leaves(trainer.state()))
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "tokens_per_s" in r]
    assert [r["skipped_steps"] for r in records] == [0, 1, 1]  # steps 3, 6, 8
    assert np.isfinite(records[-1]["loss"])
    assert (tmp_path / "summary.json").read_text().count('"skipped_steps": 1') == 1

    # step by step: the poisoned step leaves parameters and optimiser state exactly as they were
    from codesign import init_guard
    stepper = _make(path, tc, poison=BAD)
    guard = jax.device_put(init_guard(), stepper.replicated)
    for step in range(BAD + 1):
        before = jax.device_get(stepper.state())
        stepper.params, stepper.opt_state, m = stepper.step_fn(stepper.params, stepper.opt_state,
                                                               stepper.train_data, jnp.asarray(step, jnp.int32), guard)
        guard = {"skipped": m["skipped_steps"], "bad_step": m["bad_step"]}
    _assert_tree_equal(stepper.state(), before)
    assert int(m["skipped_steps"]) == 1 and not np.isfinite(float(m["grad_norm"]))


def test_inf_is_caught_like_nan(tiny_json, tmp_path):
    tc = _tc(tiny_json)
    with pytest.raises(NonFiniteError, match=f"at step {BAD + 1};"):
        train(tc, tmp_path, progress=False, trainer=_make("plain", tc, poison=BAD, value=float("inf")))


def test_skip_then_resume_counts_the_skips_once(tiny_json, tmp_path):
    tc = _tc(tiny_json, on_nonfinite="skip", steps=6, ckpt_every=5, log_every=6)
    # the skip at step 5 is between logs: recorded with checkpoint 5 so a resume from it still counts it
    train(tc, tmp_path, progress=False, trainer=_make("plain", tc, poison=BAD))
    straight = read_metrics(tmp_path / "metrics.jsonl")[-1]["skipped_steps"]
    ckpt = Checkpointer(tmp_path / "checkpoints")
    assert ckpt.all_steps() == [5, 6]
    ckpt.close()
    shutil.rmtree(tmp_path / "checkpoints" / "6")
    train(tc, tmp_path, progress=False, trainer=_make("plain", tc, poison=BAD))
    assert read_metrics(tmp_path / "metrics.jsonl")[-1]["skipped_steps"] == straight == 1


def test_bad_on_nonfinite_names_the_field(tiny_json):
    with pytest.raises(ValueError, match="^on_nonfinite='ignore': must be one of stop, skip"):
        _tc(tiny_json, on_nonfinite="ignore")


@pytest.mark.slow  # a second interpreter and a cold compile; the in-process tests above cover the guard itself
def test_cli_divergence_stops_with_one_line_and_exit_3(tiny_json, tmp_path):
    # a learning rate of 1e30 blows the weights up after the warm-up step: a real divergence, no hook
    proc = subprocess.run([sys.executable, "-m", "codesign", "train", "--model", tiny_json, "--steps", "10",
                           "--batch", "8", "--seq-len", "32", "--lr", "1e30", "--ckpt-every", "2",
                           "--out", str(tmp_path), "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("codesign: error: non-finite loss or gradient at step ")
    bad = int(lines[0].split("at step ")[1].split(";")[0])
    ckpt = Checkpointer(tmp_path / "checkpoints")
    restored = ckpt.restore(ckpt.latest_step(), Trainer(_tc(tiny_json)).state())
    assert ckpt.latest_step() <= bad - 1
    assert all(np.all(np.isfinite(x)) for x in _leaves(restored))
    ckpt.close()
