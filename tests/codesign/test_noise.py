"""The seed spread a sweep's front is judged against: which differences are noise, how the table shows them,
and that the spread shipped with the package was measured for `codesign run`'s current settings."""

import json
from pathlib import Path

import numpy as np
import pytest

from codesign import (SweepConfig, SweepResult, beyond_noise, distinct_pairs, noise_marks, settings_of, spread_for,
                      spread_of, summary_table)

SPREAD = {"sd_loss": 0.01, "sd_log10_cost": 0.02, "runs": 3, "k_sd": 2.0}


def _row(loss, cost, lam=0.0):
    return {"lam": lam, "val_loss": loss, "cost": cost, "formats": ["bf16"], "kv_formats": [], "ffn_widths": [8]}


def test_beyond_noise_needs_both_loss_and_cost_past_two_spreads():
    a = _row(2.00, 1.0)
    assert beyond_noise(a, _row(2.03, 0.5), SPREAD)        # 3 sd in loss, log10 2 = 0.30 in cost
    assert not beyond_noise(a, _row(2.015, 0.5), SPREAD)   # 1.5 sd in loss
    assert not beyond_noise(a, _row(2.10, 0.95), SPREAD)   # log10(1/0.95) = 0.022 < 2 x 0.02
    assert distinct_pairs([a, _row(2.03, 0.5), _row(2.031, 0.49)], SPREAD) == [(0, 1), (0, 2)]


def test_marks_compare_each_front_point_with_the_next_cheaper_one():
    rows = [_row(2.00, 1.0), _row(2.005, 0.5), _row(2.10, 0.1), _row(2.2, 2.0)]
    mask = [True, True, True, False]
    assert noise_marks(rows, mask, SPREAD) == ["within noise", "distinct", "cheapest", ""]
    assert noise_marks(rows, mask, None) == ["unmeasured", "unmeasured", "unmeasured", ""]


def test_spread_of_is_the_per_point_sample_sd_and_its_maximum():
    runs = [[_row(2.0, 1.0), _row(2.1, 0.1)], [_row(2.02, 1.1), _row(2.1, 0.12)], [_row(2.01, 0.9), _row(2.16, 0.1)]]
    spread = spread_of(runs)
    loss = np.array([[2.0, 2.1], [2.02, 2.1], [2.01, 2.16]])
    assert spread["sd_loss"] == pytest.approx(loss.std(axis=0, ddof=1).max())
    cost = np.log10([[1.0, 0.1], [1.1, 0.12], [0.9, 0.1]])
    assert spread["sd_log10_cost"] == pytest.approx(cost.std(axis=0, ddof=1).max())
    assert spread["runs"] == 3 and len(spread["per_point"]) == 2
    with pytest.raises(ValueError, match="at least two runs"):
        spread_of(runs[:1])


def test_spread_applies_only_to_the_settings_it_was_measured_for(tmp_path):
    path = tmp_path / "noise.json"
    path.write_text(json.dumps({**SPREAD, "settings": settings_of(SweepConfig(seed=5))}))
    assert spread_for(SweepConfig(seed=0), path)["sd_loss"] == 0.01  # the seed is what varies
    assert spread_for(SweepConfig(steps=7), path) is None
    assert spread_for(SweepConfig(), tmp_path / "absent.json") is None


def test_the_shipped_spread_is_for_codesign_runs_settings():
    """Changing `codesign run`'s defaults needs a new measurement (scripts/codesign_noise.py)."""
    spread = spread_for(SweepConfig())
    assert spread is not None, "codesign/search/noise.json is missing or was measured for other settings"
    assert spread["runs"] >= 3 and spread["sd_loss"] > 0 and spread["sd_log10_cost"] >= 0
    assert len(spread["per_point"]) == len(SweepConfig().lams)
    # a setting added after the measurement counts at its default; any other value is other settings
    assert spread_for(SweepConfig(corpus="stdlib")) is not None
    assert spread_for(SweepConfig(corpus="stdlib+deps")) is None


def test_the_shipped_runs_fronts_are_a_trade_off_beyond_noise():
    """Every seed's front of the stored measurement has two points apart by more than the spread in loss and
    in cost (so `codesign run`'s defaults give a front with a real trade-off, not only seed noise), and the
    spread is the one its rows give."""
    spread = spread_for(SweepConfig())
    assert spread is not None
    recomputed = spread_of(spread["rows"])
    assert recomputed["sd_loss"] == pytest.approx(spread["sd_loss"])
    assert recomputed["sd_log10_cost"] == pytest.approx(spread["sd_log10_cost"])
    for seed, rows in zip(spread["seeds"], spread["rows"]):
        assert distinct_pairs(rows, spread), f"seed {seed}: no two points differ beyond noise: {rows}"


def test_table_marks_differences_within_noise():
    rows = [_row(2.0, 1.0, 0.0), _row(2.005, 0.5, 0.01), _row(2.10, 0.1, 0.1)]
    marks = noise_marks(rows, [True] * 3, SPREAD)
    result = SweepResult(out_dir=Path("."), rows=rows, front_mask=[True] * 3, hypervolume=0.1, reference=(2.2, 0.1),
                         chosen=1, extra={"marks": marks,
                                          "noise": {**SPREAD, "distinct_pairs": distinct_pairs(rows, SPREAD)}})
    table = summary_table(result).splitlines()
    assert table[1].endswith("within noise") and table[2].endswith("distinct") and table[3].endswith("cheapest")
    assert table[-1].endswith("2 point pairs differ beyond noise in both: 0-2, 1-2")
