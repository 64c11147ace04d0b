"""The joint job end to end: sweep, front, deployment export, verify, resume, and its bad inputs."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codesign import (Checkpointer, load_deployment, verify_deployment, read_metrics, JointConfig,
                      JointTrainer, cost_metric, DesignSpace, HardenedTrainer, RecoveryTrainer, SweepConfig, sweep,
                      TrainConfig, train, write_deployment)


def _sc(tiny_json, **kw):
    # a steep second lambda and a fast knob rate: 4 steps then reach a design of their own at each point (so the
    # two recovered checkpoints differ, which the checkpoint-swap test needs)
    base = dict(model=tiny_json, lams=(0.0, 3.0), pretrain_steps=4, steps=4, recovery_steps=2, batch=8, seq_len=32,
                eval_batches=2, knob_lr=0.3)
    base.update(kw)
    return SweepConfig(**base)


@pytest.fixture(scope="module")
def swept(tiny_json, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    result = sweep(_sc(tiny_json), out, progress=False, log=lambda *_: None)
    return out, result


def test_sweep_writes_every_output_and_an_honest_front(swept):
    out, result = swept
    design = [[r[k] for k in ("formats", "kv_formats", "ffn_widths")] for r in result.rows]
    assert design[0] != design[1] and result.rows[1]["cost"] < result.rows[0]["cost"], (design, result.rows)
    for name in ("metrics.jsonl", "pareto.png", "front.json", "deployment.json", "summary.json",
                 "point-0/deployment.json", "point-1/recovery/checkpoints", "point-0/path/checkpoints",
                 "point-1/path/checkpoints"):
        assert (out / name).exists(), name
    pts = np.array([[r["val_loss"], r["cost"]] for r in result.rows])
    for i, on_front in enumerate(result.front_mask):
        dominated = any(np.all(pts[j] <= pts[i]) and np.any(pts[j] < pts[i]) for j in range(len(pts)) if j != i)
        assert on_front == (not dominated)
    assert result.front_mask[result.chosen]
    assert result.hypervolume > 0


def test_exported_deployment_verifies(swept):
    out, result = swept
    checks = verify_deployment(out / "deployment.json")
    assert checks and all(c.ok for c in checks), [c.to_dict() for c in checks if not c.ok]
    other = 1 - result.chosen  # every point of the path is exported, not only the chosen one
    checks = verify_deployment(out / f"point-{other}" / "deployment.json")
    assert checks and all(c.ok for c in checks), [c.to_dict() for c in checks if not c.ok]
    assert load_deployment(out / f"point-{other}" / "deployment.json")["objective"]["method"] == "path"
    record = load_deployment(out / "deployment.json")
    for key in ("seed", "git_commit", "packages"):
        assert key in record["provenance"]
    assert len(record["hardened"]["formats"]) == len(record["hardened"]["ffn_widths"])
    assert all(w % 8 == 0 for w in record["hardened"]["ffn_widths"])


def test_tampered_deployment_fails_verify_with_exit_1(swept, tmp_path, codesign_main):
    out, _ = swept
    record = json.loads((out / "deployment.json").read_text())
    record["validation"]["loss"] *= 1.01
    bad = out / "tampered.json"
    write_deployment(bad, record)  # re-sealed, so the recomputed loss is what disagrees
    result = codesign_main("verify", str(bad), "--json")
    assert result.returncode == 1, result.stderr
    assert not all(check["ok"] for check in json.loads(result.stdout)["checks"])


@pytest.mark.parametrize("mutate, message", [
    (lambda text: text[: len(text) // 2], "not valid JSON"),
    (lambda text: text.replace('"schema_version": 1', '"schema_version": 99'), "schema_version=99"),
    (lambda text: json.dumps({**json.loads(text), "model": {**json.loads(text)["model"], "d_model": 32}}),
     "cannot be restored"),
])
def test_corrupted_or_mismatched_deployment_is_a_clear_error(swept, mutate, message):
    out, _ = swept
    bad = out / "bad.json"
    text = mutate((out / "deployment.json").read_text())
    bad.write_text(text)
    if message == "cannot be restored":  # re-sealed: past the integrity check, the restore itself must fail
        write_deployment(bad, json.loads(text))
    with pytest.raises(ValueError, match=message):
        verify_deployment(bad)


def _swap_checkpoint(out):
    """The chosen point's recovery checkpoint replaced by the other point's (same step, same shapes)."""
    record = json.loads((out / "deployment.json").read_text())
    step = record["checkpoint"]["step"]
    mine = out / record["checkpoint"]["path"] / str(step)
    other = next(p for p in out.glob(f"point-*/recovery/checkpoints/{step}") if p != mine)
    shutil.rmtree(mine)
    shutil.copytree(other, mine)


def _flip_checkpoint_byte(out):
    record = json.loads((out / "deployment.json").read_text())
    name = max(record["checkpoint"]["sha256"], key=lambda n: (out / record["checkpoint"]["path"] / n).stat().st_size)
    path = out / record["checkpoint"]["path"] / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_deployment(out):
    record = json.loads((out / "deployment.json").read_text())
    record["validation"]["loss"] -= 0.1  # a better-looking design, not re-sealed
    (out / "deployment.json").write_text(json.dumps(record, indent=2))


@pytest.mark.parametrize("tamper, field", [(_swap_checkpoint, "checkpoint.sha256"),
                                           (_flip_checkpoint_byte, "checkpoint.sha256"),
                                           (_edit_deployment, "integrity.record_sha256")])
def test_verify_rejects_a_swapped_or_modified_checkpoint_or_deployment(swept, tmp_path, codesign_main, tamper,
                                                                       field):
    out = tmp_path / "copy"
    shutil.copytree(swept[0], out)
    assert codesign_main("verify", str(out / "deployment.json"), "--json").returncode == 0
    tamper(out)
    result = codesign_main("verify", str(out / "deployment.json"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "deployment.json" in lines[0], result.stderr


def test_rerun_reads_finished_points_back(swept, tiny_json):
    out, result = swept
    again = sweep(_sc(tiny_json), out, progress=False, log=lambda *_: None)
    assert [r["val_loss"] for r in again.rows] == [r["val_loss"] for r in result.rows]
    assert again.seconds < result.seconds


def test_path_interrupted_before_a_recovery_finishes_it_identically(swept, tiny_json, tmp_path):
    """A path stopped after a segment's checkpoint but before that point's export continues from the
    segment's state: the point comes out bitwise as in the uninterrupted run."""
    out = tmp_path / "copy"
    shutil.copytree(swept[0], out)
    shutil.rmtree(out / "point-1" / "recovery")
    (out / "point-1" / "deployment.json").unlink()
    again = sweep(_sc(tiny_json), out, progress=False, log=lambda *_: None)
    assert [r["val_loss"] for r in again.rows] == [r["val_loss"] for r in swept[1].rows]
    assert [r["cost"] for r in again.rows] == [r["cost"] for r in swept[1].rows]


