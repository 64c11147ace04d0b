"""Op-level time breakdown of a `jax.profiler` trace: the device's kernels by total time, and by part of the step.

    python3 scripts/bench/profile_table.py TRACE_DIR [--steps N] [--top 40] [--out table.json]

Reads the newest `*.trace.json.gz` under TRACE_DIR (written by `jax.profiler.start_trace`; the
`.xplane.pb` next to it opens in TensorBoard/XProf for the full view). Device events are the
"X" events of every process whose name starts with "/device:" (one per GPU stream); on a CPU
trace, where XLA runs on host threads, the events of threads named "tf_XLA*" are used instead
(so the parser is testable without a GPU). Each kernel is keyed by its name; the HLO op and
its source path (`args` "hlo_op", "long_name", "tf_op", "name_scope" where the trace has them)
are kept for the largest ones. Parts of the step are keyword classes over the kernel name and
those args (first match wins, order below); "other" is everything unmatched.
Times are microseconds summed over the traced steps and divided by `--steps`.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import defaultdict
from pathlib import Path

# (part, keywords): matched case-insensitively against the kernel name and its args, first match wins
PARTS = (
    ("attention (cuDNN / fused)", ("cudnn", "flash", "fmha", "dot_product_attention", "sdpa")),
    ("grouped matmul (MoE experts)", ("ragged", "grouped", "mosaic", "mgpu")),
    ("MoE dispatch (sort, gather, router)", ("sort", "gather", "scatter", "router", "argsort", "top_k", "topk")),
    ("optimizer (AdamW, clipping)", ("adam", "optax", "clip", "scale_by", "apply_updates")),
    ("matmul (GEMM)", ("gemm", "cublas", "nvjet", "sm90_xmma", "cutlass", "dot", "matmul", "triton_gemm")),
    ("loss (softmax cross-entropy)", ("cross_entropy", "log_softmax", "logsumexp")),
    ("norm", ("norm", "rsqrt")),
    ("copies / casts / transposes", ("copy", "convert", "transpose", "memcpy", "memset", "bitcast")),
    ("elementwise / reduction fusions", ("fusion", "reduce", "loop_", "input_")),
)
_ARG_KEYS = ("hlo_op", "long_name", "tf_op", "name_scope", "hlo_module")


def newest_trace(trace_dir: str | Path) -> Path:
    paths = sorted(Path(trace_dir).rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not paths:
        raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir} (was jax.profiler.start_trace run there?)")
    return paths[-1]


def device_events(trace: dict) -> tuple[list[dict], list[dict], str]:
    """(kernel events, XLA-op events, where they came from) of a trace.

    On a GPU the device process has one thread per stream ("Stream #N...": the kernels and
    copies as they ran) and derived lines ("XLA Ops": one event per HLO op, spanning its
    kernels; "XLA Modules", "Steps": whole programs), so kernels and ops are read from their
    own lines and never added together.
    """
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    threads = {(e["pid"], e.get("tid")): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    device_pids = {pid for pid, name in processes.items() if name.startswith("/device:")}
    complete = [e for e in events if e.get("ph") == "X" and "dur" in e]
    if device_pids:
        line = {key: name for key, name in threads.items() if key[0] in device_pids}
        streams = {key for key, name in line.items() if name.startswith("Stream")}
        derived = {key for key, name in line.items() if name.startswith(("XLA", "Steps", "Framework", "TensorFlow"))}
        ops = {key for key, name in line.items() if name == "XLA Ops"}
        on_device = [e for e in complete if e["pid"] in device_pids]
        kernels = [e for e in on_device if ((e["pid"], e.get("tid")) in streams if streams
                                            else (e["pid"], e.get("tid")) not in derived)]
        return kernels, [e for e in on_device if (e["pid"], e.get("tid")) in ops], "device streams"
    xla_threads = {key for key, name in threads.items() if name.startswith("tf_XLA")}
    kernels = [e for e in complete if (e["pid"], e.get("tid")) in xla_threads
               and not e["name"].startswith(_CPU_CONTAINERS)]
    return kernels, [], "host XLA threads (CPU trace)"


_CPU_CONTAINERS = ("ThunkExecutor", "ThreadpoolListener", "SlinkyThreadPool", "while", "end: ")


def part_of(name: str, args: dict) -> str:
    text = " ".join([name] + [str(args.get(k, "")) for k in _ARG_KEYS]).lower()
    for part, keywords in PARTS:
        if any(k in text for k in keywords):
            return part
    return "other"


def breakdown(trace_path: str | Path, steps: int = 1, top: int = 40) -> dict:
    """The table as a dict: totals, parts and the `top` kernels (microseconds per step)."""
    with gzip.open(trace_path, "rt") as f:
        trace = json.load(f)
    events, op_events, source = device_events(trace)
    by_kernel: dict[str, dict] = defaultdict(lambda: {"us": 0.0, "count": 0, "args": {}})
    by_part: dict[str, float] = defaultdict(float)
    for e in events:
        args = e.get("args", {}) or {}
        row = by_kernel[e["name"]]
        row["us"] += e["dur"]
        row["count"] += 1
        if not row["args"]:
            row["args"] = {k: str(args[k])[:300] for k in _ARG_KEYS if k in args}
        by_part[part_of(e["name"], args)] += e["dur"]
    total = sum(r["us"] for r in by_kernel.values())
    span = (max(e["ts"] + e["dur"] for e in events) - min(e["ts"] for e in events)) if events else 0.0
    kernels = sorted(by_kernel.items(), key=lambda kv: -kv[1]["us"])
    by_op: dict[str, float] = defaultdict(float)
    for e in op_events:
        by_op[e["name"]] += e["dur"]
    return {"top_xla_ops": [{"op": name, "us_per_step": us / steps}
                            for name, us in sorted(by_op.items(), key=lambda kv: -kv[1])[:top]],
            "trace": str(trace_path), "source": source, "steps": steps, "events": len(events),
            "device_busy_us_per_step": total / steps, "span_us_per_step": span / steps,
            "parts": [{"part": p, "us_per_step": us / steps, "share": us / total if total else 0.0}
                      for p, us in sorted(by_part.items(), key=lambda kv: -kv[1])],
            "top": [{"kernel": name, "us_per_step": r["us"] / steps, "calls_per_step": r["count"] / steps,
                     "share": r["us"] / total if total else 0.0, "part": part_of(name, r["args"]), **r["args"]}
                    for name, r in kernels[:top]]}


def format_table(table: dict) -> str:
    lines = [f"{table['trace']} ({table['source']}, {table['events']} events, {table['steps']} steps)",
             f"device busy {table['device_busy_us_per_step'] / 1e3:.2f} ms/step over a span of "
             f"{table['span_us_per_step'] / 1e3:.2f} ms/step", "", f"{'part':<40}{'ms/step':>10}{'share':>8}"]
    lines += [f"{p['part']:<40}{p['us_per_step'] / 1e3:>10.3f}{p['share']:>8.1%}" for p in table["parts"]]
    lines += ["", f"{'ms/step':>9}{'share':>7}{'calls':>7}  kernel  [hlo op | source]"]
    for r in table["top"]:
        where = " | ".join(str(r[k]) for k in ("hlo_op", "tf_op", "long_name") if r.get(k))[:160]
        lines.append(f"{r['us_per_step'] / 1e3:>9.3f}{r['share']:>7.1%}{r['calls_per_step']:>7.1f}  "
                     f"{r['kernel'][:90]}  [{where}]")
    if table["top_xla_ops"]:
        lines += ["", "XLA ops (the trace's derived line; an op spans its kernels)", f"{'ms/step':>9}  op"]
        lines += [f"{r['us_per_step'] / 1e3:>9.3f}  {r['op'][:120]}" for r in table["top_xla_ops"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace_dir")
    parser.add_argument("--steps", type=int, default=1, help="steps the trace covers (times are divided by it)")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", default="", help="also write the table as JSON here")
    args = parser.parse_args()
    table = breakdown(newest_trace(args.trace_dir), args.steps, args.top)
    print(format_table(table))
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=2))
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
