"""The cost of SpAtten pruning itself: step time pruned vs unpruned at equal sequence length.

    PYTHONPATH=. python scripts/bench/pruning_cost.py                   # H200: codesign-100m, seq 1024
    PYTHONPATH=. python scripts/bench/pruning_cost.py --quick           # CPU smoke run

For `codesign-100m` (~100M MFA + MoE byte decoder, the foundation benchmark's model) it
times, at the same batch and sequence length:
  scanned      nets.TransformerLM (the reference: layers scanned, no pruning code)
  unpruned     PrunedLM with keep 1 (layers unrolled, no top-k, no gather)
  overhead     PrunedLM dropping one token per layer: top-k + gathers at every layer
               with (almost) nothing saved, i.e. the price of the machinery
  paper-0.5    PrunedLM with the paper's schedule, average token keep 0.5, heads 0.9
  paper-0.25   the same at average keep 0.25
each as an inference forward pass and as a training step (forward + backward), plus the
top-k + gather of one layer alone. Timing: compile and warm-up excluded, median of
repeated blocks ended by `block_until_ready`. Writes JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

import nets
from nets import TransformerLM, PrunedLM, PrunePlan, gather_rows, kept_count, select_tokens


def timed(fn, *args, warmup: int, blocks: int, per_block: int) -> dict:
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(per_block):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t) / per_block)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "first_call_incl_compile_s": compile_s}


def bench(model_name: str, batch: int, seq: int, dtype, timing: dict) -> list[dict]:
    cfg = nets.zoo.get(model_name).replace(max_seq_len=max(seq, nets.zoo.get(model_name).max_seq_len))
    n = cfg.n_layers
    dense = TransformerLM(cfg, rngs=nnx.Rngs(0), dtype=dtype)
    pruned = PrunedLM.from_model(dense)
    tokens = jax.random.randint(jax.random.key(1), (batch, seq), 0, cfg.vocab_size)
    plans = {"unpruned": PrunePlan.none(n),
             "overhead": PrunePlan(token_keep=tuple(1 - (i + 1) / seq for i in range(n)), head_keep=(1.0,) * n),
             "paper-0.5": PrunePlan.paper(n, 0.5, 0.9), "paper-0.25": PrunePlan.paper(n, 0.25, 0.9)}

    def loss_of(logits):
        return jnp.mean(jax.nn.logsumexp(logits.astype(jnp.float32), -1))

    rows = []
    variants = [("scanned", dense, None)] + [(name, pruned, plan) for name, plan in plans.items()]
    for name, model, plan in variants:
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def forward(p, t, graphdef=graphdef, rest=rest, plan=plan):
            m = nnx.merge(graphdef, p, rest)
            return (m(t) if plan is None else m(t, plan=plan))[0]

        fwd = jax.jit(forward)
        step = jax.jit(jax.grad(lambda p, t, forward=forward: loss_of(forward(p, t))))
        for mode, fn in (("forward", fwd), ("train_step", step)):
            r = timed(fn, params, tokens, **timing)
            kept = None if plan is None else [kept_count(seq, k) for k in plan.token_keep]
            rows.append({"model": model_name, "variant": name, "mode": mode, "batch": batch, "seq": seq,
                         "dtype": jnp.dtype(dtype).name, "kept_tokens_per_layer": kept, **r})
            print(f"{name:10s} {mode:10s} {r['median_s'] * 1e3:9.3f} ms", flush=True)
    x = jax.random.normal(jax.random.key(2), (batch, seq, cfg.d_model), dtype)
    imp = jax.random.uniform(jax.random.key(3), (batch, seq))
    k = seq // 2
    op = jax.jit(lambda imp, x: gather_rows(x, select_tokens(imp, k)))
    r = timed(op, imp, x, **timing)
    rows.append({"model": model_name, "variant": "top-k + gather, one layer", "mode": "op", "batch": batch,
                 "seq": seq, "dtype": jnp.dtype(dtype).name, "kept_tokens_per_layer": [k], **r})
    print(f"top-k + gather (one layer, k={k}) {r['median_s'] * 1e3:.3f} ms", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/pruning_cost")
    parser.add_argument("--model", default="codesign-100m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="codesign-default, batch 2, seq 64 (CPU smoke run)")
    args = parser.parse_args()
    on_gpu = jax.default_backend() == "gpu"
    device = jax.devices()[0]
    where = f"{device.platform} ({device.device_kind}), {platform.node()}"
    print(f"pruning_cost on {where}", flush=True)
    if args.quick:
        args.model, args.batch, args.seq = "codesign-default", 2, 64
    timing = dict(warmup=3, blocks=5, per_block=5) if not args.quick else dict(warmup=1, blocks=2, per_block=2)
    dtype = jnp.bfloat16 if on_gpu else jnp.float32
    rows = bench(args.model, args.batch, args.seq, dtype, timing)
    base = {r["mode"]: r["median_s"] for r in rows if r["variant"] == "unpruned"}
    for r in rows:
        r["vs_unpruned"] = r["median_s"] / base[r["mode"]] if r["mode"] in base else None
    suffix = "h200" if on_gpu and "H200" in device.device_kind else device.platform
    out = Path(args.out + f"_{suffix}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"ran_on": where, "rows": rows}, indent=2))
    lines = [f"# Pruning cost ({where})", "", "| variant | mode | batch x seq | median ms | vs unpruned | kept/layer |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        kept = "" if r["kept_tokens_per_layer"] is None else " ".join(map(str, r["kept_tokens_per_layer"]))
        ratio = "" if r["vs_unpruned"] is None else f"{r['vs_unpruned']:.3f}"
        lines.append(f"| {r['variant']} | {r['mode']} | {r['batch']}x{r['seq']} | {r['median_s'] * 1e3:.3f} | "
                     f"{ratio} | {kept} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}.json and {out}.md")


if __name__ == "__main__":
    main()
