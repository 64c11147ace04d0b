"""XR-NPE target: a reconfigurable SIMD MAC engine (arXiv 2508.13049).

Model. One MAC unit has a 16-bit datapath that splits into two 8-bit or four 4-bit lanes
(RMMEC). The paper does not state lanes per format; lanes(bits) = 16 / bits is the natural
model (reference note), taken continuously in bits so expected bits stay differentiable.
Per layer with F = 2 * MACs matmul FLOPs and format probabilities p_f:

    t_compute = sum_f p_f * (F / 2) / (n_macs * clock_hz * lanes(bits_f))           [s]
    t_memory  = sum_f p_f * W * bits_f / 8 / mem_bandwidth,  W = F / (2 * tokens)     [s]
    latency   = sum over layers smooth_max2(t_compute, t_memory; sharpness)            [s]
    energy    = sum_f p_f * ((F / 2) * e_mac(bits_f) + W * bits_f / 8 * energy_per_byte) [J]

Energy per MAC op: the published 14 pJ (per MAC op, 28 nm) is taken for the widest
format, Posit(16,1), and e_mac(bits) = energy_per_mac_16 * (bits / 16)^2: a lane's
mantissa multiplier grows with the square of its width, so a 4-bit op costs 1/16 of a
16-bit op (an assumption; the paper gives one figure). Area: 0.016 mm^2 per MAC unit
(the paper's figure is read as ONE unit); the default engine has n_macs = 256 units.
Memory bandwidth (64 GB/s, LPDDR-class for an XR SoC) and 20 pJ/byte for weights are
assumed values, not from the paper. `XRNPE.cost(work)` applies the same model per op class
of a `hwcost.Workload`, with lanes from the op's expected bits (continuous), and returns a `Cost`.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from hwcost.targets._target import Cost, Target, check_workload
from hwcost._smooth import smooth_max2
from hwcost._workload import OPS, Workload
from nets.formats import get_format

_LANE_BITS = 16.0  # datapath width of one MAC unit [bits]
_MEMORY_KINDS = ("weights", "kv", "activations")  # bytes through this engine's memory (network excluded)


class XRNPE(Target):
    """XR-NPE engine. clock_hz [Hz]; n_macs [16-bit MAC units]; energy_per_mac_16 [J per
    16-bit MAC op]; area_per_mac_mm2 [mm^2 per unit]; mem_bandwidth [bytes/s];
    energy_per_byte [J per weight byte]; sharpness [p of the smooth compute/memory max]."""

    clock_hz: Float[Array, ""]
    n_macs: Float[Array, ""]
    energy_per_mac_16: Float[Array, ""]
    area_per_mac_mm2: Float[Array, ""]
    mem_bandwidth: Float[Array, ""]
    energy_per_byte: Float[Array, ""]
    sharpness: Float[Array, ""]
    name: str = eqx.field(static=True, default="xrnpe")
    # no published price: dollars are not modelled
    modelled: ClassVar[frozenset[str]] = frozenset({"latency_s", "energy_j", "memory_bytes", "area_mm2"})

    def __check_init__(self) -> None:
        for name in ("clock_hz", "n_macs", "energy_per_mac_16", "area_per_mac_mm2", "mem_bandwidth",
                     "energy_per_byte", "sharpness"):
            try:
                v = np.asarray(getattr(self, name))
            except Exception:  # a tracer: nothing to check at trace time
                continue
            if v.shape == () and not (v > 0):
                raise ValueError(f"XRNPE.{name}={float(v)!r}: must be positive")

    def lanes(self, bits: Array) -> Array:
        """MAC lanes per unit at `bits` operand width: 16 / bits (1, 2, 4 at 16, 8, 4 bits)."""
        return _LANE_BITS / bits

    def macs_per_second(self, bits: Array) -> Array:
        """Peak MAC throughput at `bits` [MAC/s]."""
        return self.n_macs * self.clock_hz * self.lanes(bits)

    def energy_per_mac(self, bits: Array) -> Array:
        """Energy of one MAC op at `bits` [J]: 14 pJ at 16 bits, scaled by (bits/16)^2."""
        return self.energy_per_mac_16 * (bits / _LANE_BITS) ** 2

    def area_mm2(self) -> Array:
        """Engine area [mm^2] = n_macs * area per unit."""
        return self.n_macs * self.area_per_mac_mm2

    def cost_formats(self, workload_flops_per_layer: Float[Array, " layer"],
                     format_probs_LxF: Float[Array, "layer fmt"], format_names: Sequence[str],
                     tokens: float = 1.0) -> tuple[Array, Array]:
        """Expected (latency_s [s], energy_j [J]) of per-layer matmul FLOPs under per-layer
        format probabilities (see module docstring); differentiable in the probabilities.
        tokens: tokens per step, so weight parameters per layer = FLOPs / (2 * tokens)."""
        flops = jnp.asarray(workload_flops_per_layer)
        probs = jnp.asarray(format_probs_LxF)
        if flops.ndim != 1:
            raise ValueError(f"workload_flops_per_layer has shape {flops.shape}: must be 1-D [layer]")
        names = list(format_names)
        if probs.shape != (flops.shape[0], len(names)):
            raise ValueError(f"format_probs_LxF has shape {probs.shape}: must be (layers, formats) = "
                             f"{(flops.shape[0], len(names))}")
        for arg, arr in (("workload_flops_per_layer", flops), ("format_probs_LxF", probs)):
            try:
                v = np.asarray(arr)
            except Exception:
                continue
            if np.any(v < 0) or not np.all(np.isfinite(v)):
                raise ValueError(f"{arg} has a negative or non-finite entry (min {float(v.min())!r}): "
                                 "must be finite and >= 0")
        if not tokens > 0:
            raise ValueError(f"tokens={tokens!r}: must be positive")
        try:
            bits = jnp.asarray([float(get_format(n).bits) for n in names], probs.dtype)
        except ValueError as e:
            raise ValueError(f"format_names: {e}") from None
        macs = flops / 2.0
        weight_bytes = (macs / tokens)[:, None] * bits / 8.0                        # [layer, fmt]
        t_compute = probs @ (1.0 / self.macs_per_second(bits)) * macs
        t_memory = jnp.sum(probs * weight_bytes, axis=1) / self.mem_bandwidth
        latency = jnp.sum(smooth_max2(t_compute, t_memory, self.sharpness))
        energy = jnp.sum(probs @ self.energy_per_mac(bits) * macs
                         + jnp.sum(probs * weight_bytes, axis=1) * self.energy_per_byte)
        return latency, energy

    def cost(self, work: Workload) -> Cost:
        """Cost of a `hwcost.Workload` on this engine: per op class and slot, the smooth max of
        compute time (FLOPs/2 MACs at the op's expected bits, continuous in bits; below 4 bits
        no further lane split, so bits are floored at 4) and memory time (weight + KV +
        activation bytes / mem_bandwidth). Dollars are not modelled (no published price)."""
        check_workload(self.name, work)
        zeros = jnp.zeros_like(work.op_flops["lm_head"])
        lat, energy = [], 0.0
        for op in OPS:
            flops = work.op_flops.get(op, zeros)
            bits = jnp.maximum(work.op_bits.get(op, zeros + _LANE_BITS), 4.0)
            nbytes = sum((work.op_bytes.get(kind, {}).get(op, zeros) for kind in _MEMORY_KINDS), zeros)
            t = smooth_max2(flops / 2.0 / self.macs_per_second(bits), nbytes / self.mem_bandwidth, self.sharpness)
            lat.append(t)
            energy = energy + jnp.sum(flops / 2.0 * self.energy_per_mac(bits) + nbytes * self.energy_per_byte)
        op_latency = jnp.stack(lat)
        latency = jnp.sum(op_latency)
        return Cost.of(self.name, self.modelled, {"op_latency_s": op_latency}, latency_s=latency, energy_j=energy,
                       memory_bytes=jnp.sum(work.footprint), area_mm2=self.area_mm2())


def xrnpe(dtype=jnp.float32, **overrides: float) -> XRNPE:
    """Preset: the paper's figures (1.72 GHz, 14 pJ per 16-bit MAC op, 0.016 mm^2 per unit,
    28 nm) plus documented assumptions (256 units, 64 GB/s, 20 pJ/byte, sharpness 8)."""
    params = dict(clock_hz=1.72e9, n_macs=256.0, energy_per_mac_16=14e-12, area_per_mac_mm2=0.016,
                  mem_bandwidth=64e9, energy_per_byte=20e-12, sharpness=8.0)
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"overrides {sorted(unknown)}: unknown; allowed {sorted(params)}")
    params.update(overrides)
    return XRNPE(**{k: jnp.asarray(v, dtype) for k, v in params.items()})