@pytest.mark.slow
def test_recovery_trainer_is_the_hardened_design_with_one_compilation(tiny_json):
    """The shared recovery step applies a hardened design exactly as HardenedTrainer (what verify
    rebuilds) does, and a second design reuses the compiled step and evaluation. (Slow: ~65 s on the
    loaded 2-core machine; the default suite's check of the same equality is that every exported path
    point passes `verify`, which rebuilds it with HardenedTrainer.)"""
    tc = _tc(tiny_json, steps=4)
    space = DesignSpace()
    cfg = tc.model_config()
    designs = [{"formats": ["fp4_e2m1", "bf16"], "kv_formats": ["mxfp4", "fp8_e4m3"], "act_formats": [],
                "ffn_widths": [64, 16]},
               {"formats": ["fp8_e4m3", "fp4_e2m1"], "kv_formats": ["bf16", "mxfp4"], "act_formats": [],
                "ffn_widths": [128, 32]}]
    recovery = RecoveryTrainer(tc, space)
    init = jax.device_get(recovery.params)
    losses = []
    for hardened in designs:
        recovery.set_design(hardened, init)
        recovery.advance(0)
        losses.append(recovery.evaluate())
        reference = HardenedTrainer(tc, space, hardened, init_params=init)
        reference.advance(0)
        np.testing.assert_allclose(losses[-1], reference.evaluate(), rtol=1e-6)
    assert recovery.trace_count == 1 and losses[0] != losses[1]
    assert cfg.n_layers == 2


@pytest.mark.parametrize("kw, field", [({"lams": (-1.0,)}, "lam"), ({"metric": "speed"}, "metric"),
                                       ({"target": "tpu-v9"}, "target"), ({"hardware": ("warp_drive",)}, "hardware"),
                                       ({"budgets": (1e-30,), "method": "independent"}, "budget"),
                                       ({"budgets": (1e-5,)}, "method"), ({"method": "anneal"}, "method"),
                                       ({"formats": ("bf16", "int3")}, "formats"),
                                       ({"target": "afd", "hardware": ()}, "batch")])
