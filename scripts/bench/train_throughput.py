"""Training throughput and model FLOPs utilisation (MFU) of the default and ~100M models.

    PYTHONPATH=. python scripts/bench/train_throughput.py --out runs/bench/train_throughput.json

MFU = training FLOPs per token x tokens/s / peak, in two conventions: PaLM's
(`codesign.training_flops_per_token`: 6 x active parameters + 12 x layers x heads x
qk_head_dim x seq_len, the attention counted as if not causal) and the causal one
(6 x active parameters + 6 x layers x heads x qk_head_dim x seq_len: the causal half of
the score and value products; "active" excludes the embedding lookup, includes the LM head;
no recompute counted). Two peaks are reported: the datasheet's dense bf16 rate (--peak-tflops,
989 for an H100/H200 SXM) and a bf16 matmul measured in the same run (8192^3 on GPU).
The kernels the step uses follow CODESIGN_GROUPED_MATMUL and CODESIGN_ATTENTION (see
`nets._grouped`, `nets._sdpa`; unset = "auto"): run once with both set to the reference
("reference", "einsum") and once unset to measure before/after on one machine.
Timing: warm-up steps first (compilation excluded), then the median of repeated timed
blocks, each ended by `block_until_ready`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from codesign import TrainConfig, Trainer, training_flops_per_token
import nets


def measured_matmul_tflops(n: int, repeats: int = 10) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e12


def bench_model(model: str, batch: int, seq_len: int, dtype: str, warmup: int, blocks: int, steps_per_block: int):
    tc = TrainConfig(model=model, steps=10_000, batch=batch, seq_len=seq_len, dtype=dtype)
    trainer = Trainer(tc)
    step = 0

    def run(n: int) -> float:
        nonlocal step
        t = time.perf_counter()
        for _ in range(n):
            trainer.params, trainer.opt_state, metrics = trainer.step_fn(
                trainer.params, trainer.opt_state, trainer.train_data, jnp.asarray(step, jnp.int32))
            step += 1
        jax.block_until_ready(metrics)
        return time.perf_counter() - t

    t_compile = run(1)
    run(warmup)
    block_times = [run(steps_per_block) for _ in range(blocks)]
    step_s = statistics.median(block_times) / steps_per_block
    tokens_per_s = batch * seq_len / step_s
    cfg = nets.zoo.get(model)
    flops_tok = training_flops_per_token(cfg, seq_len)
    a = cfg.attention
    flops_tok_causal = 6.0 * nets.count_params(cfg).active + 6.0 * cfg.n_layers * a.n_heads * a.qk_head_dim * seq_len
    return {"model": model, "params_total": nets.count_params(cfg).total,
            "params_active": nets.count_params(cfg).active, "batch": batch, "seq_len": seq_len, "dtype": dtype,
            "step_s_median": step_s, "step_s_min": min(block_times) / steps_per_block,
            "step_s_max": max(block_times) / steps_per_block, "tokens_per_s": tokens_per_s,
            "train_flops_per_token": flops_tok, "achieved_tflops": flops_tok * tokens_per_s / 1e12,
            "train_flops_per_token_causal": flops_tok_causal,
            "achieved_tflops_causal": flops_tok_causal * tokens_per_s / 1e12,
            "first_step_s_incl_compile": t_compile, "compilations": trainer.trace_count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/train_throughput.json")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="datasheet dense bf16 TFLOP/s")
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU smoke run)")
    parser.add_argument("--cases", default="", help="model:batch:seq_len,... (default: the GPU or quick set)")
    args = parser.parse_args()
    on_gpu = jax.default_backend() == "gpu"
    dtype = "bfloat16" if on_gpu else "float32"
    cases = ([("codesign-default", 64, 256), ("codesign-100m", 32, 1024)] if on_gpu and not args.quick
             else [("codesign-default", 8, 128)])
    if args.cases:
        cases = [(m, int(b), int(s)) for m, b, s in (case.split(":") for case in args.cases.split(","))]
    measured = measured_matmul_tflops(8192 if on_gpu else 1024)
    rows = [bench_model(m, b, s, dtype, warmup=3 if args.quick else 10, blocks=3 if args.quick else 5,
                        steps_per_block=3 if args.quick else 20) for m, b, s in cases]
    for r in rows:
        r["mfu_vs_datasheet"] = r["achieved_tflops"] / args.peak_tflops
        r["mfu_vs_measured_matmul"] = r["achieved_tflops"] / measured
        r["mfu_causal_vs_datasheet"] = r["achieved_tflops_causal"] / args.peak_tflops
    device = jax.devices()[0]
    report = {"device": getattr(device, "device_kind", str(device)), "backend": jax.default_backend(),
              "device_count": jax.device_count(), "jax": jax.__version__, "measured_matmul_tflops_bf16": measured,
              "datasheet_peak_tflops": args.peak_tflops,
              "grouped_matmul": os.environ.get("CODESIGN_GROUPED_MATMUL", "auto"),
              "attention": os.environ.get("CODESIGN_ATTENTION", "auto"), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"device: {report['device']} x{report['device_count']}  measured bf16 matmul {measured:.1f} TFLOP/s  "
          f"grouped_matmul={report['grouped_matmul']} attention={report['attention']}")
    print(f"{'model':<18}{'params':>10}{'batch':>6}{'seq':>6}{'step ms':>9}{'tokens/s':>12}{'TFLOP/s':>9}"
          f"{'MFU(ds)':>9}{'MFU(mm)':>9}{'MFUc(ds)':>9}")
    for r in rows:
        print(f"{r['model']:<18}{r['params_total'] / 1e6:>9.1f}M{r['batch']:>6}{r['seq_len']:>6}"
              f"{r['step_s_median'] * 1e3:>9.2f}{r['tokens_per_s']:>12.0f}{r['achieved_tflops']:>9.2f}"
              f"{r['mfu_vs_datasheet']:>9.1%}{r['mfu_vs_measured_matmul']:>9.1%}{r['mfu_causal_vs_datasheet']:>9.1%}")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
