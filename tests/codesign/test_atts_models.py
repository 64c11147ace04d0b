"""The ATTS draft/target models (codesign.atts._models): training on the arithmetic task learns, the draft's
selection keeps the evaluated parameters it names, the target stops at its accuracy, and a saved model
loads back to the same function."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import nets
from codesign.atts import (DRAFT_VARIANTS, ArithTask, TrainSpec, draft_config, load_model, save_model,
                           step_accuracy, target_config, task_for, train_model)

TASK = task_for("tiny")
SPEC = TrainSpec(steps=300, batch=32, warmup_steps=20, eval_every=100, eval_n=64, train_n=2000)


def _valid():
    return TASK.dataset(SPEC.eval_n, SPEC.seed, "valid")


@pytest.fixture(scope="module")
def selected_run():
    """One 300-step run of the draft that keeps the first evaluation (the only one below 3% step accuracy);
    the selection changes what is returned, never the training itself."""
    return train_model(draft_config("tiny"), TASK, SPEC, select=lambda acc: acc["step"] < 0.03, log=None)


def test_training_learns_the_steps(selected_run):
    _, history = selected_run
    untrained = nets.TransformerLM(draft_config("tiny"), rngs=nnx.Rngs(params=0))
    assert step_accuracy(untrained, _valid())["step"] == 0.0
    assert [h["step"] for h in history] == [100, 200, 300]
    assert history[-1]["step_accuracy"] > history[0]["step_accuracy"] + 0.03


def test_selection_keeps_the_named_evaluation_and_the_target_stops_at_its_accuracy(selected_run):
    # select: the latest evaluation it accepts is kept (here only the first one); training goes on
    chosen, history = selected_run
    assert len(history) == 3 and history[0]["step_accuracy"] < 0.03 <= history[-1]["step_accuracy"]
    assert step_accuracy(chosen, _valid())["step"] == pytest.approx(history[0]["step_accuracy"])
    # stop_at_step_accuracy: the first evaluation at or above it ends training, and (no selection) the
    # model returned is the one last evaluated; the same seed follows the same trajectory up to there
    stopped, first = train_model(draft_config("tiny"), TASK, SPEC, stop_at_step_accuracy=0.0, log=None)
    assert [h["step"] for h in first] == [100]
    assert first[0]["step_accuracy"] == history[0]["step_accuracy"]
    assert step_accuracy(stopped, _valid())["step"] == pytest.approx(first[-1]["step_accuracy"])


def test_a_saved_model_loads_back_to_the_same_function(tmp_path):
    """... in the compute dtype it was saved with (bfloat16 here; float32 is the default)."""
    model = nets.TransformerLM(draft_config("tiny"), rngs=nnx.Rngs(params=3), dtype=jnp.bfloat16)
    save_model(model, tmp_path / "m", {"task": dataclasses.asdict(TASK)})
    loaded, meta = load_model(tmp_path / "m")
    assert ArithTask(**{**meta["task"], "ops": tuple(meta["task"]["ops"])}) == TASK
    assert meta["compute_dtype"] == "bfloat16" and loaded.dtype == jnp.bfloat16
    tokens = jnp.asarray(_valid().inputs[:4])
    np.testing.assert_array_equal(np.asarray(model(tokens)[0]), np.asarray(loaded(tokens)[0]))
    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(nnx.state(loaded, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_training_spec_is_a_clear_error():
    with pytest.raises(ValueError, match="^warmup_steps="):
        TrainSpec(steps=10, warmup_steps=10)
    with pytest.raises(ValueError, match="^lr="):
        TrainSpec(lr=2.0)
    for bad in (0, -1.0, True, float("inf")):
        with pytest.raises(ValueError, match="^time_budget_s="):
            TrainSpec(time_budget_s=bad)
    with pytest.raises(ValueError, match="^dtype="):
        TrainSpec(dtype="float16")


def test_the_large_pair_has_the_sizes_a_draft_needs_to_pay():
    """A target of >= 100M params and a draft 20-50x smaller (shapes only: nothing is allocated)."""
    count = lambda cfg: nets.param_count(nnx.eval_shape(lambda: nets.TransformerLM(cfg, rngs=nnx.Rngs(params=0))))
    target, draft = count(target_config("large")), count(draft_config("large"))
    assert target >= 100e6 and 20 <= target / draft <= 50, (target, draft)
    assert task_for("large") == task_for("full")


@pytest.mark.slow
def test_a_time_budget_ends_training_by_the_clock():
    """A step cap it cannot reach: the run stops once its budget (compilation included) is spent, evaluates
    there, and has learnt (the rate warmed up and decayed with the elapsed time, on one compiled step)."""
    spec = dataclasses.replace(SPEC, steps=10**6, eval_every=10**6, time_budget_s=25.0)
    _, history = train_model(draft_config("tiny"), TASK, spec, log=None)
    (last,) = history
    assert 8 <= last["step"] < 10**6 and 25.0 <= last["elapsed_s"] < 60.0
    assert last["loss"] < 1.5


def test_every_large_draft_variant_is_20_to_50x_smaller_than_the_target_and_others_are_refused():
    size = lambda cfg: nets.param_count(nnx.eval_shape(lambda: nets.TransformerLM(cfg, rngs=nnx.Rngs(params=0))))
    target = size(target_config("large"))
    for variant in DRAFT_VARIANTS:
        assert 20 <= target / size(draft_config("large", variant)) <= 50, variant
    assert draft_config("large", "kv2").attention.n_kv_heads == 2
    with pytest.raises(ValueError, match="^variant='kv2': for size 'tiny' must be one of: base"):
        draft_config("tiny", "kv2")
    with pytest.raises(ValueError, match="^variant='wide'"):
        draft_config("large", "wide")
