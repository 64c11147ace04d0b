"""scripts/bench/codesign_scale_report.py: a partial protocol state read back into verdicts (no training)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(_ROOT / "scripts" / "bench"))
import codesign_protocol as proto  # noqa: E402
import codesign_scale_report as rep  # noqa: E402


@pytest.mark.slow  # ~18 s: imports the protocol and prices every HAWQ move
def test_partial_state_gives_the_verdicts_its_retrainings_allow(tmp_path):
    formats = list(proto.FORMATS)
    a = argparse.Namespace(target="xrnpe", metric="energy", formats=formats, knob_lr=0.1)
    with tempfile.TemporaryDirectory() as work:
        b = proto.Pricing(a, proto.nets.load_config(proto.diag.model_spec("tiny4", Path(work))))
    n, f4 = b.n, "fp4_e2m1@channel"
    rng = np.random.default_rng(0)
    base = rng.normal(2.0, 0.01, 5)
    penalty = dict(zip(formats, (0.0, 0.0, 0.0, 0.002, 0.001, 0.004)))
    losses = {repr([f] * n): list(base + penalty[f] + rng.normal(0, 1e-4, 5)) for f in formats}
    mixed = ["bf16"] + [f4] * (n - 1)
    path_rows = [{"formats": [f4] * n, "cost": b.cost([f4] * n), "signal": 1.0, "lam": 1.0, "steps": 4}]
    random_rows = [{"formats": mixed, "cost": b.cost(mixed), "signal": 0.9}]  # never retrained
    key = "search " + repr(["xrnpe", "energy", [1.0], 4, "ascending", 0, 1, "loss", 1, 1, formats, 0.1])
    cache = {"settings": repr({"model": "tiny4"}), "losses": losses, "corpus": {"corpus": "stdlib"},
             key: {"timings": {}, "sens": np.ones((n, len(formats))).tolist(),
                   "searched": {"gradient path": path_rows, "random": random_rows, "tpe": []}}}
    path = tmp_path / "cache.json"
    path.write_text(json.dumps(cache))
    rec = rep.main([str(path), "--out", str(tmp_path / "r")])
    fp4 = next(u for u in rec["uniform"] if u["arm"] == "FP4")
    assert abs(fp4["vs_bf16"]["mean_diff"] - 0.002) < 5e-4  # paired: the arm minus BF16
    last = rec["budgets"][-1]  # Posit(4,1): the path's uniform FP4 is retrained (a uniform arm)
    assert last["designs"]["gradient path"]["losses"] and "vs_uniform_front" in last["verdict"]
    first = rec["budgets"][0]
    if "random" in first["designs"]:
        assert first["designs"]["random"]["mean"] is None and "vs_random" not in first["verdict"]
    assert not rec["tpe_ran"] and "TPE did not run" in (tmp_path / "r.md").read_text()
    assert (tmp_path / "r.png").stat().st_size > 10_000  # the plot of what was retrained
