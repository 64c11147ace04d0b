"""The calibrated kernel time: fitted efficiency curves per kernel group on top of a GPU roofline.

The uncalibrated `GPU` is a roofline at 100% of peak: a lower bound of any real kernel.
Real kernels reach a fraction of peak that depends on their size (small GEMMs cannot fill
132 SMs, small copies do not saturate HBM) and pay a fixed launch cost. Here each kernel
group g (KERNEL_GROUPS: GEMM, FP8 GEMM, attention core, MoE experts, elementwise) gets

    compute efficiency  e_c(F) = c_max_g / (1 + (F_half_g / F)^alpha_g)                  [fraction]
    memory efficiency   e_m(B) = m_max_g / (1 + (B_half_g / B)^beta_g)                    [fraction]
    t = smooth_max(F * waste^gamma_g / (peak(bits) * e_c),  B / (bandwidth * e_m);  p) + t0_g   [s]

F = FLOPs of one launch, B = HBM bytes of one launch. The shape of e_c, e_m is the saturating
"half-performance size" form of Hockney's n_1/2 (Hockney & Jesshope, Parallel Computers 2,
1988, sec. 1.3), smooth in F and B so the calibrated cost stays differentiable. GEMM classes
at b bits interpolate linearly between the FP8 and BF16 groups, as `GPU.seconds_per_flop`
does; FP8 GEMMs (b = 8) use the FP8 group's own curves. The waste and the extra bytes are
what today's program executes beyond the workload's counts (`hwcost.workload_kernels`).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from hwcost._smooth import smooth_max2_inv
from hwcost.targets._gpu import GPU

KERNEL_GROUPS = ("gemm", "gemm_fp8", "attention", "moe", "elementwise")
"""The kernel groups that get their own efficiency curves, in the order of every `Efficiency` field's entries."""
_FIELDS = ("compute_max", "compute_half_flops", "compute_exponent", "memory_max", "memory_half_bytes",
           "memory_exponent", "waste_exponent", "launch_s")


class Efficiency(eqx.Module):
    """Fitted efficiency curves, one entry per kernel group (KERNEL_GROUPS order; module docstring).

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
            if value.shape[-1:] != (len(KERNEL_GROUPS),):
                raise ValueError(f"efficiency.{name}: shape {value.shape}: must end in one entry per group "
                                 f"({', '.join(KERNEL_GROUPS)})")
            low_ok = value >= 0 if name in ("launch_s", "waste_exponent") else value > 0
            bad = ~np.isfinite(value) | ~low_ok | ((value > 1) if name.endswith("_max") else False)
            if np.any(bad):
                allowed = "in (0, 1]" if name.endswith("_max") else (
                    "finite and >= 0" if name in ("launch_s", "waste_exponent") else "finite and > 0")
                raise ValueError(f"efficiency.{name}={float(value[bad][0])!r}: must be {allowed}")

    @classmethod
    def default(cls) -> "Efficiency":
        """The starting point of a fit (a plausible GPU; fitted values replace all of it)."""
        g = len(KERNEL_GROUPS)
        full = lambda v: jnp.full((g,), v, jnp.float32)  # noqa: E731
        return cls(compute_max=full(0.75), compute_half_flops=full(1e8), compute_exponent=full(0.8),
                   memory_max=full(0.85), memory_half_bytes=full(1e6), memory_exponent=full(0.8),
                   waste_exponent=full(0.3), launch_s=full(3e-6))

    def to_dict(self) -> dict:
        return {name: {g: float(v) for g, v in zip(KERNEL_GROUPS, np.asarray(getattr(self, name)))} for name in _FIELDS}

    @classmethod
    def from_dict(cls, data: dict) -> "Efficiency":
        if not isinstance(data, dict) or sorted(data) != sorted(_FIELDS):
            raise ValueError(f"efficiency={sorted(data) if isinstance(data, dict) else data!r}: "
                             f"must have exactly the fields {', '.join(_FIELDS)}")
        values = {}
        for name in _FIELDS:
            if not isinstance(data[name], dict) or sorted(data[name]) != sorted(KERNEL_GROUPS):
                raise ValueError(f"efficiency.{name}: must map each group ({', '.join(KERNEL_GROUPS)}) to a number")
            values[name] = jnp.asarray([float(data[name][g]) for g in KERNEL_GROUPS], jnp.float32)
        return cls(**values)


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
    indexes KERNEL_GROUPS.
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
    gemm = KERNEL_GROUPS.index("gemm")
    if isinstance(group, int):  # one op class (CalibratedGPU): blend with FP8 only for GEMMs
        t = (1.0 - w) * one(KERNEL_GROUPS.index("gemm_fp8")) + w * main if group == gemm else main
    else:
        fp8 = one(jnp.full_like(group, KERNEL_GROUPS.index("gemm_fp8")))
        t = jnp.where(group == gemm, (1.0 - w) * fp8 + w * main, main)
    return launches * t * (flops + hbm_bytes > 0)

