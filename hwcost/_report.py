"""A cost report: per-operation-class time, FLOPs and bytes of one scenario on one target, and totals.

Plain dicts of floats, so the CLI can print a table or JSON and a notebook can use either.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp

import nets
from hwcost._gpu import GPU
from hwcost._presets import gpu
from hwcost._scenario import Scenario
from hwcost._workload import KINDS, OPS, workload


def load_model(model: str) -> nets.ModelConfig:
    """A zoo name, or the path of a JSON config (`nets.ModelConfig.from_json`)."""
    if not isinstance(model, str) or not model:
        raise ValueError(f"model={model!r}: must be a zoo name or a JSON config path")
    path = Path(model)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise ValueError(f"model={model!r}: no such JSON config file")
        return nets.ModelConfig.from_json(path.read_text())
    return nets.zoo.get(model)


def cost_report(cfg: nets.ModelConfig, target: GPU | str, scenario: Scenario) -> dict:
    """Per op class: latency [s], share of latency, FLOPs, bytes by kind, compute/memory bound;
    totals: latency, energy, dollars, memory, per-token figures, tokens/s, and whether it fits."""
    device = gpu(target) if isinstance(target, str) else target
    work = workload(cfg, scenario)
    cost = device.cost(work)
    compute_s, memory_s, _ = device.op_times(work)
    latency = float(cost.latency_s)
    ops = []
    for i, op in enumerate(OPS):
        t = float(jnp.sum(cost.op_latency_s[i]))
        row = {"op": op, "latency_s": t, "share": t / latency if latency else 0.0,
               "flops": float(jnp.sum(work.flops[i])),
               "bound": ("-" if t == 0 else
                         "compute" if float(jnp.sum(compute_s[i])) >= float(jnp.sum(memory_s[i])) else "memory")}
        for k, kind in enumerate(KINDS):
            row[f"bytes_{kind}"] = float(jnp.sum(work.bytes[i, k]))
        if row["flops"] == 0 and all(row[f"bytes_{kind}"] == 0 for kind in KINDS):
            continue
        ops.append(row)
    tokens = float(work.tokens)
    totals = {
        "latency_s": latency, "energy_j": float(cost.energy_j), "dollars": float(cost.dollars),
        "memory_bytes": float(cost.memory_bytes), "fits_in_memory": bool(device.fits(work)),
        "flops": float(jnp.sum(work.flops)), "tokens": tokens, "tokens_per_s": tokens / latency if latency else 0.0,
        "dollars_per_million_tokens": 1e6 * float(cost.dollars) / tokens, "joules_per_token": float(cost.energy_j) / tokens,
    }
    for k, kind in enumerate(KINDS):
        totals[f"bytes_{kind}"] = float(jnp.sum(work.bytes[:, k]))
    return {"model": cfg.name, "target": device.name, "scenario": scenario.__dict__.copy(), "ops": ops, "totals": totals}
