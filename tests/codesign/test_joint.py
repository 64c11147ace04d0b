"""The joint loop: one jitted step over weights and knobs; cost falls as lambda rises."""

import jax.numpy as jnp
import numpy as np
import pytest

from codesign import JointConfig, JointTrainer, read_metrics, TrainConfig, train


def _tc(tiny_json, steps=12):
    return TrainConfig(model=tiny_json, steps=steps, batch=8, seq_len=32, warmup_steps=2, log_every=steps,
                       eval_every=steps, eval_batches=2, ckpt_every=steps)


def test_joint_step_compiles_once_and_moves_knobs(tiny_json):
    # the settings of one of the lambda runs below, whose step then comes from the compilation cache
    trainer = JointTrainer(_tc(tiny_json), JointConfig(lam=0.1, knob_lr=0.2))
    before = {k: np.asarray(v) for k, v in trainer.params["knobs"].items()}
    for step in range(3):
        trainer.params, trainer.opt_state, m = trainer.step_fn(trainer.params, trainer.opt_state,
                                                               trainer.train_data, jnp.asarray(step, jnp.int32))
    assert trainer.trace_count == 1
    assert all(np.isfinite(float(v)) for v in m.values())
    after = trainer.params["knobs"]
    assert not np.allclose(before["w_logits"], np.asarray(after["w_logits"]))
    assert not np.allclose(before["ffn_keep_logit"], np.asarray(after["ffn_keep_logit"]))


@pytest.mark.slow  # four compiles (lam is baked into each trainer); tests/codesign/test_joint_targets.py checks the
# same property per target with one compiled step, and test_search's path test the order over lambdas
def test_predicted_cost_falls_as_lambda_rises(tiny_json, tmp_path):
    costs = []
    # lambdas below saturation: from ~0.3 on, 12 steps already reach the cheapest corner of the space
    for lam in (0.0, 0.01, 0.03, 0.1):
        tc = _tc(tiny_json, steps=12)
        trainer = JointTrainer(tc, JointConfig(lam=lam, knob_lr=0.2))
        train(tc, tmp_path / f"lam{lam}", progress=False, trainer=trainer)
        costs.append(float(trainer.cost(trainer.params["knobs"]).latency_s))
        assert read_metrics(tmp_path / f"lam{lam}" / "metrics.jsonl")[-1]["cost"] > 0
    assert all(a > b for a, b in zip(costs, costs[1:])), costs


@pytest.mark.parametrize("kw, field", [({"lam": -1.0}, "lam"), ({"metric": "speed"}, "metric"),
                                       ({"target": "tpu-v9"}, "target"), ({"straight_through": 1.5},
                                                                           "straight_through")])
def test_bad_joint_config_names_the_field(kw, field):
    with pytest.raises(ValueError, match=f"^{field}="):
        JointConfig(**kw)


def test_straight_through_marks_the_final_fraction_of_the_schedule_hard(tiny_json):
    """No compile: which steps see the argmax design, and that the forward pass reads the marked knobs."""
    trainer = JointTrainer(_tc(tiny_json, steps=11), JointConfig(lam=0.1, straight_through=0.3))
    hard = [float(trainer.knobs_at(trainer.params, jnp.asarray(s))["hard"]) for s in range(11)]
    assert hard == [0.0] * 7 + [1.0] * 4, hard  # progress s/10 >= 0.7
    assert "hard" not in trainer.knobs_at(trainer.params, None), "evaluation sees the soft mixture"
    plain = JointTrainer(_tc(tiny_json, steps=11), JointConfig(lam=0.1))
    assert "hard" not in plain.knobs_at(plain.params, jnp.asarray(10))
    knobs = trainer.knobs_at(trainer.params, jnp.asarray(10))
    probs = np.asarray(trainer.space.format_probs(knobs))
    assert set(np.unique(probs)) <= {0.0, 1.0} and (probs.sum(-1) == 1).all()
