"""Writing files atomically, and the one rule that turns a model spec into a `ModelConfig`.

Atomic write: the bytes go to a temporary file in the destination's folder, are flushed and
fsynced, then `os.replace` renames it over the destination. A reader (or a run killed half
way) sees the old file or the new one, never a half-written one; the rename is atomic
because both names are on one file system.

Model specs (`load_config`): a spec that ends in `.json` or contains a path separator is a
file path (a missing file is an error, never a silent zoo lookup); anything else is a zoo
name (`nets.zoo.get`, case-insensitive). Every command and library entry point that takes
a model (`--model`, `TrainConfig.model`, `codesign cost MODEL`) reads it through this rule.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from nets import zoo
from nets._config import ModelConfig
from nets._errors import InputError


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write `data` (text is UTF-8 encoded) to `path` atomically; create its folder. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, record: Any, *, indent: int = 2, **dumps_kwargs: Any) -> Path:
    """`atomic_write` of `json.dumps(record, indent=indent, sort_keys=True, **dumps_kwargs)` and a newline."""
    dumps_kwargs.setdefault("sort_keys", True)
    return atomic_write(path, json.dumps(record, indent=indent, **dumps_kwargs) + "\n")


def is_config_path(spec: str) -> bool:
    """Whether a model spec names a file (ends in `.json` or contains a path separator) rather than a zoo entry."""
    return spec.endswith(".json") or "/" in spec or os.sep in spec


def load_config(spec: str | Path) -> ModelConfig:
    """The `ModelConfig` a spec names: a JSON file path or a zoo name (rule in the module docstring)."""
    if isinstance(spec, Path):
        spec = str(spec)
    if not isinstance(spec, str) or not spec:
        raise InputError("model", spec, "must be a zoo name or a path to a ModelConfig JSON file")
    if not is_config_path(spec):
        return zoo.get(spec)
    path = Path(spec)
    if not path.is_file():
        raise InputError("model", spec, "no such JSON file (give a zoo name or an existing config path)")
    return ModelConfig.from_json(path.read_text())
