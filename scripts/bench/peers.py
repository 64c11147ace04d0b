"""Side by side with the peers: GenZ and llm-analysis against our hwcost GPU model (issue 6, part 4).

    PYTHONPATH=. python scripts/bench/peers.py [--calibrated PRESET.json] [--measured H200.json] \
        [--out results/peers_cpu.json]
    PYTHONPATH=. python scripts/bench/peers.py --measure-out results/peers_h200_measured.json  # on the H200

The same workload (Llama-2-7B, BF16 weights, activations and KV cache; prefill of 2048
tokens, decode at batch 1 and 20 with a 2048-token cache) on the same hardware spec (an
A100-SXM4-80GB: peak BF16 FLOP/s, HBM bandwidth and capacity, the only three numbers all
three tools share) goes through
  - GenZ (`pip install genz-llm`, Bambhaniya et al., "Demystifying Platform Requirements for
    Diverse LLM Inference Use Cases", arXiv 2406.01698): `prefill_moddeling` / `decode_moddeling`;
  - llm-analysis (`pip install llm-analysis`, Cheng Li, github.com/cli99/llm-analysis):
    `LLMAnalysis.inference`;
  - our `hwcost.GPU` roofline, uncalibrated (datasheet peaks, efficiency 1), and calibrated
    when a calibrated preset is given (`--calibrated`, written by `codesign calibrate`);
  - our H200 measurement where it applies (`--measured`, one H200 case).
Each tool describes Llama-2-7B with its own shipped config (GenZ `llama2_7b`; llm-analysis
`NousResearch_Llama-2-7b-hf`, a two-matrix MLP of width 16384 standing in for SwiGLU's three
of 11008; ours `nets.zoo.get("llama-2-7b")`); all three are recorded in the output. Every
efficiency knob of the peers is set to 1 (their defaults for llm-analysis, `system_eff=1`
for GenZ), so all columns but "calibrated" and "measured" are pure rooflines.

Units: each tool gets the spec in its own units and we read the numbers back from the
tool's objects in SI (FLOP/s, bytes/s, bytes); the run fails if any differs from the spec
by more than 1e-9 relative. GenZ takes GB/s and GB as 2^30, llm-analysis GB/s as 1e9 and
GB of memory as 2^30. The A100's "80 GB" is 80 GiB (81920 MiB on the device).

Per-op rows (milliseconds per step): attention core (score + value products, softmax, KV
reads), attention projections (Q, K, V, O), attention (both), FFN, norms, embedding + LM
head, end to end. A tool that does not expose a row gets n/a (llm-analysis lumps the
attention core with the projections; GenZ has no norm operator).

Design points per second: ours is `jax.jit(jax.vmap(cost))` over random design points
(per-layer bits and keep fractions of all 32 layers, every GPU parameter scaled), with and
without `jax.value_and_grad`; each peer is its public entry point called in a Python loop
for a fixed wall time, each call a new design point (peak FLOP/s and bandwidth scaled), and
also its cheapest inner path (the model built once, only the roofline re-evaluated per
point). All in the same process, on the same CPU, one after another. The CPU may be shared:
each rate is reported as a median (of timed calls for ours, of 5 equal wall-time windows for
a peer) and as the best call or window, and the ratio ours / fastest peer for both.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import hwcost
import nets

MODEL = "llama-2-7b"
GIB = 2.0**30
NA = None

GROUPS: dict[str, tuple[str, ...]] = {
    "attn_core": hwcost.ATTENTION_CORE,
    "attn_proj": hwcost.PROJECTIONS,
    "attention": hwcost.ATTENTION_CORE + hwcost.PROJECTIONS,
    "ffn": hwcost.FFN_GEMMS + ("router",),
    "norm": ("norm",),
    "embed_head": ("embedding", "lm_head"),
}
ROWS = tuple(GROUPS) + ("total",)
COLUMNS = ("genz", "llm_analysis", "ours", "ours_calibrated", "measured")


@dataclass(frozen=True)
class Spec:
    """The hardware numbers every tool is given (SI units): FLOP/s dense BF16, bytes/s, bytes."""

    name: str
    peak_flops_bf16: float
    mem_bandwidth: float
    mem_capacity: float
    base_preset: str
    source: str

    def __post_init__(self) -> None:
        for field in ("peak_flops_bf16", "mem_bandwidth", "mem_capacity"):
            value = getattr(self, field)
            if not (isinstance(value, float) and np.isfinite(value) and value > 0):
                raise ValueError(f"{field}={value!r}: must be a finite positive float (SI units)")


A100_80GB = Spec(
    name="a100-sxm4-80gb", peak_flops_bf16=312e12, mem_bandwidth=2.039e12, mem_capacity=80 * GIB, base_preset="a800",
    source="NVIDIA A100 Tensor Core GPU datasheet (2021), SXM4 80GB: 312 TFLOP/s BF16 dense, 2,039 GB/s HBM2e, "
           "80 GB; our other fields (power, area) from the a800 preset, the same GA100 silicon")


def _h200_spec() -> Spec:
    preset = hwcost.gpu("h200")
    return Spec(name="h200-sxm", peak_flops_bf16=float(preset.peak_flops_bf16),
                mem_bandwidth=float(preset.mem_bandwidth), mem_capacity=float(preset.mem_capacity),
                base_preset="h200", source="our h200 preset: NVIDIA H200 Tensor Core GPU datasheet (2024)")


H200 = _h200_spec()


@dataclass(frozen=True)
class Case:
    """One step of Llama-2-7B on one spec: phase, batch, prompt (prefill) or cache (decode) tokens."""

    spec: Spec
    phase: str
    batch: int
    context_len: int

    def __post_init__(self) -> None:
        if self.phase not in ("prefill", "decode"):
            raise ValueError(f"phase={self.phase!r}: must be prefill or decode")
        for field in ("batch", "context_len"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{field}={value!r}: must be a positive integer")

    @property
    def label(self) -> str:
        return f"{self.spec.name} {self.phase} b={self.batch} ctx={self.context_len}"

    @property
    def scenario(self) -> hwcost.Scenario:
        return hwcost.Scenario(phase=self.phase, batch=self.batch, context_len=self.context_len)


def parse_case(text: str, spec: Spec) -> Case:
    """`PHASE:BATCH:CONTEXT`, e.g. `decode:20:2048`, on `spec`."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"case={text!r}: must be PHASE:BATCH:CONTEXT, e.g. decode:20:2048")
    return Case(spec, parts[0], int(parts[1]), int(parts[2]))


