"""The measured kernel suite for calibrating and validating the GPU cost model.

    PYTHONPATH=. python scripts/bench/kernels.py --out results/kernels_h200.json --budget-s 420
    PYTHONPATH=. python scripts/bench/kernels.py --tiny --out /tmp/kernels_cpu.json     # CPU, < 2 min

Items (JAX, bf16 unless said): GEMMs over a grid of (m, n, k) in bf16 and FP8 (e4m3 operands,
bf16 result; skipped where XLA cannot run it); decode attention (one token against a cache)
and prefill attention with the real `nets.Attention` for MHA, GQA, MLA and MFA over batch
and context; `nets.MoE` layers over tokens, experts and top-k; RMSNorm; and whole decode
and prefill steps of `nets.TransformerLM` on scaled zoo configs (0.1 to ~3 B parameters).

Timing (METHOD.md): random inputs (never zeros); the jitted call is run twice (compile +
warm-up) before timing; a sample is `inner` back-to-back calls closed by
`block_until_ready`, divided by `inner` and by the copies per call; the median, 10/90th
percentiles and min/max of the samples are recorded. Small items run `copies` independent
instances per call on distinct buffers (at least 3x the L2 cache in total) so that repeated
calls measure HBM, not the cache. Decode caches are donated, so the cache write is in place.

Each item records its shapes, dtype, copies, timing and a `describe` entry from which
`hwcost.item_kernels` derives the FLOPs and bytes the cost model predicts from,
so fitting and testing need no GPU. Results are written after every item (atomic rename):
a run cut off by a time limit loses only the item in flight. Items are interleaved across
kinds so that a budget cut trims every kind a little rather than dropping one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import nets
from hwcost import DATA_SCHEMA, item_kernels
from nets import Attention, MoE, atomic_write_json, init_layer_cache, make_norm

BF16 = jnp.bfloat16
L2_BYTES = 60e6  # H200 L2 (KINDS.md: 60 MB)


# ---- configs ------------------------------------------------------------------------------
def _attention_cfg(kind: str, d: int, heads: int, head_dim: int) -> nets.ModelConfig:
    """One-layer config whose attention is of `kind`, in the shape of its zoo namesake."""
    a = {"mha": dict(kind="mha", n_heads=heads, n_kv_heads=heads, head_dim=head_dim),
         "gqa": dict(kind="gqa", n_heads=heads, n_kv_heads=max(1, heads // 8), head_dim=head_dim),
         "mfa": dict(kind="mfa", n_heads=heads, n_kv_heads=1, head_dim=2 * head_dim, q_rank=d // 4),
         "mla": dict(kind="mla", n_heads=heads, n_kv_heads=heads, head_dim=head_dim, q_rank=d // 4,
                     kv_rank=min(d, 4 * head_dim), rope_dim=head_dim // 2)}[kind]
    return nets.ModelConfig(name=f"attn-{kind}", vocab_size=256, d_model=d, n_layers=1, max_seq_len=1 << 20,
                            attention=nets.AttentionConfig(**a), ffn=nets.FFNConfig(d_ff=4 * d))


def _moe_cfg(d: int, d_expert: int, experts: int, top_k: int) -> nets.ModelConfig:
    return nets.ModelConfig(name="moe", vocab_size=256, d_model=d, n_layers=1, max_seq_len=4096,
                            ffn=nets.FFNConfig(kind="moe", d_ff=4 * d, n_experts=experts, top_k=top_k,
                                               d_expert=d_expert))


def model_configs(tiny: bool) -> list[nets.ModelConfig]:
    """Scaled zoo configs: each keeps its namesake's attention/FFN kind, sized to fit one GPU."""
    z = nets.zoo.get
    if tiny:
        return [z("codesign-default").replace(name="codesign-default"),
                z("llama-2-7b").replace(name="llama-2-7b@tiny", d_model=128, n_layers=2, vocab_size=512,
                                        attention=dict(n_heads=4, n_kv_heads=4, head_dim=32), ffn=dict(d_ff=256),
                                        max_seq_len=256)]
    return [
        z("llama-2-7b").replace(name="llama-2-7b@0.9b", d_model=2048, n_layers=16,
                                attention=dict(n_heads=16, n_kv_heads=16, head_dim=128), ffn=dict(d_ff=5504)),
        z("llama-3-70b").replace(name="llama-3-70b@0.8b", d_model=1536, n_layers=16, max_seq_len=8192,
                                 attention=dict(n_heads=12, n_kv_heads=4, head_dim=128), ffn=dict(d_ff=4096)),
        z("deepseek-v3").replace(name="deepseek-v3@0.5b", d_model=1024, n_layers=8, vocab_size=32000,
                                 attention=dict(n_heads=16, n_kv_heads=16, head_dim=64, q_rank=384, kv_rank=256,
                                                rope_dim=32),
                                 ffn=dict(d_ff=2816, n_experts=32, top_k=4, n_shared_experts=1, d_expert=512,
                                          moe_start=1)),
        z("step-3").replace(name="step-3@1.6b", d_model=2048, n_layers=12, vocab_size=32000,
                            attention=dict(n_heads=16, n_kv_heads=1, head_dim=128, q_rank=512),
                            ffn=dict(d_ff=5632, n_experts=16, top_k=2, n_shared_experts=1, d_expert=1408,
                                     moe_start=1, moe_end=0)),
        z("llama-2-7b").replace(name="llama-2-7b@2.9b", d_model=3072, n_layers=24,
                                attention=dict(n_heads=24, n_kv_heads=24, head_dim=128), ffn=dict(d_ff=8192)),
    ]


