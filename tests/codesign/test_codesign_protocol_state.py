"""scripts/bench/codesign_protocol_state.py: what the fair protocol keeps between calls (no training here)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(_ROOT / "scripts" / "bench"))
import codesign_protocol_state as state  # noqa: E402


def test_pretrained_weights_round_trip_only_under_the_same_settings(tmp_path):
    params = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [np.ones(4, np.float32)]}
    cache = state.PretrainCache(tmp_path, {"model": "m", "steps": 10})
    assert cache.load(params) is None
    cache.save(params, 1.25)
    loaded, loss = cache.load(params)
    assert loss == 1.25 and np.array_equal(loaded["a"], params["a"]) and np.array_equal(loaded["b"][0], params["b"][0])
    assert state.PretrainCache(tmp_path, {"model": "m", "steps": 11}).load(params) is None  # other settings
    wider = {"a": np.zeros((2, 4), np.float32), "b": [np.ones(4, np.float32)]}
    assert cache.load(wider) is None  # other shapes: not these weights


def test_retrain_cache_trains_a_design_once_and_survives_a_new_process(tmp_path):
    calls = []

    def train(formats):
        calls.append(list(formats))
        return [float(len(calls)), 2.0]
    path = tmp_path / "cache.json"
    cache = state.RetrainCache(path, "settings-1", state.Deadline(0))
    assert cache.get(["bf16", "fp8"], train) == [1.0, 2.0]
    assert cache.get(["bf16", "fp8"], train) == [1.0, 2.0] and len(calls) == 1
    cache.keep("search x", {"rows": [1, 2]})
    again = state.RetrainCache(path, "settings-1", state.Deadline(0))
    assert again.get(["bf16", "fp8"], train) == [1.0, 2.0] and len(calls) == 1
    assert again.cache["search x"] == {"rows": [1, 2]}
    other = state.RetrainCache(path, "settings-2", state.Deadline(0))  # other settings: nothing reused
    assert other.get(["bf16", "fp8"], train) == [2.0, 2.0]


def test_deadline_stops_before_work_that_would_not_finish(tmp_path):
    cache = state.RetrainCache(tmp_path / "c.json", "s", state.Deadline(1e-9))
    with pytest.raises(state.OutOfTime, match="retraining"):
        cache.seconds.append(1.0)  # one retraining took 1 s: the next needs about as long
        cache.get(["bf16"], lambda f: [0.0])
    assert state.Deadline(0).left() == float("inf")
