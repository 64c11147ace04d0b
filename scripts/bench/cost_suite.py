"""The measured suite for the GPU cost model, in one command that fits 8 minutes of device time.

    PYTHONPATH=. python scripts/bench/cost_suite.py --out results/cost_suite              # on the GPU
    PYTHONPATH=. python scripts/bench/cost_suite.py --tiny --out /tmp/cost_suite          # CPU check, tiny shapes

Writes one versioned data file `<out>/kernels_<device>_<UTC date-time>.json` (schema
`hwcost.DATA_SCHEMA`, suite version SUITE_VERSION), rewritten atomically after every item, so
a run cut off by the device's time limit keeps everything measured so far. `hwcost.load_data`
reads it; `scripts/calibration_report.py` fits and reports on it.

Items (interleaved across kinds, so a budget cut trims every kind a little):
- GEMMs over (m, n, k) in fp32 (Precision.HIGHEST), tf32 (the TF32 dot algorithm), bf16, fp8
  (e4m3 operands through `jnp.dot(..., preferred_element_type=bf16)`, the path the network's
  fp8 layers take) and int8 (int32 accumulation);
- attention through `nets.Attention` (its own fast paths: cuDNN where it applies, else
  einsum) for MHA, GQA, MFA and MLA in decode (one token against a cache), prefill and
  training (forward + backward);
- grouped MoE GEMMs through `nets.grouped_matmul` (the network's grouped kernel) and whole
  `nets.MoE` layers, each in the forward pass and in training (forward + backward, phase
  "train": the weight and input gradients, at the forward items' shapes);
- RMSNorm and elementwise kernels (a copy; SwiGLU's silu(a) * b);
- whole decode, prefill and training (forward + backward) steps of `nets.TransformerLM` on
  scaled zoo configs (`kernels.model_configs`).
Collectives need more than one GPU: none on a one-GPU machine (the suite records that).

Timing, copies per call and the ceilings are `scripts/bench/kernels.py`'s (loaded from its
file, not copied): the median of repeated samples after compile and warm-up.

Board power (`--power`, NVIDIA GPUs only; `scripts/bench/power.py` samples it): the idle
power once at the start (and again at the end), then for each item, after its timing, the
item's call repeated back to back for POWER_SETTLE_S + `--power-s` seconds (default 1 s,
at least 0.5 s) while the power is sampled every 50 ms. The duration rule: the driver
averages power over the last second, so the first second's readings are dropped and the
mean is taken over the next `--power-s` seconds (20 readings at the default). Each item
records `power`: mean and idle W, the seconds per instance during the loop, and the energy
per instance, total and above idle (`hwcost.fit_energy` fits the latter). `--power` where
no reading is possible (a CPU, no NVIDIA driver) stops before measuring anything: a file
whose power fields said "unavailable" would look like a power run and hold no power data.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import math
import platform
import socket
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import nets
from hwcost import DATA_SCHEMA, item_kernels
from nets import Attention, MoE, atomic_write_json

SUITE_VERSION = "cost-suite/1"
MIN_POWER_S = 0.5
"""The shortest power window (after the settle second) an item may be sampled over [s]: 10 readings."""
BF16 = jnp.bfloat16


def _sibling(name: str):
    """scripts/bench/<name>.py, loaded from its file (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


K = _sibling("kernels")
P = _sibling("power")  # the board power sampler, shared with deploy_check.py
POWER_SETTLE_S = P.SETTLE_S
GEMM_BITS = {"fp32": (32, 32, 32), "tf32": (32, 19, 32), "bf16": (16, 16, 16), "fp8": (8, 8, 16), "int8": (8, 8, 32)}
"""dtype: (storage bits of the operands, compute-rate bits, bits of the result)."""


# ---- the plan ----------------------------------------------------------------------------------
def plan(tiny: bool) -> list[dict]:
    """Every item to measure, interleaved across kinds (module docstring)."""
    gemm, attn, moe, small, steps = [], [], [], [], []
    if tiny:
        shapes = [(16, 128, 128), (128, 256, 128)]
        attn_dims, attn_grid = (128, 4, 32), {"decode": [(2, 64)], "prefill": [(1, 32)], "train": [(1, 32)]}
        grouped = [(64, 4, 64, 128)]
        moe_grid, moe_dims = [(16, 4, 2)], (128, 64)
        norms, elements = [(64, 128)], [1 << 12]
        step_grid = [("decode", 2, 64), ("prefill", 1, 32), ("train", 1, 32)]
    else:
        shapes = [(1, 4096, 4096), (16, 4096, 4096), (128, 4096, 4096), (1024, 4096, 4096), (4096, 4096, 4096),
                  (8192, 8192, 8192), (64, 14336, 4096), (2048, 4096, 14336), (512, 1024, 1024),
                  (8192, 1024, 1024), (2048, 32000, 2048)]
        attn_dims = (2048, 16, 128)
        attn_grid = {"decode": [(1, 2048), (16, 4096), (64, 8192)], "prefill": [(1, 2048), (4, 4096)],
                     "train": [(1, 2048), (4, 2048)]}
        grouped = [(rows, groups, 2048, 1024) for rows, groups in ((256, 8), (4096, 8), (4096, 64), (32768, 64))]
        moe_grid, moe_dims = [(32, 32, 4), (4096, 32, 4), (512, 64, 8)], (2048, 1024)
        norms, elements = [(256, 4096), (8192, 4096), (65536, 2048)], [1 << 16, 1 << 22, 1 << 27]
        # the stored H200 suite's decode and prefill steps (kernels.py), and a training step
        step_grid = [("decode", 1, 2048), ("decode", 32, 2048), ("prefill", 1, 2048), ("train", 1, 2048)]
    for dtype in GEMM_BITS:
        for m, n, k in shapes:
            gemm.append({"kind": "gemm", "dtype": dtype, "shape": {"m": m, "n": n, "k": k}})
    d, heads, hd = attn_dims
    for phase, grid in attn_grid.items():
        for kind in ("mha", "gqa", "mfa", "mla"):
            for batch, context in grid:
                attn.append({"kind": "attention", "dtype": "bf16", "phase": phase,
                             "shape": {"attention": kind, "batch": batch, "context": context, "d_model": d,
                                       "heads": heads, "head_dim": hd}})
    for train in (False, True):  # the training items (forward + backward) at the forward items' shapes
        phase = {"phase": "train"} if train else {}
        for rows, groups, n, k in grouped:
            moe.append({"kind": "grouped_gemm", "dtype": "bf16", **phase,
                        "shape": {"rows": rows, "groups": groups, "n": n, "k": k}})
        for tokens, experts, top_k in moe_grid:
            moe.append({"kind": "moe", "dtype": "bf16", **phase,
                        "shape": {"tokens": tokens, "experts": experts, "top_k": top_k, "d_model": moe_dims[0],
                                  "d_expert": moe_dims[1]}})
    for tokens, width in norms:
        small.append({"kind": "norm", "dtype": "bf16", "shape": {"tokens": tokens, "width": width}})
    for n in elements:
        small.append({"kind": "elementwise", "dtype": "bf16", "shape": {"op": "copy", "elements": n}})
        small.append({"kind": "elementwise", "dtype": "bf16", "shape": {"op": "swiglu", "elements": n}})
    for cfg in K.model_configs(tiny):
        for phase, batch, context in step_grid:
            steps.append({"kind": f"{phase}_step", "dtype": "bf16", "config": cfg.to_dict(),
                          "shape": {"model": cfg.name, "batch": batch, "context": context}})
    return K.interleave([gemm, attn, moe, small, steps], describe)


def describe(item: dict) -> dict:
    """What the cost model needs to predict the item (`hwcost.op_workload`)."""
    s = item["shape"]
    if item["kind"] == "gemm":
        storage, rate, out = GEMM_BITS[item["dtype"]]
        return {"type": "gemm", "m": s["m"], "n": s["n"], "k": s["k"], "bits_in": storage, "bits_out": out,
                "compute_bits": rate}
    if item["kind"] == "grouped_gemm":
        return {"type": "grouped_gemm", "rows": s["rows"], "groups": s["groups"], "n": s["n"], "k": s["k"], "bits": 16,
                **({"phase": "train"} if item.get("phase") == "train" else {})}
    if item["kind"] == "moe" and item.get("phase") == "train":
        # forward + backward over `tokens` tokens: a training workload of one MoE layer (3x the forward's work)
        forward = K.describe(item)
        return {**forward, "scenario": {"phase": "train", "batch": s["tokens"], "context_len": 1}}
    if item["kind"] == "elementwise":
        reads, flops = (2, 5.0) if s["op"] == "swiglu" else (1, 1.0)
        return {"type": "elementwise", "elements": s["elements"], "bits": 16, "reads": reads, "writes": 1,
                "flops_per_element": flops}
    return K.describe(item)  # norm, attention (any phase), moe, and the steps


# ---- building the calls --------------------------------------------------------------------------
def _gemm(item: dict, copies: int, keys):
    s, dtype = item["shape"], item["dtype"]
    operand = {"fp32": jnp.float32, "tf32": jnp.float32, "bf16": BF16, "fp8": jnp.float8_e4m3fn,
               "int8": jnp.int8}[dtype]
    result = {"fp8": BF16, "int8": jnp.int32, "bf16": BF16}.get(dtype, jnp.float32)
    precision = {"fp32": jax.lax.Precision.HIGHEST, "tf32": jax.lax.DotAlgorithmPreset.TF32_TF32_F32}.get(dtype)

    def rand(shape, scale):
        if dtype == "int8":
            return jax.random.randint(next(keys), shape, -127, 128, jnp.int32).astype(jnp.int8)
        return K._rand(next(keys), shape, operand, scale)

    a = [rand((s["m"], s["k"]), 1.0) for _ in range(copies)]
    b = [rand((s["k"], s["n"]), 1 / math.sqrt(s["k"])) for _ in range(copies)]
    fn = jax.jit(lambda a, b: [jnp.dot(x, y, precision=precision, preferred_element_type=result) for x, y in zip(a, b)])
    return lambda: fn(a, b)


def _grouped(item: dict, copies: int, keys):
    """`nets.grouped_matmul`; in training its output and both gradients (a random output gradient pulled back)."""
    s = item["shape"]
    sizes = jnp.full((s["groups"],), s["rows"] // s["groups"], jnp.int32)
    lhs = [K._rand(next(keys), (s["rows"], s["k"])) for _ in range(copies)]
    rhs = [K._rand(next(keys), (s["groups"], s["k"], s["n"]), scale=1 / math.sqrt(s["k"])) for _ in range(copies)]
    if item.get("phase") != "train":
        fn = jax.jit(lambda lhs, rhs: [nets.grouped_matmul(x, w, sizes) for x, w in zip(lhs, rhs)])
        return lambda: fn(lhs, rhs)
    d_out = [K._rand(next(keys), (s["rows"], s["n"])) for _ in range(copies)]

    def forward_backward(x, w, d):
        out, pull = jax.vjp(lambda x, w: nets.grouped_matmul(x, w, sizes), x, w)
        return out, pull(d)  # the output too, so the forward GEMM is not dead code

    fn = jax.jit(lambda lhs, rhs, d_out: [forward_backward(x, w, d) for x, w, d in zip(lhs, rhs, d_out)])
    return lambda: fn(lhs, rhs, d_out)


def _elementwise(item: dict, copies: int, keys):
    s = item["shape"]
    xs = [K._rand(next(keys), (s["elements"],)) for _ in range(copies)]
    if s["op"] == "copy":
        fn = jax.jit(lambda xs: [x * 2 for x in xs])
        return lambda: fn(xs)
    ys = [K._rand(next(keys), (s["elements"],)) for _ in range(copies)]
    fn = jax.jit(lambda xs, ys: [jax.nn.silu(x) * y for x, y in zip(xs, ys)])
    return lambda: fn(xs, ys)


def _layer_train(item: dict, copies: int, keys):
    """Forward + backward (gradients of the weights and the input) of an attention or MoE layer."""
    s, cfg = item["shape"], nets.ModelConfig.from_dict(item["describe"]["config"])
    if item["kind"] == "attention":
        layer, shape = Attention, (s["batch"], s["context"], cfg.d_model)
        extra = {"positions_BxL": jnp.broadcast_to(jnp.arange(s["context"], dtype=jnp.int32),
                                                   (s["batch"], s["context"]))}
    else:  # an MoE layer over `tokens` tokens, shaped as its forward item
        layer, shape, extra = MoE, (s["tokens"], 1, cfg.d_model), {}
    graphdef, state0 = nnx.split(layer(cfg, rngs=nnx.Rngs(0), dtype=BF16, param_dtype=BF16))
    states = [jax.tree.map(jnp.copy, state0) for _ in range(copies)]
    xs = [K._rand(next(keys), shape) for _ in range(copies)]

    def loss(state, x):
        out = nnx.merge(graphdef, state)(x, **extra)[0]
        return jnp.mean(out.astype(jnp.float32) ** 2)

    grad = jax.grad(loss, argnums=(0, 1))
    fn = jax.jit(lambda states, xs: [grad(st, x) for st, x in zip(states, xs)])
    return lambda: fn(states, xs)


def _train_step(item: dict, keys):
    s, cfg = item["shape"], nets.ModelConfig.from_dict(item["config"])
    graphdef, state = nnx.split(nets.TransformerLM(cfg, rngs=nnx.Rngs(0), dtype=BF16, param_dtype=BF16))
    tokens = jax.random.randint(next(keys), (s["batch"], s["context"] + 1), 0, cfg.vocab_size)

    def loss(state, tokens):
        logits = nnx.merge(graphdef, state)(tokens[:, :-1])[0].astype(jnp.float32)
        picked = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], axis=-1)
        return -jnp.mean(picked)

    fn = jax.jit(jax.value_and_grad(loss))
    return lambda: fn(state, tokens)