def default_cases(h200_case: str = "decode:20:2048") -> list[Case]:
    return [Case(A100_80GB, "prefill", 1, 2048), Case(A100_80GB, "decode", 1, 2048),
            Case(A100_80GB, "decode", 20, 2048), parse_case(h200_case, H200)]


# ---- ours -----------------------------------------------------------------------------------
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
    if isinstance(body, dict) and body.get("schema") == hwcost.PRESET_SCHEMA:
        preset = hwcost.load_preset(path)

        def target(spec: Spec):
            fields = {f.name: getattr(preset.device, f.name) for f in dataclasses.fields(hwcost.GPU) if f.name != "name"}
            ours = our_gpu(spec)
            fields.update({k: getattr(ours, k) for k in ("peak_flops_bf16", "peak_flops_fp8", "mem_bandwidth",
                                                          "mem_capacity")})
            return hwcost.calibrated(hwcost.GPU(name=spec.name, **fields), preset.efficiency,
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


# ---- GenZ -------------------------------------------------------------------------------------
def genz_system(spec: Spec) -> dict:
    """The spec in GenZ's units: TFLOP/s (1e12), GB and GB/s as 2^30 (GenZ/unit.py binary prefixes)."""
    return {"Flops": spec.peak_flops_bf16 / 1e12, "Memory_size": spec.mem_capacity / GIB,
            "Memory_BW": spec.mem_bandwidth / GIB, "ICN": 150, "real_values": True}


def genz_readback(spec: Spec) -> dict:
    """What GenZ's System holds for `spec`, in SI units."""
    from GenZ import get_inference_system  # noqa: PLC0415
    system = get_inference_system(system_name=genz_system(spec), bits="bf16")
    return {"peak_flops_bf16": system.flops, "mem_bandwidth": system.offchip_mem_bw,
            "mem_capacity": system.off_chip_mem_size}


def genz(case: Case) -> dict:
    from GenZ import decode_moddeling, prefill_moddeling  # noqa: PLC0415
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case.phase == "prefill":
            out = prefill_moddeling(model="llama2_7b", batch_size=case.batch, input_tokens=case.context_len,
                                    system_name=genz_system(case.spec), system_eff=1, bits="bf16")
        else:
            out = decode_moddeling(model="llama2_7b", batch_size=case.batch, input_tokens=case.context_len,
                                   output_tokens=0, Bb=1, system_name=genz_system(case.spec), system_eff=1,
                                   bits="bf16")
    b = out["Runtime_breakdown"]
    rows = {"attn_core": b.LA_layers, "attn_proj": b.QKVO_layers, "attention": b.MHA, "ffn": b.FFN, "norm": NA,
            "embed_head": b.Embedding, "total": float(out["Latency"])}
    # GenZ/operator_base.py get_roofline: "Num ops (MFLOP)" is 2 x MACs, summed into the "MACs (MFLOP)" column
    flops = float(out["summary_table"]["MACs (MFLOP)"].values[0]) * 1e6
    return {"rows_ms": {k: (None if v is None else float(v)) for k, v in rows.items()}, "flops": flops}


# ---- llm-analysis -------------------------------------------------------------------------------
def _quiet_llm_analysis() -> None:
    from llm_analysis.logger import logger  # noqa: PLC0415
    logger.setLevel(logging.ERROR)


def llm_analysis_gpu(spec: Spec):
    """The spec in llm-analysis's units: TFLOP/s (1e12), GB/s as 1e9, memory GB as 2^30 (analysis.py)."""
    from llm_analysis.config import GPUConfig  # noqa: PLC0415
    return GPUConfig(name=spec.name, mem_per_GPU_in_GB=spec.mem_capacity / GIB,
                     hbm_bandwidth_in_GB_per_sec=spec.mem_bandwidth / 1e9, intra_node_bandwidth_in_GB_per_sec=300,
                     intra_node_min_message_latency=8e-6, peak_fp16_TFLOPS=spec.peak_flops_bf16 / 1e12)


def _llm_analysis(spec: Spec):
    from llm_analysis.analysis import LLMAnalysis  # noqa: PLC0415
    from llm_analysis.config import DtypeConfig, get_model_config_by_name  # noqa: PLC0415
    _quiet_llm_analysis()
    return LLMAnalysis(get_model_config_by_name("NousResearch_Llama-2-7b-hf"), llm_analysis_gpu(spec),
                       DtypeConfig(), flops_efficiency=1.0, hbm_memory_efficiency=1.0)


def llm_analysis_readback(spec: Spec) -> dict:
    la = _llm_analysis(spec)
    return {"peak_flops_bf16": la.get_TFLOPS_per_gpu() * 1e12, "mem_bandwidth": la.get_gpu_hbm_bandwidth() * 1e9,
            "mem_capacity": la.gpu_config.mem_per_GPU_in_GB * GIB}


def llm_analysis(case: Case) -> dict:
    """llm-analysis's decode charges the whole KV cache of context + 1 tokens twice (read and write)."""
    s = _llm_analysis(case.spec).inference(batch_size_per_gpu=case.batch, seq_len=case.context_len,
                                           num_tokens_to_generate=1)
    p = case.phase + "_"
    attention = s[p + "latency_fwd_attn"] + (s["kv_cache_latency"] if case.phase == "decode" else 0.0)
    rows = {"attn_core": NA, "attn_proj": NA, "attention": attention, "ffn": s[p + "latency_fwd_mlp"],
            "norm": s[p + "latency_fwd_layernorm"],
            "embed_head": s[p + "latency_fwd_input_embedding"] + s[p + "latency_fwd_output_embedding_loss"],
            "total": s[p + "latency"]}
    return {"rows_ms": {k: (None if v is None else 1e3 * float(v)) for k, v in rows.items()},
            "flops": float(s[p + "num_flops_fwd_total"])}


# ---- measured -------------------------------------------------------------------------------
_TIME_KEYS = (("median_s", 1.0), ("seconds", 1.0), ("time_s", 1.0), ("latency_s", 1.0), ("median_ms", 1e-3))


def load_measured(path: str | None) -> tuple[dict, list[dict]]:
    """(header, records) of measured step times.

    Reads this script's `--measure-out` file ({"device": ..., "records": [{model, phase, batch,
    context_len, median_s, ...}]}, also "measurements" / "steps" or a bare list), or a kernel data
    file of `scripts/bench/kernels.py` (schema "codesign.kernels/1"), whose whole-model
    decode_step / prefill_step items become records.
    """
    if path is None:
        return {}, []
    if not Path(path).is_file():
        raise ValueError(f"measured={path!r}: no such file (JSON of measured H200 step times)")
    data = json.loads(Path(path).read_text())
    if isinstance(data, list):
        return {}, data
    if data.get("schema") == "codesign.kernels/1":
        records = []
        for item in data.get("items", []):
            d = item.get("describe", {})
            if item.get("kind") in ("decode_step", "prefill_step") and d.get("type") == "workload" \
                    and not d.get("ops"):
                scenario = d.get("scenario", {})
                records.append({"model": d.get("config", {}).get("name"), "phase": scenario.get("phase"),
                                "batch": scenario.get("batch"), "context_len": scenario.get("context_len"),
                                "median_s": item.get("timing", {}).get("median_s"), "id": item.get("id")})
        return {k: v for k, v in data.items() if k != "items"}, records
    for key in ("records", "measurements", "steps"):
        if isinstance(data.get(key), list):
            return {k: v for k, v in data.items() if k != key}, data[key]
    raise ValueError(f"measured={path!r}: must hold a list of records (or a dict with 'records')")


def measured(case: Case, records: list[dict]) -> dict | None:
    """The measured end-to-end step [ms] of `case` (H200 only), matched on model, phase, batch, context."""
    if case.spec is not H200:
        return None
    for r in records:
        model = str(r.get("model", r.get("config", ""))).lower()
        context = r.get("context_len", r.get("context", r.get("seq_len")))
        if model == MODEL and r.get("phase") == case.phase and r.get("batch") == case.batch \
                and context == case.context_len:
            for key, scale in _TIME_KEYS:
                if r.get(key):
                    rows = {row: NA for row in ROWS}
                    rows["total"] = 1e3 * scale * float(r[key])
                    spread = r.get("iqr_s", r.get("spread_s"))
                    return {"rows_ms": rows, "spread_ms": None if spread is None else 1e3 * float(spread),
                            "record": r}
    return None


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


def _loop_points_per_s(tool: str, path: str, call, seconds: float, windows: int = 5, seed: int = 0) -> dict:
    """Call `call(flops_scale, bandwidth_scale)` on new design points for `seconds`, in `windows`
    equal windows: the median window rate, and the best (least disturbed by other processes)."""
    rng = np.random.default_rng(seed)
    call(1.0, 1.0)  # warm-up: imports, file caches
    rates, total = [], 0
    for _ in range(windows):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / windows or count == 0:
            call(*rng.uniform(0.8, 1.25, 2))
            count += 1
        rates.append(count / (time.perf_counter() - start))
        total += count
    return {"tool": tool, "path": path, "gradients": False, "points": total, "seconds": seconds,
            "windows": windows, "points_per_s": statistics.median(rates), "best_points_per_s": max(rates)}


def _scaled(spec: Spec, flops_scale: float, bw_scale: float) -> Spec:
    return dataclasses.replace(spec, peak_flops_bf16=spec.peak_flops_bf16 * float(flops_scale),
                               mem_bandwidth=spec.mem_bandwidth * float(bw_scale))


def peer_points_per_s(case: Case, seconds: float) -> list[dict]:
    """Each peer's public entry point, and its cheapest inner path, in a timed loop."""
    from GenZ import create_full_decode_model, create_full_prefill_model, get_inference_system  # noqa: PLC0415
    from GenZ import get_model_df, get_summary_table  # noqa: PLC0415
    results = []

    def genz_public(fs, bs):
        genz(dataclasses.replace(case, spec=_scaled(case.spec, fs, bs)))

    if case.phase == "prefill":
        model_file = create_full_prefill_model(name="llama2_7b", input_sequence_length=case.context_len)
    else:
        model_file = create_full_decode_model(name="llama2_7b", input_sequence_length=case.context_len,
                                              output_gen_tokens=0)

    def genz_inner(fs, bs):
        system = get_inference_system(system_name=genz_system(_scaled(case.spec, fs, bs)), bits="bf16")
        df = get_model_df(model_file, system=system, batch_size=case.batch, intermediate_on_chip=True)
        return get_summary_table(df)["Latency (msec)"].values[0]

    la = _llm_analysis(case.spec)
    phase_seq = case.context_len if case.phase == "prefill" else 1

    def la_public(fs, bs):
        llm_analysis(dataclasses.replace(case, spec=_scaled(case.spec, fs, bs)))

    def la_inner(fs, bs):
        la.update_gpu_config(llm_analysis_gpu(_scaled(case.spec, fs, bs)))
        latency, _ = la.get_latency_fwd(case.batch, phase_seq)
        if case.phase == "decode":
            kv = la.get_memory_kv_cache_per_layer(case.batch, case.context_len + 1) * la.model_config.num_layers
            latency += 2 * kv / (la.get_gpu_hbm_bandwidth() * 1e9)
        return latency

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results.append(_loop_points_per_s("genz", f"{case.phase}_moddeling (public)", genz_public, seconds))
        results.append(_loop_points_per_s("genz", "get_model_df on a prebuilt model (inner)", genz_inner, seconds))
        results.append(_loop_points_per_s("llm_analysis", "LLMAnalysis(...).inference (public)", la_public, seconds))
        results.append(_loop_points_per_s("llm_analysis", "get_latency_fwd + KV read (inner)", la_inner, seconds))
    return results


# ---- measurement on the local device (the H200 case) -------------------------------------------------
def measure(case: Case, model: str, warmup: int, repeats: int) -> dict:
    """Time one jitted step of `model` (random BF16 weights, nets.TransformerLM) on the local device.

    prefill: the prompt of context_len tokens written into an empty cache (logits for every
    position, as the network computes them); decode: one token per sequence attending a cache
    of context_len tokens, the cache donated so that it is updated in place. Median and
    interquartile range of `repeats` timed calls after `warmup` calls, each ended by
    block_until_ready.
    """
    from flax import nnx  # noqa: PLC0415
    cfg = nets.zoo.get(model)
    lm = nets.TransformerLM(cfg, rngs=nnx.Rngs(params=0), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    graphdef, state = nnx.split(lm)
    del lm
    length = case.context_len if case.phase == "prefill" else 1
    cache = nets.init_cache(cfg, case.batch, case.context_len + (case.phase == "decode"), dtype=jnp.bfloat16)
    # never time on zeros (METHOD.md): a random cache, as a real one would hold
    keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(cache))))
    cache = jax.tree.map(lambda x: jax.random.normal(next(keys), x.shape, x.dtype), cache)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (case.batch, length)), jnp.int32)
    index = 0 if case.phase == "prefill" else case.context_len

    def step(state, tokens, cache):
        logits, aux = nnx.merge(graphdef, state)(tokens, cache=cache, cache_index=index)
        return logits[:, -1], aux["cache"]

    # the cache is donated (updated in place) where the backend supports donation
    donated = jax.jit(step, donate_argnums=(2,) if jax.default_backend() != "cpu" else ())
    for _ in range(warmup):
        _, cache = jax.block_until_ready(donated(state, tokens, cache))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        _, cache = jax.block_until_ready(donated(state, tokens, cache))
        times.append(time.perf_counter() - t)
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    device = jax.devices()[0]
    return {"model": model, "phase": case.phase, "batch": case.batch, "context_len": case.context_len,
            "dtype": "bfloat16", "median_s": float(median), "iqr_s": float(q3 - q1), "min_s": float(min(times)),
            "repeats": repeats, "warmup": warmup, "device": getattr(device, "device_kind", str(device)),
            "backend": jax.default_backend()}


