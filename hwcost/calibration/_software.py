"""The software-efficiency layer: how one implementation's kernels use a GPU, apart from the GPU.

A `hwcost.GPU` holds hardware only (peaks per precision, bandwidth, capacity, power, price).
What a program makes of it is a `Software` profile, one per implementation:

- `efficiency`: the fitted efficiency curves per kernel family (`Efficiency`: GEMM, FP8 GEMM,
  attention core, MoE experts, elementwise), or None for the roofline (every kernel at
  100% of peak, no launch cost: a lower bound of any implementation);
- program structure: `kv_cache_copies`, copies of each layer's KV cache one whole decode
  step makes (our layer scan's HLO shows `SCAN_CACHE_COPIES`, the starting point; the fit
  moves it where whole decode steps say, since XLA may update some in place on a GPU), and
  `weight_copies`, copies of each layer's weights a whole step makes (the scan's slices of
  the stacked weights, SCAN_WEIGHT_COPIES to start, fitted), and
  `dense_experts`, whether routed experts are lowered to dense matmuls over every expert
  (XLA's `ragged_dot` lowering at the time the H200 data was measured; fixed);
  `norm_reads`, how many times a norm kernel reads its input (ours: 2, XLA emits an RMSNorm
  as a row reduction for the statistics and an elementwise pass that reads the input again;
  measured: large norms stream at 0.60-0.62 of the copy bandwidth on both the H200 and the
  H100, the 2/3 of three passes against a copy's two; fixed), and `gemm_rate_bits`, the
  narrowest compute format a GEMM of the program gains speed from: a GEMM in a narrower
  format computes at this format's rate on the GEMM family's curves, moving its own bytes
  (ours: 16, XLA's e4m3 x e4m3 -> bf16 dot on jax 0.11; measured on the H200, its time over
  the bf16 GEMM's of the same shape has a median of 1.1 and runs from 0.56 to 12 by shape
  (the kernel XLA picks), far from the FP8 rate's 0.5; INT8 and FP4 GEMMs unmeasured, priced
  the same way; fixed: 0 prices every format at its own rate);
- whole-step composition (fitted on whole steps): `step_gap_s[phase]`, idle time per kernel
  launch inside a whole step (launch gaps the single-kernel timings do not show), and
  `step_elementwise[phase]`, the share of the elementwise kernels' standalone time left in a
  whole step (XLA fuses norms and elementwise work into their neighbours; the program's
  copies of caches and weights are not shared out: their counts are fitted apart); phases
  STEP_PHASES.

The same hardware is priced with our kernels, a peer's or the roofline by pairing it with
another profile: `hwcost.calibrated(hwcost.gpu("h100"), software)`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from hwcost._smooth import smooth_max2_inv
from hwcost.calibration._efficiency import (KERNEL_GROUPS, Efficiency, _curve, _peak_seconds_per_flop,
                                            _tile_padding)
from hwcost.targets._gpu import GPU

STEP_PHASES = ("decode", "prefill", "train")
COPY_KV, COPY_WEIGHTS = 1.0, 2.0
"""Values of a kernel record's `copy` column: a copy of a layer's KV cache, of a layer's weights (0: no copy)."""
SCAN_CACHE_COPIES = 3.0
"""Copies of each layer's KV cache that one whole-model decode step of `nets.TransformerLM` makes.

A property of our program, the fit's starting point (whole decode steps move it: `_fit._COPIES`): its
layers run under a scan with the stacked cache as scanned input and output; the compiled step (XLA's
optimised HLO of a 4-layer decode step, inspected on the CPU backend, jax 0.10.2) slices each layer's
cache out of the input stack
(one copy), writes the updated layer into the output stack (one copy) and copies the whole
output stack once after the loop (one copy). The zero-fill of the output stack is left out.
That is the program the stored H100 and H200 suites measured. Since 2026-12-08, `nets` carries the
stacked cache through the scan and writes each layer's new tokens in place (`nets._cache_slot`): the
donated decode step's HLO has no whole-cache copy left. Suites measured on that code need their own
software profile (results/gpu_speed/decode_step_cpu/README.md).
"""


