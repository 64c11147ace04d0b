"""Number formats by name: one registry that the design space, QAT and the cost models share.

Names (FORMAT_NAMES, widest first): "fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2",
"mxfp8_e4m3", "mxfp8_e5m2", "posit(16,1)", "posit(8,0)", "posit(8,2)", "fp4_e2m1", "mxfp4",
"posit(4,1)". Any "posit(n,es)" with 2 <= n <= 16 and 0 <= es <= 3 is also accepted.

Scaled variants: a name suffixed "@tensor" or "@channel" (e.g. "posit(4,1)@tensor",
"fp4_e2m1@channel") applies a power-of-two scale s before the quantiser, q(x / s) * s, with
one s per tensor or one per index of the LAST axis (the output channel of a Flax
(in, out) kernel, the feature of a (..., d) activation). s puts max|x| / s in the binade
[2^t, 2^(t+1)):
  - float formats: t = emax (the element format's largest normal exponent), the OCP MX rule,
    so the largest value uses the top of the range and the rest keeps the most dynamic range;
  - posits: t = 0, the unit binade [1, 2), where a posit has the most fraction bits (tapered
    precision is symmetric about 1); the (n-2) 2^es binades below 1 hold the smaller values.
The scale is kept in full precision; `bits` counts the element only (a per-tensor scale
amortises to nothing; a per-channel scale adds 8 bits per channel, not counted).

`bits` is storage bits per value; MX counts its shared 8-bit E8M0 scale amortised over a
32-value block (4 + 8/32 = 4.25 for MXFP4).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Callable

import jax
import jax.numpy as jnp

from nets.formats._float import MX_BLOCK, cast_quantize, max_normal_exponent, mx_quantize, rne_quantize
from nets.formats._posit import Posit, scaled_quantize

__all__ = ["FORMAT_NAMES", "NumberFormat", "SCALINGS", "get_format"]

FAMILIES = ("float", "posit", "mx")
SCALINGS = ("none", "tensor", "channel")


@dataclasses.dataclass(frozen=True)
class NumberFormat:
    """A named quantiser.

    Fields: name; bits (storage bits per value, float since MX amortises its scale);
    family ("float", "posit" or "mx"); max_abs (largest finite magnitude the quantiser can
    output, inf where a data-dependent scale adapts the range: MX and scaled variants; the
    clipped straight-through estimator zeroes gradients where |x| > max_abs); scaling
    ("none", "tensor", "channel"). Equality and hashing use the name and numbers only.
    """

    name: str
    bits: float
    family: str
    max_abs: float
    scaling: str = "none"
    quantize_fn: Callable[[jax.Array], jax.Array] = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"NumberFormat.family must be one of {FAMILIES}, got {self.family!r}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"NumberFormat.scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if not self.bits > 0:
            raise ValueError(f"NumberFormat.bits must be > 0, got {self.bits}")
        if self.quantize_fn is None:
            raise ValueError("NumberFormat.quantize_fn is required")

    def quantize(self, x) -> jax.Array:
        """The nearest value of this format (float32 arithmetic), in x's floating dtype."""
        x = jnp.asarray(x)
        out_dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
        return self.quantize_fn(x.astype(jnp.float32)).astype(out_dtype)


_FLOAT_DTYPES = {
    "bf16": jnp.bfloat16,
    "fp16": jnp.float16,
    "fp8_e4m3": jnp.float8_e4m3fn,
    "fp8_e5m2": jnp.float8_e5m2,
    "fp4_e2m1": jnp.float4_e2m1fn,
}
_MX_ELEMENTS = {"mxfp8_e4m3": jnp.float8_e4m3fn, "mxfp8_e5m2": jnp.float8_e5m2, "mxfp4": jnp.float4_e2m1fn}
_POSIT_RE = re.compile(r"^posit\((\d+),(\d+)\)$")

FORMAT_NAMES: tuple[str, ...] = (
    "fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "mxfp8_e4m3", "mxfp8_e5m2",
    "posit(16,1)", "posit(8,0)", "posit(8,2)", "fp4_e2m1", "mxfp4", "posit(4,1)",
)


def _identity(x: jax.Array) -> jax.Array:
    return x


def _base_format(name: str) -> NumberFormat:
    if name == "fp32":
        return NumberFormat(name, 32.0, "float", float(jnp.finfo(jnp.float32).max), quantize_fn=_identity)
    if name in _FLOAT_DTYPES:
        dtype = _FLOAT_DTYPES[name]
        finfo = jnp.finfo(dtype)
        # 8 bits and fewer: the cast's rounding in float32 arithmetic (bit-exact; on an H100 69-70%
        # of the bandwidth bound where the cast reaches 52% (fp4, emulated) and 60% (fp8))
        quantize = rne_quantize if finfo.bits <= 8 else cast_quantize
        return NumberFormat(name, float(finfo.bits), "float", float(finfo.max),
                            quantize_fn=functools.partial(quantize, dtype=dtype))
    if name in _MX_ELEMENTS:
        dtype = _MX_ELEMENTS[name]
        bits = jnp.finfo(dtype).bits + 8 / MX_BLOCK
        return NumberFormat(name, float(bits), "mx", math.inf,
                            quantize_fn=functools.partial(mx_quantize, elem_dtype=dtype))
    match = _POSIT_RE.match(name)
    if match:
        posit = Posit(int(match.group(1)), int(match.group(2)))
        return NumberFormat(posit.name, float(posit.n), "posit", posit.maxpos, quantize_fn=posit.quantize)
    raise KeyError(name)


def _unknown(name) -> ValueError:
    return ValueError(
        f"unknown number format {name!r}; known names: {', '.join(FORMAT_NAMES)}; also any "
        "'posit(n,es)' with 2 <= n <= 16 and 0 <= es <= 3, and a non-MX, non-fp32 name suffixed "
        "'@tensor' or '@channel' for power-of-two scaling")


def get_format(name: str) -> NumberFormat:
    """The NumberFormat registered under `name` (see the module docstring); ValueError if unknown.

    Spaces and case are ignored ("Posit(8, 0)" is "posit(8,0)"); results are cached.
    """
    if not isinstance(name, str):
        raise _unknown(name)
    return _get_format(name.replace(" ", "").lower())


@functools.lru_cache(maxsize=None)
def _get_format(key: str) -> NumberFormat:
    name = key
    base_name, _, scaling = key.partition("@")
    try:
        base = _base_format(base_name)
    except KeyError:
        raise _unknown(name) from None
    except ValueError as err:  # posit(n, es) out of range
        raise ValueError(f"number format {name!r}: {err}") from None
    if not scaling:
        return base
    if scaling not in SCALINGS[1:]:
        raise ValueError(f"number format {name!r}: scaling suffix must be '@tensor' or '@channel', got '@{scaling}'")
    if base.family == "mx" or base.name == "fp32":
        raise ValueError(f"number format {name!r}: {base.name} takes no '@{scaling}' scaling "
                         "(MX carries its own block scale; fp32 needs none)")
    target_exponent = 0 if base.family == "posit" else max_normal_exponent(_FLOAT_DTYPES[base.name])
    channel_axis = -1 if scaling == "channel" else None
    quantize_fn = functools.partial(scaled_quantize, quantize=base.quantize_fn,
                                    target_exponent=target_exponent, channel_axis=channel_axis)
    return NumberFormat(f"{base.name}@{scaling}", base.bits, base.family, math.inf, scaling, quantize_fn)
