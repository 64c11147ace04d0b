"""The seed-to-seed spread of a sweep's points, and which differences between points it makes noise.

`noise.json` (shipped with the package, written by `scripts/codesign_noise.py`) holds the spread
measured once for `codesign run`'s settings: the same job run with several seeds (each seed changes
the initialisation, the batches and so the path the design takes), and for every lambda the standard
deviation across seeds of the validation loss [nats/byte] and of log10(cost); `sd_loss` and
`sd_log10_cost` are the largest of those over the lambdas (the conservative choice).

Two points differ beyond noise when BOTH their losses differ by more than `K_SD` = 2 of those
standard deviations and their log10 costs by more than 2 of theirs; otherwise the difference is
"within noise". The spread applies to the settings it was measured for (everything of the
`SweepConfig` except the seed and the output folder); for other settings `spread_for` returns None
and the table says the spread is unmeasured.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Sequence

NOISE_FILE = Path(__file__).with_name("noise.json")
K_SD = 2.0
_NOT_SETTINGS = ("seed",)


def settings_of(sc) -> dict[str, Any]:
    """The fields of a SweepConfig the spread depends on (JSON-comparable)."""
    d = json.loads(json.dumps(dataclasses.asdict(sc)))
    return {k: v for k, v in d.items() if k not in _NOT_SETTINGS}


def spread_for(sc, path: Path = NOISE_FILE) -> dict[str, Any] | None:
    """The stored spread if it was measured for `sc`'s settings, else None."""
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    if not isinstance(stored.get("settings"), dict):
        return None
    # a field added to SweepConfig after the spread was measured counts at its default value (e.g. corpus)
    defaults = {f.name: f.default for f in dataclasses.fields(sc) if f.default is not dataclasses.MISSING}
    measured = {**json.loads(json.dumps({k: v for k, v in defaults.items()
                                         if k not in stored["settings"] and k not in _NOT_SETTINGS})),
                **stored["settings"]}
    return stored if measured == settings_of(sc) else None


def beyond_noise(a: dict[str, Any], b: dict[str, Any], spread: dict[str, Any]) -> bool:
    """True when rows `a` and `b` differ by more than K_SD spreads in loss AND in log10 cost."""
    d_loss = abs(a["val_loss"] - b["val_loss"])
    d_cost = abs(math.log10(a["cost"]) - math.log10(b["cost"]))
    return d_loss > K_SD * spread["sd_loss"] and d_cost > K_SD * spread["sd_log10_cost"]


def noise_marks(rows: Sequence[dict[str, Any]], front_mask: Sequence[bool],
                spread: dict[str, Any] | None) -> list[str]:
    """Per row: for a front point, "distinct" or "within noise" against the next cheaper front point
    ("cheapest" for the cheapest one); "" for dominated points; "unmeasured" everywhere without a spread."""
    if spread is None:
        return ["unmeasured" if m else "" for m in front_mask]
    front = sorted((i for i, m in enumerate(front_mask) if m), key=lambda i: rows[i]["cost"])
    marks = [""] * len(rows)
    for pos, i in enumerate(front):
        if pos == 0:
            marks[i] = "cheapest"
        else:
            marks[i] = "distinct" if beyond_noise(rows[i], rows[front[pos - 1]], spread) else "within noise"
    return marks


def distinct_pairs(rows: Sequence[dict[str, Any]], spread: dict[str, Any]) -> list[tuple[int, int]]:
    """Every pair of rows (i < j) that differ beyond noise on both loss and cost."""
    return [(i, j) for i in range(len(rows)) for j in range(i + 1, len(rows)) if beyond_noise(rows[i], rows[j], spread)]


def spread_of(runs: Sequence[Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """The spread of several runs of the same settings (one list of rows per seed, the same points in
    the same order): per point the sample standard deviation of loss and log10 cost, and their maxima."""
    import numpy as np

    if len(runs) < 2 or len({len(r) for r in runs}) != 1:
        raise ValueError(f"runs: need at least two runs with the same number of points, got {[len(r) for r in runs]}")
    loss = np.array([[row["val_loss"] for row in run] for run in runs])
    cost = np.log10(np.array([[row["cost"] for row in run] for run in runs]))
    per_loss, per_cost = loss.std(axis=0, ddof=1), cost.std(axis=0, ddof=1)
    return {"sd_loss": float(per_loss.max()), "sd_log10_cost": float(per_cost.max()),
            "per_point": [{"sd_loss": float(a), "sd_log10_cost": float(b)} for a, b in zip(per_loss, per_cost)],
            "runs": len(runs), "k_sd": K_SD}


__all__ = ["K_SD", "NOISE_FILE", "beyond_noise", "distinct_pairs", "noise_marks", "settings_of", "spread_for",
           "spread_of"]
