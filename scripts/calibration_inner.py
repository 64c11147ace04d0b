"""Inner cross-validation of the calibration fit, on the training families only.

    PYTHONPATH=. python scripts/calibration_inner.py results/kernels_h100_20261207T16_suite.json \
        --target h100-sxm --salts 0 1 2 3 [--steps 3000] [--keep-lone] [--json OUT.json]

Model choices are made here, never on the held-out split: the items `hwcost.split_heldout`
holds out (the rule, fixed before any fit) are dropped first; the same rule is applied again
to the remaining training families with each salt (the salt prefixed to every family name,
so another quarter of the families is held out each time), the profile is fitted on the rest
and scored on those inner held-out families (`--keep-lone`: never a kind's only training
family, which would leave the fit no kernel of that kind). Reported per kind and end to end
(an inner held-out model's steps): the mean absolute percentage error over every inner
held-out item of every salt, and the same per salt.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np

import hwcost
import nets

MODEL_KINDS = ("decode_step", "prefill_step", "train_step")


def families_of(parts: list[str], ids: tuple[str, ...]) -> tuple[str, ...]:
    """The shape family (`hwcost.item_family`) of each id; an id with no item (a ceiling) is its own."""
    merged = hwcost.merge_data(parts)
    by_id = {item["id"]: hwcost.item_family(item) for item in merged["items"]}
    return tuple(by_id.get(i, i) for i in ids)


def inner_splits(data: hwcost.KernelData, families: tuple[str, ...], salts,
                 keep_lone: bool = False) -> list[hwcost.KernelData]:
    """The training items of `data`, once per salt, with the rule's split of the salted family names as held out.

    `keep_lone`: a kind with a single training family is never held out (the rule itself keeps
    a family of each kind with two or more on the training side; with one left after the outer
    split, an inner split could otherwise leave the kind no training item at all).
    """
    keep = ~np.asarray(data.heldout)
    train = data.subset(keep)
    fams = tuple(f for f, k in zip(families, keep) if k)
    out = []
    lone = _lone_kinds(train.kinds, fams) if keep_lone else set()
    for salt in salts:
        held = hwcost.split_heldout(train.ids, train.kinds, families=tuple(f"salt{salt}/{f}" for f in fams))
        held = held & ~np.isin(np.asarray([_pool(k) for k in train.kinds]), sorted(lone))
        out.append(dataclasses.replace(train, heldout=held))
    return out


def _pool(kind: str) -> str:
    """The group `hwcost.split_heldout` splits a kind in (the whole-step kinds share one: a model's steps)."""
    return "model" if kind in MODEL_KINDS else kind


def _lone_kinds(kinds, families) -> set[str]:
    """The kinds (`_pool`) with a single training family: an inner split must not take their only kernels."""
    seen: dict[str, set[str]] = {}
    for kind, family in zip(kinds, families):
        seen.setdefault(_pool(kind), set()).add(family)
    return {k for k, f in seen.items() if len(f) < 2}


def score(splits: list[hwcost.KernelData], base: str, steps: int, log=print) -> dict:
    """Fit each inner split and pool the absolute percentage errors of its held-out items (module docstring)."""
    pooled: dict[str, list[float]] = {}
    per_salt = []
    for n, split in enumerate(splits):
        t = time.perf_counter()
        _, report = hwcost.calibrate(split, base, steps=steps)
        predicted = np.asarray(report["calibrated"]["predicted_s"])
        ape = np.abs(predicted - split.measured_s) / split.measured_s
        mine: dict[str, list[float]] = {}
        for kind, a, held in zip(split.kinds, ape, split.heldout):
            if not held:
                continue
            group = "end_to_end" if kind in MODEL_KINDS else "kernels"
            for key in (kind, group):
                mine.setdefault(key, []).append(float(a))
        for key, values in mine.items():
            pooled.setdefault(key, []).extend(values)
        per_salt.append({k: float(np.mean(v)) for k, v in mine.items()})
        log(f"split {n + 1}/{len(splits)}: {int(split.heldout.sum())} inner held-out items, end to end "
            f"{_pct(per_salt[-1].get('end_to_end'))}, kernels {_pct(per_salt[-1].get('kernels'))} "
            f"({time.perf_counter() - t:.0f} s)")
    return {"pooled": {k: {"mape": float(np.mean(v)), "n": len(v)} for k, v in sorted(pooled.items())},
            "per_salt": per_salt}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table(result: dict) -> str:
    lines = [f"{'kind':<14}{'n':>5}{'inner MAPE':>12}   per salt"]
    for kind, row in result["pooled"].items():
        salts = " ".join(f"{_pct(s.get(kind)):>7}" for s in result["per_salt"])
        lines.append(f"{kind:<14}{row['n']:>5}{_pct(row['mape']):>12}   {salts}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+", help="kernel data files of one GPU (PATH or PATH:KIND,KIND, as merge_data)")
    p.add_argument("--target", default="h200", help="the datasheet preset to fit on")
    p.add_argument("--salts", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--json", default=None, help="write the result here too")
    p.add_argument("--keep-lone", action="store_true", help="never hold out a kind's only training family")
    args = p.parse_args(argv)
    if args.target.lower() not in hwcost.PRESETS and args.target.lower() not in ("h100", "h200-sxm"):
        nets.fail("--target", args.target, f"must be a datasheet preset ({', '.join(hwcost.PRESETS)})")
    data = hwcost.load_data(args.data if len(args.data) > 1 else args.data[0])
    result = score(inner_splits(data, families_of(args.data, data.ids), args.salts, keep_lone=args.keep_lone),
                   args.target, args.steps)
    result.update({"data": args.data, "target": args.target, "salts": args.salts, "steps": args.steps,
                   "keep_lone": args.keep_lone})
    print(table(result))
    if args.json:
        nets.atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
