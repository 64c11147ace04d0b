"""The calibrated kernel time: fitted efficiency curves per kernel group on top of a GPU roofline.

The uncalibrated `GPU` is a roofline at 100% of peak: a lower bound of any real kernel.
Real kernels reach a fraction of peak that depends on their size (small GEMMs cannot fill
132 SMs, small copies do not saturate HBM) and pay a fixed launch cost. Here each kernel
family g (KERNEL_GROUPS: GEMM, FP8 GEMM, the attention core per attention kind in decode and
in prefill and in training, MoE experts, norms, elementwise) gets

    compute efficiency  e_c(F) = c_max_g / (1 + (F_half_g / F)^alpha_g)                  [fraction]
    memory efficiency   e_m(B) = m_max_g / (1 + (B_half_g / B)^beta_g)                    [fraction]
    t = smooth_max(F * waste^gamma_g / (peak(bits) * e_c),  B / (bandwidth * e_m);  p) + t0_g   [s]

F = FLOPs of one launch (a GEMM with fewer output rows than tile_rows_g computing a whole tile,
smoothly),
B = HBM bytes of one launch. The shape of e_c, e_m is the saturating
"half-performance size" form of Hockney's n_1/2 (Hockney & Jesshope, Parallel Computers 2,
1988, sec. 1.3), smooth in F and B so the calibrated cost stays differentiable. GEMM classes
at b bits interpolate linearly between the FP8 and BF16 groups, as `GPU.seconds_per_flop`
does; FP8 GEMMs (b = 8) use the FP8 group's own curves, and b outside 8-16 bits (FP4, TF32,
FP32) uses the GPU's rate at that precision. These curves are one implementation's: they sit
in a software profile (`hwcost.Software`) with the program's extra work (waste, extra bytes,
copies: `hwcost.workload_kernels`) and its whole-step composition, apart from the hardware.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from hwcost._smooth import smooth_max2_inv
from hwcost.targets._gpu import GPU

KERNEL_GROUPS = ("gemm", "gemm_fp8", "attention", "moe", "elementwise", "attention_decode_mha", "attention_decode_gqa",
                 "attention_decode_mfa", "attention_decode_mla", "norm", "attention_mha", "attention_gqa",
                 "attention_mfa", "attention_mla", "attention_train_mha", "attention_train_gqa", "attention_train_mfa",
                 "attention_train_mla")
FORWARD_OF = {g: g.replace("_train_", "_") for g in KERNEL_GROUPS if "_train_" in g}
"""Each training attention family's forward (prefill) family of the same kind."""
"""The kernel families that get their own efficiency curves, in the order of every `Efficiency` field's entries.

The attention core has a family per attention kind, in decode ("attention_decode_<kind>"),
prefill ("attention_<kind>") and training ("attention_train_<kind>": forward and backward,
the backward's kernels being others than the forward's), since one implementation runs each
kind through different kernels (a fused kernel for one, einsums for another); "attention" is
that of a workload with no config. "norm" (a row
reduction) is apart from "elementwise" (copies, the KV-cache copies, the embedding gather).
A preset written before a family existed gives it the "attention" (or "elementwise") curves, a
training family the prefill family's of its kind.
"""
_FIELDS = ("compute_max", "compute_half_flops", "compute_exponent", "memory_max", "memory_half_bytes",
           "memory_exponent", "waste_exponent", "launch_s", "tile_rows")
# Fields a preset written before they existed may lack, with the value that leaves the model as it was.
_OPTIONAL = {"tile_rows": 0.0}


