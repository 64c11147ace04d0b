"""Calibration banks: the target's scores of draft chunks, collected, stored with their settings, and turned
into a calibrator.

A bank is only valid for the turns and the model pair it was collected with, so `save_bank` stores
those settings (`bank_settings`, with a hash of both models' parameters) and `load_bank` refuses a
file collected with others.
"""

from __future__ import annotations

import hashlib
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import nets
from nets import InputError
from codesign.atts._calibrators import ACI, Mondrian, SlidingWindow, StaticBank
from codesign.atts._pooled import PooledMondrian
from codesign.atts._turn_guarantee import joint_min_bank
from codesign.atts._runner import run_batched
from codesign.atts._state import PipelineConfig

CALIBRATORS = ("static", "window", "mondrian", "pooled", "aci")


def collect_bank(draft, target, problems, *, m: int, max_turns: int, key: jax.Array,
                 batch_questions: int = 128, **config) -> np.ndarray:
    """Calibration scores (Q, m, T): the target's mean NLL of every draft chunk of `problems` when the
    draft writes alone (mode "calibrate"); NaN where a sample had no such turn."""
    cfg = PipelineConfig(mode="calibrate", m=m, max_turns=max_turns, **config)
    return run_batched(draft, target, problems, cfg, key=key, batch_questions=batch_questions).scores


def bank_settings(draft, target, *, max_turns: int, turn_end_prob: float, max_chunk: int, buf_len: int,
                  **extra) -> dict:
    """What a calibration bank depends on: the turns' settings and the pair (a short hash of both models'
    parameters), plus `extra` (e.g. questions, m, seed). Stored with the bank by `save_bank`."""
    digest = hashlib.sha256()
    for model in (draft, target):
        for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)):
            digest.update(np.asarray(leaf).tobytes())
    return dict(max_turns=max_turns, turn_end_prob=turn_end_prob, max_chunk=max_chunk, buf_len=buf_len,
                models=digest.hexdigest()[:16], **extra)


def save_bank(path, scores_QxmxT, settings: dict) -> None:
    """Write calibration scores and the settings they were collected with (npz: 'scores', 'settings')."""
    buffer = io.BytesIO()
    np.savez(buffer, scores=np.asarray(scores_QxmxT, np.float32), settings=json.dumps(settings, sort_keys=True))
    nets.atomic_write(path, buffer.getvalue())


def load_bank(path, settings: dict | None = None) -> np.ndarray:
    """Calibration scores (Q, m, T) from `save_bank` (or any npz with 'scores'). With `settings`, every one
    the file recorded must match (a bank collected with other turns or models would give wrong rates)."""
    from codesign.atts._bank_file import read_bank_file  # sizes and dtype checked before loading

    scores, saved = read_bank_file(path)
    here = json.loads(json.dumps(settings or {}))   # as the file holds them (tuples become lists)
    differ = {k: (saved[k], v) for k, v in here.items() if k in saved and saved[k] != v}
    if differ:
        detail = "; ".join(f"{k}: file {a!r}, here {b!r}" for k, (a, b) in sorted(differ.items()))
        raise InputError("bank", str(path), f"was collected with other settings ({detail}); collect a new one")
    return scores


def make_calibrator(name: str, bank_QxmxT, *, alpha: float, max_turns: int, window: int = 512,
                    gamma: float = 0.005, min_bank: int | None = None):
    """A calibrator of `CALIBRATORS` and its initial state from calibration scores (Q, m, T).

    static: the turn-0 scores only, never updated (ATTS' released code). window: the last `window`
    scores in turn order, then every new score. mondrian: one bank per turn (capacity: the largest
    count of any turn), updated per turn. pooled: Mondrian's banks, a turn with fewer than `min_bank`
    scores pooled with its neighbouring turns (`PooledMondrian`; default min_bank
    `joint_min_bank(alpha, max_turns)`: every turn's rate within 0.02 of alpha with probability 0.95). aci: Gibbs & Candes'
    adaptive level over the static bank.
    """
    bank = np.asarray(bank_QxmxT, np.float32)
    if bank.ndim != 3:
        raise InputError("bank.shape", bank.shape, "must be (questions, m, turns)")
    if bank.shape[2] > max_turns:
        raise InputError("bank.shape", bank.shape, f"has more turns than max_turns={max_turns}")
    if np.isinf(bank).any():
        raise InputError("bank", "inf", "calibration scores must be finite (NaN marks a missing turn)")
    if not np.isfinite(bank[:, :, 0]).any():
        raise InputError("bank", "empty", "needs at least one finite turn-0 score")
    turn0 = bank[:, :, 0][np.isfinite(bank[:, :, 0])]
    by_turn = [bank[:, :, t][np.isfinite(bank[:, :, t])] for t in range(bank.shape[2])]
    if name == "static":
        cal = StaticBank(int(turn0.size))
        return cal, cal.init_state(jnp.asarray(turn0))
    if name == "aci":
        cal = ACI(float(alpha), float(gamma), StaticBank(int(turn0.size)))
        return cal, cal.init_state(jnp.asarray(turn0))
    if name == "window":
        flat = np.concatenate(by_turn)
        cal = SlidingWindow(int(window))
        return cal, cal.init_state(jnp.asarray(flat[-window:]))
    if name in ("mondrian", "pooled"):
        flat = np.concatenate(by_turn)
        ids = np.concatenate([np.full(x.size, t, np.int32) for t, x in enumerate(by_turn)])
        capacity = int(max(x.size for x in by_turn))
        if name == "mondrian":
            cal = Mondrian(int(max_turns), capacity)
        else:
            cal = PooledMondrian(int(max_turns), capacity, int(min_bank or joint_min_bank(float(alpha), int(max_turns))))
        return cal, cal.init_state(jnp.asarray(flat), turn_ids=jnp.asarray(ids))
    raise InputError("calibrator", name, f"must be one of {', '.join(CALIBRATORS)}")
