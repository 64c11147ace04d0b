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
`nets.grouped`, `nets._sdpa`; unset = "auto"): run once with both set to the reference
("reference", "einsum") and once unset to measure before/after on one machine.
`--gemm-ceiling` also times every weight matmul of the step alone (forward and both gradients,
bf16, the step's shapes; routed experts as dense matmuls of tokens x top_k rows): the TFLOP/s
those shapes reach in isolation, the ceiling of the step's MFU.
Cases are model:batch:seq_len[:remat[:attention]] (remat: none, dots, full, see
`nets.REMAT_POLICIES`; attention: auto, einsum, xla, cudnn, see `nets.ATTENTION_IMPLEMENTATIONS`;
defaults none and auto). A case that fails (e.g. out of memory) is recorded with its error and
the others still run; the JSON is rewritten after every case, so a time limit keeps what ran.
`--profile DIR` traces `--profile-steps` steps of the first case after its timing
(`jax.profiler`, the trace under DIR) and writes the op-level table of `profile_table.py`
(this folder) to DIR/table.txt and DIR/table.json.
Timing: warm-up steps first (compilation excluded), then the median of repeated timed
blocks, each ended by `block_until_ready`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import traceback
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


def gemm_shapes(cfg: nets.ModelConfig, tokens: int) -> list[tuple[int, int, int, int]]:
    """(rows, d_in, d_out, how many per step) of every weight matmul of a training step's forward pass.

    Routed experts count as one dense matmul of tokens x top_k rows per expert matrix (the
    ceiling a perfect grouped kernel reaches); the router and the attention core are left out.
    """
    a, f, D = cfg.attention, cfg.ffn, cfg.d_model
    per_layer = ([(tokens, D, a.q_rank), (tokens, a.q_rank, a.n_heads * a.qk_head_dim)] if a.q_rank
                 else [(tokens, D, a.n_heads * a.qk_head_dim)])
    if a.kind == "mla":
        per_layer += [(tokens, D, a.kv_rank + a.rope_dim), (tokens, a.kv_rank, 2 * a.n_heads * a.head_dim)]
    else:
        per_layer += [(tokens, D, a.n_kv_heads * a.head_dim)] * 2
    per_layer.append((tokens, a.n_heads * a.head_dim, D))
    m = 3 if f.activation == "swiglu" else 2
    n_moe = sum(cfg.is_moe_layer(i) for i in range(cfg.n_layers))
    out = [(r, i, o, cfg.n_layers) for r, i, o in per_layer]
    out += [(tokens, D, f.d_ff, (m - 1) * (cfg.n_layers - n_moe)), (tokens, f.d_ff, D, cfg.n_layers - n_moe)]
    if n_moe:
        out += [(tokens * f.top_k, D, f.d_expert, (m - 1) * n_moe), (tokens * f.top_k, f.d_expert, D, n_moe)]
        if f.n_shared_experts:
            S = f.n_shared_experts * f.d_expert
            out += [(tokens, D, S, (m - 1) * n_moe), (tokens, S, D, n_moe)]
    out.append((tokens, D, cfg.vocab_size, 1))
    return [row for row in out if row[3] > 0]


def gemm_ceiling(cfg: nets.ModelConfig, tokens: int, repeats: int = 10) -> dict:
    """TFLOP/s of the step's weight matmuls alone (forward, d input, d weight; bf16), FLOP-weighted."""
    total_flops = total_s = 0.0
    for rows, d_in, d_out, count in gemm_shapes(cfg, tokens):
        x = jax.random.normal(jax.random.key(0), (rows, d_in), jnp.bfloat16)
        w = jax.random.normal(jax.random.key(1), (d_in, d_out), jnp.bfloat16)
        g = jax.random.normal(jax.random.key(2), (rows, d_out), jnp.bfloat16)
        f = jax.jit(lambda x, w, g: (x @ w, g @ w.T, x.T @ g))
        jax.block_until_ready(f(x, w, g))
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(f(x, w, g))
            times.append(time.perf_counter() - t)
        total_flops += count * 3 * 2 * rows * d_in * d_out
        total_s += count * statistics.median(times)
    return {"gemm_flops_per_step": total_flops, "gemm_s_per_step": total_s, "gemm_ceiling_tflops": total_flops / total_s / 1e12}


def step_runner(trainer: Trainer):
    """`run(n)`: `n` more compiled steps of `trainer` (its own state, steps counted on), wall seconds to the end."""
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

    return run


def bench_model(model: str, batch: int, seq_len: int, dtype: str, warmup: int, blocks: int, steps_per_block: int,
                remat: str = "none", attention: str = "auto", profile_dir: str = "", profile_steps: int = 5):
    tc = TrainConfig(model=model, steps=10_000, batch=batch, seq_len=seq_len, dtype=dtype, remat=remat,
                     attention=attention)
    trainer = Trainer(tc)
    run = step_runner(trainer)
    t_compile = run(1)
    run(warmup)
    block_times = [run(steps_per_block) for _ in range(blocks)]
    profile = {}
    if profile_dir:
        try:
            profile = profile_step(run, profile_dir, profile_steps)
        except Exception as error:  # noqa: BLE001 - the timing above stands without the profile
            traceback.print_exc(limit=3)
            profile = {"profile_error": f"{type(error).__name__}: {error}"[:400]}
    step_s = statistics.median(block_times) / steps_per_block
    tokens_per_s = batch * seq_len / step_s
    cfg = nets.zoo.get(model)
    flops_tok = training_flops_per_token(cfg, seq_len)
    a = cfg.attention
    flops_tok_causal = 6.0 * nets.count_params(cfg).active + 6.0 * cfg.n_layers * a.n_heads * a.qk_head_dim * seq_len
    return {"model": model, "params_total": nets.count_params(cfg).total,
            "params_active": nets.count_params(cfg).active, "batch": batch, "seq_len": seq_len, "dtype": dtype,
            "remat": remat, "attention": attention, **profile,
            "step_s_median": step_s, "step_s_min": min(block_times) / steps_per_block,
            "step_s_max": max(block_times) / steps_per_block, "tokens_per_s": tokens_per_s,
            "train_flops_per_token": flops_tok, "achieved_tflops": flops_tok * tokens_per_s / 1e12,
            "train_flops_per_token_causal": flops_tok_causal,
            "achieved_tflops_causal": flops_tok_causal * tokens_per_s / 1e12,
            "first_step_s_incl_compile": t_compile, "compilations": trainer.trace_count}


def profile_step(run, profile_dir: str, steps: int) -> dict:
    """Trace `steps` steps with jax.profiler into `profile_dir` and write the op-level table next to it."""
    from profile_table import breakdown, format_table, newest_trace  # this folder

    jax.profiler.start_trace(profile_dir)
    try:
        run(steps)
    finally:
        jax.profiler.stop_trace()
    table = breakdown(newest_trace(profile_dir), steps)
    Path(profile_dir, "table.json").write_text(json.dumps(table, indent=2))
    Path(profile_dir, "table.txt").write_text(format_table(table) + "\n")
    print(format_table(table), flush=True)
    return {"profile_dir": profile_dir, "profile_busy_ms_per_step": table["device_busy_us_per_step"] / 1e3,
            "profile_parts": {p["part"]: p["us_per_step"] / 1e3 for p in table["parts"]}}


def parse_cases(text: str) -> list[tuple]:
    """model:batch:seq_len[:remat[:attention]],... -> (model, batch, seq_len, remat, attention)."""
    cases = []
    for case in text.split(","):
        fields = case.split(":")
        if not 3 <= len(fields) <= 5:
            raise SystemExit(f"--cases entry {case!r}: must be model:batch:seq_len[:remat[:attention]]")
        model, batch, seq = fields[:3]
        cases.append((model, int(batch), int(seq), fields[3] if len(fields) > 3 else "none",
                      fields[4] if len(fields) > 4 else "auto"))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/train_throughput.json")
    parser.add_argument("--peak-tflops", type=float, default=989.4, help="datasheet dense bf16 TFLOP/s")
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU smoke run)")
    parser.add_argument("--gemm-ceiling", action="store_true",
                        help="also time each weight matmul of the step alone (the ceiling its GEMM shapes reach)")
    parser.add_argument("--cases", default="",
                        help="model:batch:seq_len[:remat[:attention]],... (default: the GPU or quick set)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--block-steps", type=int, default=20)
    parser.add_argument("--profile", default="", help="trace the first case into this folder (with its op table)")
    parser.add_argument("--profile-steps", type=int, default=5)
    args = parser.parse_args()
    on_gpu = jax.default_backend() == "gpu"
    dtype = "bfloat16" if on_gpu else "float32"
    cases = ([("codesign-default", 64, 256), ("codesign-100m", 32, 1024)] if on_gpu and not args.quick
             else [("codesign-default", 8, 128)])
    cases = parse_cases(args.cases) if args.cases else [c + ("none", "auto") for c in cases]
    measured = measured_matmul_tflops(8192 if on_gpu else 1024)
    timing = (dict(warmup=3, blocks=3, steps_per_block=3) if args.quick
              else dict(warmup=args.warmup, blocks=args.blocks, steps_per_block=args.block_steps))
    rows = []
    for i, (m, b, s, remat, attention) in enumerate(cases):
        try:
            rows.append(bench_model(m, b, s, dtype, remat=remat, attention=attention,
                                    profile_dir=args.profile if i == 0 else "", profile_steps=args.profile_steps,
                                    **timing))
        except Exception as error:  # noqa: BLE001 - a failed case (out of memory) is a result
            traceback.print_exc(limit=3)
            rows.append({"model": m, "batch": b, "seq_len": s, "remat": remat, "attention": attention,
                         "error": f"{type(error).__name__}: {error}"[:600]})
        write_report(args, measured, [r for r in rows if "error" not in r], rows)
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "profile_parts"}), flush=True)
    ok = [r for r in rows if "error" not in r]
    if args.gemm_ceiling:
        for r in ok:
            r.update(gemm_ceiling(nets.zoo.get(r["model"]), r["batch"] * r["seq_len"], repeats=3 if args.quick else 10))
            r["gemm_share_of_step"] = r["gemm_s_per_step"] / r["step_s_median"]
            print(f"{r['model']}: weight matmuls alone {r['gemm_ceiling_tflops']:.1f} TFLOP/s, "
                  f"{r['gemm_s_per_step'] * 1e3:.2f} ms of the {r['step_s_median'] * 1e3:.2f} ms step", flush=True)
    report = write_report(args, measured, ok, rows)
    print(f"device: {report['device']} x{report['device_count']}  measured bf16 matmul {measured:.1f} TFLOP/s  "
          f"grouped_matmul={report['grouped_matmul']} CODESIGN_ATTENTION={report['attention_env']}")
    print(f"{'model':<20}{'params':>10}{'batch':>6}{'seq':>6}{'remat':>6}{'attn':>7}{'step ms':>9}{'tokens/s':>12}"
          f"{'TFLOP/s':>9}{'MFU(ds)':>9}{'MFU(mm)':>9}{'MFUc(ds)':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<20}{'':>10}{r['batch']:>6}{r['seq_len']:>6}{r['remat']:>6}{r['attention']:>7}  "
                  f"ERROR {r['error'][:150]}")
            continue
        print(f"{r['model']:<20}{r['params_total'] / 1e6:>9.1f}M{r['batch']:>6}{r['seq_len']:>6}{r['remat']:>6}"
              f"{r['attention']:>7}"
              f"{r['step_s_median'] * 1e3:>9.2f}{r['tokens_per_s']:>12.0f}{r['achieved_tflops']:>9.2f}"
              f"{r['mfu_vs_datasheet']:>9.1%}{r['mfu_vs_measured_matmul']:>9.1%}{r['mfu_causal_vs_datasheet']:>9.1%}")
    print(f"written: {args.out}")


def write_report(args, measured: float, ok: list[dict], rows: list[dict]) -> dict:
    for r in ok:
        r["mfu_vs_datasheet"] = r["achieved_tflops"] / args.peak_tflops
        r["mfu_vs_measured_matmul"] = r["achieved_tflops"] / measured
        r["mfu_causal_vs_datasheet"] = r["achieved_tflops_causal"] / args.peak_tflops
    device = jax.devices()[0]
    report = {"device": getattr(device, "device_kind", str(device)), "backend": jax.default_backend(),
              "device_count": jax.device_count(), "jax": jax.__version__, "measured_matmul_tflops_bf16": measured,
              "datasheet_peak_tflops": args.peak_tflops,
              "grouped_matmul": os.environ.get("CODESIGN_GROUPED_MATMUL", "auto"),
              "attention_env": os.environ.get("CODESIGN_ATTENTION", "auto"), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    nets.atomic_write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
