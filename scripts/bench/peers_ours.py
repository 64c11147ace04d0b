"""Our side of scripts/bench/peers.py: the hwcost GPU on a spec (plain or calibrated), per-op rows, design points/s."""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import hwcost
import nets
from peers_cases import GROUPS, MODEL, Case, Spec

def our_gpu(spec: Spec) -> hwcost.GPU:
    """Our uncalibrated roofline on `spec`: the base preset with the spec's three numbers."""
    base = hwcost.gpu(spec.base_preset)
    fp8 = max(float(base.peak_flops_fp8) / float(base.peak_flops_bf16), 1.0) * spec.peak_flops_bf16
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.name != "name"}
    fields.update(peak_flops_bf16=jnp.asarray(spec.peak_flops_bf16, jnp.float32),
                  peak_flops_fp8=jnp.asarray(fp8, jnp.float32),
                  mem_bandwidth=jnp.asarray(spec.mem_bandwidth, jnp.float32),
                  mem_capacity=jnp.asarray(spec.mem_capacity, jnp.float32))
    return hwcost.GPU(name=spec.name, **fields)


_SPEC_FIELDS = ("peak_flops_bf16", "peak_flops_fp8", "mem_bandwidth", "mem_capacity", "price_per_hour",
                "energy_per_flop_bf16", "energy_per_flop_fp8", "energy_per_byte", "static_power_w", "area_mm2")


def load_calibrated(path: str | None):
    """A function spec -> calibrated target, or None when no preset is given.

    A preset written by `codesign calibrate` (`hwcost.save_preset`, schema
    `hwcost.PRESET_SCHEMA`) is read with `hwcost.load_preset`; its fitted
    efficiency curves (`Efficiency`) are put on our GPU of each case's spec with
    `hwcost.calibrated`, its other GPU fields kept. So on the H200 case the column is the
    preset itself; on the A100 cases it is the H200 fit transferred to the A100 datasheet
    (stated in the JSON). Any other JSON goes to `calibrated_from_json`.
    """
    if path is None:
        return None
    if not Path(path).is_file():
        raise ValueError(f"calibrated={path!r}: no such file (a preset JSON written by `codesign calibrate`)")
    body = json.loads(Path(path).read_text())
    if isinstance(body, dict) and str(body.get("schema", "")).startswith("codesign.calibrated-gpu/"):
        preset = hwcost.load_preset(path)

        def target(spec: Spec):
            fields = {f.name: getattr(preset.device, f.name) for f in dataclasses.fields(hwcost.GPU) if f.name != "name"}
            ours = our_gpu(spec)
            fields.update({k: getattr(ours, k) for k in ("peak_flops_bf16", "peak_flops_fp8", "mem_bandwidth",
                                                          "mem_capacity")})
            return hwcost.calibrated(hwcost.GPU(name=spec.name, **fields), preset.software,
                                         name=f"{spec.name}-calibrated")
        return target
    return calibrated_from_json(path)


def calibrated_from_json(path: str):
    """spec -> our GPU on `spec` with the efficiency fields of a preset JSON (fallback reader)."""
    data = json.loads(Path(path).read_text())
    for key in ("gpu", "params", "fields"):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    names = {f.name for f in dataclasses.fields(hwcost.GPU)} - {"name"} - set(_SPEC_FIELDS)
    fitted = {k: float(v) for k, v in data.items() if k in names}
    if not fitted:
        raise ValueError(f"calibrated={path!r}: holds none of the GPU efficiency fields ({', '.join(sorted(names))})")

    def target(spec: Spec) -> hwcost.GPU:
        return eqx.tree_at(lambda g: [getattr(g, k) for k in fitted], our_gpu(spec),
                           [jnp.asarray(v, jnp.float32) for v in fitted.values()])
    return target


def ours(case: Case, target) -> dict:
    """Our per-op-group and end-to-end latency [ms] of `case` on `target`, and the FLOPs counted."""
    work = hwcost.workload(nets.zoo.get(MODEL), case.scenario)
    cost = target.cost(work)
    by_op = {op: float(v) for op, v in cost.by_op().items()}
    rows = {row: 1e3 * sum(by_op[op] for op in ops) for row, ops in GROUPS.items()}
    rows["total"] = 1e3 * float(cost.latency_s)
    return {"rows_ms": rows, "flops": float(work.total_flops()), "fits": bool(target.fits(work))}



# ---- design points per second -----------------------------------------------------------------------
SPACES = ("like_for_like", "full")


def our_points_per_s(case: Case, points: int, chunk: int, repeats: int, grad: bool, space: str = "full",
                     seed: int = 0) -> dict:
    """Jitted, vmapped latency (optionally value_and_grad) of `case` per design point.

    space "like_for_like": the peers' design space, peak FLOP/s and HBM bandwidth of each point
      (the workload, which does not depend on them, built once, as in the peers' inner paths);
      gradients w.r.t. those two design variables.
    space "full": per-layer bits and keep fractions of all layers plus every GPU parameter
      scaled per point (a space the peers cannot express); gradients w.r.t. all of them
      (6 x n_layers knobs + 14 GPU parameters).
    """
    if space not in SPACES:
        raise ValueError(f"space={space!r}: must be one of {', '.join(SPACES)}")
    cfg = nets.zoo.get(MODEL)
    rng = np.random.default_rng(seed)
    u = lambda lo, hi, shape: jnp.asarray(rng.uniform(lo, hi, shape), jnp.float32)  # noqa: E731
    n, L = points, cfg.n_layers
    base = our_gpu(case.spec)
    scenario = case.scenario
    if space == "full":
        params, static = eqx.partition(base, eqx.is_array)
        knobs = hwcost.Knobs(weight_bits=u(4, 16, (n, L)), kv_bits=u(4, 16, (n, L)), act_bits=u(8, 16, (n, L)),
                             ffn_keep=u(0.3, 1, (n, L)), token_keep=u(0.3, 1, (n, L)),
                             head_keep=u(0.5, 1, (n, L)))
        xs = (knobs, jax.tree.map(lambda x: x * u(0.8, 1.25, (n,)), params))

        def latency(x):
            knobs, params = x
            return eqx.combine(params, static).cost(hwcost.workload(cfg, scenario, knobs)).latency_s
    else:
        work = hwcost.workload(cfg, scenario)
        fp8_ratio = base.peak_flops_fp8 / base.peak_flops_bf16
        xs = (base.peak_flops_bf16 * u(0.8, 1.25, (n,)), base.mem_bandwidth * u(0.8, 1.25, (n,)))

        def latency(x):
            peak, bandwidth = x
            target = eqx.tree_at(lambda g: (g.peak_flops_bf16, g.peak_flops_fp8, g.mem_bandwidth), base,
                                 (peak, peak * fp8_ratio, bandwidth))
            return target.cost(work).latency_s

    one = jax.value_and_grad(latency) if grad else latency
    step = jax.jit(lambda xs: jax.lax.map(one, xs, batch_size=chunk))
    t = time.perf_counter()
    jax.block_until_ready(step(xs))
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(step(xs))
        times.append(time.perf_counter() - t)
    finite = all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(out))
    median = statistics.median(times)
    path = ("jit(vmap(value_and_grad(latency)))" if grad else "jit(vmap(latency))") + f" [{space}]"
    return {"tool": "ours", "path": path, "space": space, "gradients": grad, "points": points, "chunk": chunk,
            "repeats": repeats, "median_s": median, "min_s": min(times), "max_s": max(times),
            "points_per_s": points / median, "best_points_per_s": points / min(times), "compile_s": compile_s,
            "all_finite": finite}