# ---- report ------------------------------------------------------------------------------------
def _check_specs(specs: list[Spec]) -> list[dict]:
    records = []
    for spec in specs:
        g = our_gpu(spec)
        held = {"ours": {"peak_flops_bf16": float(g.peak_flops_bf16), "mem_bandwidth": float(g.mem_bandwidth),
                         "mem_capacity": float(g.mem_capacity)},
                "genz": genz_readback(spec), "llm_analysis": llm_analysis_readback(spec)}
        for tool, values in held.items():
            for field, value in values.items():
                want = getattr(spec, field)
                if abs(value - want) > 1e-6 * want:  # ours is float32: 6e-8 relative
                    raise ValueError(f"{tool}.{field}={value!r}: differs from the spec's {want!r}")
        records.append({"spec": dataclasses.asdict(spec), "as_held_by_each_tool_si": held})
    return records


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def table(cases: list[dict]) -> str:
    lines = [f"{'case':<40} {'row':<11}" + "".join(f"{c:>16}" for c in COLUMNS)]
    for case in cases:
        for row in ROWS:
            cells = [(case["columns"].get(c) or {}).get("rows_ms", {}).get(row) for c in COLUMNS]
            lines.append(f"{case['case']:<40} {row:<11}" + "".join(f"{_fmt(v):>16}" for v in cells))
        flops = [(case["columns"].get(c) or {}).get("flops") for c in COLUMNS]
        lines.append(f"{'':<40} {'GFLOP':<11}" + "".join(f"{_fmt(None if v is None else v / 1e9):>16}" for v in flops))
    return "\n".join(lines)


