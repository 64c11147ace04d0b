"""The shared error convention, the atomic write and the model-spec rule (nets.InputError, nets.atomic_write,
nets.load_config)."""

import json
import os
import pickle

import pytest

import nets


def test_input_error_names_file_field_value_and_allowed():
    err = nets.InputError("steps", "ten", "must be a positive integer", file="run.json")
    assert isinstance(err, ValueError)
    assert str(err) == "run.json: steps='ten': must be a positive integer"
    assert (err.field, err.value, err.allowed, err.file) == ("steps", "ten", "must be a positive integer", "run.json")
    assert str(nets.InputError("lr", -1.0, "must be > 0")) == "lr=-1.0: must be > 0"
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is nets.InputError and str(again) == str(err) and again.file == "run.json"


def test_fail_raises_input_error():
    with pytest.raises(nets.InputError, match=r"^batch=0: must be >= 1$"):
        nets.fail("batch", 0, "must be >= 1")


def test_atomic_write_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.json"
    nets.atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    nets.atomic_write(path, b"\x00binary")
    assert path.read_bytes() == b"\x00binary"
    assert os.listdir(path.parent) == ["a.json"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "a.json"
    nets.atomic_write_json(path, {"old": True})
    with pytest.raises(TypeError):
        nets.atomic_write_json(path, {"bad": object()})  # not JSON-serialisable: fails before any byte is written
    assert json.loads(path.read_text()) == {"old": True}
    assert os.listdir(tmp_path) == ["a.json"]


def test_load_config_reads_zoo_names_and_json_paths(tmp_path):
    assert nets.load_config("codesign-default") == nets.zoo.default_config()
    cfg = nets.zoo.default_config().replace(name="mine", max_seq_len=64)
    path = tmp_path / "mine.json"
    path.write_text(cfg.to_json())
    assert nets.load_config(str(path)) == cfg
    assert nets.load_config(path) == cfg


@pytest.mark.parametrize("spec, message", [
    ("missing.json", "no such JSON file"),            # a .json spec is a path even without a separator
    ("configs/missing", "no such JSON file"),          # a separator makes it a path even without .json
    ("no-such-model", "not in the zoo"),
    ("", "must be a zoo name or a path"),
])
def test_load_config_errors_name_the_spec(tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message) as info:
        nets.load_config(spec)
    assert f"model={spec!r}" in str(info.value)