# ---- the plan -------------------------------------------------------------------------------
def plan(tiny: bool) -> list[dict]:
    """Every item to measure, interleaved across kinds (see the module docstring)."""
    gemm, attn, moe, norm, steps = [], [], [], [], []
    if tiny:
        sizes = [(16, 128, 128), (256, 256, 256)]
        dtypes = ["bf16", "fp8"]
        attn_grid = [(k, 2, 128) for k in ("mha", "gqa", "mla", "mfa")]
        attn_dims, prefill_grid = (128, 4, 32), []
        moe_grid = [(4, 4, 1), (64, 8, 2)]
        moe_dims = (128, 64)
        norm_grid = [(64, 128), (1024, 256)]
        step_grid = [("decode", 2, 64), ("prefill", 1, 32)]
    else:
        sizes = ([(m, 4096, 4096) for m in (1, 16, 64, 256, 1024, 4096, 16384)]
                 + [(m, n, k) for m in (8, 512, 8192) for n, k in ((1024, 1024), (2048, 8192), (8192, 2048),
                                                                  (14336, 4096), (4096, 14336))]
                 + [(128, 32000, 4096), (2048, 32000, 2048), (16, 1536, 7168), (2048, 576, 7168)])
        dtypes = ["bf16", "fp8"]
        attn_grid = [(k, b, c) for k in ("mha", "gqa", "mla", "mfa")
                     for b, c in ((1, 1024), (1, 8192), (16, 2048), (64, 4096))]
        attn_dims, prefill_grid = (2048, 16, 128), [(1, 1024), (4, 2048)]
        moe_grid = [(t, e, k) for t in (1, 32, 512, 4096) for e, k in ((8, 2), (32, 4), (64, 8))]
        moe_dims = (2048, 1024)
        norm_grid = [(1, 4096), (256, 4096), (4096, 4096), (32768, 2048)]
        step_grid = [("decode", 1, 2048), ("decode", 32, 2048), ("prefill", 1, 2048)]
    for dtype in dtypes:
        for m, n, k in sizes:
            gemm.append({"kind": "gemm", "dtype": dtype, "shape": {"m": m, "n": n, "k": k}})
    d, heads, hd = attn_dims
    for kind, batch, context in attn_grid:
        attn.append({"kind": "attention", "dtype": "bf16", "phase": "decode",
                     "shape": {"attention": kind, "batch": batch, "context": context, "d_model": d, "heads": heads,
                               "head_dim": hd}})
    for kind in ("mha", "gqa", "mla", "mfa"):
        for batch, length in prefill_grid:
            attn.append({"kind": "attention", "dtype": "bf16", "phase": "prefill",
                         "shape": {"attention": kind, "batch": batch, "context": length, "d_model": d,
                                   "heads": heads, "head_dim": hd}})
    for tokens, experts, top_k in moe_grid:
        moe.append({"kind": "moe", "dtype": "bf16", "shape": {"tokens": tokens, "experts": experts, "top_k": top_k,
                                                             "d_model": moe_dims[0], "d_expert": moe_dims[1]}})
    for tokens, width in norm_grid:
        norm.append({"kind": "norm", "dtype": "bf16", "shape": {"tokens": tokens, "width": width}})
    for cfg in model_configs(tiny):
        for phase, batch, context in step_grid:
            steps.append({"kind": f"{phase}_step", "dtype": "bf16", "config": cfg.to_dict(),
                          "shape": {"model": cfg.name, "batch": batch, "context": context}})
    return interleave([gemm, attn, moe, norm, steps], describe)


