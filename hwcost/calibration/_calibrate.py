"""Calibration of the GPU target against measured kernel times.

The uncalibrated `GPU` is a roofline at 100% of peak: a lower bound of any real kernel.
Real kernels reach a fraction of peak that depends on their size (small GEMMs cannot fill
132 SMs, small copies do not saturate HBM) and pay a fixed launch cost. Here each kernel
group g (GEMM, FP8 GEMM, attention core, MoE experts, elementwise) gets

    compute efficiency  e_c(F) = c_max_g / (1 + (F_half_g / F)^alpha_g)                  [fraction]
    memory efficiency   e_m(B) = m_max_g / (1 + (B_half_g / B)^beta_g)                    [fraction]
    t = smooth_max(F * waste^gamma_g / (peak(bits) * e_c),  B / (bandwidth * e_m);  p) + t0_g   [s]

F = FLOPs of one launch, B = HBM bytes of one launch. The shape of e_c, e_m is the saturating
"half-performance size" form of Hockney's n_1/2 (Hockney & Jesshope, Parallel Computers 2,
1988, sec. 1.3), smooth in F and B so the calibrated cost stays differentiable. GEMM classes
at b bits interpolate linearly between the FP8 and BF16 groups, as `GPU.seconds_per_flop`
does; FP8 GEMMs (b = 8) use the FP8 group's own curves.

What today's JAX program executes beyond the workload's mathematical counts (each a fixed
property of the program, derived from its structure, never fitted):
  - routed experts: XLA lowers `jax.lax.ragged_dot` to dense zero-padded matmuls over all E
    experts (`nets._moe`), so waste = E (the workload's `n_experts`, on the slots that route)
    and the kernel reads every expert's weights (`extra_bytes`); the fitted waste exponent
    comes out at ~1 on the H200, which confirms the reading;
  - whole-model decode steps: the layer scan copies each layer's KV cache SCAN_CACHE_COPIES
    times (a "kv_copy" kernel of the elementwise group, charged to the attention core).
The uncalibrated roofline (eff=None) ignores both: it is the plain `GPU`, a lower bound.

The parameters are fitted with optax (Adam) on log time to a training split of a kernel
data file (`scripts/bench/kernels.py`); the split is by shape (a hash), and every
whole-model step is held out, so the end-to-end error is measured on steps the fit never
saw. The data file's two ceiling measurements (a 512 MiB copy, an 8192^3 bf16 matmul) are
training items too (kind CEILING_KIND). The result is a `CalibratedGPU` (a `GPU` and the fitted efficiencies),
saved to and loaded from JSON (`save_preset`, `load_preset`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from pathlib import Path
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import nets
from hwcost.targets._gpu import GPU, PRECISION_FIELDS, roofline_cost
from hwcost.targets._presets import gpu
from hwcost._scenario import Scenario
from hwcost._smooth import smooth_max2_inv
from hwcost.targets._target import ALL_MODELLED, Cost, Target, check_workload
from hwcost._workload import ATTENTION_CORE, OPS, Workload, workload

DATA_SCHEMA = "codesign.kernels/1"
PRESET_SCHEMA = "codesign.calibrated-gpu/1"
GROUPS = ("gemm", "gemm_fp8", "attention", "moe", "elementwise")
_GEMM_OPS = ("q_proj", "kv_proj", "o_proj", "ffn_dense", "moe_shared", "router", "lm_head")
OP_GROUP = {**{op: "gemm" for op in _GEMM_OPS}, "attn_score": "attention", "attn_value": "attention",
            "moe_routed": "moe", "norm": "elementwise", "embedding": "elementwise"}
MODEL_KINDS = ("decode_step", "prefill_step")
CEILING_KIND = "ceiling"  # the data file's copy and matmul ceilings: training items only (see _ceiling_items)
_FIELDS = ("compute_max", "compute_half_flops", "compute_exponent", "memory_max", "memory_half_bytes",
           "memory_exponent", "waste_exponent", "launch_s")
_RECORD = ("group", "flops", "bytes", "bits", "waste", "copy", "extra_bytes", "launches")
# Full copies of each layer's KV cache in one decode step of `nets.TransformerLM`, a property of
# the program, not of the GPU (fixed, never fitted). Its layers run under a scan with the stacked
# cache as scanned input and output (nets/_model.py); the compiled step (XLA's optimised HLO of a
# 4-layer decode step, inspected on the CPU backend, jax 0.10.2) slices each layer's cache out of
# the input stack (a dynamic-slice: one copy), writes the updated layer into the output stack (a
# dynamic-update-slice: one copy) and copies the whole output stack once after the loop (one
# copy); each copy reads and writes the cache once. The zero-fill of the output stack before the
# loop (a write only) is left out.
SCAN_CACHE_COPIES = 3.0


class Efficiency(eqx.Module):
    """Fitted efficiency curves, one entry per kernel group (GROUPS order; module docstring).

    compute_max, memory_max [fraction of peak, (0, 1]]; compute_half_flops [FLOP] and
    memory_half_bytes [bytes]: the launch size at which half of the maximum is reached;
    compute_exponent, memory_exponent [-]: how sharply; waste_exponent [-]: power of E/k
    charged to routed experts; launch_s [s]: fixed cost per kernel launch.
    """

    compute_max: jax.Array
    compute_half_flops: jax.Array
    compute_exponent: jax.Array
    memory_max: jax.Array
    memory_half_bytes: jax.Array
    memory_exponent: jax.Array
    waste_exponent: jax.Array
    launch_s: jax.Array

    def __check_init__(self) -> None:
        for name in _FIELDS:
            value = np.asarray(getattr(self, name)) if not isinstance(getattr(self, name), jax.core.Tracer) else None
            if value is None:
                continue
            if value.shape[-1:] != (len(GROUPS),):
                raise ValueError(f"efficiency.{name}: shape {value.shape}: must end in one entry per group "
                                 f"({', '.join(GROUPS)})")
            low_ok = value >= 0 if name in ("launch_s", "waste_exponent") else value > 0
            bad = ~np.isfinite(value) | ~low_ok | ((value > 1) if name.endswith("_max") else False)
            if np.any(bad):
                allowed = "in (0, 1]" if name.endswith("_max") else (
                    "finite and >= 0" if name in ("launch_s", "waste_exponent") else "finite and > 0")
                raise ValueError(f"efficiency.{name}={float(value[bad][0])!r}: must be {allowed}")

    @classmethod
    def default(cls) -> "Efficiency":
        """The starting point of a fit (a plausible GPU; fitted values replace all of it)."""
        g = len(GROUPS)
        full = lambda v: jnp.full((g,), v, jnp.float32)  # noqa: E731
        return cls(compute_max=full(0.75), compute_half_flops=full(1e8), compute_exponent=full(0.8),
                   memory_max=full(0.85), memory_half_bytes=full(1e6), memory_exponent=full(0.8),
                   waste_exponent=full(0.3), launch_s=full(3e-6))

    def to_dict(self) -> dict:
        return {name: {g: float(v) for g, v in zip(GROUPS, np.asarray(getattr(self, name)))} for name in _FIELDS}

    @classmethod
    def from_dict(cls, data: dict) -> "Efficiency":
        if not isinstance(data, dict) or sorted(data) != sorted(_FIELDS):
            raise ValueError(f"efficiency={sorted(data) if isinstance(data, dict) else data!r}: "
                             f"must have exactly the fields {', '.join(_FIELDS)}")
        values = {}
        for name in _FIELDS:
            if not isinstance(data[name], dict) or sorted(data[name]) != sorted(GROUPS):
                raise ValueError(f"efficiency.{name}: must map each group ({', '.join(GROUPS)}) to a number")
            values[name] = jnp.asarray([float(data[name][g]) for g in GROUPS], jnp.float32)
        return cls(**values)


# ---- the calibrated kernel time --------------------------------------------------------
def _peak_seconds_per_flop(device: GPU, bits):
    """Seconds per FLOP at 100% of peak at `bits` (the GPU's own interpolation, efficiency 1)."""
    w = (jnp.clip(bits, 8.0, 16.0) - 8.0) / 8.0
    fp8, bf16 = 1.0 / device.peak_flops_fp8, 1.0 / device.peak_flops_bf16
    return fp8 + w * (bf16 - fp8), w


def _curve(size, half, exponent):
    """1 + (half / size)^exponent, and 1 where size is 0 (no work, no time)."""
    positive = size > 0
    safe = jnp.where(positive, size, 1.0)
    return jnp.where(positive, 1.0 + jnp.exp(exponent * (jnp.log(half) - jnp.log(safe))), 1.0)


def kernel_seconds(device: GPU, eff: Efficiency | None, group, flops, hbm_bytes, bits, waste, launches, copy=0.0,
                   extra_bytes=0.0):
    """Time [s] of `launches` launches of one kernel (FLOPs and bytes per launch), elementwise.

    eff=None gives the uncalibrated roofline of `device` from the workload's own counts (no
    launch cost; rows with copy=1, the program's cache copies, take no time, and
    `extra_bytes` is ignored); else the calibrated time of the module docstring, where the
    kernel moves hbm_bytes + extra_bytes (the bytes today's lowering moves beyond the
    workload's count: unrouted experts read by the dense-expanded ragged_dot). `group`
    indexes GROUPS.
    """
    spf, w = _peak_seconds_per_flop(device, bits)
    spb = 1.0 / device.mem_bandwidth
    inv_p = 1.0 / device.sharpness
    if eff is None:
        core = smooth_max2_inv(flops * spf, hbm_bytes * spb, inv_p)
        return launches * core * (flops + hbm_bytes > 0) * (1.0 - copy)

    def one(g):
        take = lambda name: getattr(eff, name)[g]  # noqa: E731
        t_c = (flops * spf / take("compute_max") * _curve(flops, take("compute_half_flops"), take("compute_exponent"))
               * jnp.power(jnp.maximum(waste, 1.0), take("waste_exponent")))
        moved = hbm_bytes + extra_bytes
        t_m = moved * spb / take("memory_max") * _curve(moved, take("memory_half_bytes"),
                                                            take("memory_exponent"))
        return smooth_max2_inv(t_c, t_m, inv_p) + take("launch_s")

    main = one(group)
    gemm = GROUPS.index("gemm")
    if isinstance(group, int):  # one op class (CalibratedGPU): blend with FP8 only for GEMMs
        t = (1.0 - w) * one(GROUPS.index("gemm_fp8")) + w * main if group == gemm else main
    else:
        fp8 = one(jnp.full_like(group, GROUPS.index("gemm_fp8")))
        t = jnp.where(group == gemm, (1.0 - w) * fp8 + w * main, main)
    return launches * t * (flops + hbm_bytes > 0)


# ---- kernels of a workload ----------------------------------------------------------------
def workload_kernels(work: Workload, traffic=1.0, *, lm_head_scale: float = 1.0,
                     cache_copies: float = 0.0) -> dict[str, dict]:
    """Per kernel (op class, the attention core fused), per slot: FLOPs, HBM bytes, bits, waste.

    One launch per (kernel, slot) that has work. `traffic` is the fraction of activation
    bytes that reach HBM (the GPU's activation_traffic). `lm_head_scale` multiplies the LM
    head's FLOPs and activation bytes (a measured prefill that computes logits for every
    position, not only the last, has lm_head_scale = prompt length). `cache_copies` > 0 adds
    a "kv_copy" kernel (elementwise group) that reads and writes the layer's KV cache that
    many times in a decode step (SCAN_CACHE_COPIES for a whole `nets.TransformerLM` step).
    """
    out = {}
    for op in OPS:
        if op not in OP_GROUP or op == "attn_value":
            continue
        ops = ATTENTION_CORE if op == "attn_score" else (op,)
        flops = sum(work.op_flops[o] for o in ops if o in work.op_flops)
        hbm, extra = 0.0, 0.0
        for kind, scale in (("weights", 1.0), ("kv", 1.0), ("activations", traffic)):
            for o in ops:
                value = work.op_bytes.get(kind, {}).get(o)
                if o == "moe_routed" and kind == "weights" and value is not None:
                    # the dense-expanded ragged_dot reads every expert, not only those routed to
                    extra = jnp.maximum(work.op_resident["moe_routed"] - value, 0.0)
                if value is not None:
                    hbm = hbm + scale * value * (lm_head_scale if (o == "lm_head" and kind == "activations") else 1.0)
        if isinstance(flops, int) and isinstance(hbm, float):
            continue
        slots = jnp.zeros_like(work.op_flops["lm_head"])
        flops = flops * (lm_head_scale if op == "lm_head" else 1.0) + slots
        bits = work.op_bits.get(op, jnp.full_like(work.op_flops["lm_head"], 16.0))
        waste = jnp.ones_like(work.op_flops["lm_head"])
        if op == "moe_routed" and "router" in work.op_flops:
            # E where a slot routes (an MoE layer), 1 elsewhere: a count, not a design variable
            waste = jnp.where(work.op_flops["router"] > 0, float(max(work.n_experts, 1)), 1.0)
        out[op if op != "attn_score" else "attention"] = {
            "group": GROUPS.index(OP_GROUP[op]), "flops": flops, "bytes": hbm + slots, "bits": bits,
            "waste": waste, "extra_bytes": extra + slots}
    if cache_copies and work.phase == "decode":
        # the cache attended in a decode step is the whole resident cache of the layer (token_keep aside)
        cache = sum(work.op_bytes.get("kv", {}).get(o, 0.0) for o in ATTENTION_CORE)
        if not isinstance(cache, (int, float)):
            ones = jnp.ones_like(work.op_flops["lm_head"])
            out["kv_copy"] = {"group": GROUPS.index("elementwise"), "flops": 0.0 * ones,
                              "bytes": 2.0 * cache_copies * cache * ones, "bits": 16.0 * ones, "waste": ones,
                              "copy": ones, "extra_bytes": 0.0 * ones}
    return out


class CalibratedGPU(Target):
    """A GPU whose kernel times follow fitted efficiency curves (`Efficiency`) plus launch cost.

    Composition, not a subclass: `device` is the `GPU` whose peaks, bandwidth, prices and
    energies are used (its scalar efficiencies are 1: the curves replace them), `efficiency`
    the fitted curves. Kernel times are `kernel_seconds` of `workload_kernels`; energy,
    dollars, memory and area are the GPU's formulas (`roofline_cost`) applied to them. The
    attention core (score and value) is one fused kernel, its time shared back to the two
    classes in proportion to their compute plus memory times, as in `GPU`.
    """

    device: GPU
    efficiency: Efficiency
    name: str = eqx.field(static=True, default="gpu-calibrated")
    modelled: ClassVar[frozenset[str]] = ALL_MODELLED

    def _op_times(self, work: Workload):
        compute, memory, _, hbm = self.device._op_times(work)
        kernels = workload_kernels(work, self.device.activation_traffic, cache_copies=SCAN_CACHE_COPIES)
        roofline = {}
        copy = kernels.pop("kv_copy", None)
        for name, k in kernels.items():
            t = kernel_seconds(self.device, self.efficiency, int(k["group"]), k["flops"], k["bytes"], k["bits"],
                               k["waste"], 1.0, 0.0, k["extra_bytes"])
            if name == "attention" and copy is not None:  # the cache copies are charged to the attention core
                t = t + kernel_seconds(self.device, self.efficiency, int(copy["group"]), copy["flops"],
                                       copy["bytes"], copy["bits"], copy["waste"], 1.0)
            if name != "attention":
                roofline[name] = t
                continue
            core = [op for op in ATTENTION_CORE if op in compute]
            parts = [compute[op] + memory[op] for op in core]
            total = sum(parts)
            positive = total > 0
            for op, part in zip(core, parts):
                roofline[op] = t * jnp.where(positive, part / jnp.where(positive, total, 1.0), 1.0 / len(core))
        return compute, memory, roofline, hbm

    def cost(self, work: Workload) -> Cost:
        """Latency (calibrated kernel times), energy, dollars, memory and area of `work`."""
        check_workload(self.name, work)
        _, _, roofline, hbm = self._op_times(work)
        return roofline_cost(self.device, work, roofline, hbm, self.name)

    def op_times(self, work: Workload) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(compute, memory, calibrated kernel time) per `[op, slot]` [s]; the first two are the GPU's roofline parts."""
        zeros = jnp.zeros_like(work.op_flops["lm_head"])
        parts = self._op_times(work)[:3]
        return tuple(jnp.stack([zeros + part.get(op, 0.0) for op in OPS]) for part in parts)

    def fits(self, work: Workload) -> jax.Array:
        """Whether the workload's resident bytes fit in the device's memory (bool array)."""
        return self.device.fits(work)


def calibrated(base: GPU, eff: Efficiency, name: str | None = None) -> CalibratedGPU:
    """`base` with the efficiency curves `eff` (its scalar efficiencies must be 1: the curves replace them)."""
    if not isinstance(base, GPU):
        raise ValueError(f"base={type(base).__name__}: must be a hwcost.GPU")
    return CalibratedGPU(device=base, efficiency=eff, name=base.name if name is None else name)


# ---- kernels of a measured item ------------------------------------------------------------
def _workload_of(describe: dict) -> tuple[Workload, float, float]:
    cfg = nets.ModelConfig.from_dict(describe["config"])
    scenario = Scenario(**describe["scenario"])
    work = workload(cfg, scenario)
    ops = describe.get("ops")
    if ops is not None:
        work = work.select(tuple(ops))
    head = describe.get("lm_head_positions", "last")
    if head not in ("last", "all"):
        raise ValueError(f"lm_head_positions={head!r}: must be 'last' or 'all'")
    scale = float(scenario.context_len) if (head == "all" and scenario.phase == "prefill") else 1.0
    # a whole model (its LM head included) scans its layers over the cache; one layer alone does not
    whole = ops is None or "lm_head" in ops
    return work, scale, SCAN_CACHE_COPIES if whole else 0.0


def item_kernels(describe: dict) -> dict[str, np.ndarray]:
    """The kernels one measured item runs, as columns (group, flops, bytes, bits, waste, copy, extra_bytes, launches).

    `describe` is an item's "describe" entry in a kernel data file:
      {"type": "gemm", "m", "n", "k", "bits_in", "bits_out"}: C[m,n] = A[m,k] @ B[k,n], B the weights;
      {"type": "norm", "tokens", "width", "bits"}: an RMSNorm over tokens x width;
      {"type": "workload", "config", "scenario", "ops"?, "lm_head_positions"?}: `hwcost.workload`
        of a nets config and scenario, restricted to `ops` (a kernel, a layer or a whole step).
    Identical (kernel, size) rows over layers are merged into one row with a launch count.
    """
    if not isinstance(describe, dict) or describe.get("type") not in ("gemm", "norm", "copy", "workload"):
        raise ValueError(f"describe.type={describe.get('type') if isinstance(describe, dict) else describe!r}: "
                         "must be one of gemm, norm, copy, workload")
    kind = describe["type"]
    if kind == "gemm":
        m, n, k = (float(describe[x]) for x in ("m", "n", "k"))
        b_in, b_out = float(describe["bits_in"]), float(describe["bits_out"])
        rows = [(GROUPS.index("gemm"), 2 * m * n * k, (k * n + m * k) * b_in / 8 + m * n * b_out / 8, b_in, 1.0, 0.0, 0.0, 1.0)]
    elif kind == "norm":
        t, w, b = (float(describe[x]) for x in ("tokens", "width", "bits"))
        rows = [(GROUPS.index("elementwise"), 4 * t * w, (2 * t * w + w) * b / 8, b, 1.0, 0.0, 0.0, 1.0)]
    elif kind == "copy":
        n, b = float(describe["elements"]), float(describe["bits"])
        rows = [(GROUPS.index("elementwise"), n, 2 * n * b / 8, b, 1.0, 0.0, 0.0, 1.0)]
    else:
        work, scale, copies = _workload_of(describe)
        counts: dict[tuple, float] = {}
        for k in workload_kernels(work, 1.0, lm_head_scale=scale, cache_copies=copies).values():
            cols = [np.broadcast_to(np.asarray(k[c], np.float64), np.shape(k["flops"]))
                    for c in ("flops", "bytes", "bits", "waste", "extra_bytes")]
            for flops, hbm, bits, waste, extra in zip(*cols):
                if flops + hbm > 0:
                    key = (k["group"], float(flops), float(hbm), float(bits), float(waste),
                           float(np.max(k.get("copy", 0.0))), float(extra))
                    counts[key] = counts.get(key, 0.0) + 1.0
        rows = [key + (n,) for key, n in counts.items()]
    table = np.asarray(rows, np.float64).reshape(-1, len(_RECORD))
    return {name: table[:, i] for i, name in enumerate(_RECORD)}


def roofline_seconds(describe: dict, device: GPU) -> float:
    """The uncalibrated roofline time [s] of an item on `device` (a lower bound of the measurement)."""
    k = item_kernels(describe)
    return float(jnp.sum(kernel_seconds(device, None, jnp.asarray(k["group"], jnp.int32), k["flops"], k["bytes"],
                                        k["bits"], k["waste"], k["launches"], k["copy"],
                                        k["extra_bytes"])))


# ---- data -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class KernelData:
    """A kernel data file, flattened for fitting.

    ids, kinds [item]: item id and kind ('gemm', 'gemm_fp8', 'attention', 'moe', 'norm',
    'decode_step', 'prefill_step'); measured_s [item]: median time [s]; heldout [item]: in
    the held-out split; kernels: columns over all kernel rows (see `item_kernels`);
    item_of_row [row]: the item each row belongs to; device: where it was measured.
    """

    ids: tuple[str, ...]
    kinds: tuple[str, ...]
    measured_s: np.ndarray
    heldout: np.ndarray
    kernels: dict[str, np.ndarray]
    item_of_row: np.ndarray
    device: dict
    source: str

    def subset(self, mask: np.ndarray) -> "KernelData":
        keep = np.flatnonzero(mask)
        rows = np.isin(self.item_of_row, keep)
        remap = np.full(len(self.ids), -1)
        remap[keep] = np.arange(len(keep))
        return KernelData(ids=tuple(self.ids[i] for i in keep), kinds=tuple(self.kinds[i] for i in keep),
                          measured_s=self.measured_s[keep], heldout=self.heldout[keep],
                          kernels={k: v[rows] for k, v in self.kernels.items()},
                          item_of_row=remap[self.item_of_row[rows]], device=self.device, source=self.source)


def _bucket(item_id: str) -> int:
    """A stable pseudo-random bucket 0..99 from the item's id (its kind, dtype and shape)."""
    return int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) % 100