def test_bad_sweep_input_names_the_field_and_writes_nothing(tiny_json, tmp_path, kw, field):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=f"^{field}="):
        sweep(_sc(tiny_json, **kw), out, progress=False, log=lambda *_: None)
    assert not out.exists()


def _tc(tiny_json, steps=10, log_every=None):
    return TrainConfig(model=tiny_json, steps=steps, batch=8, seq_len=32, warmup_steps=2, log_every=log_every or steps,
                       eval_every=steps, eval_batches=2, ckpt_every=steps // 2)


def test_budget_form_raises_the_multiplier_and_meets_the_budget(tiny_json, tmp_path):
    tc = _tc(tiny_json, steps=30, log_every=1)
    probe = JointTrainer(tc, JointConfig(metric="latency", target="h200"))
    start = float(cost_metric(probe.cost(probe.params["knobs"]), "latency"))
    budget = 0.7 * start
    trainer = JointTrainer(tc, JointConfig(metric="latency", target="h200", budget=budget, lam=0.0, knob_lr=0.1))
    train(tc, tmp_path / "b", progress=False, trainer=trainer)
    history = read_metrics(tmp_path / "b" / "metrics.jsonl")
    mus = [r["mu"] for r in history if "mu" in r]
    assert mus[0] == 0 and mus[1] > 0, "the violated budget raises the multiplier from its start at 0"
    final = float(cost_metric(trainer.cost(trainer.params["knobs"]), "latency"))
    assert final <= budget * 1.02, (final, budget, start)


def test_learnable_hardware_moves_to_the_compute_memory_balance(tiny_json, tmp_path):
    """EDAP on the XR-NPE prices area: a memory-bound workload sheds MAC units (within the box)."""
    tc = _tc(tiny_json, steps=10)
    trainer = JointTrainer(tc, JointConfig(metric="edap", target="xrnpe", hardware=("n_macs",), lam=1.0,
                                           hw_lr=0.2))
    before = float(trainer.target().n_macs)
    train(tc, tmp_path / "hw", progress=False, trainer=trainer)
    after = float(trainer.target().n_macs)
    assert after < before
    # the direction is the cost model's: d edap / d n_macs > 0 at the start
    knobs = trainer.space.init(trainer.cfg)
    grad = jax.grad(lambda logs: cost_metric(trainer.cost(knobs, trainer.target({"hw": logs})), "edap"))(
        {"n_macs": jnp.log(jnp.asarray(before))})
    assert float(grad["n_macs"]) > 0


def test_joint_resume_after_kill_is_bitwise_equal(tiny_json, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    tc = _tc(tiny_json, steps=8)
    train(tc, straight, progress=False, trainer=JointTrainer(tc, JointConfig(lam=0.1)))
    code = f"""
        from codesign.joint._trainer import JointConfig, JointTrainer
        from codesign.training._trainer import TrainConfig, train
        tc = TrainConfig(**{json.dumps(tc.__dict__)})
        train(tc, {str(killed)!r}, progress=False, kill_at_step=4, trainer=JointTrainer(tc, JointConfig(lam=0.1)))
        """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ))
    assert proc.returncode == -9, proc.stderr[-2000:]
    trainer = JointTrainer(tc, JointConfig(lam=0.1))
    train(tc, killed, progress=False, trainer=trainer)
    like = trainer.state()
    a = Checkpointer(straight / "checkpoints").restore(8, like)
    b = Checkpointer(killed / "checkpoints").restore(8, like)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_pruning_path_exports_the_keep_ratios_and_verifies(tiny_json, tmp_path):
    """SpAtten token / head keep ratios in the sweep: hardened to kept counts, priced, exported, verified."""
    out = tmp_path / "pruned"
    result = sweep(_sc(tiny_json, pruning=("tokens", "heads"), kv_formats=(), lams=(0.0, 3.0)), out, progress=False,
                   log=lambda *_: None)
    record = load_deployment(out / "point-1" / "deployment.json")
    hardened = record["hardened"]
    assert len(hardened["token_counts"]) == len(hardened["head_counts"]) == 2 and hardened["n_tokens"] == 32
    assert record["design_space"]["search_tokens"] and record["design_space"]["search_heads"]
    assert result.rows[1]["cost"] < result.rows[0]["cost"], [r["cost"] for r in result.rows]
    checks = verify_deployment(out / "point-1" / "deployment.json")
    assert checks and all(c.ok for c in checks), [c.to_dict() for c in checks if not c.ok]