def build(item: dict, copies: int, key):
    """A no-argument call that enqueues one jitted call of `copies` instances (kernels.py's contract)."""
    keys = iter(jax.random.split(key, 4 * copies + 8))
    kind = item["kind"]
    if kind == "gemm" and item["dtype"] not in ("bf16", "fp8"):
        return _gemm(item, copies, keys)
    if kind == "grouped_gemm":
        return _grouped(item, copies, keys)
    if kind == "elementwise":
        return _elementwise(item, copies, keys)
    if kind in ("attention", "moe") and item.get("phase") == "train":
        return _layer_train(item, copies, keys)
    if kind == "train_step":
        return _train_step(item, keys)
    return K.build(item, copies, key)


# ---- the run ------------------------------------------------------------------------------------
def _device_slug(kind: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in kind.lower()).strip("-") or "device"


def item_power(call, source, copies: int, seconds_per_call: float, idle_w: float, window_s: float) -> dict:
    """The board power while `call` repeats back to back for POWER_SETTLE_S + window_s seconds (module docstring).

    Calls are enqueued in blocks of about 50 ms between waits, so the GPU stays busy. Per
    instance (a call runs `copies`): seconds_per_call = the loop's wall time / (calls x
    copies), energy_j = mean W x that, energy_above_idle_j = (mean W - idle W) x that; with
    an energy counter (NVML), counter_energy_j and counter_above_idle_j, the same from the
    counter's rise over the whole loop (settle second included: no averaging delays it).
    """
    block = int(min(2000, max(1, math.ceil(0.05 / max(seconds_per_call, 1e-7)))))

    def busy(start):
        calls = 0
        while calls == 0 or time.perf_counter() - start < POWER_SETTLE_S + window_s:
            for _ in range(block):
                out = call()
            jax.block_until_ready(out)
            calls += block
        return calls

    reading = P.sample_power(source, busy, POWER_SETTLE_S)
    calls, mean_w = reading["result"], reading["mean_w"]
    per = reading["wall_s"] / (calls * copies)
    record = {"mean_w": mean_w, "idle_w": idle_w, "samples": reading["samples"], "calls": calls,
              "wall_s": reading["wall_s"], "settle_s": POWER_SETTLE_S, "window_s": reading["window_s"],
              "seconds_per_call": per, "method": source.method}
    if "counter_j" in reading:
        record.update(counter_energy_j=reading["counter_j"] / (calls * copies),
                      counter_above_idle_j=(reading["counter_j"] - idle_w * reading["wall_s"]) / (calls * copies))
    if mean_w is not None:
        record.update(energy_j=mean_w * per, energy_above_idle_j=(mean_w - idle_w) * per)
    return record