def split_heldout(ids: tuple[str, ...], kinds: tuple[str, ...], fraction: float = 0.25) -> np.ndarray:
    """Held-out mask: every whole-model step, and a `fraction` of each kernel kind chosen by shape hash.

    Deterministic (a hash of the id, no RNG). Each kernel kind with at least two items keeps
    at least one item on each side.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction={fraction!r}: must be in (0, 1)")
    held = np.asarray([k != CEILING_KIND and (k in MODEL_KINDS or _bucket(i) < 100 * fraction)
                       for i, k in zip(ids, kinds)], bool)
    for kind in set(kinds) - set(MODEL_KINDS) - {CEILING_KIND}:
        members = [n for n, k in enumerate(kinds) if k == kind]
        if len(members) < 2:
            continue
        ranked = sorted(members, key=lambda n: _bucket(ids[n]))
        if not held[members].any():
            held[ranked[0]] = True
        if held[members].all():
            held[ranked[-1]] = False
    return held


def _ceiling_items(ceilings: dict | None) -> list[dict]:
    """The suite's two ceiling measurements (`scripts/bench/kernels.py`: `ceilings`) as training items.

    A 512 MiB bf16 elementwise copy (x * 2: `copy_bytes` read plus written) and a square bf16
    matmul of side `matmul_n`: the largest elementwise and GEMM launches measured, they pin
    the saturated bandwidth and compute efficiency of those groups. Kind CEILING_KIND: always
    trained on, never held out (they are not part of the held-out split's kinds).
    """
    if not isinstance(ceilings, dict):
        return []
    out = []
    if ceilings.get("copy_bytes_per_s", 0) > 0 and ceilings.get("copy_bytes", 0) > 0:
        elements = ceilings["copy_bytes"] / 4  # bf16: 2 bytes read + 2 written per element
        out.append({"id": f"ceiling/copy/bf16/n{int(elements)}", "kind": CEILING_KIND, "dtype": "bf16",
                    "describe": {"type": "copy", "elements": elements, "bits": 16},
                    "timing": {"median_s": ceilings["copy_bytes"] / ceilings["copy_bytes_per_s"]}})
    if ceilings.get("matmul_bf16_flops_per_s", 0) > 0 and ceilings.get("matmul_n", 0) > 0:
        n = int(ceilings["matmul_n"])
        out.append({"id": f"ceiling/gemm/bf16/m{n}_n{n}_k{n}", "kind": CEILING_KIND, "dtype": "bf16",
                    "describe": {"type": "gemm", "m": n, "n": n, "k": n, "bits_in": 16, "bits_out": 16},
                    "timing": {"median_s": 2.0 * n ** 3 / ceilings["matmul_bf16_flops_per_s"]}})
    return out


def load_data(source: str | Path | dict, fraction: float = 0.25) -> KernelData:
    """Read a kernel data file (`scripts/bench/kernels.py`, schema DATA_SCHEMA) and split it."""
    if isinstance(source, dict):
        data, name = source, "<dict>"
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"data={str(source)!r}: no such file (run scripts/bench/kernels.py to make one)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"data={str(source)!r}: not valid JSON ({err})") from None
        name = str(path)
    if not isinstance(data, dict) or data.get("schema") != DATA_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"data.schema={got!r}: must be {DATA_SCHEMA!r}")
    items = [i for i in data.get("items", []) if i.get("timing", {}).get("median_s", 0) > 0]
    if len(items) < 2:
        raise ValueError(f"data.items={len(items)}: need at least 2 measured items")
    items = items + _ceiling_items(data.get("ceilings"))
    ids = tuple(i["id"] for i in items)
    kinds = tuple(i["kind"] + ("_fp8" if i.get("dtype") == "fp8" else "") for i in items)
    tables, owners = [], []
    for n, item in enumerate(items):
        k = item_kernels(item["describe"])
        tables.append(k)
        owners.append(np.full(len(k["flops"]), n))
    kernels = {c: np.concatenate([t[c] for t in tables]) for c in _RECORD}
    return KernelData(ids=ids, kinds=kinds, measured_s=np.asarray([i["timing"]["median_s"] for i in items]),
                      heldout=split_heldout(ids, kinds, fraction), kernels=kernels,
                      item_of_row=np.concatenate(owners), device=data.get("device", {}), source=name)


def predict(device: GPU, eff: Efficiency | None, data: KernelData):
    """Predicted time [s] of every item: calibrated with `eff`, the plain roofline with None."""
    columns = {c: jnp.asarray(v, jnp.int32 if c == "group" else jnp.float32) for c, v in data.kernels.items()}
    return _predict_columns(device, eff, columns, jnp.asarray(data.item_of_row), len(data.ids))


def _predict_columns(device, eff, k, item_of_row, n_items: int):
    rows = kernel_seconds(device, eff, k["group"], k["flops"], k["bytes"], k["bits"], k["waste"], k["launches"],
                          k["copy"], k["extra_bytes"])
    return jax.ops.segment_sum(rows, item_of_row, num_segments=n_items)


# ---- fitting ---------------------------------------------------------------------------------------
# Curve exponents in (0.05, 1]: at most 1 keeps a kernel's time non-decreasing in its work
# (exponent 1 is Hockney's n_1/2 form, a constant floor half/peak for tiny launches).
_EXP_LOW, _EXP_SPAN = 0.05, 0.95


def _to_efficiency(u: dict) -> Efficiency:
    sig = jax.nn.sigmoid
    return Efficiency(compute_max=sig(u["compute_max"]), compute_half_flops=jnp.exp(u["compute_half_flops"]),
                      compute_exponent=_EXP_LOW + _EXP_SPAN * sig(u["compute_exponent"]),
                      memory_max=sig(u["memory_max"]), memory_half_bytes=jnp.exp(u["memory_half_bytes"]),
                      memory_exponent=_EXP_LOW + _EXP_SPAN * sig(u["memory_exponent"]),
                      waste_exponent=jnp.exp(u["waste_exponent"]), launch_s=jnp.exp(u["launch_s"]))


def _from_efficiency(eff: Efficiency) -> dict:
    logit = lambda p: jnp.log(p) - jnp.log1p(-jnp.minimum(p, 1 - 1e-6))  # noqa: E731
    return {"compute_max": logit(eff.compute_max), "compute_half_flops": jnp.log(eff.compute_half_flops),
            "compute_exponent": logit((eff.compute_exponent - _EXP_LOW) / _EXP_SPAN),
            "memory_max": logit(eff.memory_max), "memory_half_bytes": jnp.log(eff.memory_half_bytes),
            "memory_exponent": logit((eff.memory_exponent - _EXP_LOW) / _EXP_SPAN),
            "waste_exponent": jnp.log(eff.waste_exponent), "launch_s": jnp.log(eff.launch_s)}


def fit(data: KernelData, base: GPU, *, steps: int = 3000, learning_rate: float = 0.05,
        init: Efficiency | None = None, regularisation: float = 1e-4) -> tuple[Efficiency, dict]:
    """Fit the efficiency curves to the training split of `data` (optax Adam on log time).

    Loss: mean over training items of (log predicted - log measured)^2, plus
    `regularisation` * squared distance of the unconstrained parameters from the start, so
    that groups with no training data stay at the starting point. Returns the fitted
    `Efficiency` and {"loss": [first, last], "steps", "train_items"}.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps={steps!r}: must be a positive integer")
    if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
        raise ValueError(f"learning_rate={learning_rate!r}: must be a positive number")
    train = data.subset(~data.heldout)
    if len(train.ids) == 0:
        raise ValueError("data: no training items (everything is held out)")
    u0 = _from_efficiency(init or Efficiency.default())
    base32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32) if eqx.is_array(x) else x, base)
    columns = {c: jnp.asarray(v, jnp.int32 if c == "group" else jnp.float32) for c, v in train.kernels.items()}
    u, losses, final = _fit_run(u0, base32, columns, jnp.asarray(train.item_of_row),
                                jnp.log(jnp.asarray(train.measured_s, jnp.float32)), n_items=len(train.ids),
                                steps=steps, learning_rate=float(learning_rate), regularisation=float(regularisation))
    eff = jax.tree.map(np.asarray, _to_efficiency(u))
    return Efficiency(**{k: jnp.asarray(getattr(eff, k)) for k in _FIELDS}), {
        "loss": [float(losses[0]), float(final)], "steps": steps, "train_items": len(train.ids)}