SCAN_WEIGHT_COPIES = 1.0
"""Starting point of the copies of each layer's weights our layer scan makes per whole step (fitted).

The layers' weights are stacked and scanned (`nets.TransformerLM`); a GEMM that XLA hands to a
library kernel takes each layer's slice as a materialised operand, a copy (read and write of
the layer's weights) per step unless XLA fuses the slice into its consumer.
"""


NORM_READS = 2.0
"""Reads of its input one norm kernel of ours makes: the statistics pass and the scaling pass (module docstring)."""
GEMM_RATE_BITS = 16.0
"""The narrowest GEMM format our program gains speed from (module docstring): its e4m3 GEMMs run at the bf16 rate."""


class Software(eqx.Module):
    """One implementation's use of a GPU (module docstring); `name` says whose kernels these are."""

    efficiency: Efficiency | None
    step_gap_s: jax.Array
    step_elementwise: jax.Array
    kv_cache_copies: jax.Array | float = 0.0
    weight_copies: jax.Array | float = 0.0
    dense_experts: bool = eqx.field(static=True, default=False)
    name: str = eqx.field(static=True, default="software")
    norm_reads: float = eqx.field(static=True, default=1.0)
    gemm_rate_bits: float = eqx.field(static=True, default=0.0)

    def __check_init__(self) -> None:
        for field in ("step_gap_s", "step_elementwise"):
            value = getattr(self, field)
            if isinstance(value, jax.core.Tracer):
                continue
            value = np.asarray(value)
            if value.shape[-1:] != (len(STEP_PHASES),):
                raise ValueError(f"software.{field}: shape {value.shape}: must end in one entry per phase "
                                 f"({', '.join(STEP_PHASES)})")
            if np.any(~np.isfinite(value) | (value < 0)):
                raise ValueError(f"software.{field}={value.tolist()!r}: must be finite and >= 0")
        if isinstance(self.norm_reads, bool) or not (isinstance(self.norm_reads, (int, float))
                                                     and 1.0 <= self.norm_reads < float("inf")):
            raise ValueError(f"software.norm_reads={self.norm_reads!r}: must be a number >= 1")
        if isinstance(self.gemm_rate_bits, bool) or not (isinstance(self.gemm_rate_bits, (int, float))
                                                         and 0.0 <= self.gemm_rate_bits <= 32.0):
            raise ValueError(f"software.gemm_rate_bits={self.gemm_rate_bits!r}: must be a number in [0, 32]")
        for field in ("kv_cache_copies", "weight_copies"):
            copies = getattr(self, field)
            if not isinstance(copies, jax.core.Tracer) and not (np.all(np.isfinite(copies))
                                                                 and np.all(np.asarray(copies) >= 0)):
                raise ValueError(f"software.{field}={copies!r}: must be a finite number >= 0")

    def to_dict(self) -> dict:
        return {"name": self.name, "kv_cache_copies": float(np.asarray(self.kv_cache_copies)),
                "weight_copies": float(np.asarray(self.weight_copies)),
                "dense_experts": bool(self.dense_experts), "norm_reads": float(self.norm_reads),
                "gemm_rate_bits": float(self.gemm_rate_bits),
                "efficiency": None if self.efficiency is None else self.efficiency.to_dict(),
                "step_gap_s": dict(zip(STEP_PHASES, map(float, np.asarray(self.step_gap_s)))),
                "step_elementwise": dict(zip(STEP_PHASES, map(float, np.asarray(self.step_elementwise))))}

    @classmethod
    def from_dict(cls, data: dict) -> "Software":
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ValueError("software: must be an object with a name (see hwcost.Software.to_dict)")
        eff = None if data.get("efficiency") is None else Efficiency.from_dict(data["efficiency"])
        phases = {}
        for field, default in (("step_gap_s", 0.0), ("step_elementwise", 1.0)):
            given = data.get(field, {})
            if not isinstance(given, dict) or not set(given) <= set(STEP_PHASES):
                raise ValueError(f"software.{field}: must map phases ({', '.join(STEP_PHASES)}) to numbers")
            phases[field] = jnp.asarray([float(given.get(p, default)) for p in STEP_PHASES], jnp.float32)
        copies = {k: data.get(k, 0.0) for k in ("kv_cache_copies", "weight_copies")}
        for k, v in copies.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"software.{k}={v!r}: must be a number")
        if not isinstance(data.get("dense_experts", False), bool):
            raise ValueError(f"software.dense_experts={data.get('dense_experts')!r}: must be true or false")
        program = {k: data.get(k, default) for k, default in (("norm_reads", 1.0), ("gemm_rate_bits", 0.0))}
        for k, v in program.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"software.{k}={v!r}: must be a number")
        return cls(efficiency=eff, **{k: float(v) for k, v in copies.items()}, dense_experts=data.get("dense_experts", False),
                   name=data["name"], **{k: float(v) for k, v in program.items()}, **phases)


