"""The ATTS tasks (codesign.atts._tasks): the chain task's level knob and its choice from measured accuracies,
the pipeline buffer a task needs, and the round trip of a task through its asdict (banks, checkpoints)."""

import dataclasses

import pytest

from codesign.atts import (ArithTask, ChainTask, PipelineConfig, chain_level_for, pipeline_buf_len, task_for,
                           task_from_dict)


def test_chain_level_interpolates_between_the_widths_that_bracket_the_aim():
    acc = {1: 0.99, 2: 0.95, 3: 0.80, 4: 0.40, 5: 0.05}
    level = chain_level_for(acc, 0.6)
    assert level == pytest.approx(3.5)
    # the mixture's expected accuracy at that level is the aim
    share = level - 3
    assert (1 - share) * acc[3] + share * acc[4] == pytest.approx(0.6)
    assert chain_level_for(acc, 0.95) == pytest.approx(2.0)
    assert chain_level_for({1: 0.3, 2: 0.1}, 0.6) == 1.0            # even the easiest is below: the easiest
    assert chain_level_for({1: 1.0, 2: 0.9}, 0.6) == 2.0            # even the hardest is above: the hardest
    assert chain_level_for({2: 0.9, 1: 1.0, 3: 0.7, 4: 0.65, 5: 0.2}, 0.6) == pytest.approx(4 + 0.05 / 0.45)
    with pytest.raises(ValueError, match="^aim="):
        chain_level_for(acc, 1.0)
    with pytest.raises(ValueError, match="^accuracy_by_width="):
        chain_level_for({}, 0.5)


def test_a_task_round_trips_through_its_dict_and_sets_its_level():
    for task in (task_for("tiny"), task_for("large"), task_for("tiny", "chain"), ChainTask(level=3.5)):
        assert task_from_dict(dataclasses.asdict(task)) == task
    chain = task_for("large", "chain")
    assert chain == ChainTask(2, 12, 1, 6) and chain.level is None and list(chain.widths) == [1, 2, 3, 4, 5, 6]
    at = chain.at_level(4)
    assert at.level == 4.0 and at.seq_len == chain.seq_len                  # one model serves every level
    assert {p.digits for p in at.dataset(50, 0, "test").problems} == {4}
    assert at.dataset(50, 0, "test").inputs.shape == (50, chain.seq_len)
    with pytest.raises(ValueError, match="^level="):
        ChainTask(level=0.5)
    with pytest.raises(ValueError, match="^max_steps="):
        ChainTask(min_steps=4, max_steps=2)
    with pytest.raises(ValueError, match="^kind="):
        task_for("tiny", "sudoku")


@pytest.mark.parametrize("task", [ArithTask(3, 12), ChainTask(), ChainTask(2, 6, 1, 3)])
@pytest.mark.parametrize("max_chunk", [12, 16])
def test_the_pipeline_buffer_holds_the_longest_example(task, max_chunk):
    """The engine ends a sample once its last byte is within max_chunk + 2 of the scratch space (the last
    max_chunk + 1 positions); the buffer must let the longest example's last turn start before that."""
    buf = pipeline_buf_len(task, max_chunk)
    PipelineConfig(buf_len=buf, max_chunk=max_chunk)
    assert buf % 32 == 0
    longest_committed_before_last_turn = task.max_text_len - 1
    assert longest_committed_before_last_turn - 1 + max_chunk + 2 < buf - (max_chunk + 1)
    assert pipeline_buf_len(ChainTask(), 16) == 320 and pipeline_buf_len(ArithTask(3, 12), 16) <= 256
