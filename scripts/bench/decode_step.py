"""Whole-model decode step: time, and its fraction of the bytes that must move, against a copy's bandwidth.

    PYTHONPATH=. python scripts/bench/decode_step.py --out runs/bench/decode_step.json          # GPU sizes
    PYTHONPATH=. python scripts/bench/decode_step.py --cpu --out runs/bench/decode_step_cpu.json

One token per sequence through `nets.TransformerLM` with its KV cache (jitted, the cache donated,
as a serving loop runs it), for MHA, GQA, MFA and MLA models shaped like their zoo namesakes.
Reported per model: the median step time, the bytes a step must move (every weight read once, the
whole cache read once, one slot per layer written), the bandwidth that gives, and its fraction of
the bandwidth of a plain copy measured in the same process (`ceiling`): how far the program is
from streaming what it must. Random weights; the time does not depend on their values.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

import nets

KINDS = {  # kind: (the zoo model whose norms and positions are kept, its attention, scaled in `config`)
    "mha": ("llama-2-7b", dict(kind="mha", n_heads=16, n_kv_heads=16, head_dim=128)),
    "gqa": ("llama-3-70b", dict(kind="gqa", n_heads=16, n_kv_heads=2, head_dim=128)),
    "mfa": ("step-3", dict(kind="mfa", n_heads=16, n_kv_heads=1, head_dim=256, q_rank=512)),
    "mla": ("deepseek-v3", dict(kind="mla", n_heads=16, n_kv_heads=16, head_dim=128, q_rank=512, kv_rank=512,
                                rope_dim=64)),
}


DENSE = dict(kind="dense", n_experts=0, top_k=0, n_shared_experts=0, d_expert=0, moe_start=0, moe_end=0)


def config(kind: str, cpu: bool) -> nets.ModelConfig:
    zoo_name, attention = KINDS[kind]
    if cpu:  # a quarter of the width, so a step takes tens of milliseconds on two cores
        attention = {**attention, "n_heads": 4, "head_dim": attention["head_dim"] // 2,
                     "n_kv_heads": min(attention["n_kv_heads"], 4)}
        for key in ("q_rank", "kv_rank"):
            if key in attention:
                attention[key] //= 4
    d_model = 512 if cpu else 2048
    return nets.zoo.get(zoo_name).replace(name=f"{zoo_name}@{kind}", d_model=d_model, n_layers=4 if cpu else 16,
                                          vocab_size=4096 if cpu else 32000, max_seq_len=1 << 16,
                                          attention=attention, ffn=DENSE | {"d_ff": 2 * d_model})


def copy_bandwidth(nbytes: int, dtype, repeats: int) -> float:
    """Bytes/s of `x + 1` over an array of `nbytes` (read once, written once), median of `repeats`."""
    x = jnp.zeros((nbytes // jnp.dtype(dtype).itemsize,), dtype)
    f = jax.jit(lambda a: a + 1, donate_argnums=0)
    x = f(f(x))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        x = jax.block_until_ready(f(x))
        samples.append(time.perf_counter() - start)
    return 2 * x.nbytes / statistics.median(samples)


def measure(cfg: nets.ModelConfig, batch: int, context: int, dtype, steps: int, repeats: int) -> dict:
    model = nets.TransformerLM(cfg, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=dtype)
    graphdef, state = nnx.split(model)

    def step(state, tokens, cache, index):
        logits, aux = nnx.merge(graphdef, state)(tokens, cache=cache, cache_index=index)
        return jnp.argmax(logits[:, -1], -1).astype(jnp.int32)[:, None], aux["cache"]

    fn = jax.jit(step, donate_argnums=2)
    cache = nets.init_cache(model, batch, context + steps * (repeats + 2), dtype)
    tokens = jnp.zeros((batch, 1), jnp.int32)
    index = context
    compile_start = time.perf_counter()
    tokens, cache = jax.block_until_ready(fn(state, tokens, cache, jnp.int32(index)))
    compile_s = time.perf_counter() - compile_start
    index += 1
    samples = []
    for block in range(repeats + 1):
        start = time.perf_counter()
        for _ in range(steps):
            tokens, cache = fn(state, tokens, cache, jnp.int32(index))
            index += 1
        jax.block_until_ready(tokens)
        if block:  # the first block warms up
            samples.append((time.perf_counter() - start) / steps)
    step_s = statistics.median(samples)
    weight_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    per_slot = sum(x.nbytes // x.shape[3] for x in jax.tree.leaves(cache))   # every layer, one slot, all rows
    cache_read = per_slot * (context + 1)  # the slots a step attends to
    must = weight_bytes + cache_read + per_slot
    return {"model": cfg.name, "kind": cfg.attention.kind, "batch": batch, "context": context, "step_ms": step_s * 1e3,
            "spread_ms": [min(samples) * 1e3, max(samples) * 1e3], "compile_s": compile_s,
            "weight_mb": weight_bytes / 1e6, "cache_read_mb": cache_read / 1e6,
            "cache_allocated_mb": sum(x.nbytes for x in jax.tree.leaves(cache)) / 1e6,
            "bytes_must_move_mb": must / 1e6, "gb_per_s": must / step_s / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="CPU sizes: 4 layers, d_model 512, float32")
    parser.add_argument("--kinds", default="mha,gqa,mfa,mla")
    parser.add_argument("--batch", type=int, default=None, help="default: 16 (--cpu), 32")
    parser.add_argument("--context", type=int, default=None, help="tokens in the cache; default 2048 (--cpu), 8192")
    parser.add_argument("--steps", type=int, default=None, help="decode steps per timed block; default 4 (--cpu), 20")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="runs/bench/decode_step.json")
    a = parser.parse_args()
    batch = a.batch or (16 if a.cpu else 32)
    context = a.context or (2048 if a.cpu else 8192)
    steps = a.steps or (4 if a.cpu else 20)
    dtype = jnp.float32 if a.cpu else jnp.bfloat16
    device = jax.devices()[0]
    ceiling = copy_bandwidth(256 << 20 if a.cpu else 2 << 30, dtype, 2 * a.repeats + 1)
    report = {"device": getattr(device, "device_kind", str(device)), "jax": jax.__version__,
              "dtype": jnp.dtype(dtype).name, "ceiling_gb_per_s": ceiling / 1e9, "rows": []}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    print(f"{report['device']} (jax {jax.__version__}), {report['dtype']}: batch {batch}, cache {context} tokens; "
          f"copy bandwidth {ceiling / 1e9:.1f} GB/s", flush=True)
    print(f"{'model':<22}{'step ms':>10}{'weights MB':>12}{'cache MB':>10}{'GB/s':>8}{'of copy':>9}", flush=True)
    for kind in a.kinds.split(","):
        row = measure(config(kind, a.cpu), batch, context, dtype, steps, a.repeats)
        row["of_ceiling"] = row["gb_per_s"] * 1e9 / ceiling
        report["rows"].append(row)
        nets.atomic_write_json(a.out, report)  # after every row: a time limit keeps what was measured
        print(f"{row['model']:<22}{row['step_ms']:>10.2f}{row['weight_mb']:>12.1f}{row['cache_read_mb']:>10.1f}"
              f"{row['gb_per_s']:>8.1f}{row['of_ceiling']:>9.1%}", flush=True)
    print(f"written: {a.out}")


if __name__ == "__main__":
    main()
