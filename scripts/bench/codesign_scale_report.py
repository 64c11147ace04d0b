"""What a (possibly unfinished) GPU-scale protocol run established, read from its state folder on any machine.

    PYTHONPATH=. python scripts/bench/codesign_scale_report.py results/codesign/scale_h100/protocol_retrain_cache.json

The protocol (scripts/bench/codesign_protocol.py) keeps every retrained design's per-seed losses and the searches'
results in its retrain cache as it goes. This reads that file and, with the same statistics as the protocol's own
report, prints: the uniform arms (paired against BF16, 95% bootstrap CI), each method's design at each budget
(recomputed from the cached search results and Fisher sensitivities: costs are priced here, no training) with its
retrained losses where the run got that far, the verdicts that the finished retrainings allow, the per-layer Fisher
sensitivities and the gradient path's points. Nothing is retrained: a design the run did not reach is marked so.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import nets

sys.path.insert(0, str(Path(__file__).resolve().parent))
import codesign_protocol as proto  # noqa: E402
from codesign_protocol_report import front_at, metric_label, paired, plot, summarise  # noqa: E402


def load(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[float]]]:
    """(settings, the search record for the first searched target, design -> losses)."""
    cache = json.loads(path.read_text())
    settings = ast.literal_eval(cache["settings"])
    searches = {k: v for k, v in cache.items() if k.startswith("search ")}
    if not searches:
        raise SystemExit(f"{path}: no search results yet (the run stopped before its searches)")
    key = next(iter(searches))
    target, metric, lams, *_rest, formats, knob_lr = ast.literal_eval(key[len("search "):])
    search = {**searches[key], "target": target, "metric": metric, "lams": lams, "formats": formats, "knob_lr": knob_lr}
    return settings, search, cache["losses"]


def report(path: Path) -> dict[str, Any]:
    settings, search, losses = load(path)
    a = argparse.Namespace(target=search["target"], metric=search["metric"], formats=search["formats"],
                           knob_lr=search["knob_lr"])
    with tempfile.TemporaryDirectory() as work:
        cfg = nets.load_config(proto.diag.model_spec(settings["model"], Path(work)))
    b = proto.Pricing(a, cfg)
    got = lambda formats: losses.get(repr(list(formats)))  # noqa: E731
    labels = dict((f, lab) for lab, f in proto.UNIFORM)
    uniform = [summarise(labels.get(f, f), [f] * b.n, b.cost([f] * b.n), got([f] * b.n))
               for f in b.formats if got([f] * b.n)]
    base = next(u for u in uniform if u["arm"] == "BF16")
    for u in uniform:
        u["vs_bf16"] = paired(base["losses"], u["losses"])  # other - joint with joint = BF16: u - BF16
    sens = np.asarray(search["sens"])
    budgets = []
    done = len(uniform) == len(b.formats)
    for label, fmt in proto.BUDGET_FORMATS:
        budget = b.cost([fmt] * b.n)
        designs = {name: proto.pick(rows, budget) for name, rows in search["searched"].items()}
        designs["hawq"] = {"formats": proto.hawq_greedy(b, sens, budget)}
        designs["rule"] = {"formats": proto.practitioner_rule(b, fmt)}
        row: dict[str, Any] = {"budget": label, "budget_cost": budget, "designs": {}}
        for name, d in designs.items():
            if d is None:
                continue
            ls = got(d["formats"])
            cost = b.cost(d["formats"])
            row["designs"][name] = {"formats": d["formats"], "cost": cost, "within_budget": cost <= budget * (1 + 1e-9),
                                    "losses": ls, "mean": float(np.mean(ls)) if ls else None}
        joint = row["designs"].get("gradient path")
        if done and joint and joint["losses"]:
            seeds = len(joint["losses"])
            front = [front_at(uniform, budget, s) for s in range(seeds)]
            row["uniform_front_mean"] = float(np.mean(front))
            row["verdict"] = {"vs_uniform_front": paired(joint["losses"], front,
                                                         float(np.mean([u["std"] for u in uniform])))}
            for h in ("hawq", "rule", "random"):
                other = row["designs"].get(h)
                if other and other["losses"]:
                    row["verdict"][f"vs_{h}"] = paired(joint["losses"], other["losses"])
        budgets.append(row)
    return {"settings": settings, "target": search["target"], "metric": search["metric"], "n_layers": b.n,
            "formats": list(b.formats), "uniform": uniform, "budgets": budgets, "fisher_sensitivity": sens.tolist(),
            "path_rows": search["searched"].get("gradient path", []), "search_seconds": search["timings"],
            "tpe_ran": bool(search["searched"].get("tpe"))}


def short(formats: list[str]) -> str:
    names = {"bf16": "B", "fp8_e4m3@channel": "F8", "posit(8,0)@channel": "P8", "fp4_e2m1@channel": "F4",
             "mxfp4": "MX", "posit(4,1)@channel": "P4"}
    return " ".join(names.get(f, f) for f in formats)


def table(rec: dict[str, Any]) -> str:
    scale = 1e6  # costs are stored in J or s; shown in uJ or us
    label = metric_label({"config": {"target": rec["target"], "metric": rec["metric"]}})
    out = [f"settings: {rec['settings']}", f"target {label}; "
           "formats per layer: B bf16, F8 fp8_e4m3, P8 posit(8,0), F4 fp4_e2m1, MX mxfp4, P4 posit(4,1)", "",
           f"| uniform | {rec['metric']} | loss (mean +- seed std) | minus BF16, paired [95% CI] |",
           "| --- | --- | --- | --- |"]
    for u in rec["uniform"]:
        v = u["vs_bf16"]
        out.append(f"| {u['arm']} | {u['cost'] * scale:.2f} | {u['mean']:.4f} +- {u['std']:.4f} | "
                   f"{v['mean_diff']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] |")
    out += ["", f"| budget | method | design | {rec['metric']} | within | retrained loss |",
            "| --- | --- | --- | --- | --- | --- |"]
    for r in rec["budgets"]:
        out.append(f"| {r['budget']} ({r['budget_cost'] * scale:.2f}) | uniform front | - | - | - | "
                   + (f"{r['uniform_front_mean']:.4f} |" if "uniform_front_mean" in r else "- |"))
        for name, d in r["designs"].items():
            loss = "not retrained (the run stopped first)" if d["mean"] is None else \
                f"{d['mean']:.4f} +- {np.std(d['losses'], ddof=1):.4f}"
            out.append(f"| {r['budget']} | {name} | {short(d['formats'])} | {d['cost'] * scale:.2f} | "
                       f"{d['within_budget']} | {loss} |")
        for k, v in (r.get("verdict") or {}).items():
            out.append(f"| {r['budget']} | verdict {k} | other - path {v['mean_diff']:+.4f} "
                       f"[{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] | 2 pooled sd {2 * v['pooled_seed_std']:.4f} | "
                       f"beats: {v['beats']} | |")
    sens = np.asarray(rec["fisher_sensitivity"])
    out += ["", "Fisher sensitivity sum F (w - Q(w))^2 per layer (x 1e6; the HAWQ-like heuristic's signal):", "",
            "| layer | " + " | ".join(short([f]) for f in rec["formats"]) + " |",
            "| --- |" + " --- |" * len(rec["formats"])]
    for i, row in enumerate(sens):
        out.append(f"| {i} | " + " | ".join(f"{x * 1e6:.3f}" for x in row) + " |")
    out += ["", "gradient path (ascending lambda; signal = post-quantisation loss at the path's own weights):", ""]
    for p in rec["path_rows"]:
        out.append(f"- lam {p['lam']:g}: {short(p['formats'])}, {rec['metric']} {p['cost'] * scale:.2f}, "
                   f"signal {p['signal']:.4f}, {p['steps']} steps")
    out.append("" if rec["tpe_ran"] else "\nTPE did not run (optuna was not installed on the machine).")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cache", type=Path, help="the protocol's protocol_retrain_cache.json")
    p.add_argument("--out", type=Path, default=None,
                   help="write STEM.json, STEM.md and STEM.png (loss vs cost) here (default: print only)")
    a = p.parse_args(argv)
    rec = report(a.cache)
    text = table(rec)
    print(text)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        nets.atomic_write_json(a.out.with_suffix(".json"), rec)
        a.out.with_suffix(".md").write_text(text + "\n")
        # the protocol's plot over what was retrained (designs the run did not reach are left out)
        plot({"uniform": rec["uniform"], "config": {"target": rec["target"], "metric": rec["metric"]}, "reduced": False,
              "budgets": [{"budget_cost": r["budget_cost"],
                           "designs": {k: d for k, d in r["designs"].items() if d["losses"]}} for r in rec["budgets"]]},
             a.out.with_suffix(".png"))
    return rec


if __name__ == "__main__":
    main()
