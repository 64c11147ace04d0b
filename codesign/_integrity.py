"""Integrity of a deployment file: SHA-256 of every checkpoint file it points at, and of itself.

`seal(record, folder)` adds two fields to a deployment record before it is written:

    checkpoint.sha256   {relative path: hex digest} of every file of the recorded checkpoint step
                        (paths relative to the checkpoint folder, sorted)
    integrity           {"algorithm": "sha256", "record_sha256": digest of the record's canonical
                         JSON (sorted keys, no spaces) without the `integrity` field}

`check_record(record, file)` recomputes the record digest (a modified deployment file fails);
`check_checkpoint(record, folder, file)` recomputes every checkpoint digest (a swapped,
modified, added or missing checkpoint file fails). Failures are `IntegrityError`, a
`ValueError` whose one-line message names the file, the field and what was expected;
`codesign verify` prints it and exits 2, as for any other rejected input file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

ALGORITHM = "sha256"
_CHUNK = 1 << 20


class IntegrityError(ValueError):
    """A deployment file or its checkpoint no longer matches the digests recorded at export."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def step_folder(ckpt_dir: Path, step: int) -> Path:
    """The folder of checkpoint `step` (orbax names step folders by the bare step number)."""
    return Path(ckpt_dir) / str(int(step))


def checkpoint_digests(ckpt_dir: str | Path, step: int) -> dict[str, str]:
    """{path relative to ckpt_dir: sha256} of every file of checkpoint `step`."""
    root = Path(ckpt_dir)
    folder = step_folder(root, step)
    if not folder.is_dir():
        raise IntegrityError(f"checkpoint={str(folder)!r}: no such step folder")
    return {p.relative_to(root).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def record_digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "integrity"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal(record: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """A copy of `record` with checkpoint digests (checkpoint path relative to `folder`) and its own digest."""
    out = json.loads(json.dumps(record))
    ckpt = out["checkpoint"]
    ckpt[ALGORITHM] = checkpoint_digests(Path(folder) / str(ckpt["path"]), ckpt["step"])
    out["integrity"] = {"algorithm": ALGORITHM, "record_sha256": record_digest(out)}
    return out


def check_record(record: dict[str, Any], file: str | Path) -> None:
    """The record's own digest matches (IntegrityError otherwise)."""
    seal_ = record.get("integrity")
    if not isinstance(seal_, dict) or seal_.get("algorithm") != ALGORITHM or not isinstance(
            seal_.get("record_sha256"), str):
        raise IntegrityError(f"{file}: integrity={seal_!r}: must be {{'algorithm': 'sha256', 'record_sha256': HEX}} "
                             f"(written by codesign run / sweep)")
    if record_digest(record) != seal_["record_sha256"]:
        raise IntegrityError(f"{file}: integrity.record_sha256: the file was modified after export "
                             f"(its content no longer hashes to the recorded digest)")


def check_checkpoint(record: dict[str, Any], ckpt_dir: str | Path, file: str | Path) -> None:
    """Every file of the recorded checkpoint step hashes to its recorded digest (IntegrityError otherwise)."""
    ckpt = record["checkpoint"]
    recorded = ckpt.get(ALGORITHM)
    if not isinstance(recorded, dict) or not recorded:
        raise IntegrityError(f"{file}: checkpoint.{ALGORITHM}={recorded!r}: must map every checkpoint file to its "
                             f"digest (written by codesign run / sweep)")
    try:
        actual = checkpoint_digests(ckpt_dir, ckpt["step"])
    except (TypeError, ValueError, OSError) as err:
        raise IntegrityError(f"{file}: checkpoint={str(ckpt_dir)!r}: cannot be hashed ({err})") from None
    for name in sorted(set(recorded) | set(actual)):
        if name not in actual:
            raise IntegrityError(f"{file}: checkpoint.{ALGORITHM}[{name!r}]: file missing from {str(ckpt_dir)!r}")
        if name not in recorded:
            raise IntegrityError(f"{file}: checkpoint.{ALGORITHM}: {str(ckpt_dir)!r} holds {name!r}, which the "
                                 f"deployment does not record (a swapped checkpoint)")
        if recorded[name] != actual[name]:
            raise IntegrityError(f"{file}: checkpoint.{ALGORITHM}[{name!r}]: the file was modified or swapped "
                                 f"(recorded {str(recorded[name])[:12]}..., found {actual[name][:12]}...)")
