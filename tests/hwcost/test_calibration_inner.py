"""scripts/calibration_inner.py: inner splits never touch the rule's held-out items and hold out whole families."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import hwcost

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "results" / "kernels_h200.json"


def _inner():
    spec = importlib.util.spec_from_file_location("calibration_inner", ROOT / "scripts" / "calibration_inner.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data(n_families: int = 12, per_family: int = 3):
    """A KernelData of GEMM and norm families (times unused: no fit here), split by the rule."""
    ids, kinds, families = [], [], []
    for f in range(n_families):
        kind = "gemm" if f % 2 else "norm"
        for m in range(per_family):
            ids.append(f"{kind}/f{f}/m{m}")
            kinds.append(kind)
            families.append(f"{kind}/f{f}")
    n = len(ids)
    data = hwcost.KernelData(ids=tuple(ids), kinds=tuple(kinds), measured_s=np.ones(n),
                             heldout=hwcost.split_heldout(tuple(ids), tuple(kinds), families=tuple(families)),
                             kernels={"group": np.zeros(n)}, item_of_row=np.arange(n), device={}, source="test")
    return data, tuple(families)


def test_inner_splits_hold_out_whole_training_families_and_never_the_rules_items():
    inner = _inner()
    data, families = _data()
    splits = inner.inner_splits(data, families, salts=(0, 1, 2, 3))
    outer_held = {i for i, h in zip(data.ids, data.heldout) if h}
    family = dict(zip(data.ids, families))
    assert outer_held
    masks = []
    for split in splits:
        assert not outer_held & set(split.ids)  # the rule's held-out items are dropped before anything
        assert len(split.ids) == len(data.ids) - len(outer_held)
        for kind in ("gemm", "norm"):  # per kind, whole families on each side
            held = {family[i] for i, h, k in zip(split.ids, split.heldout, split.kinds) if h and k == kind}
            kept = {family[i] for i, h, k in zip(split.ids, split.heldout, split.kinds) if not h and k == kind}
            assert held and kept and not held & kept
        masks.append(np.asarray(split.heldout))
    assert any(not np.array_equal(masks[0], m) for m in masks[1:])  # each salt holds out other families


def test_families_of_a_data_file_are_the_rules_families():
    if not DATA.is_file():
        pytest.skip(f"{DATA} is absent")
    items = hwcost.merge_data([str(DATA)])["items"]
    ids = tuple(i["id"] for i in items) + ("ceiling/copy",)
    families = _inner().families_of([str(DATA)], ids)
    assert families[:-1] == tuple(hwcost.item_family(i) for i in items) and families[-1] == "ceiling/copy"


def test_keep_lone_never_holds_out_the_only_training_family_of_a_kind():
    inner = _inner()
    data, families = _data(n_families=12)
    # one extra kind with a single family: the outer rule keeps it (one family cannot be split), so it is
    # in training; without keep_lone some salt holds it out, with keep_lone none does
    extra = [f"copy/f99/m{m}" for m in range(3)]
    n = len(data.ids) + len(extra)
    data = hwcost.KernelData(ids=data.ids + tuple(extra), kinds=data.kinds + ("elementwise",) * 3,
                             measured_s=np.ones(n), heldout=np.concatenate([data.heldout, np.zeros(3, bool)]),
                             kernels={"group": np.zeros(n)}, item_of_row=np.arange(n), device={}, source="test")
    families = families + ("copy/f99",) * 3
    salts = range(16)
    lone_held = lambda splits: [bool(np.any(s.heldout[-3:])) for s in splits]  # noqa: E731
    assert any(lone_held(inner.inner_splits(data, families, salts)))
    kept = inner.inner_splits(data, families, salts, keep_lone=True)
    assert not any(lone_held(kept))
    plain = inner.inner_splits(data, families, salts)
    for a, b in zip(plain, kept):  # the other kinds' splits are unchanged
        assert np.array_equal(a.heldout[:-3], b.heldout[:-3])
