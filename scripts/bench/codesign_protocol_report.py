"""The fair protocol's statistics, table and plot (scripts/bench/codesign_protocol.py runs it; the protocol is
fixed in that script's docstring): the interpolated uniform front, the paired comparison with its bootstrap
CI and the 2-seed-std rule, the Markdown table and the loss-vs-energy plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def front_at(uniform: list[dict[str, Any]], budget: float, seed: int) -> float:
    """Uniform front at `budget` for one seed: lower envelope over cost, linear in log10 cost."""
    pts = sorted((math.log10(u["cost"]), u["losses"][seed]) for u in uniform)
    env, best = [], math.inf
    for x, y in pts:  # cheapest first; the front keeps only improvements
        if y < best:
            env.append((x, y))
            best = y
    x = math.log10(budget)
    below = [p for p in env if p[0] <= x + 1e-12]
    if not below:
        return math.nan
    left = below[-1]
    right = next((p for p in env if p[0] > x + 1e-12), None)
    if right is None or abs(left[0] - x) < 1e-12:
        return left[1]
    return left[1] + (right[1] - left[1]) * (x - left[0]) / (right[0] - left[0])


def paired(joint: list[float], other: list[float], other_std: float | None = None) -> dict[str, Any]:
    """Paired comparison other - joint (positive: the joint design is better), bootstrap CI, 2-std rule."""
    d = np.asarray(other) - np.asarray(joint)
    rng = np.random.default_rng(0)
    boots = d[rng.integers(0, len(d), (10_000, len(d)))].mean(axis=1)
    s_j = float(np.std(joint, ddof=1))
    s_o = float(np.std(other, ddof=1)) if other_std is None else other_std
    pooled = math.sqrt((s_j ** 2 + s_o ** 2) / 2)
    return {"mean_diff": float(d.mean()), "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
            "pooled_seed_std": pooled, "paired_diff_std": float(np.std(d, ddof=1)) if len(d) > 1 else 0.0,
            "beats": bool(d.mean() > 2 * pooled)}


def summarise(arm: str, formats: list[str], cost: float, losses: list[float], **extra) -> dict[str, Any]:
    return {"arm": arm, "formats": formats, "cost": cost, "losses": losses, "mean": float(np.mean(losses)),
            "std": float(np.std(losses, ddof=1)) if len(losses) > 1 else 0.0, **extra}



def metric_label(rec: dict[str, Any]) -> str:
    """What the cost axis is: the target's energy in uJ or latency in us (costs are stored in J or s)."""
    c = rec["config"]
    return f"{c.get('target', 'xrnpe')} {c.get('metric', 'energy')} [{'us' if c.get('metric') == 'latency' else 'uJ'}]"


def table(rec: dict[str, Any]) -> str:
    lines = [f"Fair protocol ({'REDUCED / quick' if rec['reduced'] else 'full'}): {rec['config']['seeds']} paired "
             f"seeds, {rec['config']['retrain_steps']} retrain steps; loss mean +- seed std; {metric_label(rec)}", "",
             f"| budget | arm | formats | {rec['config'].get('metric', 'energy')} | loss | within budget |", "| --- | --- | --- | --- | --- | --- |"]
    for u in rec["uniform"]:
        lines.append(f"| - | uniform {u['arm']} | {' '.join(u['formats'])} | {u['cost'] * 1e6:.2f} | "
                     f"{u['mean']:.4f} +- {u['std']:.4f} | - |")
    for r in rec["budgets"]:
        lines.append(f"| {r['budget']} | uniform front | - | {r['budget_cost'] * 1e6:.2f} | "
                     f"{np.mean(r['uniform_front']):.4f} | - |")
        for name, d in r["designs"].items():
            if d is not None:
                lines.append(f"| {r['budget']} | {name} | {' '.join(d['formats'])} | {d['cost'] * 1e6:.2f} | "
                             f"{d['mean']:.4f} +- {d['std']:.4f} | {d['within_budget']} |")
        v = r["verdict"]
        if v:
            lines.append(f"| {r['budget']} | verdict | " + "; ".join(
                f"{k}: diff {x['mean_diff']:+.4f} CI [{x['ci95'][0]:+.4f}, {x['ci95'][1]:+.4f}] 2sd "
                f"{2 * x['pooled_seed_std']:.4f} beats={x['beats']}" for k, x in v.items() if k != "beats_all")
                + f" | beats all: {v['beats_all']} |")
    lines += ["", "hypervolume (reference " + ", ".join(f"{x:.4f}" for x in rec["hv_reference"]) + "): "
              + ", ".join(f"{k} {v:.4f}" for k, v in rec["hypervolume"].items()),
              "search speed (signal hypervolume, path vs best black box, per search seed): measured "
              + ", ".join("-" if x is None else f"{x:.2f}x" for x in rec["search_speed"]["ratio_measured"]["values"])
              + "; path compile excluded "
              + ", ".join("-" if x is None else f"{x:.2f}x"
                          for x in rec["search_speed"]["ratio_path_compile_excluded"]["values"]),
              f"goal (beats front and both heuristics at >= 2 of {len(rec['budgets'])} budgets): {rec['goal_met']} "
              f"({rec['budgets_won']}/{len(rec['budgets'])}); ran in {rec['wall_s']:.0f}s on {rec['where']['backend']}"]
    return "\n".join(lines)


def plot(rec: dict[str, Any], path: Path) -> None:
    """Left: mean retrained loss +- seed std against energy. Right: the paired view, each design's loss minus
    uniform BF16's on the same seed (mean +- std of that difference), the noise the paired comparison sees."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), dpi=110)
    u = sorted(rec["uniform"], key=lambda r: r["cost"])
    base = np.asarray(next(r for r in rec["uniform"] if r["formats"] == ["bf16"] * len(r["formats"]))["losses"])
    styles = {"gradient path": ("o", "C3"), "random": ("x", "C0"), "tpe": ("+", "C1"), "hawq": ("^", "C2"),
              "rule": ("v", "C4")}
    for ax, paired_view in zip(axes, (False, True)):
        def stats(losses):
            x = np.asarray(losses) - (base if paired_view else 0.0)
            return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0
        ys = [stats(r["losses"]) for r in u]
        ax.errorbar([r["cost"] * 1e6 for r in u], [y[0] for y in ys], yerr=[y[1] for y in ys], fmt="s-", c="0.4",
                    label="uniform formats", capsize=3)
        for r, y in zip(u, ys):
            ax.annotate(r["arm"], (r["cost"] * 1e6, y[0]), xytext=(5, 4), textcoords="offset points", fontsize=7)
        for k, (name, (m, c)) in enumerate(styles.items()):
            pts = [b["designs"][name] for b in rec["budgets"] if b["designs"].get(name) is not None]
            st = [stats(p["losses"]) for p in pts]
            jitter = 1 + 0.004 * (k - 2)  # side by side where designs share a cost
            ax.errorbar([p["cost"] * 1e6 * jitter for p in pts], [y[0] for y in st], yerr=[y[1] for y in st],
                        fmt=m, c=c, label=name, capsize=3, ls="none")
        for b in rec["budgets"]:
            ax.axvline(b["budget_cost"] * 1e6, c="0.8", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel(f"{metric_label(rec)} per decode step (log)")
        ax.grid(alpha=0.3, which="both")
        ax.set_ylabel("loss minus uniform BF16 on the same seed [nats/byte]" if paired_view
                      else "validation loss after retraining [nats/byte]")
        ax.set_title(("paired: difference to BF16, mean +- std over seeds" if paired_view
                      else "mean +- seed std") + (" (REDUCED)" if rec["reduced"] else ""), fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