def idle_power(source, window_s: float) -> dict:
    """The board's mean power [W] over `window_s` seconds of sleep after the settle second."""
    reading = P.sample_power(source, lambda start: time.sleep(POWER_SETTLE_S + window_s), POWER_SETTLE_S)
    if reading["mean_w"] is None:
        raise SystemExit(f"power: no reading in {reading['wall_s']:.1f} s of idle ({source.method}): "
                         "the board gives no power here")
    return {"idle_w": reading["mean_w"], "samples": reading["samples"], "window_s": reading["window_s"]}


def run(out_dir: Path, budget_s: float, tiny: bool, seed: int = 0, only: tuple[str, ...] = (), start: int = 0,
        match: tuple[str, ...] = (), power=None, power_s: float = 1.0) -> Path:
    """Measure the plan within `budget_s` seconds into a new versioned file under `out_dir`; returns its path.

    only: kinds to measure; match: id prefixes to keep (both: every item when empty). power:
    a power source (`scripts/bench/power.py`) to sample each item's board power with (None:
    no power), over `power_s` seconds after the settle second.
    """
    if power is not None and not power_s >= MIN_POWER_S:
        raise SystemExit(f"power_s={power_s}: must be at least {MIN_POWER_S} s (10 readings at 50 ms)")
    begun = time.perf_counter()
    device = jax.devices()[0]
    kind = getattr(device, "device_kind", str(device))
    stamp = datetime.datetime.now(datetime.timezone.utc)
    path = out_dir / f"kernels_{_device_slug(kind)}_{stamp:%Y%m%dT%H%M%SZ}.json"
    items = [i for i in plan(tiny) if (not only or i["kind"] in only)
             and (not match or i["id"].startswith(tuple(match)))][start:]  # `start`: resume a cut-off suite
    report = {"schema": DATA_SCHEMA, "created": stamp.isoformat(),
              "device": {"kind": kind, "platform": device.platform, "count": jax.device_count(),
                         "host": socket.gethostname(), "python": platform.python_version(), "jax": jax.__version__},
              "suite": {"version": SUITE_VERSION, "tiny": tiny, "budget_s": budget_s, "seed": seed,
                        "start": start, "planned": len(items), **({"match": list(match)} if match else {}),
                        "collectives": "not measured: one device" if jax.device_count() < 2 else "not in this suite"},
              "ceilings": K.ceilings(tiny), "items": [], "skipped": []}
    if power is not None:
        report["power"] = {"method": power.method, "settle_s": POWER_SETTLE_S, "window_s": power_s,
                           **idle_power(power, power_s)}
    idle_w = report["power"]["idle_w"] if power is not None else None
    atomic_write_json(path, report, indent=1, sort_keys=False)
    print(f"cost suite {SUITE_VERSION}: {len(items)} items on {kind} ({device.platform}), jax {jax.__version__}, "
          f"budget {budget_s:.0f} s -> {path}" + (f"; idle {idle_w:.1f} W ({power.method})" if power else ""),
          flush=True)
    key = jax.random.key(seed)
    for n, item in enumerate(items):
        left = budget_s - (time.perf_counter() - begun)
        if left < 3.0 + (POWER_SETTLE_S + power_s if power is not None else 0.0):
            report["skipped"] += [{"id": i["id"], "reason": "budget"} for i in items[n:]]
            break
        kernels = item_kernels(item["describe"])
        flops = float(np.sum(kernels["flops"] * kernels["launches"]))
        hbm = float(np.sum(kernels["bytes"] * kernels["launches"]))
        small = not item["kind"].endswith("_step") and not (item["kind"] == "attention" and item["phase"] == "train")
        copies = int(min(16 if item["kind"] in ("gemm", "norm", "elementwise") else 8,
                         max(1, math.ceil(3 * K.L2_BYTES / max(hbm, 1.0))))) if small else 1
        copies = min(copies, 2) if tiny else copies
        try:
            call = build(item, copies, jax.random.fold_in(key, n))
            timing = K.measure(call, min_sample_s=0.002 if tiny else 0.005, min_samples=5,
                               max_samples=10 if tiny else 25,
                               item_budget_s=min(0.2 if tiny else 0.6, left / max(1, len(items) - n)))
            board = None
            if power is not None:
                try:
                    board = item_power(call, power, copies, timing["median_s"], idle_w, power_s)
                except Exception as err:  # keep the timing: the power loop ran out of memory, the sampler failed
                    board = {"mean_w": None, "error": f"{type(err).__name__}: {str(err)[:300]}"}
            del call
        except Exception as err:  # a format this backend cannot run, out of memory
            report["skipped"].append({"id": item["id"], "reason": f"{type(err).__name__}: {str(err)[:300]}"})
            print(f"[{n + 1}/{len(items)}] {item['id']}: skipped ({type(err).__name__})", flush=True)
            atomic_write_json(path, report, indent=1, sort_keys=False)
            continue
        per_instance = {k: (v / copies if k.endswith("_s") and k != "compile_s" else v) for k, v in timing.items()}
        record = {k: v for k, v in item.items() if k != "config"}
        record.update(copies=copies, timing=per_instance, flops=flops, hbm_bytes=hbm)
        if board is not None:
            record["power"] = board
        report["items"].append(record)
        atomic_write_json(path, report, indent=1, sort_keys=False)
        t = per_instance["median_s"]
        watts = "" if board is None or board["mean_w"] is None else \
            f", {board['mean_w']:.0f} W, {board['energy_above_idle_j'] * 1e3:.4g} mJ above idle"
        print(f"[{n + 1}/{len(items)}] {item['id']}: {t * 1e6:.1f} us ({flops / t / 1e12:.2f} TFLOP/s, "
              f"{hbm / t / 1e9:.1f} GB/s, x{copies}{watts})", flush=True)
    if power is not None:
        report["power"]["idle_end_w"] = idle_power(power, power_s)["idle_w"]
    report["suite"]["wall_s"] = time.perf_counter() - begun
    atomic_write_json(path, report, indent=1, sort_keys=False)
    print(f"measured {len(report['items'])}/{len(items)} items in {report['suite']['wall_s']:.0f} s; "
          f"skipped {len(report['skipped'])}; wrote {path}", flush=True)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the versioned data file")
    parser.add_argument("--budget-s", type=float, default=380.0, help="wall-clock budget of the measurements [s] "
                        "(JAX start and the ceilings come on top: ~30 s on a GPU)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (a CPU check)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="skip the plan's first N items (measured by an earlier "
                        "call cut off by its budget); the data files are read together")
    parser.add_argument("--only", nargs="*", default=(), help="measure only these kinds (gemm attention grouped_gemm "
                        "moe norm elementwise decode_step prefill_step train_step)")
    parser.add_argument("--match", nargs="*", default=(), help="measure only items whose id starts with one of "
                        "these (e.g. gemm/bf16/ moe/train/)")
    parser.add_argument("--power", action="store_true", help="also sample the board power of each item (NVIDIA "
                        "GPUs only; adds the idle power and about 1 + --power-s seconds per item)")
    parser.add_argument("--power-s", type=float, default=1.0, help=f"seconds of power readings per item after the "
                        f"first second (at least {MIN_POWER_S})")
    args = parser.parse_args(argv)
    if not args.budget_s > 0:
        raise SystemExit(f"budget_s={args.budget_s}: must be positive")
    if args.power and not args.power_s >= MIN_POWER_S:
        raise SystemExit(f"power_s={args.power_s}: must be at least {MIN_POWER_S} s (10 readings at 50 ms)")
    source = None
    if args.power:
        if jax.default_backend() != "gpu":
            raise SystemExit(f"--power: backend {jax.default_backend()!r}: board power is read only on an NVIDIA "
                             "GPU (NVML or nvidia-smi); run without --power here")
        source, why = P.power_source()
        if source is None:
            raise SystemExit(f"--power: no board power reading on this machine ({why})")
    args.out.mkdir(parents=True, exist_ok=True)
    return run(args.out, args.budget_s, args.tiny, args.seed, tuple(args.only), args.start, tuple(args.match),
               source, args.power_s)


if __name__ == "__main__":
    main()
    sys.exit(0)
