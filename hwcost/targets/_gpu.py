"""GPU target: a differentiable roofline with a smooth maximum.

Every hardware parameter is a float array (learnable or calibratable); only the name is
static. For one workload (one device's step):

    t_op     = smooth_max(FLOPs / (peak(bits) * compute_efficiency),
                          HBM bytes / (bandwidth * memory_efficiency);  sharpness)     [s]
    latency  = sum over operation classes and layers of t_op (kernels run one after another)
    energy   = FLOPs * energy_per_flop(bits) + HBM bytes * energy_per_byte + static_power * latency  [J]
    dollars  = price_per_hour / 3600 * latency                                                     [USD]
    memory   = resident weights + KV cache + activation working set                                [bytes]

HBM bytes = weight + KV-cache bytes + activation_traffic * activation bytes (activation_traffic
is the fraction of activations that reach HBM: 1 for unfused kernels, 0 for the accounting of
Step-3's cost tables, which charge only KV bytes). Network bytes are not this device's
concern (see `hwcost.AFDTarget`).

The peak rate and energy per FLOP follow the operand precision `bits` (continuous: the
relaxed knobs give expected bit widths). Each format sits at its storage width: FP4 at 4,
FP8/INT8 at 8, BF16/FP16 at 16, TF32 at 19 (1 sign + 8 exponent + 10 mantissa bits) and FP32
(CUDA-core, or multi-pass on a TPU's MXU) at 32. The time (and energy) per FLOP is piecewise
linear in bits between those anchors, clamped outside [4, 32]; between anchors the rate is
a blend of its two neighbours, so gradients in bits stay finite everywhere (at exactly 8
and 16 bits the gradient is the 8-16 segment's, as before the other formats existed; at 4,
19 and 32 bits it is half the adjacent segment's slope, JAX's rule for min/max at a tie).
The 8-16 segment is computed first and the others added as exact zeros inside it, so costs
at 8-16 bits are bit-for-bit those of a two-rate model.
A format the chip has no rate for runs at the next wider format's rate:
- FP4 without FP4 tensor cores (everything before Blackwell) is dequantised and run on the
  FP8 path (peak_flops_fp4 = peak_flops_fp8); its bytes stay 4-bit (the workload's).
- FP8 without FP8 (A800, Ascend 910B, TPUs before Ironwood) runs at the BF16 rate
  (peak_flops_fp8 = peak_flops_bf16), as in Step-3's unit costs.
- TF32 or FP32 with no published rate is priced at the BF16 rate (the widest known), which
  under-prices it; every preset with a datasheet figure sets it.
INT8 shares the 8-bit anchor: this model has no separate integer format per op (a chip
whose INT8 rate differs from its FP8 rate is priced at FP8 for 8-bit operands).
With sharpness = inf the dollars of an op are
max(FLOPs * U_flop, bytes * U_byte) with U = price / (3600 * rate): Step-3's Table 5/6
unit-cost model (arXiv 2507.19427, section 3).
"""

from __future__ import annotations

from typing import ClassVar, Optional

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from hwcost._smooth import smooth_max2_inv
from hwcost.targets._target import ALL_MODELLED, Cost, Target, check_workload
from hwcost._workload import ATTENTION_CORE, OPS, Workload

_POSITIVE = ("peak_flops_bf16", "peak_flops_fp8", "mem_bandwidth", "mem_capacity", "compute_efficiency",
             "memory_efficiency", "sharpness")
_NON_NEGATIVE = ("price_per_hour", "energy_per_flop_bf16", "energy_per_flop_fp8", "energy_per_byte",
                 "static_power_w", "area_mm2", "activation_traffic")
# Rates at the formats beyond FP8/BF16 (module docstring): optional, filled by the fallback rule.
PRECISION_FIELDS = ("peak_flops_fp4", "peak_flops_tf32", "peak_flops_fp32", "energy_per_flop_fp4",
                    "energy_per_flop_tf32", "energy_per_flop_fp32")
# (narrow bits, wide bits) of each segment outside 8-16, with the rate names at its ends
_BELOW = (4.0, 8.0, "fp4", "fp8")
_ABOVE = ((16.0, 19.0, "bf16", "tf32"), (19.0, 32.0, "tf32", "fp32"))


def _concrete(x) -> np.ndarray | None:
    try:
        return np.asarray(x)
    except Exception:  # a tracer under jit/vmap: nothing to check at trace time
        return None


