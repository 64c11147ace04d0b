"""Design points per second for hardware cost + gradient of a 61-layer config (Step-3), vmapped.

    PYTHONPATH=. python scripts/bench/cost_throughput.py --out runs/bench/cost_throughput.json

One design point = per-layer knobs (weight/KV/activation bits, FFN/token/head keep fractions,
61 entries each) plus every GPU parameter. For each point the benchmark computes the full
`Cost` (latency, energy, dollars, memory, area) and the gradient of a weighted sum of latency
[ms], energy [J], dollars [USD per 1e6] and memory [GB] w.r.t. all knobs and hardware
parameters: jitted, vmapped over a chunk of points and looped over chunks with `lax.map`
(small chunks keep every intermediate in cache, which is worth 2x on a CPU).
Timing: compile and warm-up excluded; median of repeated timed calls, each ended by
`block_until_ready`. Runs on whatever device jax sees.
"""

from __future__ import annotations

import argparse
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


def design_points(n: int, n_layers: int, base: hwcost.GPU, seed: int = 0):
    rng = np.random.default_rng(seed)
    u = lambda lo, hi, shape: jnp.asarray(rng.uniform(lo, hi, shape), jnp.float32)  # noqa: E731
    knobs = hwcost.Knobs(weight_bits=u(4, 16, (n, n_layers)), kv_bits=u(4, 16, (n, n_layers)),
                         act_bits=u(8, 16, (n, n_layers)), ffn_keep=u(0.3, 1, (n, n_layers)),
                         token_keep=u(0.3, 1, (n, n_layers)), head_keep=u(0.5, 1, (n, n_layers)))
    params, static = eqx.partition(base, eqx.is_array)
    stacked = jax.tree.map(lambda x: x * u(0.8, 1.25, (n,)), params)
    return knobs, stacked, static


def make_step(cfg: nets.ModelConfig, scenario: hwcost.Scenario, static, chunk: int):
    def objective(knobs, params):
        target = eqx.combine(params, static)
        cost = target.cost(hwcost.workload(cfg, scenario, knobs))
        # a joint objective's cost term: every field that depends on the design, in comparable units
        return (cost.latency_s * 1e3 + cost.energy_j + cost.dollars * 1e6 + cost.memory_bytes * 1e-9), cost

    def one(knobs, params):
        (_, cost), grads = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(knobs, params)
        return jnp.stack([getattr(cost, f) for f in hwcost.Cost.SCALARS]), grads

    # vmap over `chunk` points at a time, looped by lax.map: a chunk's intermediates stay in cache
    return jax.jit(lambda knobs, params: jax.lax.map(lambda kp: one(*kp), (knobs, params), batch_size=chunk))


def bench(points: int, chunk: int, repeats: int, cfg, scenario, base) -> dict:
    knobs, params, static = design_points(points, cfg.n_layers, base)
    step = make_step(cfg, scenario, static, chunk)
    t = time.perf_counter()
    jax.block_until_ready(step(knobs, params))
    compile_s = time.perf_counter() - t
    jax.block_until_ready(step(knobs, params))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = step(knobs, params)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t)
    fields, grads = out
    finite = bool(np.all(np.isfinite(np.asarray(fields)))
                  and all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads)))
    median = statistics.median(times)
    return {"points": points, "chunk": chunk, "median_s": median, "min_s": min(times), "points_per_s": points / median,
            "compile_s": compile_s, "all_finite": finite}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/cost_throughput.json")
    parser.add_argument("--model", default="step-3")
    parser.add_argument("--target", default="h800")
    parser.add_argument("--points", type=int, default=65536, help="design points per timed call")
    parser.add_argument("--chunks", default="64,128,256,1024,8192", help="comma-separated vmap chunk sizes")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg = nets.zoo.get(args.model)
    scenario = hwcost.Scenario(phase="decode", batch=64, context_len=8192)
    base = hwcost.gpu(args.target)
    results = [bench(args.points, int(c), args.repeats, cfg, scenario, base) for c in args.chunks.split(",")]
    device = jax.devices()[0]
    report = {"benchmark": "hwcost cost + gradient per design point", "model": cfg.name, "n_layers": cfg.n_layers,
              "target": args.target, "scenario": scenario.__dict__, "backend": jax.default_backend(),
              "device": getattr(device, "device_kind", str(device)), "jax": jax.__version__, "results": results,
              "best_points_per_s": max(r["points_per_s"] for r in results)}
    print(f"cost + gradient of {cfg.name} ({cfg.n_layers} layers) on {report['device']} ({report['backend']})")
    print(f"{'points':>8} {'chunk':>8} {'median s':>10} {'points/s':>12} {'compile s':>10} {'finite':>7}")
    for r in results:
        print(f"{r['points']:>8} {r['chunk']:>8} {r['median_s']:>10.4f} {r['points_per_s']:>12.0f} {r['compile_s']:>10.2f} "
              f"{str(r['all_finite']):>7}")
    print(f"best: {report['best_points_per_s']:.0f} design points per second")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