def interleave(lanes: list[list[dict]], describe_fn) -> list[dict]:
    """The items of `lanes` round-robin (a budget cut trims each kind evenly), each given its describe and id."""
    order = []
    while any(lanes):
        for lane in lanes:
            if lane:
                order.append(lane.pop(0))
    for item in order:
        item["describe"] = describe_fn(item)
        item["id"] = item["kind"] + "/" + item.get("phase", item["dtype"]) + "/" + "_".join(
            f"{k}{v}" for k, v in item["shape"].items())
    return order


def describe(item: dict) -> dict:
    """What the cost model needs to predict this item (see `hwcost.item_kernels`)."""
    s = item["shape"]
    if item["kind"] == "gemm":
        bits = 8 if item["dtype"] == "fp8" else 16
        return {"type": "gemm", "m": s["m"], "n": s["n"], "k": s["k"], "bits_in": bits, "bits_out": 16}
    if item["kind"] == "norm":
        return {"type": "norm", "tokens": s["tokens"], "width": s["width"], "bits": 16}
    if item["kind"] == "attention":
        cfg = _attention_cfg(s["attention"], s["d_model"], s["heads"], s["head_dim"])
        scenario = {"phase": item["phase"], "batch": s["batch"], "context_len": s["context"]}
        return {"type": "workload", "config": cfg.to_dict(), "scenario": scenario,
                "ops": ["attn_score", "attn_value", "q_proj", "kv_proj", "o_proj"]}
    if item["kind"] == "moe":
        cfg = _moe_cfg(s["d_model"], s["d_expert"], s["experts"], s["top_k"])
        return {"type": "workload", "config": cfg.to_dict(), "scenario": {"phase": "decode", "batch": s["tokens"]},
                "ops": ["moe_routed", "router"]}
    phase = item["kind"].removesuffix("_step")
    return {"type": "workload", "config": item["config"],
            "scenario": {"phase": phase, "batch": s["batch"], "context_len": s["context"]},
            "ops": [op for op in ("attn_score", "attn_value", "q_proj", "kv_proj", "o_proj", "ffn_dense",
                                  "moe_routed", "moe_shared", "router", "norm", "embedding", "lm_head")],
            "lm_head_positions": "all" if phase == "prefill" else "last"}


# ---- building the calls -----------------------------------------------------------------------
def _rand(key, shape, dtype=BF16, scale=1.0):
    return (scale * jax.random.normal(key, shape, jnp.float32)).astype(dtype)


def _randomise(tree, key):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [_rand(k, x.shape, x.dtype, 0.5) for k, x in zip(keys, leaves)])