class Efficiency(eqx.Module):
    """Fitted efficiency curves, one entry per kernel group (KERNEL_GROUPS order; module docstring).

    compute_max, memory_max [fraction of peak, (0, 1]]; compute_half_flops [FLOP] and
    memory_half_bytes [bytes]: the launch size at which half of the maximum is reached;
    compute_exponent, memory_exponent [-]: how sharply; waste_exponent [-]: power of E/k
    charged to routed experts; launch_s [s]: fixed cost per kernel launch; tile_rows [rows]:
    the row tile a GEMM's compute is padded to (0: no padding).
    """

    compute_max: jax.Array
    compute_half_flops: jax.Array
    compute_exponent: jax.Array
    memory_max: jax.Array
    memory_half_bytes: jax.Array
    memory_exponent: jax.Array
    waste_exponent: jax.Array
    launch_s: jax.Array
    tile_rows: jax.Array = None

    def __post_init__(self) -> None:
        if self.tile_rows is None:
            self.tile_rows = jnp.zeros_like(jnp.asarray(self.launch_s))

    def __check_init__(self) -> None:
        for name in _FIELDS:
            value = np.asarray(getattr(self, name)) if not isinstance(getattr(self, name), jax.core.Tracer) else None
            if value is None:
                continue
            if value.shape[-1:] != (len(KERNEL_GROUPS),):
                raise ValueError(f"efficiency.{name}: shape {value.shape}: must end in one entry per group "
                                 f"({', '.join(KERNEL_GROUPS)})")
            low_ok = value >= 0 if name in ("launch_s", "waste_exponent", "tile_rows") else value > 0
            bad = ~np.isfinite(value) | ~low_ok | ((value > 1) if name.endswith("_max") else False)
            if np.any(bad):
                allowed = "in (0, 1]" if name.endswith("_max") else (
                    "finite and >= 0" if name in ("launch_s", "waste_exponent", "tile_rows") else "finite and > 0")
                raise ValueError(f"efficiency.{name}={float(value[bad][0])!r}: must be {allowed}")

    @classmethod
    def default(cls) -> "Efficiency":
        """The starting point of a fit (a plausible GPU; fitted values replace all of it)."""
        g = len(KERNEL_GROUPS)
        full = lambda v: jnp.full((g,), v, jnp.float32)  # noqa: E731
        return cls(compute_max=full(0.75), compute_half_flops=full(1e8), compute_exponent=full(0.8),
                   memory_max=full(0.85), memory_half_bytes=full(1e6), memory_exponent=full(0.8),
                   waste_exponent=full(0.3), launch_s=full(3e-6), tile_rows=full(64.0))

    def with_group_from(self, child: str, parent: str, fields: tuple[str, ...] | None = None) -> "Efficiency":
        """This efficiency with group `child`'s `fields` (default: all) set to group `parent`'s."""
        c, p = KERNEL_GROUPS.index(child), KERNEL_GROUPS.index(parent)
        eff = self
        for field in _FIELDS if fields is None else fields:
            values = getattr(eff, field)
            eff = eqx.tree_at(lambda e, f=field: getattr(e, f), eff, values.at[c].set(values[p]))
        return eff

    def to_dict(self) -> dict:
        return {name: {g: float(v) for g, v in zip(KERNEL_GROUPS, np.asarray(getattr(self, name)))} for name in _FIELDS}

    @classmethod
    def from_dict(cls, data: dict) -> "Efficiency":
        if isinstance(data, dict):
            given = {k: set(v) for k, v in data.items() if isinstance(v, dict)}
            data = {**{k: {g: v for g in KERNEL_GROUPS} for k, v in _OPTIONAL.items()}, **data}
            parent = {g: "attention" for g in KERNEL_GROUPS if g.startswith("attention_")} | {"norm": "elementwise"}
            data = {k: ({**{g: v.get(p) for g, p in parent.items() if p in v}, **v} if isinstance(v, dict) else v)
                    for k, v in data.items()}
            # a training family a preset lacks: the prefill family of its kind (how it was priced before)
            data = {k: ({**v, **{g: v[p] for g, p in FORWARD_OF.items() if p in v and g not in given.get(k, ())}}
                        if isinstance(v, dict) else v) for k, v in data.items()}
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
    """Seconds per FLOP at 100% of peak at `bits`, and the BF16 weight of the GEMM blend.

    The GPU's own piecewise rule at efficiency 1 (FP4 at 4 bits, FP8/INT8 at 8, BF16 at 16,
    TF32 at 19, FP32 at 32: `hwcost.GPU`); the weight is 0 at <= 8 bits (the FP8 GEMM
    group's curves), 1 at >= 16 bits (the GEMM group's), linear between.
    """
    w = device._precision_weight(bits)
    per = lambda fmt: 1.0 / getattr(device, f"peak_flops_{fmt}")  # noqa: E731
    return per("fp8") + w * (per("bf16") - per("fp8")) + device._outside_8_16(bits, per), w


def _curve(size, half, exponent):
    """1 + (half / size)^exponent, and 1 where size is 0 (no work, no time)."""
    positive = size > 0
    safe = jnp.where(positive, size, 1.0)
    return jnp.where(positive, 1.0 + jnp.exp(exponent * (jnp.log(half) - jnp.log(safe))), 1.0)


def _tile_padding(rows, tile):
    """Work done over work counted when `rows` output rows run on tiles of `tile` rows (>= 1; 1 where rows = 0).

    smooth_max(rows, tile) / rows: a GEMM with fewer rows than one tile still computes a whole
    tile (tile quantisation), smooth so the cost stays differentiable.
    """
    positive = rows > 0
    safe = jnp.where(positive, rows, 1.0)
    padded = smooth_max2_inv(safe, tile + 0.0 * safe, 0.1)
    return jnp.where(positive, padded / safe, 1.0)