def run(cases: list[Case], calibrated: str | None, measured_path: str | None, points: int, chunk: int,
        repeats: int, peer_seconds: float, throughput_case: Case) -> dict:
    """The side-by-side table and the design-points-per-second race, as one JSON-ready dict."""
    calibrated_target = load_calibrated(calibrated)
    measured_header, records = load_measured(measured_path)
    specs = list({c.spec.name: c.spec for c in cases}.values())
    spec_records = _check_specs(specs)
    results = []
    for case in cases:
        columns = {"genz": genz(case), "llm_analysis": llm_analysis(case), "ours": ours(case, our_gpu(case.spec)),
                   "ours_calibrated": None if calibrated_target is None else ours(case, calibrated_target(case.spec)),
                   "measured": measured(case, records)}
        results.append({"case": case.label, "spec": case.spec.name, "phase": case.phase, "batch": case.batch,
                        "context_len": case.context_len, "columns": columns})
    race = [our_points_per_s(throughput_case, points, chunk, repeats, grad=grad, space=space)
            for space in SPACES for grad in (False, True)]
    race += peer_points_per_s(throughput_case, peer_seconds)
    # median against median, and best against best: the machine is shared, and the best window
    # (or call) of each tool is the one least disturbed by other processes
    ratios = {}
    for stat in ("points_per_s", "best_points_per_s"):
        fastest = max((r for r in race if r["tool"] != "ours"), key=lambda r: r[stat])
        ratios[stat] = {"fastest_peer": f"{fastest['tool']}: {fastest['path']}", "fastest_peer_rate": fastest[stat],
                        **{f"ours_with_grad_{r['space']}": r[stat] / fastest[stat]
                           for r in race if r["tool"] == "ours" and r["gradients"]}}
    device = jax.devices()[0]
    return {
        "benchmark": "side by side with GenZ and llm-analysis (issue 6 part 4)",
        "model": MODEL, "units": "rows_ms: milliseconds per step; flops: FLOPs per step as each tool counts them",
        "efficiencies": "all 1 (pure rooflines) except ours_calibrated; measured = H200 wall time",
        "specs": spec_records,
        "model_configs": _model_configs(),
        "calibrated": calibrated, "calibrated_note": None if calibrated is None else
        "fitted efficiencies applied to each case's spec (on A100 cases: the fit's transfer to the A100 datasheet)",
        "measured": measured_path, "measured_header": measured_header,
        "cases": results,
        "design_points_per_s": {"case": throughput_case.label, "results": race,
                                "ours_over_fastest_peer": ratios},
        "host": {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                 "cpu_count": os.cpu_count(), "loadavg_1m": os.getloadavg()[0], "python": platform.python_version()},
        "backend": jax.default_backend(), "device": getattr(device, "device_kind", str(device)), "jax": jax.__version__,
        "versions": _versions(),
    }


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415
    out = {}
    for dist in ("genz-llm", "llm-analysis", "jax", "equinox"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def _model_configs() -> dict:
    from GenZ import get_configs  # noqa: PLC0415
    from llm_analysis.config import get_model_config_by_name  # noqa: PLC0415
    g = get_configs("llama2_7b")
    cfg = nets.zoo.get(MODEL)
    return {"genz": {k: getattr(g, k, None) for k in ("hidden_size", "num_attention_heads", "num_key_value_heads",
                                                       "intermediate_size", "num_ffi", "num_decoder_layers",
                                                       "vocab_size")},
            "llm_analysis": dataclasses.asdict(get_model_config_by_name("NousResearch_Llama-2-7b-hf")),
            "ours": {"d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.attention.n_heads,
                     "n_kv_heads": cfg.attention.n_kv_heads, "d_ff": cfg.ffn.d_ff, "activation": cfg.ffn.activation,
                     "vocab_size": cfg.vocab_size, "tie_embeddings": cfg.tie_embeddings}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/peers_cpu.json")
    parser.add_argument("--calibrated", default=None, help="calibrated preset JSON (codesign calibrate); else n/a")
    parser.add_argument("--measured", default=None, help="JSON of measured H200 step times; else n/a")
    parser.add_argument("--h200-case", default="decode:20:2048", help="PHASE:BATCH:CONTEXT of the H200 case")
    parser.add_argument("--points", type=int, default=65536, help="our design points per timed call")
    parser.add_argument("--chunk", type=int, default=64, help="vmap chunk (lax.map batch_size)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peer-seconds", type=float, default=5.0, help="wall time of each peer's timed loop")
    parser.add_argument("--measure-out", default=None,
                        help="instead: time the H200 case on the local device and write this measured JSON")
    parser.add_argument("--measure-model", default=MODEL, help="zoo model to time with --measure-out")
    parser.add_argument("--measure-repeats", type=int, default=20, help="timed calls with --measure-out")
    args = parser.parse_args(argv)
    for name in ("points", "chunk", "repeats", "measure_repeats"):
        if getattr(args, name) <= 0:
            raise ValueError(f"{name}={getattr(args, name)}: must be a positive integer")
    if not args.peer_seconds > 0:
        raise ValueError(f"peer_seconds={args.peer_seconds}: must be positive")
    h200_case = parse_case(args.h200_case, H200)
    if args.measure_out:
        record = measure(h200_case, args.measure_model, warmup=3, repeats=args.measure_repeats)
        report = {"benchmark": "measured step for scripts/bench/peers.py", "device": record["device"],
                  "backend": record["backend"], "jax": jax.__version__, "records": [record]}
        print(f"{args.measure_model} {h200_case.phase} b={h200_case.batch} ctx={h200_case.context_len} on "
              f"{record['device']} ({record['backend']}): median {record['median_s'] * 1e3:.3f} ms, "
              f"IQR {record['iqr_s'] * 1e3:.3f} ms over {record['repeats']} calls")
        out = Path(args.measure_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
        return report
    cases = default_cases(args.h200_case)
    report = run(cases, args.calibrated, args.measured, args.points, args.chunk, args.repeats, args.peer_seconds,
                 throughput_case=cases[2])
    print(f"Llama-2-7B, BF16, milliseconds per step; ran on {report['host']['processor']} "
          f"({report['host']['cpu_count']} CPUs, load {report['host']['loadavg_1m']:.1f}), jax {report['backend']}")
    for s in report["specs"]:
        spec = s["spec"]
        print(f"spec {spec['name']}: {spec['peak_flops_bf16'] / 1e12:.0f} TFLOP/s BF16, "
              f"{spec['mem_bandwidth'] / 1e12:.3f} TB/s, {spec['mem_capacity'] / GIB:.1f} GiB (same in every tool)")
    print(table(report["cases"]))
    dps = report["design_points_per_s"]
    print(f"\ndesign points per second ({dps['case']}), same process and CPU:")
    print(f"  {'tool':<13} {'path':<52} {'median/s':>12} {'best/s':>12}")
    for r in dps["results"]:
        print(f"  {r['tool']:<13} {r['path']:<52} {r['points_per_s']:>12.1f} {r['best_points_per_s']:>12.1f}")
    for stat, label in (("points_per_s", "median"), ("best_points_per_s", "best")):
        ratio = dps["ours_over_fastest_peer"][stat]
        print(f"ours with gradients / fastest peer ({label}; {ratio['fastest_peer']}): "
              f"like-for-like {ratio['ours_with_grad_like_for_like']:.0f}x, full space {ratio['ours_with_grad_full']:.0f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
