"""What the fair protocol keeps between runs: the pretrained weights, the retrained losses, a deadline.

A lent GPU call lasts at most ten minutes and keeps ignored folders only while its machine stays warm,
so the GPU-scale protocol runs as a few calls with the same command and `--state DIR`:
- `PretrainCache`: the shared pretraining's weights and validation loss, saved once (``pretrained_<key>.npz``),
  keyed by everything that determines them (model, corpus, steps, batch, sequence, lr, warm-up, backend);
  a later call with the same key loads them instead of pretraining again;
- `RetrainCache`: every retrained design's per-seed losses (``protocol_retrain_cache[_quick].json``), written
  after each design; a later call with the same settings continues where the last one stopped;
- `Deadline`: a wall-clock limit; work that would not finish before it is not started, and the run stops with
  `OutOfTime` (what finished is saved; the same command continues).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from nets import atomic_write_json


class OutOfTime(RuntimeError):
    """The deadline came before the protocol finished; everything finished so far is in the state folder."""


class Deadline:
    """`check(need_s)` raises `OutOfTime` when fewer than `need_s` seconds are left (limit 0: none)."""

    def __init__(self, limit_s: float):
        self.limit_s, self.t0 = float(limit_s), time.perf_counter()

    def left(self) -> float:
        return float("inf") if self.limit_s <= 0 else self.limit_s - (time.perf_counter() - self.t0)

    def check(self, need_s: float, what: str) -> None:
        if self.left() < need_s:
            raise OutOfTime(f"{self.left():.0f} s left, {what} needs about {need_s:.0f} s")


def settings_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class PretrainCache:
    """The pretrained weights of `settings` in `folder` (``pretrained_<key>.npz``, leaves in tree order)."""

    def __init__(self, folder: Path, settings: dict[str, Any]):
        self.settings = settings
        self.path = Path(folder) / f"pretrained_{settings_key(settings)}.npz"

    def load(self, like: Any) -> tuple[Any, float] | None:
        """(params shaped as `like`, validation loss), or None when nothing (or something else) is stored."""
        if not self.path.exists():
            return None
        with np.load(self.path, allow_pickle=False) as z:
            if json.loads(str(z["settings"])) != json.loads(json.dumps(self.settings, default=str)):
                return None
            leaves, treedef = jax.tree.flatten(like)
            stored = [z[f"leaf{i}"] for i in range(len(leaves))]
            if any(s.shape != np.shape(x) for s, x in zip(stored, leaves)):
                return None
            return jax.tree.unflatten(treedef, stored), float(z["val_loss"])

    def save(self, params: Any, val_loss: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        leaves = [np.asarray(x) for x in jax.tree.leaves(params)]
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, settings=json.dumps(self.settings, default=str), val_loss=val_loss,
                 **{f"leaf{i}": x for i, x in enumerate(leaves)})
        tmp.replace(self.path)  # atomic: a cut save leaves the old file (or none), never half of one


class RetrainCache:
    """design -> per-seed retrained losses, saved after every design (a design chosen twice trains once)."""

    def __init__(self, path: Path, settings: str, deadline: Deadline):
        self.path, self.deadline = Path(path), deadline
        cache = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.cache = cache if cache.get("settings") == settings else {"settings": settings, "losses": {}}
        self.seconds: list[float] = []  # wall time of each retraining done in this process

    @property
    def losses(self) -> dict[str, list[float]]:
        return self.cache["losses"]

    def keep(self, key: str, value: Any) -> None:
        """Store a JSON-able `value` beside the losses (the searches' results) and save."""
        self.cache[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, self.cache)

    def get(self, formats: list[str], train: Callable[[list[str]], list[float]]) -> list[float]:
        key = repr(list(formats))
        if key not in self.losses:
            # the fastest retraining so far (the first in a process also compiles the step), with margin
            need = 1.5 * min(self.seconds) if self.seconds else 0.0
            self.deadline.check(need, f"retraining {key}")
            t = time.perf_counter()
            self.losses[key] = train(formats)
            self.seconds.append(time.perf_counter() - t)
            self.keep("losses", self.losses)
        return self.losses[key]