class GPU(Target):
    """One accelerator as a roofline (see the module docstring; units in the field names).

    peak_flops_bf16, peak_flops_fp8, peak_flops_fp4, peak_flops_tf32, peak_flops_fp32 [FLOP/s
    dense; the last three optional, defaulting by the module docstring's fallback rule: FP4 to
    FP8, TF32 and FP32 to BF16]; mem_bandwidth [bytes/s]; mem_capacity
    [bytes]; price_per_hour [USD per card-hour]; energy_per_flop_* [J/FLOP];
    energy_per_flop_fp4/tf32/fp32 default to the same compute power at that peak
    (energy_per_flop_fp8 * peak_fp8 / peak_fp4; energy_per_flop_bf16 * peak_bf16 / peak_tf32,
    / peak_fp32); energy_per_byte [J per HBM byte]; static_power_w [W]; area_mm2 [die mm^2];
    compute_efficiency, memory_efficiency [fraction of peak reached, default 1];
    activation_traffic [fraction of activation bytes that reach HBM]; sharpness [p of the
    smooth max; inf = sharp roofline].
    """

    peak_flops_bf16: Float[Array, ""]
    peak_flops_fp8: Float[Array, ""]
    mem_bandwidth: Float[Array, ""]
    mem_capacity: Float[Array, ""]
    price_per_hour: Float[Array, ""]
    energy_per_flop_bf16: Float[Array, ""]
    energy_per_flop_fp8: Float[Array, ""]
    energy_per_byte: Float[Array, ""]
    static_power_w: Float[Array, ""]
    area_mm2: Float[Array, ""]
    compute_efficiency: Float[Array, ""]
    memory_efficiency: Float[Array, ""]
    activation_traffic: Float[Array, ""]
    sharpness: Float[Array, ""]
    peak_flops_fp4: Optional[Float[Array, ""]] = None
    peak_flops_tf32: Optional[Float[Array, ""]] = None
    peak_flops_fp32: Optional[Float[Array, ""]] = None
    energy_per_flop_fp4: Optional[Float[Array, ""]] = None
    energy_per_flop_tf32: Optional[Float[Array, ""]] = None
    energy_per_flop_fp32: Optional[Float[Array, ""]] = None
    name: str = eqx.field(static=True, default="gpu")
    modelled: ClassVar[frozenset[str]] = ALL_MODELLED

    def __post_init__(self) -> None:
        # the fallback rule of the module docstring: a missing rate is the next wider format's
        if self.peak_flops_fp4 is None:
            self.peak_flops_fp4 = self.peak_flops_fp8
        for wide in ("tf32", "fp32"):
            if getattr(self, f"peak_flops_{wide}") is None:
                setattr(self, f"peak_flops_{wide}", self.peak_flops_bf16)
        if self.energy_per_flop_fp4 is None:
            self.energy_per_flop_fp4 = self.energy_per_flop_fp8 * self.peak_flops_fp8 / self.peak_flops_fp4
        for wide in ("tf32", "fp32"):
            if getattr(self, f"energy_per_flop_{wide}") is None:
                setattr(self, f"energy_per_flop_{wide}",
                        self.energy_per_flop_bf16 * self.peak_flops_bf16 / getattr(self, f"peak_flops_{wide}"))

    def __check_init__(self) -> None:
        for field in _POSITIVE + _NON_NEGATIVE + PRECISION_FIELDS:
            value = _concrete(getattr(self, field))
            if value is None:
                continue
            if np.shape(value) != ():
                continue  # a stacked batch of design points (vmap over GPUs)
            positive = field in _POSITIVE or field.startswith("peak_")
            bad = not (value > 0 if positive else value >= 0) or (np.isnan(value))
            if field != "sharpness" and not np.isfinite(value):
                bad = True
            if bad:
                allowed = "positive" if positive else "non-negative"
                raise ValueError(f"{self.name}.{field}={float(value)!r}: must be a finite {allowed} number"
                                 + (" (inf allowed: the sharp limit)" if field == "sharpness" else ""))
        if _concrete(self.activation_traffic) is not None and np.shape(self.activation_traffic) == () \
                and float(self.activation_traffic) > 1:
            raise ValueError(f"{self.name}.activation_traffic={float(self.activation_traffic)!r}: must be in [0, 1]")
        fp8, bf16 = _concrete(self.peak_flops_fp8), _concrete(self.peak_flops_bf16)
        if fp8 is not None and bf16 is not None and np.shape(fp8) == () and fp8 < bf16:
            raise ValueError(f"{self.name}.peak_flops_fp8={float(fp8)!r}: must be at least peak_flops_bf16={float(bf16)!r} "
                             "(a chip without FP8 runs 8-bit operands at its BF16 rate)")

    # ---- unit rates -------------------------------------------------------------------
    def _precision_weight(self, bits: Array) -> Array:
        """0 at <= 8 bits (FP8 rate), 1 at >= 16 bits (BF16 rate), linear between."""
        return (jnp.clip(bits, 8.0, 16.0) - 8.0) / 8.0

    def _outside_8_16(self, bits: Array, value) -> Array:
        """What the segments below 8 and above 16 bits add to a per-FLOP quantity at `bits`.

        `value(fmt)` is the quantity at format fmt ("fp4", "fp8", "bf16", "tf32", "fp32");
        exactly zero for 8 <= bits <= 16 (with zero gradient there).
        """
        lo, hi, narrow, wide = _BELOW
        extra = jnp.where(bits < hi, (jnp.maximum(bits, lo) - hi) / (hi - lo) * (value(wide) - value(narrow)), 0.0)
        for lo, hi, narrow, wide in _ABOVE:
            extra = extra + jnp.where(bits > lo, (jnp.minimum(bits, hi) - lo) / (hi - lo)
                                      * (value(wide) - value(narrow)), 0.0)
        return extra

    def _peak_seconds(self, fmt: str) -> Array:
        return 1.0 / (getattr(self, f"peak_flops_{fmt}") * self.compute_efficiency)

    def seconds_per_flop(self, bits: Array) -> Array:
        """Time per FLOP at `bits` operand precision [s/FLOP] (module docstring's piecewise rule)."""
        fp8, bf16 = self._peak_seconds("fp8"), self._peak_seconds("bf16")
        return fp8 + self._precision_weight(bits) * (bf16 - fp8) + self._outside_8_16(bits, self._peak_seconds)

    def energy_per_flop(self, bits: Array) -> Array:
        """Energy per FLOP at `bits` operand precision [J/FLOP], interpolated as the time is."""
        w = self._precision_weight(bits)
        return ((1 - w) * self.energy_per_flop_fp8 + w * self.energy_per_flop_bf16
                + self._outside_8_16(bits, lambda fmt: getattr(self, f"energy_per_flop_{fmt}")))

    def usd_per_flop(self, bits: float | Array = 8.0) -> Array:
        """Step-3's U_flop: price / (3600 * peak at that precision) [USD/FLOP]."""
        return self.price_per_hour / 3600.0 * self.seconds_per_flop(jnp.asarray(bits, jnp.result_type(float)))

    def usd_per_byte(self) -> Array:
        """Step-3's U_byte: price / (3600 * bandwidth) [USD/byte]."""
        return self.price_per_hour / 3600.0 / (self.mem_bandwidth * self.memory_efficiency)

    # ---- cost -------------------------------------------------------------------------
    def _hbm(self, work: Workload, op: str, traffic: Array | None = None) -> Array | float:
        """Bytes `op` moves through HBM per slot."""
        total = 0.0
        traffic = self.activation_traffic if traffic is None else traffic
        for kind, scale in (("weights", 1.0), ("kv", 1.0), ("activations", traffic)):
            values = work.op_bytes.get(kind, {}).get(op)
            if values is not None:
                total = total + scale * values
        return total

    def _op_times(self, work: Workload) -> tuple[dict, dict, dict, dict]:
        """Per op class present in `work`: compute, memory, roofline time per slot [s], HBM bytes.

        Kept as one small array per class (not stacked): XLA fuses each class's roofline into
        one loop, which is what makes a vmapped cost + gradient fast on a CPU.
        The attention core (score and value products, with the softmax between them) is one
        fused kernel (FlashAttention / FlashMLA), so its roofline is taken over the two
        classes together and the time is shared back in proportion to their compute plus
        memory times: one KV read can serve both products (MLA's latent row does).
        """
        # Scalars broadcast once to the slot shape: under reverse mode each then gets ONE
        # reduction (of the cotangents summed over classes) instead of one per class.
        slots = jnp.zeros_like(work.op_flops["lm_head"])
        seconds_per_byte = slots + 1.0 / (self.mem_bandwidth * self.memory_efficiency)
        traffic = slots + self.activation_traffic
        inv_sharpness = slots + 1.0 / self.sharpness
        fp8_s = slots + 1.0 / (self.peak_flops_fp8 * self.compute_efficiency)
        bf16_minus_fp8_s = slots + (1.0 / (self.peak_flops_bf16 * self.compute_efficiency)
                                    - 1.0 / (self.peak_flops_fp8 * self.compute_efficiency))
        per_bits: dict[int, Array] = {}  # many classes share one bits array: one rate computation each
        compute, memory, hbm_bytes = {}, {}, {}
        for op in OPS:
            flops = work.op_flops.get(op)
            hbm = self._hbm(work, op, traffic)
            if flops is None and isinstance(hbm, float):
                continue
            if flops is None:
                compute[op] = 0.0
            else:
                bits = work.op_bits[op]
                if id(bits) not in per_bits:
                    per_bits[id(bits)] = (fp8_s + self._precision_weight(bits) * bf16_minus_fp8_s
                                          + self._outside_8_16(bits, self._peak_seconds))
                compute[op] = flops * per_bits[id(bits)]
            memory[op] = hbm * seconds_per_byte
            hbm_bytes[op] = hbm
        roofline = {op: smooth_max2_inv(compute[op], memory[op], inv_sharpness)
                    for op in compute if op not in ATTENTION_CORE}
        core = [op for op in ATTENTION_CORE if op in compute]
        if core:
            fused_compute = sum(compute[op] for op in core)
            fused_memory = sum(memory[op] for op in core)
            fused_s = smooth_max2_inv(fused_compute, fused_memory, inv_sharpness)
            if len(core) == 1:
                roofline[core[0]] = fused_s
            else:
                fused_total = fused_compute + fused_memory
                positive = fused_total > 0
                safe_total = jnp.where(positive, fused_total, 1.0)
                for op in core:
                    share = jnp.where(positive, (compute[op] + memory[op]) / safe_total, 1.0 / len(core))
                    roofline[op] = fused_s * share
        return compute, memory, roofline, hbm_bytes

    def op_times(self, work: Workload) -> tuple[Array, Array, Array]:
        """(compute time, memory time, roofline time) per [op, slot], seconds (dense views over OPS)."""
        zeros = jnp.zeros_like(work.op_flops["lm_head"])
        parts = self._op_times(work)[:3]
        return tuple(jnp.stack([zeros + part.get(op, 0.0) for op in OPS]) for part in parts)

    def cost(self, work: Workload) -> Cost:
        """Latency, energy, dollars, memory and area of `work` on this GPU."""
        check_workload(self.name, work)
        _, _, roofline, hbm = self._op_times(work)
        return roofline_cost(self, work, roofline, hbm, self.name)

    def fits(self, work: Workload) -> Array:
        """Whether the workload's resident bytes fit in this device's memory (bool array)."""
        return jnp.sum(work.footprint) <= self.mem_capacity


