"""A cost report: per-operation-class time, FLOPs and bytes of one scenario on one target, and totals.

Plain dicts of floats (None for what the target does not model), so the CLI can print a
table or JSON and a notebook can use either. Works for every `hwcost.Target`: the
per-operation latency column needs a target whose breakdown has "op_latency_s" (GPUs,
XR-NPE, Cambricon-LLM); the compute/memory bound column a target with `op_times` (GPUs).
"""

from __future__ import annotations


import jax.numpy as jnp
import numpy as np

import nets
from hwcost._registry import get_target
from hwcost._scenario import Scenario
from hwcost.targets._target import SCALARS, Target
from hwcost._workload import KINDS, OPS, workload


def load_model(model: str) -> nets.ModelConfig:
    """A zoo name, or the path of our JSON config or a Hugging Face config.json (`nets.load_config`'s rule)."""
    return nets.load_config(model)


def _plain(value):
    """A breakdown entry as a float or nested lists of floats."""
    array = np.asarray(value, np.float64)
    return float(array) if array.shape == () else array.tolist()


def cost_report(cfg: nets.ModelConfig, target: Target | str, scenario: Scenario) -> dict:
    """Per op class: latency [s] and share (where the target breaks latency down by op), FLOPs,
    bytes by kind, compute/memory bound (GPUs); totals: the modelled Cost scalars (None if not
    modelled), per-token figures, tokens/s, whether it fits (targets with `fits`), and the
    target's scalar breakdown entries under "breakdown"."""
    device = get_target(target) if isinstance(target, str) else target
    work = workload(cfg, scenario)
    cost = device.cost(work)
    scalars = {name: (float(getattr(cost, name)) if name in cost.modelled else None) for name in SCALARS}
    latency = scalars["latency_s"]
    # dense views once, summed over slots: [op], [op, kind]
    flops = np.asarray(jnp.sum(work.flops, axis=-1), np.float64)
    nbytes = np.asarray(jnp.sum(work.bytes, axis=-1), np.float64)
    per_op = cost.breakdown.get("op_latency_s")
    per_op = None if per_op is None else np.asarray(jnp.sum(per_op, axis=-1), np.float64)
    bound = None
    if hasattr(device, "op_times"):
        bound = [np.asarray(jnp.sum(part, axis=-1)) for part in device.op_times(work)[:2]]
    ops = []
    for i, op in enumerate(OPS):
        t = None if per_op is None else float(per_op[i])
        row = {"op": op, "latency_s": t, "share": (t / latency if latency else 0.0) if t is not None else None,
               "flops": float(flops[i])}
        if bound is None or not t:
            row["bound"] = "-"
        else:
            row["bound"] = "compute" if bound[0][i] >= bound[1][i] else "memory"
        for k, kind in enumerate(KINDS):
            row[f"bytes_{kind}"] = float(nbytes[i, k])
        if row["flops"] == 0 and all(row[f"bytes_{kind}"] == 0 for kind in KINDS):
            continue
        ops.append(row)
    tokens = float(work.tokens)
    per_token = lambda v, scale=1.0: None if v is None else scale * v / tokens  # noqa: E731
    totals = {
        **scalars, "fits_in_memory": bool(device.fits(work)) if hasattr(device, "fits") else None,
        "flops": float(flops.sum()), "tokens": tokens,
        "tokens_per_s": tokens / latency if latency else 0.0,
        "dollars_per_million_tokens": per_token(scalars["dollars"], 1e6),
        "joules_per_token": per_token(scalars["energy_j"]),
    }
    for k, kind in enumerate(KINDS):
        totals[f"bytes_{kind}"] = float(nbytes[:, k].sum())
    breakdown = {name: _plain(v) for name, v in cost.breakdown.items() if name not in ("op_latency_s", "op_dollars")}
    return {"model": cfg.name, "target": device.name, "scenario": scenario.__dict__.copy(),
            "modelled": [name for name in SCALARS if name in cost.modelled], "ops": ops, "totals": totals,
            "breakdown": breakdown}