def software(name: str = "roofline", efficiency: Efficiency | None = None, **program) -> Software:
    """A software profile: "roofline" (ideal kernels), or "ours" (our JAX program's structure) with `efficiency`.

    "ours" has kv_cache_copies = SCAN_CACHE_COPIES, dense_experts = True, norm_reads =
    NORM_READS and gemm_rate_bits = GEMM_RATE_BITS unless `program` overrides them (also
    step_gap_s / step_elementwise, arrays over STEP_PHASES). Fitted profiles come from
    `hwcost.calibrate` and are read back with `hwcost.load_preset(path).software`.
    """
    steps = {"step_gap_s": jnp.zeros(len(STEP_PHASES), jnp.float32),
             "step_elementwise": jnp.ones(len(STEP_PHASES), jnp.float32)}
    if name == "roofline":
        if efficiency is not None:
            raise ValueError("efficiency: the roofline profile has none (every kernel at 100% of peak)")
        return Software(efficiency=None, name="roofline", **{**steps, **program})
    structure = {"kv_cache_copies": SCAN_CACHE_COPIES, "weight_copies": SCAN_WEIGHT_COPIES, "dense_experts": True,
                 "norm_reads": NORM_READS, "gemm_rate_bits": GEMM_RATE_BITS} if name.startswith("ours") else {}
    return Software(efficiency=efficiency or Efficiency.default(), name=name, **{**steps, **structure, **program})


def as_software(value) -> Software:
    """A Software from a Software, an Efficiency (our program, fitted curves) or None (the roofline)."""
    if isinstance(value, Software):
        return value
    if value is None:
        return software("roofline")
    if isinstance(value, Efficiency):
        return software("ours", value)
    raise ValueError(f"software={type(value).__name__}: must be a hwcost.Software, an Efficiency or None")


def step_adjust(sw: Software, t, group, step, copy=0.0):
    """Per-launch time `t` of a kernel inside a whole step of phase index `step` (-1: not in a step).

    The fusion share `step_elementwise` applies to the program's own norms and elementwise
    ops; the copies (`copy` != 0) have their own fitted counts and are never shared out.
    """
    if isinstance(step, (int, float)) and step < 0:
        return t
    families = (KERNEL_GROUPS.index("elementwise"), KERNEL_GROUPS.index("norm"))
    if isinstance(step, (int, float)) and isinstance(group, int) and isinstance(copy, (int, float)):  # all known
        phase = int(step)
        fused = group in families and copy == 0
        return t * (sw.step_elementwise[phase] if fused else 1.0) + sw.step_gap_s[phase]
    step = jnp.asarray(step)
    inside = step >= 0
    phase = jnp.clip(step, 0, len(STEP_PHASES) - 1).astype(jnp.int32)
    group = jnp.asarray(group)
    elementwise = ((group == families[0]) | (group == families[1])) & (jnp.asarray(copy) == 0)
    fused = jnp.where(elementwise, sw.step_elementwise[phase], 1.0)
    return jnp.where(inside, t * fused + sw.step_gap_s[phase], t)


