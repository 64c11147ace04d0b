"""Training: loss falls, one compilation, exact resume after a real kill, 4 devices = 1 device."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codesign import Checkpointer, read_metrics, TrainConfig, Trainer, train
from codesign.data import load_byte_corpus


def _tc(tiny_json, **kw):
    base = dict(model=tiny_json, steps=8, batch=8, seq_len=32, warmup_steps=2, log_every=1, eval_every=4,
                eval_batches=2, ckpt_every=4)
    base.update(kw)
    return TrainConfig(**base)


def test_one_compilation_for_all_steps(tiny_json):
    trainer = Trainer(_tc(tiny_json))
    for step in range(3):
        trainer.params, trainer.opt_state, _ = trainer.step_fn(trainer.params, trainer.opt_state,
                                                               trainer.train_data, jnp.asarray(step, jnp.int32))
    assert trainer.trace_count == 1


def _run_in_subprocess(code: str, env_extra: dict | None = None) -> None:
    env = dict(os.environ, **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=600)
    return proc


def _final_params(out_dir, step, like):
    ckpt = Checkpointer(os.path.join(out_dir, "checkpoints"))
    try:
        return ckpt.restore(step, like)["params"]
    finally:
        ckpt.close()


def test_resume_after_kill_is_bitwise_equal(tiny_json, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    tc = _tc(tiny_json)
    train(tc, straight, progress=False)
    code = f"""
        from codesign.training._trainer import TrainConfig, train
        tc = TrainConfig(**{json.dumps(tc.__dict__)})
        train(tc, {str(killed)!r}, progress=False, kill_at_step=4)
        """
    proc = _run_in_subprocess(code)
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILL: the run really died at step 4
    assert Checkpointer(killed / "checkpoints").latest_step() == 4
    train(tc, killed, progress=False)  # resumes from step 4
    like = Trainer(tc).state()
    a, b = _final_params(straight, 8, like), _final_params(killed, 8, like)
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    steps = [r["step"] for r in read_metrics(killed / "metrics.jsonl")]
    assert steps == sorted(set(steps)), "no step is logged twice after resume"
    summary = json.loads((straight / "summary.json").read_text())  # what the run was trained on
    assert summary["corpus"] == "stdlib" and summary["corpus_packages"] == {}
    assert summary["corpus_train_sha256"] == load_byte_corpus().train_sha256


def test_four_host_devices_give_the_same_loss_curve(tiny_json, tmp_path):
    tc = _tc(tiny_json, steps=6, eval_every=3, ckpt_every=6)
    code = f"""
        import jax
        assert jax.device_count() == 4, jax.devices()
        from codesign.training._trainer import TrainConfig, train
        train(TrainConfig(**{json.dumps(tc.__dict__)}), {str(tmp_path / 'four')!r}, progress=False)
        """
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()  # + the cheap compile
    proc = _run_in_subprocess(code, {"XLA_FLAGS": flags,
                                     "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    train(tc, tmp_path / "one", progress=False)
    four = read_metrics(tmp_path / "four" / "metrics.jsonl")
    one = read_metrics(tmp_path / "one" / "metrics.jsonl")
    assert [r["step"] for r in four] == [r["step"] for r in one]
    for key in ("loss", "val_loss"):
        a = [r[key] for r in one if key in r]
        b = [r[key] for r in four if key in r]
        assert len(a) >= 3
        np.testing.assert_allclose(b, a, rtol=1e-5)


def test_default_model_lowers_validation_loss_clearly(tmp_path):
    tc = TrainConfig(steps=20, batch=8, seq_len=64, warmup_steps=6, eval_every=20, eval_batches=4, ckpt_every=20)
    result = train(tc, tmp_path, progress=False)
    # measured on the 2-core CPU: 6.03 -> 2.66 nats/byte after 20 steps (2.30 after 60); ln(256) = 5.55 is a
    # uniform guess
    assert result.first_val_loss > 5.5
    assert result.final_val_loss < 3.3


@pytest.mark.slow
def test_default_model_learns_the_byte_corpus_slow(tmp_path):
    result = train(TrainConfig(steps=300), tmp_path, progress=False)
    assert result.first_val_loss > 5.0  # ~ln(256) = 5.55 at initialisation
    assert result.final_val_loss < 2.6


def test_bf16_compute_keeps_float32_master_weights_and_auto_is_float32_on_cpu(tiny_json):
    from codesign import compute_dtype

    assert TrainConfig(model=tiny_json).dtype == "auto"
    accelerator = jax.default_backend() in ("gpu", "tpu")
    assert compute_dtype("auto") == (jnp.bfloat16 if accelerator else jnp.float32)
    trainer = Trainer(_tc(tiny_json, dtype="bfloat16"))
    assert trainer.model_from(trainer.params).dtype == jnp.bfloat16
    params, opt_state, metrics = trainer.step_fn(trainer.params, trainer.opt_state, trainer.train_data,
                                                 jnp.asarray(0, jnp.int32))
    floats = [leaf for leaf in jax.tree.leaves((params, opt_state)) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    assert floats and all(leaf.dtype == jnp.float32 for leaf in floats)
    assert np.isfinite(float(metrics["loss"]))


@pytest.mark.slow  # three trainers compile (~170 s on the loaded 2-core machine); the model-level test is the fast one
def test_remat_policies_give_the_same_step_compile_once_and_donate_the_state(tiny_json):
    """Rematerialisation changes what the backward pass keeps, never the numbers: after two steps the
    parameters of dots/full equal none's (float32, CPU), each compiles once, and the step consumes the
    buffers of the state it was given (donated: updated in place)."""
    results = {}
    for remat in ("none", "dots", "full"):
        trainer = Trainer(_tc(tiny_json, remat=remat))
        assert trainer.model_from(trainer.params).remat == remat
        for step in range(2):
            old = jax.tree.leaves(trainer.params)
            trainer.params, trainer.opt_state, metrics = trainer.step_fn(
                trainer.params, trainer.opt_state, trainer.train_data, jnp.asarray(step, jnp.int32))
            assert all(leaf.is_deleted() for leaf in old), "the step did not take the parameters' buffers"
        assert trainer.trace_count == 1
        results[remat] = (float(metrics["loss"]), float(metrics["grad_norm"]), jax.tree.leaves(trainer.params))
    loss, grad_norm, leaves = results["none"]
    for remat in ("dots", "full"):
        other_loss, other_norm, other_leaves = results[remat]
        np.testing.assert_allclose(other_loss, loss, rtol=1e-6)
        np.testing.assert_allclose(other_norm, grad_norm, rtol=1e-5)
        for a, b in zip(other_leaves, leaves):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="remat"):
        _tc(tiny_json, remat="some")