def roofline_cost(device: GPU, work: Workload, roofline: dict[str, Array], hbm: dict[str, Array], name: str) -> Cost:
    """The Cost of per-op-class kernel times `roofline` [s] and HBM bytes `hbm` on `device`.

    Energy, dollars, memory and area follow the module docstring from the latency; shared by
    the plain GPU and the calibrated one (whose kernel times differ, its pricing does not).
    """
    # Add the classes elementwise, then reduce once: one reduction instead of one per class.
    latency = jnp.sum(sum(roofline.values()))
    per_bits: dict[int, Array] = {}
    flop_energy = 0.0
    for op, flops in work.op_flops.items():
        bits = work.op_bits[op]
        if id(bits) not in per_bits:
            per_bits[id(bits)] = device.energy_per_flop(bits)
        flop_energy = flop_energy + flops * per_bits[id(bits)]
    energy = (jnp.sum(flop_energy) + jnp.sum(sum(hbm.values())) * device.energy_per_byte
              + device.static_power_w * latency)
    usd_per_s = device.price_per_hour / 3600.0
    zeros = jnp.zeros_like(work.op_flops["lm_head"])
    op_latency = jnp.stack([zeros + roofline.get(op, 0.0) for op in OPS])
    return Cost.of(name, ALL_MODELLED, {"op_latency_s": op_latency, "op_dollars": usd_per_s * op_latency},
                   latency_s=latency, energy_j=energy, dollars=usd_per_s * latency,
                   memory_bytes=jnp.sum(work.footprint), area_mm2=device.area_mm2 + 0.0 * latency)