@functools.partial(jax.jit, static_argnames=("n_items", "steps", "learning_rate", "regularisation"))
def _fit_run(u0, base, columns, item_of_row, log_measured, *, n_items, steps, learning_rate, regularisation):
    """`steps` Adam steps (cosine-decayed rate) in one compiled scan; (u, per-step losses, final loss)."""
    def loss_fn(u):
        predicted = _predict_columns(base, _to_efficiency(u), columns, item_of_row, n_items)
        penalty = sum(jnp.sum((u[k] - u0[k]) ** 2) for k in u)
        return jnp.mean((jnp.log(predicted) - log_measured) ** 2) + regularisation * penalty

    optimiser = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.01))

    def step(carry, _):
        u, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(u)
        updates, state = optimiser.update(grads, state, u)
        return (optax.apply_updates(u, updates), state), loss

    (u, _), losses = jax.lax.scan(step, (u0, optimiser.init(u0)), None, length=steps)
    return u, losses, loss_fn(u)


def error_table(device: GPU, eff: Efficiency | None, data: KernelData) -> dict:
    """Absolute percentage errors of `predict` against the measurements, by kind and split.

    {"by_kind": {kind: {"train"|"heldout": {"mape", "max_ape", "n"}}}, "end_to_end": held-out
    whole-model steps, "kernels_heldout": held-out kernels, "lower_bound": fraction of items
    where the prediction is not above the measurement}.
    """
    predicted = np.asarray(predict(device, eff, data), np.float64)
    ape = np.abs(predicted - data.measured_s) / data.measured_s

    def summary(mask):
        mask = np.asarray(mask, bool)
        if not mask.any():
            return {"mape": None, "max_ape": None, "n": 0}
        return {"mape": float(np.mean(ape[mask])), "max_ape": float(np.max(ape[mask])), "n": int(mask.sum())}

    kinds = np.asarray(data.kinds)
    model = np.isin(kinds, MODEL_KINDS)
    return {"by_kind": {k: {"train": summary((kinds == k) & ~data.heldout), "heldout": summary((kinds == k) & data.heldout)}
                        for k in sorted(set(data.kinds))},
            "end_to_end": summary(model & data.heldout), "kernels_heldout": summary(~model & data.heldout),
            "lower_bound": float(np.mean(predicted <= data.measured_s * (1 + 1e-6))),
            "predicted_s": predicted.tolist()}


