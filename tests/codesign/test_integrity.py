"""Deployment integrity without training: a sealed record over a small stand-in checkpoint, tampered four ways.

(The end-to-end variants over a real sweep's checkpoints are in test_sweep.py.) `codesign verify`
checks the digests before it rebuilds anything, so each rejection here costs no compile.
"""

import json
import shutil

import pytest

import codesign
from codesign import write_deployment

RECORD = {"schema_version": codesign.SCHEMA_VERSION, "kind": "codesign.deployment", "model": {}, "design_space": {},
          "hardened": {}, "target": {}, "scenario": {}, "objective": {}, "cost": {}, "validation": {"loss": 1.0},
          "checkpoint": {"path": "ckpt", "step": 3}, "train": {}, "provenance": {}}


@pytest.fixture
def sealed(tmp_path):
    for step, fill in ((3, b"a"), (6, b"b")):
        (tmp_path / "ckpt" / str(step) / "default").mkdir(parents=True)
        (tmp_path / "ckpt" / str(step) / "default" / "array").write_bytes(fill * 4096)
        (tmp_path / "ckpt" / str(step) / "_METADATA").write_text("{}")
    path = tmp_path / "deployment.json"
    write_deployment(path, RECORD)
    return path


def test_the_seal_records_every_checkpoint_file_and_loads_back(sealed):
    record = codesign.load_deployment(sealed)
    assert sorted(record["checkpoint"]["sha256"]) == ["3/_METADATA", "3/default/array"]
    assert len(record["integrity"]["record_sha256"]) == 64


def _swap(path):
    shutil.rmtree(path.parent / "ckpt" / "3")
    shutil.copytree(path.parent / "ckpt" / "6", path.parent / "ckpt" / "3")


def _flip(path):
    f = path.parent / "ckpt" / "3" / "default" / "array"
    data = bytearray(f.read_bytes())
    data[100] ^= 0x10
    f.write_bytes(bytes(data))


def _extra(path):
    (path.parent / "ckpt" / "3" / "default" / "extra").write_bytes(b"x")


def _edit(path):
    record = json.loads(path.read_text())
    record["validation"]["loss"] = 0.5
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("tamper, field", [(_swap, "checkpoint.sha256"), (_flip, "checkpoint.sha256"),
                                           (_extra, "checkpoint.sha256"), (_edit, "integrity.record_sha256")])
def test_verify_rejects_tampering_with_one_line_and_exit_2(sealed, codesign_main, tamper, field):
    tamper(sealed)
    result = codesign_main("verify", str(sealed))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "deployment.json" in lines[0], result.stderr
