"""Fit a GPU's energy above idle to measured board power: a busy power, an energy per FLOP and per byte.

A kernel data file measured with board power (`scripts/bench/cost_suite.py --power`) gives,
per item, the energy per call above the idle power E and the seconds per call t while the
power was sampled. With the item's FLOPs F and HBM bytes B (`item_kernels`, the counts the
cost model prices), the fit is

    E = a * t + b * F + c * B,      a [W] >= 0, b [J/FLOP] >= 0, c [J/byte] >= 0,

by non-negative least squares on the relative residual (each item's row divided by its E, so
a 10 us kernel weighs as much as a 30 ms step), on the training items of the same held-out
split the time fit uses (`load_data`: `split_heldout` over shape families). a is the power the
board draws above idle whenever it runs anything (clocks up, the SMs and the memory busy),
which no per-FLOP or per-byte term explains; b and c are the dynamic energies of the work.
Items whose energy is not above idle (noise on a tiny kernel) are left out and listed.

The least squares are solved exactly for three terms: each subset of the terms is fitted
unconstrained (numpy's lstsq, columns scaled to unit norm) and the best fit whose
coefficients are all non-negative is kept (the non-negative optimum is the unconstrained
optimum on its own support).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

import nets
from hwcost.calibration._data import load_data, read_data

ENERGY_TERMS = ("busy_w", "joules_per_flop", "joules_per_byte")
"""The fitted coefficients: W per busy second, J per FLOP, J per HBM byte."""


def _nonnegative_lstsq(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """argmin ||a x - y|| over x >= 0, exactly, for a few columns (every support tried; module docstring)."""
    a, y = np.asarray(a, np.float64), np.asarray(y, np.float64)
    if a.ndim != 2 or a.shape[1] > 8 or a.shape[0] != y.shape[0]:
        raise ValueError(f"a: shape {a.shape} against y {y.shape}: must be (items, at most 8 terms)")
    norms = np.linalg.norm(a, axis=0)
    scaled = a / np.where(norms > 0, norms, 1.0)
    best, best_x = float(np.sum(y ** 2)), np.zeros(a.shape[1])
    for size in range(1, a.shape[1] + 1):
        for support in itertools.combinations(range(a.shape[1]), size):
            cols = [c for c in support if norms[c] > 0]
            if len(cols) != size:
                continue
            coef = np.linalg.lstsq(scaled[:, cols], y, rcond=None)[0]
            if np.any(coef < 0):
                continue
            residual = float(np.sum((scaled[:, cols] @ coef - y) ** 2))
            if residual < best - 1e-15 * max(best, 1.0):
                best, best_x = residual, np.zeros(a.shape[1])
                best_x[cols] = coef
    return best_x / np.where(norms > 0, norms, 1.0)


@dataclasses.dataclass(frozen=True)
class EnergyFit:
    """The fitted energy terms and, per item used, its measured and predicted energy above idle [J].

    busy_w [W], joules_per_flop [J/FLOP], joules_per_byte [J/byte] (ENERGY_TERMS); ids,
    kinds, heldout [item] of the items used; busy_s, flops, bytes [item]: the features;
    skipped: ids of items with power whose energy was not above idle.
    """

    busy_w: float
    joules_per_flop: float
    joules_per_byte: float
    ids: tuple[str, ...]
    kinds: tuple[str, ...]
    heldout: np.ndarray
    busy_s: np.ndarray
    flops: np.ndarray
    bytes: np.ndarray
    measured_j: np.ndarray
    skipped: tuple[str, ...] = ()

    def predict(self, busy_s, flops, bytes_) -> np.ndarray:
        """Energy above idle [J] of work of `busy_s` seconds, `flops` FLOPs and `bytes_` HBM bytes."""
        return self.busy_w * np.asarray(busy_s) + self.joules_per_flop * np.asarray(flops) \
            + self.joules_per_byte * np.asarray(bytes_)

    @property
    def predicted_j(self) -> np.ndarray:
        return self.predict(self.busy_s, self.flops, self.bytes)

    def errors(self) -> dict:
        """Mean absolute percentage error (a fraction) by split ("train", "heldout"), overall and per kind."""
        rel = np.abs(self.predicted_j / self.measured_j - 1.0)
        out = {}
        for split, mask in (("train", ~self.heldout), ("heldout", self.heldout)):
            by_kind = {k: float(np.mean(rel[mask & (np.asarray(self.kinds) == k)]))
                       for k in sorted(set(np.asarray(self.kinds)[mask]))}
            out[split] = {"n": int(mask.sum()), "mape": float(np.mean(rel[mask])) if mask.any() else None,
                          "by_kind": by_kind}
        return out

    def table(self) -> str:
        """The fit and its errors as text."""
        e = self.errors()
        lines = [f"energy above idle = {self.busy_w:.4g} W x busy s + {self.joules_per_flop * 1e12:.4g} pJ/FLOP x FLOPs"
                 f" + {self.joules_per_byte * 1e12:.4g} pJ/byte x HBM bytes  ({e['train']['n']} training items, "
                 f"{e['heldout']['n']} held out; {len(self.skipped)} not above idle, left out)",
                 f"{'kind':<16}{'train n':>8}{'train':>9}{'held n':>8}{'held out':>10}"]
        for kind in sorted(set(self.kinds)):
            n_tr = sum(1 for k, h in zip(self.kinds, self.heldout) if k == kind and not h)
            n_ho = sum(1 for k, h in zip(self.kinds, self.heldout) if k == kind and h)
            tr, ho = e["train"]["by_kind"].get(kind), e["heldout"]["by_kind"].get(kind)
            lines.append(f"{kind:<16}{n_tr:>8}{_pct(tr):>9}{n_ho:>8}{_pct(ho):>10}")
        lines.append(f"{'all':<16}{e['train']['n']:>8}{_pct(e['train']['mape']):>9}{e['heldout']['n']:>8}"
                     f"{_pct(e['heldout']['mape']):>10}")
        return "\n".join(lines)


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def fit_energy(source, fraction: float = 0.25) -> EnergyFit:
    """Fit energy above idle = a * busy time + b * FLOPs + c * bytes (module docstring) on a data file with power.

    `source`: as `load_data` (a path, a dict, or parts for `merge_data`). Uses the items with a
    `power` record (`energy_above_idle_j`, `seconds_per_call`); the split is `load_data`'s.
    """
    data, name = read_data(source)
    kernels = load_data(data, fraction)
    power = {i.get("id"): i.get("power") for i in data.get("items", []) if isinstance(i, dict)}
    n_items = len(kernels.ids)
    flops = np.bincount(kernels.item_of_row, kernels.kernels["flops"] * kernels.kernels["launches"], n_items)
    moved = np.bincount(kernels.item_of_row, kernels.kernels["bytes"] * kernels.kernels["launches"], n_items)
    used, skipped, busy, energy = [], [], [], []
    for n, item_id in enumerate(kernels.ids):
        p = power.get(item_id)
        if not isinstance(p, dict) or p.get("energy_above_idle_j") is None:
            continue
        e, t = p["energy_above_idle_j"], p.get("seconds_per_call")
        for field, value in (("energy_above_idle_j", e), ("seconds_per_call", t)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                nets.fail(f"items[{item_id}].power.{field}", value, "must be a finite number", file=name)
        if not t > 0:
            nets.fail(f"items[{item_id}].power.seconds_per_call", t, "must be positive (seconds)", file=name)
        if e <= 0:
            skipped.append(item_id)
            continue
        used.append(n)
        busy.append(t)
        energy.append(e)
    used = np.asarray(used, int)
    heldout = kernels.heldout[used] if len(used) else np.zeros(0, bool)
    if int((~heldout).sum()) < len(ENERGY_TERMS):
        nets.fail("data.items", f"{int((~heldout).sum())} training items with power above idle",
                  f"need at least {len(ENERGY_TERMS)} (run scripts/bench/cost_suite.py --power on an NVIDIA GPU)",
                  file=name)
    busy, energy = np.asarray(busy), np.asarray(energy)
    features = np.stack([busy, flops[used], moved[used]], axis=1)
    train = ~heldout
    coef = _nonnegative_lstsq(features[train] / energy[train, None], np.ones(int(train.sum())))
    return EnergyFit(busy_w=float(coef[0]), joules_per_flop=float(coef[1]), joules_per_byte=float(coef[2]),
                     ids=tuple(kernels.ids[n] for n in used), kinds=tuple(kernels.kinds[n] for n in used),
                     heldout=heldout, busy_s=busy, flops=flops[used], bytes=moved[used], measured_j=energy,
                     skipped=tuple(skipped))