def build(item: dict, copies: int, key):
    """A no-argument `call()` that enqueues one jitted call of `copies` instances; returns its output."""
    s, kind = item["shape"], item["kind"]
    keys = iter(jax.random.split(key, 4 * copies + 8))
    if kind == "gemm":
        dtype = jnp.float8_e4m3fn if item["dtype"] == "fp8" else BF16
        a = [_rand(next(keys), (s["m"], s["k"]), dtype) for _ in range(copies)]
        b = [_rand(next(keys), (s["k"], s["n"]), dtype, 1 / math.sqrt(s["k"])) for _ in range(copies)]
        fn = jax.jit(lambda a, b: [jnp.dot(x, y, preferred_element_type=BF16) for x, y in zip(a, b)])
        return lambda: fn(a, b)
    if kind == "norm":
        cfg = nets.ModelConfig(d_model=s["width"])
        norm = make_norm(cfg, s["width"], rngs=nnx.Rngs(0), dtype=BF16, param_dtype=BF16)
        graphdef, state = nnx.split(norm)
        xs = [_rand(next(keys), (s["tokens"], s["width"])) for _ in range(copies)]
        fn = jax.jit(lambda state, xs: [nnx.merge(graphdef, state)(x) for x in xs])
        return lambda: fn(state, xs)
    if kind in ("attention", "moe"):
        d = item["describe"]
        cfg = nets.ModelConfig.from_dict(d["config"])
        make = Attention if kind == "attention" else MoE
        graphdef, state0 = nnx.split(make(cfg, rngs=nnx.Rngs(int(jax.random.randint(next(keys), (), 0, 1 << 30))),
                                          dtype=BF16, param_dtype=BF16))
        states = [jax.tree.map(jnp.copy, state0) for _ in range(copies)]
        if kind == "moe":
            xs = [_rand(next(keys), (s["tokens"], 1, cfg.d_model)) for _ in range(copies)]
            fn = jax.jit(lambda states, xs: [nnx.merge(graphdef, st)(x)[0] for st, x in zip(states, xs)])
            return lambda: fn(states, xs)
        batch, context = s["batch"], s["context"]
        if item["phase"] == "prefill":
            xs = [_rand(next(keys), (batch, context, cfg.d_model)) for _ in range(copies)]
            pos = jnp.broadcast_to(jnp.arange(context, dtype=jnp.int32), (batch, context))
            fn = jax.jit(lambda states, xs: [nnx.merge(graphdef, st)(x, positions_BxL=pos)[0]
                                             for st, x in zip(states, xs)])
            return lambda: fn(states, xs)
        xs = [_rand(next(keys), (batch, 1, cfg.d_model)) for _ in range(copies)]
        holder = {"caches": [_randomise(init_layer_cache(cfg, batch, context + 1, BF16), next(keys))
                             for _ in range(copies)]}
        pos = jnp.full((batch, 1), context, jnp.int32)

        def step(states, xs, caches):
            outs = [nnx.merge(graphdef, st)(x, positions_BxL=pos, cache=c, cache_index=context)
                    for st, x, c in zip(states, xs, caches)]
            return [o[0] for o in outs], [o[1] for o in outs]

        fn = jax.jit(step, donate_argnums=(2,))

        def call():
            out, holder["caches"] = fn(states, xs, holder["caches"])
            return out, holder["caches"]
        return call
    # whole model steps
    cfg = nets.ModelConfig.from_dict(item["config"])
    model = nets.TransformerLM(cfg, rngs=nnx.Rngs(0), dtype=BF16, param_dtype=BF16)
    graphdef, state = nnx.split(model)
    del model
    batch, context = s["batch"], s["context"]
    if item["kind"] == "prefill_step":
        tokens = jax.random.randint(next(keys), (batch, context), 0, cfg.vocab_size)
        fn = jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens)[0])
        return lambda: fn(state, tokens)
    tokens = jax.random.randint(next(keys), (batch, 1), 0, cfg.vocab_size)
    holder = {"cache": _randomise(nets.init_cache(cfg, batch, context + 1, BF16), next(keys))}

    def decode(state, tokens, cache):
        logits, aux = nnx.merge(graphdef, state)(tokens, cache=cache, cache_index=context)
        return logits, aux["cache"]

    fn = jax.jit(decode, donate_argnums=(2,))

    def call():
        out, holder["cache"] = fn(state, tokens, holder["cache"])
        return out, holder["cache"]
    return call


