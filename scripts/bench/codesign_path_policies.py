"""Exploration for the fair protocol's search-speed figure: which way of walking the gradient path reaches the
best black-box hypervolume soonest, measured on search seeds the protocol's report does NOT use (3, 4, 5).

    PYTHONPATH=. python scripts/bench/codesign_path_policies.py --seeds 3 4 5

Everything is `codesign_protocol.py`'s (same tiny4 pretraining, space, signals, reference, random / TPE with 40
PTQ evaluations each); only the path's walk changes: ascending or descending lambdas, a fixed 16 steps per
lambda or a segment stopped once its hardened design is unchanged for `patience` steps (`min_steps` at least);
and, for the fixed walks, the path's signal: the protocol's ("loss", the hardened design's loss at the path's
weights) or "damage" (that loss minus the bf16 loss at the same weights plus the pretrained bf16 loss: the
extra training of the path's weights removed, see codesign_protocol.py --path-signal).
The path's step is compiled once before any timing (a throwaway seed), so every ratio excludes compilation.
Writes --out (JSON): per policy and seed the ratio (black-box time / path time to the black box's final
hypervolume of the search signals; None = the path never reaches it), both times, the steps per segment.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import codesign_protocol as P  # noqa: E402
from codesign import hv_curve, speedup  # noqa: E402
from nets import atomic_write_json  # noqa: E402

POLICIES = {"ascending, 16 steps": ("ascending", 0, 1, "loss"), "ascending, patience 3": ("ascending", 3, 4, "loss"),
            "descending, 16 steps": ("descending", 0, 1, "loss"), "descending, patience 3": ("descending", 3, 4, "loss"),
            "descending, patience 2": ("descending", 2, 2, "loss"),
            "ascending, 16 steps, damage signal": ("ascending", 0, 1, "damage"),
            "descending, 16 steps, damage signal": ("descending", 0, 1, "damage")}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5])
    p.add_argument("--out", default="results/codesign/path_policies.json")
    cli = p.parse_args(argv)
    a = argparse.Namespace(model="tiny4", budget_formats=[f for _, f in P.BUDGET_FORMATS], formats=list(P.FORMATS),
                           quick=False, reduced=True, seeds=5, pretrain_steps=150, retrain_steps=40, path_steps=16,
                           lams=[0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0], trials=40, fisher_batches=4,
                           path_signal="loss", batch=8, seq_len=64, lr=3e-3, finetune_lr=1e-3, knob_lr=0.1,
                           eval_batches=4, path_order="ascending", path_patience=0, path_min_steps=1)
    t0 = time.perf_counter()
    log = lambda m: print(f"[{time.perf_counter() - t0:7.1f}s] {m}", flush=True)  # noqa: E731
    b = P.Bench(a, P.diag.model_spec("tiny4", Path(tempfile.mkdtemp())), log)
    reference = (max(b.ptq([f] * b.n) for f in a.formats) + 0.05, math.log10(b.cost(["bf16"] * b.n)))
    P.gradient_path(b, 99)  # compiles the path's step outside every timing
    out = {"config": vars(cli), "reference": list(reference), "policies": {}}
    for seed in cli.seeds:
        blackbox = {"random": P.random_search(b, seed), "tpe": P.tpe_search(b, seed)}
        for name, (order, patience, min_steps, signal) in POLICIES.items():
            a.path_order, a.path_patience, a.path_min_steps, a.path_signal = order, patience, min_steps, signal
            rows = P.gradient_path(b, seed)
            curves = {n: hv_curve([{"val_loss": r["signal"], "cost": r["cost"], "t_s": r["t_s"]} for r in rs], reference)
                      for n, rs in {**blackbox, "gradient path": rows}.items()}
            sp = speedup(curves, gradient="gradient path")
            out["policies"].setdefault(name, []).append(
                {"seed": seed, "ratio": sp["ratio"], "path_time_s": sp["gradient_time_s"],
                 "blackbox_time_s": sp["blackbox_time_s"], "path_final_hv": sp["final_hv"]["gradient path"],
                 "target_hv": sp["target_hv"], "steps": [r["steps"] for r in rows]})
            log(f"seed {seed} {name}: ratio {sp['ratio']}, steps {[r['steps'] for r in rows]}")
    atomic_write_json(Path(cli.out), out)
    for name, runs in out["policies"].items():
        print(f"{name}: " + ", ".join("-" if r["ratio"] is None else f"{r['ratio']:.2f}x" for r in runs))
    return out


if __name__ == "__main__":
    main()
