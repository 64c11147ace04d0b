"""scripts/bench/codesign_protocol.py: the fair protocol's statistics and one quick end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

_ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("codesign_protocol_script", _ROOT / "scripts" / "bench" /
                                               "codesign_protocol.py")
proto = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = proto
_spec.loader.exec_module(proto)


def _uniform(costs_losses):
    return [{"cost": c, "losses": list(ls)} for c, ls in costs_losses]


def test_front_is_the_lower_envelope_interpolated_in_log_cost():
    uniform = _uniform([(1.0, [3.0]), (100.0, [1.0]), (10.0, [5.0])])  # the 10-cost point is dominated
    assert proto.front_at(uniform, 100.0, 0) == 1.0
    assert proto.front_at(uniform, 10.0, 0) == pytest.approx(2.0)  # halfway in log10 between (0, 3) and (2, 1)
    assert math.isnan(proto.front_at(uniform, 0.5, 0))  # nothing uniform is that cheap


def test_paired_rule_needs_more_than_two_pooled_seed_stds():
    joint = [1.00, 1.01, 0.99, 1.00, 1.00]
    clear = proto.paired(joint, [x + 0.1 for x in joint])
    assert clear["beats"] and clear["mean_diff"] == pytest.approx(0.1)
    assert clear["ci95"][0] == pytest.approx(0.1) and clear["ci95"][1] == pytest.approx(0.1)
    noisy = proto.paired(joint, [1.02, 0.98, 1.03, 0.99, 1.01])
    assert not noisy["beats"]


@pytest.mark.slow
def test_quick_protocol_end_to_end(tmp_path):
    rec = proto.main(["--quick", "--seeds", "2", "--pretrain-steps", "4", "--retrain-steps", "2", "--path-steps",
                      "3", "--lams", "0", "1", "--trials", "3", "--fisher-batches", "1", "--path-order", "descending",
                      "--path-patience", "1", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "protocol_quick.json").read_text())
    assert saved["reduced"] and (tmp_path / "protocol_quick.png").exists()
    assert [r["lam"] for r in saved["path_rows"]] == [1.0, 0.0]  # descending: the cheapest end first
    assert all(1 <= r["steps"] <= 3 for r in saved["path_rows"])
    costs = [r["budget_cost"] for r in rec["budgets"]]
    assert costs[0] > costs[1] > costs[2]  # Posit(8,0) > MXFP4 (4.25 bits) > Posit(4,1)
    for r in rec["budgets"]:
        hawq = r["designs"]["hawq"]
        assert hawq["within_budget"] and len(hawq["losses"]) == 2 and np.isfinite(hawq["losses"]).all()
    assert all(np.isfinite(u["losses"]).all() for u in rec["uniform"])


@pytest.mark.parametrize("target,metric", [("xrnpe", "energy"), ("h100-sxm", "latency")])
def test_pricing_cost_equals_design_cost(target, metric):
    """`Pricing.cost` (one compiled function of the bits, memoised) prices a design as `codesign.design_cost` does."""
    import argparse

    import nets
    from codesign import design_cost

    cfg = nets.zoo.default_config().replace(**proto.QUICK)
    a = argparse.Namespace(formats=list(proto.FORMATS), target=target, metric=metric, knob_lr=0.1)
    b = proto.Pricing(a, cfg)
    designs = [[f] * b.n for f in proto.FORMATS] + [["bf16", "mxfp4"], ["posit(4,1)@channel", "fp8_e4m3@channel"]]
    for formats in designs:
        want = design_cost(cfg, b.space, b.design(formats), b.target, b.scenario, metric)["metric_value"]
        assert b.cost(formats) == pytest.approx(want, rel=1e-6)
        assert b.cost(formats) == b.cost(list(formats))  # memoised: the same number again
    assert b.cost(["fp4_e2m1@channel"] * b.n) < b.cost(["bf16"] * b.n)
