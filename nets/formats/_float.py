"""Low-precision floating-point quantisers: casts through jnp dtypes, and MX block scaling.

Element formats are the OCP 8-bit Floating Point Specification (OFP8, 2023) and the OCP
Microscaling Formats (MX) Specification v1.0 (2023): FP8 E4M3 (`float8_e4m3fn`, max 448,
no inf), FP8 E5M2 (`float8_e5m2`, max 57344, IEEE-like inf), FP4 E2M1 (`float4_e2m1fn`,
+-{0, 0.5, 1, 1.5, 2, 3, 4, 6}, no inf / NaN). Rounding is the dtype cast's
round-to-nearest-even (ml_dtypes / XLA). `rne_quantize` computes the same rounding in float32
arithmetic (tested bit for bit against the cast), because on a GPU the narrow cast is slower
(FP4 has no hardware conversion); the registry uses it for the 8-bit and smaller formats.

Overflow: every cast saturates to +-max (the OCP "saturating" conversion mode) instead of
producing NaN (what a plain e4m3fn cast does) or inf (e5m2, fp16): a quantiser in a training
loop must not inject NaN / inf for a large activation. The input is clipped to +-max before
the cast, so a value in range is rounded exactly as the cast would; NaN stays NaN (FP4 has no
NaN: its cast maps NaN to a finite code, so NaN is restored explicitly).

MX (OCP MX v1.0, section 6.3): blocks of 32 consecutive values along the last axis share one
E8M0 scale X = 2^(floor(log2 max|v|) - emax_elem), emax_elem the element format's largest
normal exponent (2 for E2M1, 8 for E4M3), clamped to E8M0's [-127, 127]; the elements are
v / X cast (saturating) to the element format. A last axis that is not a multiple of 32 is
padded with zeros to whole blocks (zeros never change a block's max, so a short row is one
block of its own). A block holding NaN or inf dequantises to NaN throughout (its scale is
NaN). Results below float32's normal range may be flushed to zero by XLA.

Every cast goes through `lax.optimization_barrier` (see `cast_quantize`): XLA's GPU compiler
otherwise removes a float32 -> narrow -> float32 round trip under jit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["MX_BLOCK", "cast_quantize", "max_normal_exponent", "mx_quantize", "rne_quantize"]

MX_BLOCK = 32
_E8M0_MIN, _E8M0_MAX = -127, 127


def _floor_log2(magnitude: jax.Array) -> jax.Array:
    """floor(log2 m) of float32 m >= 0 from its exponent bits (int32): exact for normal m; -127 for zero and for
    float32 subnormals (every caller clamps far above that). Cheaper than `jnp.frexp`, which handles subnormals."""
    return (lax.shift_right_logical(lax.bitcast_convert_type(magnitude, jnp.int32), 23) & 0xFF) - 127


def _pow2(k: jax.Array) -> jax.Array:
    """2^k as float32 for integer k in [-126, 127] (a normal number), built from its exponent bits: multiplying
    by it is exact wherever the product stays normal, which `jnp.ldexp` spends many more operations to ensure."""
    return lax.bitcast_convert_type(lax.shift_left(k.astype(jnp.int32) + 127, 23), jnp.float32)


def max_normal_exponent(dtype) -> int:
    """emax of a float dtype: floor(log2 of its largest finite value) (2 for E2M1, 8 for E4M3)."""
    return int(jnp.finfo(dtype).maxexp) - 1


def cast_quantize(x, dtype) -> jax.Array:
    """Round float32 x to the nearest `dtype` value (RNE), saturating at +-max; float32 out."""
    x = jnp.asarray(x, jnp.float32)
    max_value = float(jnp.finfo(dtype).max)
    narrow = jnp.clip(x, -max_value, max_value).astype(dtype)
    # Under jit, XLA's GPU compiler drops a float32 -> narrow -> float32 convert pair as
    # "excess precision" (xla_allow_excess_precision, on by default), which would make this a
    # no-op on GPU (seen with jax 0.11.2 on an H200); the barrier keeps the rounding.
    y = lax.optimization_barrier(narrow).astype(jnp.float32)
    return jnp.where(jnp.isnan(x), x, y)


def rne_quantize(x, dtype) -> jax.Array:
    """`cast_quantize` in float32 arithmetic, without the narrow dtype: the same values, bit for bit.

    |x| clipped to the dtype's max is rounded (round half to even, `jnp.round`) to a multiple of
    its ulp 2^(max(floor(log2|x|), emin) - mantissa bits): normals and subnormals alike. A GPU
    converts to float8 in hardware but has no float4 conversion, so XLA emulates the FP4 cast;
    this form is a few fused elementwise ops for every format. tests/nets/test_formats.py checks
    it against the cast on every code point, every midpoint between neighbours and random values.
    """
    x = jnp.asarray(x, jnp.float32)
    info = jnp.finfo(dtype)
    magnitude = jnp.minimum(jnp.abs(x), float(info.max))
    # the ulp's exponent lies in [minexp - nmant, maxexp - nmant], inside float32's normal range for every
    # format of 8 bits or fewer: both scalings are exact multiplications by powers of two
    ulp_exp = jnp.maximum(_floor_log2(magnitude), int(info.minexp)) - int(info.nmant)
    y = jnp.round(magnitude * _pow2(-ulp_exp)) * _pow2(ulp_exp)
    return jnp.where(jnp.isnan(x), x, jnp.copysign(y, x))


def mx_quantize(x, elem_dtype, *, block: int = MX_BLOCK) -> jax.Array:
    """Quantise-dequantise x with OCP MX block scaling along the last axis; float32 out.

    Each block of `block` values shares the scale 2^(floor(log2 max|v|) - emax_elem)
    (OCP MX v1.0, section 6.3); elements are cast to `elem_dtype` with saturation.
    """
    if block < 1:
        raise ValueError(f"block must be a positive int, got {block}")
    x = jnp.asarray(x, jnp.float32)
    if x.ndim == 0:
        return mx_quantize(x[None], elem_dtype, block=block)[0]
    length = x.shape[-1]
    pad = (-length) % block
    padded = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])
    blocks = padded.reshape(*x.shape[:-1], -1, block)
    amax = jnp.max(jnp.abs(blocks), axis=-1, keepdims=True)
    # floor(log2 amax) - emax: a float32 amax below 2^-126 reads as -127 here, clipped to -127 as its exact
    # exponent would be; amax <= 2^128 keeps the shared exponent <= 127 - emax, so 2^-shared_exp is normal
    shared_exp = jnp.clip(_floor_log2(amax) - max_normal_exponent(elem_dtype), _E8M0_MIN, _E8M0_MAX)
    shared_exp = jnp.where(amax > 0, shared_exp, 0)
    elements = rne_quantize(blocks * _pow2(-shared_exp), elem_dtype)
    half = shared_exp // 2   # 2^shared_exp may be subnormal (-127): two normal factors, the first product exact
    dequant = elements * _pow2(half) * _pow2(shared_exp - half)
    dequant = jnp.where(jnp.isfinite(amax), dequant, jnp.nan)
    return dequant.reshape(padded.shape)[..., :length]