# ---- timing ---------------------------------------------------------------------------------------
def measure(call, *, min_sample_s: float, min_samples: int, max_samples: int, item_budget_s: float) -> dict:
    """Warm up (compile), then repeated samples of back-to-back calls; seconds per call."""
    start = time.perf_counter()
    jax.block_until_ready(call())
    compile_s = time.perf_counter() - start
    jax.block_until_ready(call())
    t = time.perf_counter()
    jax.block_until_ready(call())
    single = max(time.perf_counter() - t, 1e-7)
    inner = max(1, min(1000, math.ceil(min_sample_s / single)))
    samples, begun = [], time.perf_counter()
    while len(samples) < max_samples:
        t = time.perf_counter()
        for _ in range(inner):
            out = call()
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - t) / inner)
        if len(samples) >= min_samples and time.perf_counter() - begun > item_budget_s:
            break
    q = np.percentile(samples, [10, 50, 90])
    return {"median_s": float(statistics.median(samples)), "p10_s": float(q[0]), "p90_s": float(q[2]),
            "min_s": float(min(samples)), "max_s": float(max(samples)), "samples": len(samples), "inner": inner,
            "compile_s": compile_s, "spread": float((q[2] - q[0]) / q[1]) if q[1] > 0 else 0.0}


def ceilings(tiny: bool) -> dict:
    """Measured copy bandwidth [bytes/s, read + write] and bf16 matmul rate [FLOP/s] on this device."""
    n = 1 << (20 if tiny else 28)  # elements: 2 MiB or 512 MiB of bf16
    x = _rand(jax.random.key(1), (n,))
    copy = jax.jit(lambda x: x * 2)
    t = measure(lambda: copy(x), min_sample_s=0.01, min_samples=5, max_samples=20, item_budget_s=1.0)
    m = 256 if tiny else 8192
    a, b = _rand(jax.random.key(2), (m, m)), _rand(jax.random.key(3), (m, m), scale=1 / math.sqrt(m))
    mm = jax.jit(lambda a, b: a @ b)
    g = measure(lambda: mm(a, b), min_sample_s=0.01, min_samples=5, max_samples=20, item_budget_s=1.0)
    return {"copy_bytes_per_s": 2 * 2 * n / t["median_s"], "copy_bytes": 4 * n,
            "matmul_bf16_flops_per_s": 2 * m ** 3 / g["median_s"], "matmul_n": m}


def _write(path: Path, report: dict) -> None:
    atomic_write_json(path, report, indent=1, sort_keys=False)