# ---- presets ----------------------------------------------------------------------------------------
def calibrate(data: str | Path | KernelData, base: str | GPU = "h200", *, steps: int = 3000,
              name: str | None = None) -> tuple[CalibratedGPU, dict]:
    """Fit `base` to `data`; returns the calibrated GPU and a report (fit, error tables, split)."""
    data = data if isinstance(data, KernelData) else load_data(data)
    device = gpu(base) if isinstance(base, str) else base
    if isinstance(device, CalibratedGPU):
        raise ValueError(f"base={device.name!r}: already calibrated; start from a preset GPU")
    eff, history = fit(data, device, steps=steps)
    target = calibrated(device, eff, name or f"{device.name}-calibrated")
    report = {"data": data.source, "device": data.device, "base": device.name, "fit": history,
              "heldout_ids": [i for i, h in zip(data.ids, data.heldout) if h],
              "calibrated": error_table(device, eff, data), "roofline": error_table(device, None, data)}
    return target, report


def save_preset(target: CalibratedGPU, path: str | Path, report: dict | None = None) -> Path:
    """Write a calibrated GPU as JSON (schema PRESET_SCHEMA); `load_target(path)` reads it back."""
    if not isinstance(target, CalibratedGPU):
        raise ValueError(f"target={type(target).__name__}: must be a CalibratedGPU (see hwcost.calibrate)")
    fields = {f.name: float(getattr(target.device, f.name)) for f in dataclasses.fields(GPU) if f.name != "name"}
    body = {"schema": PRESET_SCHEMA, "name": target.name, "gpu": fields, "efficiency": target.efficiency.to_dict()}
    if report is not None:
        body["fit"] = {k: v for k, v in report.items() if k not in ("calibrated", "roofline")}
        body["errors"] = {split: {k: v for k, v in report[split].items() if k != "predicted_s"}
                          for split in ("calibrated", "roofline")}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=1))
    return path