def kernel_seconds(device: GPU, software, group, flops, hbm_bytes, bits, waste, launches, copy=0.0,
                   extra_bytes=0.0, rows=0.0, step=-1):
    """Time [s] of `launches` launches of one kernel (FLOPs and bytes per launch), elementwise.

    `software` (a `hwcost.Software`, or an `Efficiency` for our kernels, or None for the
    roofline) is how the program uses the hardware. With the roofline (no efficiency): the
    plain `device` roofline of the workload's own counts, no launch cost, the program's
    extra work ignored (copy rows take no time, `waste` and `extra_bytes` unused): a
    lower bound. Otherwise the calibrated time of the module docstring, where the kernel
    moves hbm_bytes + extra_bytes when the software expands routed experts densely (and
    computes waste^exponent more), its copy rows are launched `kv_cache_copies`
    (copy=COPY_KV) or `weight_copies` (copy=COPY_WEIGHTS) times, GEMM compute is padded to the group's row tile (`rows` output
    rows per launch), and a row of a whole step (`step` = phase index >= 0) pays the
    software's per-launch gap and elementwise fusion factor. `group` indexes KERNEL_GROUPS.
    """
    software = as_software(software)
    eff = software.efficiency
    spf, w = _peak_seconds_per_flop(device, bits)
    spb = 1.0 / device.mem_bandwidth
    inv_p = 1.0 / device.sharpness
    if eff is None:
        core = smooth_max2_inv(flops * spf, hbm_bytes * spb, inv_p)
        return launches * core * (flops + hbm_bytes > 0) * (copy == 0)
    dense = 1.0 if software.dense_experts else 0.0

    norm, gemm = KERNEL_GROUPS.index("norm"), KERNEL_GROUPS.index("gemm")
    if software.gemm_rate_bits > 0:  # GEMMs narrower than the software gains from compute at its rate
        spf, w = _peak_seconds_per_flop(device, jnp.where(group == gemm, jnp.maximum(bits, software.gemm_rate_bits),
                                                          bits))

    def one(g):
        take = lambda name: getattr(eff, name)[g]  # noqa: E731
        t_c = (flops * spf / take("compute_max") * _curve(flops, take("compute_half_flops"), take("compute_exponent"))
               * jnp.power(jnp.maximum(1.0 + dense * (waste - 1.0), 1.0), take("waste_exponent"))
               * _tile_padding(rows, take("tile_rows")))
        # extra bytes: the unrouted experts' weights (dense experts), a norm's input read again (norm_reads)
        moved = hbm_bytes + jnp.where(g == norm, software.norm_reads - 1.0, dense) * extra_bytes
        t_m = moved * spb / take("memory_max") * _curve(moved, take("memory_half_bytes"),
                                                            take("memory_exponent"))
        return smooth_max2_inv(t_c, t_m, inv_p) + take("launch_s")

    main = one(group)
    if isinstance(group, int):  # one op class (CalibratedGPU): blend with FP8 only for GEMMs
        t = (1.0 - w) * one(KERNEL_GROUPS.index("gemm_fp8")) + w * main if group == gemm else main
    else:
        fp8 = one(jnp.full_like(group, KERNEL_GROUPS.index("gemm_fp8")))
        t = jnp.where(group == gemm, (1.0 - w) * fp8 + w * main, main)
    if isinstance(copy, (int, float)):  # one kernel (a workload's): the copy kind is known at trace time
        launches = launches * {0.0: 1.0, COPY_KV: software.kv_cache_copies, COPY_WEIGHTS: software.weight_copies}[
            float(copy)]
    else:
        launches = launches * jnp.where(copy == COPY_KV, software.kv_cache_copies,
                                        jnp.where(copy == COPY_WEIGHTS, software.weight_copies, 1.0))
    t = step_adjust(software, t, group, step, copy)
    return launches * t * (flops + hbm_bytes > 0)
