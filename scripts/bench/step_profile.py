"""Where a training step's time goes: a device trace of a few steps, parsed into a table of kernels.

    PYTHONPATH=. python scripts/bench/step_profile.py --model codesign-100m --batch 16 --seq-len 1024 --out DIR

Runs the `Trainer`'s compiled step (warm-up first, so compilation is not traced), records
`--steps` steps with `jax.profiler.trace(..., create_perfetto_trace=True)` and reads the
Perfetto JSON it writes: every complete event on a device stream is a kernel (or a copy). The
table sums kernel time per name and per family (GEMM, attention, MoE kernels, reductions and
norms, elementwise fusions, copies, collectives), divided by the steps traced; the sum of all
kernels beside the wall time per step shows how much of the step is idle device time (launch
gaps, host work). Writes DIR/profile.json and DIR/profile.md; the raw trace stays in DIR/trace.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
from pathlib import Path

import jax

from codesign import TrainConfig, Trainer
from train_throughput import step_runner  # scripts/bench is on sys.path when run as a script

# the first pattern a kernel name matches decides its family (names are XLA fusion / cuBLAS / cuDNN names)
FAMILIES = (
    ("gemm", r"gemm|cublas|cutlass|sm90_xmma|nvjet|matmul|dot"),
    ("attention", r"flash|fmha|cudnn|sdpa|attention|softmax"),
    ("moe", r"ragged|grouped|triton|pallas|sort|scatter|gather"),
    ("copy", r"memcpy|memset|copy|transpose"),
    ("collective", r"nccl|all_reduce|all_gather|reduce_scatter|all_to_all"),
    ("reduction", r"reduce|norm|rsqrt|mean|variance"),
    ("elementwise", r"fusion|loop|convert|add|multiply|select|broadcast"),
)


def family(name: str) -> str:
    low = name.lower()
    for fam, pattern in FAMILIES:
        if re.search(pattern, low):
            return fam
    return "other"


def device_events(trace_dir: Path) -> list[dict]:
    """Complete ('X') events on device streams from the Perfetto JSON under `trace_dir`."""
    files = sorted(trace_dir.rglob("*.trace.json.gz")) + sorted(trace_dir.rglob("perfetto_trace.json.gz"))
    if not files:
        raise FileNotFoundError(f"no Perfetto trace under {trace_dir}")
    with gzip.open(files[-1], "rt") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    # process names tell device (/device:GPU:0 ...) from host threads
    pnames = {e["pid"]: e.get("args", {}).get("name", "") for e in events
              if e.get("ph") == "M" and e.get("name") == "process_name"}
    device_pids = {pid for pid, name in pnames.items() if "device" in name.lower() and "host" not in name.lower()}
    # a GPU's lines: one per stream (the kernels) beside derived ones ("XLA Ops", "XLA Modules") that
    # repeat the same time: keep the stream lines when there are any, or the total would count twice
    tnames = {(e["pid"], e.get("tid")): e.get("args", {}).get("name", "") for e in events
              if e.get("ph") == "M" and e.get("name") == "thread_name" and e.get("pid") in device_pids}
    streams = {key for key, name in tnames.items() if name.lower().startswith("stream")}
    return [e for e in events if e.get("ph") == "X" and e.get("pid") in device_pids and "dur" in e
            and (not streams or (e["pid"], e.get("tid")) in streams)]


def line_names(trace_dir: Path) -> list[str]:
    """Every process/thread line of the trace (to check what was counted)."""
    files = sorted(trace_dir.rglob("perfetto_trace.json.gz"))
    with gzip.open(files[-1], "rt") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    return sorted({f"{e['pid']}:{e.get('tid', '')}:{e.get('args', {}).get('name', '')}" for e in events
                   if e.get("ph") == "M" and e.get("name") in ("process_name", "thread_name")})


def table(events: list[dict], steps: int, top: int) -> dict:
    by_name: dict[str, float] = collections.Counter()
    count: dict[str, int] = collections.Counter()
    for e in events:
        by_name[e["name"]] += e["dur"] / 1e3 / steps   # us -> ms per step
        count[e["name"]] += 1
    by_family: dict[str, float] = collections.Counter()
    for name, ms in by_name.items():
        by_family[family(name)] += ms
    return {"kernel_ms_per_step": sum(by_name.values()),
            "families_ms": dict(sorted(by_family.items(), key=lambda kv: -kv[1])),
            "top": [{"name": n[:120], "family": family(n), "ms_per_step": ms, "calls_per_step": count[n] / steps}
                    for n, ms in sorted(by_name.items(), key=lambda kv: -kv[1])[:top]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="codesign-100m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", default="runs/bench/profile")
    a = parser.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(TrainConfig(model=a.model, steps=10_000, batch=a.batch, seq_len=a.seq_len, dtype=a.dtype))
    run = step_runner(trainer)

    run(3)                                   # compile and warm up outside the trace
    wall = run(a.steps) / a.steps
    with jax.profiler.trace(str(out / "trace"), create_perfetto_trace=True):
        run(a.steps)
    result = {"model": a.model, "batch": a.batch, "seq_len": a.seq_len, "dtype": a.dtype, "steps": a.steps,
              "device": str(jax.devices()[0]), "wall_ms_per_step": wall * 1e3,
              **table(device_events(out / "trace"), a.steps, a.top), "trace_lines": line_names(out / "trace")}
    (out / "profile.json").write_text(json.dumps(result, indent=1))
    lines = [f"# {a.model} {a.batch}x{a.seq_len} {a.dtype} on {result['device']}",
             f"wall {result['wall_ms_per_step']:.2f} ms/step, kernels {result['kernel_ms_per_step']:.2f} ms/step", "",
             "| family | ms/step |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.2f} |" for k, v in result["families_ms"].items()]
    lines += ["", "| kernel | family | ms/step | calls/step |", "| --- | --- | ---: | ---: |"]
    lines += [f"| `{r['name']}` | {r['family']} | {r['ms_per_step']:.3f} | {r['calls_per_step']:.0f} |"
              for r in result["top"]]
    (out / "profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