def load_preset(path: str | Path) -> CalibratedGPU:
    """Read a calibrated GPU written by `save_preset`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"target={str(path)!r}: no such calibrated preset file")
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"target={str(path)!r}: not valid JSON ({err})") from None
    if not isinstance(body, dict) or body.get("schema") != PRESET_SCHEMA:
        got = body.get("schema") if isinstance(body, dict) else type(body).__name__
        raise ValueError(f"target.schema={got!r}: must be {PRESET_SCHEMA!r}")
    names = {f.name for f in dataclasses.fields(GPU)} - {"name"}
    # a preset written before the per-precision rates existed lacks them: GPU's fallback rule fills them
    if not set(body["gpu"]) <= names or not names - set(body["gpu"]) <= set(PRECISION_FIELDS):
        raise ValueError(f"target.gpu={sorted(body['gpu'])}: must have exactly the GPU fields {sorted(names)} "
                         f"({', '.join(PRECISION_FIELDS)} optional)")
    fields = {k: jnp.asarray(v, jnp.float32) for k, v in body["gpu"].items()}
    return CalibratedGPU(device=GPU(name=str(body["name"]), **fields), efficiency=Efficiency.from_dict(body["efficiency"]),
                         name=str(body["name"]))


def load_target(target: str | Path) -> GPU | CalibratedGPU:
    """A GPU preset by name (`hwcost.gpu`), or a calibrated preset by path (a .json file).

    GPUs only; `hwcost.get_target` is the lookup for every target.
    """
    if isinstance(target, Path) or (isinstance(target, str) and (target.endswith(".json") or Path(target).is_file())):
        return load_preset(target)
    return gpu(target)


def format_errors(report: dict) -> str:
    """A human-readable table of a `calibrate` report: MAPE by kind and split, roofline vs calibrated."""
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    cal, roof = report["calibrated"], report["roofline"]
    lines = [f"{'kind':<14} {'n train':>7} {'n held':>6} {'roofline held':>13} {'calib train':>11} "
             f"{'calib held':>10} {'calib held max':>14}"]
    for kind, row in cal["by_kind"].items():
        lines.append(f"{kind:<14} {row['train']['n']:>7} {row['heldout']['n']:>6} "
                     f"{pct(roof['by_kind'][kind]['heldout']['mape']):>13} {pct(row['train']['mape']):>11} "
                     f"{pct(row['heldout']['mape']):>10} {pct(row['heldout']['max_ape']):>14}")
    for label, key in (("kernels, held", "kernels_heldout"), ("end to end", "end_to_end")):
        lines.append(f"{label:<14} {'':>7} {cal[key]['n']:>6} {pct(roof[key]['mape']):>13} {'':>11} "
                     f"{pct(cal[key]['mape']):>10} {pct(cal[key]['max_ape']):>14}")
    lines.append(f"uncalibrated roofline below the measurement on {100 * roof['lower_bound']:.1f}% of items")
    return "\n".join(lines)
