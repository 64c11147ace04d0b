"""Pareto fronts of (validation loss, cost) points, both minimised, and their hypervolume."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def pareto_mask(points_Nx2: np.ndarray) -> np.ndarray:
    """True for points no other point dominates (<= in both coordinates, < in one)."""
    pts = np.asarray(points_Nx2, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points shape={pts.shape}: must be (N, 2) of (loss, cost)")
    le = (pts[None, :, :] <= pts[:, None, :]).all(-1)
    lt = (pts[None, :, :] < pts[:, None, :]).any(-1)
    dominated = (le & lt).any(axis=1)
    return ~dominated


def hypervolume(points_Nx2: np.ndarray, reference: Sequence[float]) -> float:
    """Area dominated by the points and bounded by `reference` (both coordinates minimised).

    Points beyond the reference in either coordinate contribute nothing. Exact for two
    objectives: sort the front by the first coordinate and add the rectangles.
    """
    pts = np.asarray(points_Nx2, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if pts.size == 0:
        return 0.0
    pts = pts[pareto_mask(pts)]
    pts = pts[(pts[:, 0] < ref[0]) & (pts[:, 1] < ref[1])]
    if len(pts) == 0:
        return 0.0
    pts = pts[np.argsort(pts[:, 0])]
    area, prev_cost = 0.0, ref[1]
    for loss, cost in pts:
        if cost < prev_cost:
            area += (ref[0] - loss) * (prev_cost - cost)
            prev_cost = cost
    return float(area)


def plot_front(points_Nx2: np.ndarray, labels: Sequence[str], path: str | Path, *, cost_label: str,
               title: str = "validation loss against hardware cost", spread: tuple[float, float] | None = None,
               marks: Sequence[str] | None = None) -> Path:
    """Scatter every point, highlight and connect the non-dominated ones; writes a PNG.

    spread: (loss, log10 cost) half-widths of a noise band drawn as error bars around every point
    (the sweep passes 2 seed standard deviations); marks: a note per point appended to its label
    (the sweep's "within noise")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = np.asarray(points_Nx2, dtype=np.float64)
    mask = pareto_mask(pts)
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    ax.scatter(pts[~mask, 1], pts[~mask, 0], c="0.6", label="dominated")
    front = pts[mask][np.argsort(pts[mask][:, 1])]
    ax.plot(front[:, 1], front[:, 0], "-o", c="C3", label="Pareto front")
    if spread is not None:
        d_loss, d_log = spread
        ax.errorbar(pts[:, 1], pts[:, 0], yerr=d_loss,
                    xerr=[pts[:, 1] * (1 - 10 ** -d_log), pts[:, 1] * (10 ** d_log - 1)], fmt="none", ecolor="0.5",
                    elinewidth=0.8, capsize=2, label="seed spread (2 sd)")
    marks = list(marks) if marks is not None else [""] * len(pts)
    for (loss, cost), label, mark in zip(pts, labels, marks):
        text = f"{label} ({mark})" if mark == "within noise" else label
        ax.annotate(text, (cost, loss), textcoords="offset points", xytext=(4, 4), fontsize=7,
                    color="0.45" if mark == "within noise" else "black")
    ax.set_xscale("log")
    ax.set_xlabel(cost_label)
    ax.set_ylabel("validation loss (nats/byte)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    import io

    import nets

    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    nets.atomic_write(path, buffer.getvalue())  # a kill mid-write never leaves half a plot
    return path