def run(out: Path, budget_s: float, tiny: bool, seed: int = 0, only: tuple[str, ...] = (),
        resume: bool = False) -> dict:
    """Measure the plan within `budget_s` seconds, writing `out` after every item.

    resume: keep the items of an existing `out` (same schema and device) and measure only
    the rest, so a suite cut off by a time limit, or split over calls, ends in one file.
    """
    begun = time.perf_counter()
    device = jax.devices()[0]
    previous = []
    if resume and out.is_file():
        old = json.loads(out.read_text())
        if old.get("schema") != DATA_SCHEMA or old["device"]["kind"] != getattr(device, "device_kind", str(device)):
            raise SystemExit(f"resume: {out} has schema {old.get('schema')!r} on {old['device']['kind']!r}: "
                             f"must be {DATA_SCHEMA!r} on this device")
        previous = old["items"]
    done = {i["id"] for i in previous}
    items = [i for i in plan(tiny) if (not only or i["kind"] in only) and i["id"] not in done]
    report = {"schema": DATA_SCHEMA, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "device": {"kind": getattr(device, "device_kind", str(device)), "platform": device.platform,
                         "count": jax.device_count(), "host": socket.gethostname(), "python": platform.python_version(),
                         "jax": jax.__version__},
              "suite": {"tiny": tiny, "budget_s": budget_s, "seed": seed, "planned": len(items)},
              "ceilings": ceilings(tiny), "items": list(previous), "skipped": []}
    print(f"kernels: {len(items)} items on {report['device']['kind']} ({device.platform}), jax {jax.__version__}, "
          f"budget {budget_s:.0f} s; ceilings: copy {report['ceilings']['copy_bytes_per_s'] / 1e9:.1f} GB/s, "
          f"bf16 matmul {report['ceilings']['matmul_bf16_flops_per_s'] / 1e12:.2f} TFLOP/s", flush=True)
    _write(out, report)
    key = jax.random.key(seed)
    for n, item in enumerate(items):
        elapsed = time.perf_counter() - begun
        left = budget_s - elapsed
        if left < 2.0:
            report["skipped"] += [{"id": i["id"], "reason": "budget"} for i in items[n:]]
            break
        kernels = item_kernels(item["describe"])
        flops = float(np.sum(kernels["flops"] * kernels["launches"]))
        hbm = float(np.sum(kernels["bytes"] * kernels["launches"]))
        small = item["kind"] in ("gemm", "norm", "attention", "moe")
        copies = int(min(16 if item["kind"] in ("gemm", "norm") else 8, max(1, math.ceil(3 * L2_BYTES / hbm)))) \
            if small else 1
        if tiny:
            copies = min(copies, 2)
        try:
            call = build(item, copies, jax.random.fold_in(key, n))
            timing = measure(call, min_sample_s=0.002 if tiny else 0.005, min_samples=5, max_samples=15 if tiny else 30,
                             item_budget_s=min(0.3 if tiny else 1.0, left / max(1, len(items) - n)))
            del call
        except Exception as err:  # e.g. FP8 not supported by this backend, or out of memory
            report["skipped"].append({"id": item["id"], "reason": f"{type(err).__name__}: {str(err)[:300]}"})
            print(f"[{n + 1}/{len(items)}] {item['id']}: skipped ({type(err).__name__})", flush=True)
            _write(out, report)
            continue
        per_instance = {k: (v / copies if k.endswith("_s") and k != "compile_s" else v) for k, v in timing.items()}
        record = {k: v for k, v in item.items() if k != "config"}
        record.update(copies=copies, timing=per_instance, flops=flops, hbm_bytes=hbm)
        report["items"].append(record)
        _write(out, report)
        t = per_instance["median_s"]
        print(f"[{n + 1}/{len(items)}] {item['id']}: {t * 1e6:.1f} us (spread {timing['spread']:.1%}, "
              f"{flops / t / 1e12:.2f} TFLOP/s, {hbm / t / 1e9:.1f} GB/s, x{copies})", flush=True)
    report["suite"]["wall_s"] = time.perf_counter() - begun
    _write(out, report)
    kinds = sorted({i["kind"] for i in report["items"]})
    print(f"\nmeasured {len(report['items']) - len(previous)}/{len(items)} new items in {report['suite']['wall_s']:.0f} s on "
          f"{report['device']['kind']}; skipped {len(report['skipped'])}; wrote {out}")
    print(f"{'kind':<14} {'items':>5} {'median of medians us':>22}")
    for kind in kinds:
        ts = [i["timing"]["median_s"] for i in report["items"] if i["kind"] == kind]
        print(f"{kind:<14} {len(ts):>5} {statistics.median(ts) * 1e6:>22.1f}")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON data file to write (schema " + DATA_SCHEMA + ")")
    parser.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget for the whole suite [s]")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (a CPU check in under 2 minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="keep the items already in --out, measure the rest")
    parser.add_argument("--only", nargs="*", default=(), help="measure only these kinds "
                        "(gemm attention moe norm decode_step prefill_step)")
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        raise SystemExit(f"budget_s={args.budget_s}: must be positive")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    run(args.out, args.budget_s, args.tiny, args.seed, tuple(args.only), args.resume)


if __name__ == "__main__":
    sys.exit(main())
