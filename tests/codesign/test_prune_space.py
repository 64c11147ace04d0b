"""SpAtten keep ratios as joint-loop knobs: they fall as lambda rises, the cost falls, hardening gives kept_count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hwcost
import nets
from codesign import (JointConfig, read_metrics, HardenedPruningTrainer, PruningJointTrainer, PruningSpace,
                      pruned_params, TrainConfig, train)

from conftest import TINY

SEQ = 16


def _tc(tiny_json, steps):
    return TrainConfig(model=tiny_json, steps=steps, batch=4, seq_len=SEQ, warmup_steps=1, log_every=steps,
                       eval_every=steps, eval_batches=1, ckpt_every=steps)


def test_converted_params_equal_pruned_lm_from_model():
    model = nets.TransformerLM(TINY, rngs=nnx.Rngs(3))
    _, params, _ = nnx.split(model, nnx.Param, ...)
    want = nnx.state(nets.PrunedLM.from_model(model), nnx.Param)
    got = pruned_params(TINY, params)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_predicted_cost_falls_with_the_keep_ratios():
    space = PruningSpace()
    jc = JointConfig()
    knobs = space.init(TINY)
    costs = []
    for logit in (3.0, 0.0, -3.0):
        k = dict(knobs, token_keep_logit=jnp.full((TINY.n_layers,), logit))
        costs.append(float(_latency(space, k, jc)))
    assert costs[0] > costs[1] > costs[2], costs


def _latency(space, knobs, jc):
    hk = space.workload_knobs(TINY, knobs, jc.scenario())
    # layer 0 attends everything; layer 1 attends what survived layer 0
    np.testing.assert_allclose(np.asarray(hk.token_keep), [1.0, float(space.token_keep(knobs)[0])], rtol=1e-6)
    return hwcost.gpu(jc.target).cost(hwcost.workload(TINY, jc.scenario(), hk)).latency_s


def _check_hardened(trainer):
    knobs = trainer.params["knobs"]
    hardened = trainer.harden()
    learned = np.asarray(trainer.space.token_keep(knobs))
    assert hardened["token_counts"] == [nets.kept_count(SEQ, float(k)) for k in learned]
    assert hardened["head_counts"] == [nets.kept_count(TINY.attention.n_heads, float(k))
                                       for k in np.asarray(trainer.space.head_keep(knobs))]
    plan = trainer.space.prune_plan(hardened)
    np.testing.assert_allclose(plan.token_keep, learned, rtol=1e-6)
    hard = float(trainer.hard_cost(hardened).latency_s)
    assert 0 < hard < float(trainer.cost(trainer.space.init(TINY)).latency_s)


def test_one_joint_run_compiles_once_prunes_and_hardens(tiny_json, tmp_path):
    tc = _tc(tiny_json, 6)
    trainer = PruningJointTrainer(tc, JointConfig(lam=3.0, knob_lr=0.2))
    start = trainer.space.init(TINY)
    train(tc, tmp_path / "run", progress=False, trainer=trainer)  # the checkpoint/metrics machinery
    assert trainer.trace_count == 1
    record = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]
    assert np.isfinite(record["val_loss"]) and record["token_keep"] < 0.95
    knobs = trainer.params["knobs"]
    assert np.all(np.asarray(trainer.space.token_keep(knobs)) < np.asarray(trainer.space.token_keep(start)))
    assert float(trainer.cost(knobs).latency_s) < float(trainer.cost(start).latency_s)
    _check_hardened(trainer)


@pytest.mark.slow
def test_keep_ratios_fall_as_lambda_rises(tiny_json, tmp_path):
    steps = 8
    token_keeps, costs = [], []
    for lam in (0.0, 0.3, 3.0):
        tc = _tc(tiny_json, steps)
        trainer = PruningJointTrainer(tc, JointConfig(lam=lam, knob_lr=0.2))
        train(tc, tmp_path / f"lam{lam}", progress=False, trainer=trainer)
        assert trainer.trace_count == 1
        knobs = trainer.params["knobs"]
        token_keeps.append(float(jnp.mean(trainer.space.token_keep(knobs))))
        costs.append(float(trainer.cost(knobs).latency_s))
        _check_hardened(trainer)
    assert token_keeps[0] > token_keeps[1] > token_keeps[2], token_keeps
    assert costs[0] > costs[1] > costs[2], costs
    # recovery fine-tuning with the hard plan (top-k and gathers) of the last run
    rtc = _tc(tiny_json, 2)
    recovery = HardenedPruningTrainer(rtc, trainer.space, trainer.harden(), init_params=trainer.params["net"])
    result = train(rtc, tmp_path / "recovery", progress=False, trainer=recovery)
    assert recovery.trace_count == 1 and np.isfinite(result.final_val_loss)


def test_hardened_trainer_needs_counts_for_its_sequence_length(tiny_json):
    space = PruningSpace()
    hardened = space.harden(TINY, space.init(TINY), n_tokens=SEQ + 1)
    with pytest.raises(ValueError, match="^hardened.n_tokens="):
        HardenedPruningTrainer(_tc(tiny_json, 2), space, hardened)


@pytest.mark.parametrize("kw, field", [({"kv_formats": ("bf16",)}, "kv_formats"),
                                       ({"init_token_keep": 1.5}, "init_token_keep"),
                                       ({"search_heads": "yes"}, "search_heads")])
def test_bad_pruning_space_names_the_field(kw, field):
    with pytest.raises(ValueError, match=f"^{field}="):
        PruningSpace(**kw)


def test_space_round_trips_through_a_dict():
    space = PruningSpace(search_heads=False, init_token_keep=0.8)
    assert PruningSpace.from_dict(space.to_dict()) == space


def test_spatten_dram_falls_with_the_keep_ratios_and_generated_tokens_stay():
    space = PruningSpace()
    scenario = hwcost.Scenario(phase="decode", batch=2, context_len=16, gen_len=9, kv_bits=12)
    knobs = space.init(TINY)
    drams = []
    for logit in (2.0, -2.0):
        k = dict(knobs, token_keep_logit=jnp.full((TINY.n_layers,), logit),
                 head_keep_logit=jnp.full((TINY.n_layers,), logit))
        hk = space.workload_knobs(TINY, k, scenario)
        keep = float(space.token_keep(k)[0])
        # 16 prunable context tokens, on average (9 - 1) / 2 = 4 generated ones that are never pruned
        np.testing.assert_allclose(np.asarray(hk.token_keep), [1.0, (keep * 16 + 4) / 20], rtol=1e-6)
        drams.append(float(hwcost.SpAtten().attention_cost(hwcost.spatten_workload(TINY, scenario, hk)).dram_bytes))
    assert drams[0] > drams[1] > 0, drams


def test_spatten_trainer_rejects_a_metric_it_cannot_price(tiny_json):
    with pytest.raises(ValueError, match="^metric="):
        PruningJointTrainer(_tc(tiny_json, 2), JointConfig(metric="dollars"), spatten=hwcost.SpAtten())
