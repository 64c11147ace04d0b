"""`atts_gpu_pair.py --state DIR`: the phases that do not depend on the evaluation (the trained pair, the chain
level, the draft chosen, the cost ratio, the calibration bank) kept on the machine's disk.

A lent GPU keeps ignored files between calls while it stays warm, but one call lasts at most 600 s: with a
state folder, one call trains and calibrates (`--stop-after calibration`), and the next ones, on the same
machine, load that and spend their whole budget on evaluation runs. A state is tied to the settings it was
made with (`SETTINGS`): a call with other settings is refused, naming the settings that differ.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from nets import InputError, atomic_write_json
from codesign.atts import load_model, save_model

# the options a kept phase depends on (the evaluation's own options, e.g. --alphas or --ms, are free)
SETTINGS = ("task", "tiny", "seed", "m", "max_turns", "max_chunk", "buf_len", "dtype", "batch_questions",
            "max_calibration", "chain_level", "chain_aim", "chain_steps", "draft", "n_accuracy",
            "draft_select")


class PairState:
    """The phases kept under `path`: phases.json (each phase's report entry), target/ and draft/ (`save_model`)
    and bank.npz (the calibration scores, as `save_bank` wrote them)."""

    def __init__(self, path: str | Path, args):
        self.path = Path(path)
        self.settings = {k: getattr(args, k) for k in SETTINGS}
        saved_file = self.path / "settings.json"
        if saved_file.exists():
            saved = json.loads(saved_file.read_text())
            differ = sorted(k for k in set(saved) | set(self.settings) if saved.get(k) != self.settings.get(k))
            if differ:
                raise InputError("--state", str(path), "holds phases made with other settings ("
                                 + ", ".join(f"{k}: {saved.get(k)!r} there, {self.settings.get(k)!r} now"
                                             for k in differ) + "); use another folder or the same options")
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_json(saved_file, self.settings)
        phases_file = self.path / "phases.json"
        self.phases = json.loads(phases_file.read_text()) if phases_file.exists() else {}

    def has(self, name: str) -> bool:
        return name in self.phases

    def keep(self, name: str, entry: dict, model=None) -> None:
        """Record a finished phase's report entry (and its model, saved under `name`'s role)."""
        if model is not None:
            save_model(model, self.path / name.removeprefix("train_"))
        self.phases[name] = entry
        atomic_write_json(self.path / "phases.json", self.phases)

    def entry(self, name: str) -> dict:
        """A kept phase's report entry, marked as loaded from this state."""
        return {**self.phases[name], "from_state": str(self.path)}

    def model(self, name: str):
        return load_model(self.path / name.removeprefix("train_"))[0]

    def keep_bank(self, bank_file: Path) -> None:
        shutil.copyfile(bank_file, self.path / "bank.npz")

    def bank_to(self, bank_file: Path) -> None:
        shutil.copyfile(self.path / "bank.npz", bank_file)
