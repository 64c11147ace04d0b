"""Writing files atomically, and the one rule that turns a model spec into a `ModelConfig`.

Atomic write: the bytes go to a temporary file in the destination's folder, are flushed and
fsynced, then `os.replace` renames it over the destination. A reader (or a run killed half
way) sees the old file or the new one, never a half-written one; the rename is atomic
because both names are on one file system.

Model specs (`load_config`): a spec that ends in `.json`, contains a path separator or names
an existing directory is a path (a missing one is an error, never a silent zoo lookup);
anything else is a zoo name (`nets.zoo.get`, case-insensitive). A path is a JSON file, or a
directory holding `config.json`; the file is our `ModelConfig` JSON, or a Hugging Face
`config.json` (it has `model_type` or `architectures`; mapped by `nets.from_hf`). Every
command and library entry point that takes a model (`--model`, `TrainConfig.model`,
`codesign cost MODEL`) reads it through this rule.
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
    """Whether a model spec is a path (ends in `.json`, has a path separator, or is a directory), not a zoo name."""
    return spec.endswith(".json") or "/" in spec or os.sep in spec or Path(spec).is_dir()


def load_config(spec: str | Path, *, ignore: tuple[str, ...] = ()) -> ModelConfig:
    """The `ModelConfig` a spec names: a zoo name, or a path to our JSON or a Hugging Face config (rule above).

    `ignore`: Hugging Face fields to accept without mapping (see `nets.from_hf`).
    """
    if isinstance(spec, Path):
        spec = str(spec)
    if not isinstance(spec, str) or not spec:
        raise InputError("model", spec, "must be a zoo name or a path to a config JSON file (or its folder)")
    if not is_config_path(spec):
        return zoo.get(spec)
    path = Path(spec)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise InputError("model", spec, "no such JSON file (give a zoo name or an existing config path)")
    from nets._safe_read import read_json_file

    data = read_json_file(path, "model", what="a ModelConfig JSON or Hugging Face config.json")
    if not isinstance(data, dict):
        raise InputError("model", type(data).__name__, "must be a JSON object (ModelConfig or Hugging Face config)",
                         file=str(path))
    try:
        if "model_type" in data or "architectures" in data:
            from nets._hf_config import from_hf  # the Hugging Face mapping, read only for such files

            return from_hf(data, ignore=ignore)
        return ModelConfig.from_dict(data)
    except InputError as err:  # name the file the bad field came from (the HF mapping says "config.json (family)")
        where = str(path) if not err.file else err.file.replace("config.json", str(path), 1)
        raise err if str(path) in (err.file or "") else InputError(err.field, err.value, err.allowed,
                                                                   file=where) from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as err:
        # a value of the wrong type deep in the mapping: still one line naming the file
        what = f"missing key {err.args[0]!r}" if isinstance(err, KeyError) else " ".join(str(err).split())[:200]
        raise InputError("model", spec, f"not a valid ModelConfig or Hugging Face config ({what})",
                         file=str(path)) from None
