"""Posit(n, es) numbers: exact, vectorised encode / decode on float32 arrays.

A posit word is a sign bit followed by a regime (a run of m identical bits ended by the
opposite bit or by the word's end), es exponent bits and a fraction (Gustafson & Yonemoto,
"Beating floating point at its own game", 2017; Posit Standard 2022, section 3):

    value = (-1)^s * useed^k * 2^e * (1 + f),   useed = 2^(2^es),
    k = m - 1 for a run of ones, k = -m for a run of zeros.

Negative values are the two's complement of the whole word, 0 = 00..0 and NaR = 10..0.
Rounding is round-to-nearest-even ON THE BIT STRING of the exactly encoded value (so where
rounding cuts exponent bits the tie is the geometric midpoint), and nothing nonzero rounds
to 0 or NaR: |x| > maxpos saturates to maxpos, 0 < |x| < minpos to minpos.

The implementation works on the float32 bit pattern with uint32 arithmetic only, no loop
over elements and no table: the regime / exponent / fraction string is built left-aligned
in a 32-bit word (the first bit after the sign at bit 31), the top n-1 bits are kept, and
the guard bit plus a sticky bit (the rest of the word and any float32 fraction bits that did
not fit) decide the round-to-nearest-even increment. For n <= 16 and es <= 3 every scale
2^(k 2^es + e) with |k| <= n-2 is a normal float32 exponent (|scale| <= 112), so encode is
exact for every float32 input and decode of every pattern is an exact float32.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["Posit", "pow2_scale", "scaled_quantize"]

_F32_BIAS = 127
_F32_FRAC_BITS = 23


def _u32(x) -> jax.Array:
    if isinstance(x, int):
        return jnp.uint32(x)
    return jnp.asarray(x).astype(jnp.uint32)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _encode(x: jax.Array, n: int, es: int) -> jax.Array:
    """float32 array -> uint32 array holding n-bit posit patterns (see module docstring)."""
    x = jnp.asarray(x, jnp.float32)
    bits = lax.bitcast_convert_type(x, jnp.uint32)
    negative = (bits >> 31) == 1
    abs_bits = bits & _u32(0x7FFFFFFF)
    frac23 = abs_bits & _u32((1 << _F32_FRAC_BITS) - 1)
    scale = (abs_bits >> _F32_FRAC_BITS).astype(jnp.int32) - _F32_BIAS  # unbiased exponent (normals)

    # Saturation thresholds compared on the float32 bit pattern: positive floats order like
    # their bit patterns, and maxpos / minpos are exact powers of two.
    max_scale = (n - 2) << es
    maxpos_bits = (max_scale + _F32_BIAS) << _F32_FRAC_BITS
    minpos_bits = (-max_scale + _F32_BIAS) << _F32_FRAC_BITS
    # Inside (minpos, maxpos) the regime value is in [-(n-2), n-3]; clipping only keeps shift
    # amounts in range for the saturated lanes, whose result is overwritten below.
    k = jnp.clip(scale >> es, -max(n - 2, 1), max(n - 3, 0))  # floor(scale / 2^es)
    exponent = _u32(scale & ((1 << es) - 1))
    k_nonneg = k >= 0
    regime_len = jnp.where(k_nonneg, k + 2, 1 - k)  # run plus its terminating bit
    regime = jnp.where(
        k_nonneg,
        _u32(0xFFFFFFFF) << _u32(31 - k),  # k+1 ones, then the terminating 0
        _u32(0x80000000) >> _u32(-k),  # -k zeros, then the terminating 1
    )
    body = regime
    if es:
        body = body | (exponent << _u32(32 - regime_len - es))
    # The fraction's leading bit goes to position 31 - regime_len - es; float32 fraction bits
    # that fall below bit 0 only feed the sticky bit.
    frac_shift = 9 - regime_len - es
    left = _u32(jnp.maximum(frac_shift, 0))
    right = _u32(jnp.maximum(-frac_shift, 0))
    body = body | ((frac23 << left) >> right)
    dropped = frac23 & ((_u32(1) << right) - _u32(1))

    kept = body >> (33 - n)  # the n-1 bits after the sign
    guard = (body >> (32 - n)) & _u32(1)
    sticky = ((body & _u32((1 << (32 - n)) - 1)) != 0) | (dropped != 0)
    round_up = (guard == 1) & (sticky | ((kept & _u32(1)) == 1))
    magnitude = kept + round_up.astype(jnp.uint32)

    maxpos_pattern = (1 << (n - 1)) - 1
    magnitude = jnp.where(abs_bits >= _u32(maxpos_bits), _u32(maxpos_pattern), magnitude)
    magnitude = jnp.where(abs_bits <= _u32(minpos_bits), _u32(1), magnitude)
    mask = _u32((1 << n) - 1)
    word = jnp.where(negative, (_u32(0) - magnitude) & mask, magnitude)
    word = jnp.where(abs_bits == 0, _u32(0), word)
    return jnp.where(abs_bits >= _u32(0x7F800000), _u32(1 << (n - 1)), word)  # NaN, inf -> NaR


@functools.partial(jax.jit, static_argnums=(1, 2))
def _decode(bits: jax.Array, n: int, es: int) -> jax.Array:
    """uint32 array of n-bit posit patterns -> exact float32 values (NaR -> NaN)."""
    mask = _u32((1 << n) - 1)
    bits = _u32(bits) & mask
    sign = (bits >> (n - 1)) & _u32(1)
    magnitude = jnp.where(sign == 1, (_u32(0) - bits) & mask, bits)
    body = magnitude << (33 - n)  # n-1 bits after the sign, left-aligned
    ones_run = (body >> 31) == 1
    run = jnp.where(ones_run, lax.clz(~body), lax.clz(body))
    run = jnp.minimum(run, _u32(n - 1))  # a run of ones may fill the word
    k = jnp.where(ones_run, run.astype(jnp.int32) - 1, -run.astype(jnp.int32))
    rest = body << (run + _u32(1))  # drop the run and its terminating bit
    if es:
        exponent = (rest >> (32 - es)).astype(jnp.int32)
        fraction = rest << es
    else:
        exponent = jnp.zeros_like(k)
        fraction = rest
    scale = k * (1 << es) + exponent
    f32_bits = (sign << 31) | (_u32(scale + _F32_BIAS) << _F32_FRAC_BITS) | (fraction >> 9)
    value = lax.bitcast_convert_type(f32_bits, jnp.float32)
    value = jnp.where(bits == 0, jnp.float32(0), value)
    return jnp.where(bits == _u32(1 << (n - 1)), jnp.float32(jnp.nan), value)


@dataclasses.dataclass(frozen=True)
class Posit:
    """The posit format with n bits and es exponent bits (2 <= n <= 16, 0 <= es <= 3).

    Examples: Posit(8, 0) and Posit(16, 1) are SoftPosit's posit8 / posit16 (the formats of
    XR-NPE, arXiv 2508.13049); Posit(8, 2) is the 2022 Posit Standard's posit8.
    """

    n: int
    es: int

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or not 2 <= self.n <= 16:
            raise ValueError(f"Posit.n must be an int in [2, 16], got {self.n!r}")
        if not isinstance(self.es, int) or not 0 <= self.es <= 3:
            raise ValueError(f"Posit.es must be an int in [0, 3], got {self.es!r}")

    @property
    def name(self) -> str:
        return f"posit({self.n},{self.es})"

    @property
    def useed(self) -> float:
        return 2.0 ** (2**self.es)

    @property
    def maxpos(self) -> float:
        """Largest finite value, useed^(n-2)."""
        return 2.0 ** ((self.n - 2) << self.es)

    @property
    def minpos(self) -> float:
        """Smallest positive value, useed^-(n-2) = 1 / maxpos."""
        return 2.0 ** -((self.n - 2) << self.es)

    @property
    def nar_pattern(self) -> int:
        return 1 << (self.n - 1)

    def encode(self, x) -> jax.Array:
        """float32 values -> uint32 n-bit patterns, round to nearest even on the bit string."""
        return _encode(jnp.asarray(x, jnp.float32), self.n, self.es)

    def decode(self, bits) -> jax.Array:
        """n-bit patterns (any integer array; bits above n are ignored) -> float32 values."""
        return _decode(jnp.asarray(bits), self.n, self.es)

    def quantize(self, x) -> jax.Array:
        """decode(encode(x)): the float32 value of the posit nearest x (posit rounding)."""
        return _decode(_encode(jnp.asarray(x, jnp.float32), self.n, self.es), self.n, self.es)

    def values(self) -> jax.Array:
        """All 2^n - 1 finite values (NaR excluded), ascending, float32."""
        patterns = jnp.arange(1 << self.n, dtype=jnp.uint32)
        patterns = patterns[patterns != self.nar_pattern]
        return jnp.sort(self.decode(patterns))


def pow2_scale(x, *, target_exponent: int, channel_axis: int | None = None) -> jax.Array:
    """Power-of-two scale s with max|x| / s in [2^t, 2^(t+1)), t = target_exponent.

    Per tensor (channel_axis None) or per channel (one scale per index of channel_axis,
    the max taken over all other axes; keeps dims so x / s broadcasts). A power of two keeps
    the rescaling exact (no rounding before the quantiser). All-zero or non-finite groups get
    s = 1. Mirrors the OCP MX v1.0 shared-scale rule 2^(floor(log2 max|v|) - emax_elem).
    """
    x = jnp.asarray(x)
    if channel_axis is None:
        axes = tuple(range(x.ndim))
    else:
        if not -x.ndim <= channel_axis < x.ndim:
            raise ValueError(f"channel_axis must be in [{-x.ndim}, {x.ndim}) for a {x.ndim}-d array, "
                             f"got {channel_axis}")
        channel_axis %= x.ndim
        axes = tuple(a for a in range(x.ndim) if a != channel_axis)
    amax = jnp.max(jnp.abs(x.astype(jnp.float32)), axis=axes, keepdims=True)
    _, exp = jnp.frexp(amax)  # amax = m 2^exp, m in [0.5, 1): floor(log2 amax) = exp - 1
    shift = jnp.where((amax > 0) & jnp.isfinite(amax), exp - 1 - target_exponent, 0)
    return jnp.ldexp(jnp.ones_like(amax), shift)


def scaled_quantize(x, quantize, *, target_exponent: int, channel_axis: int | None = None) -> jax.Array:
    """quantize(x / s) * s with s = pow2_scale(x, ...): the quantiser applied after a
    power-of-two per-tensor or per-channel rescaling (the scale is kept in full precision).

    Results below float32's normal range (2^-126) are flushed to zero by XLA on CPU.
    """
    x = jnp.asarray(x, jnp.float32)
    s = pow2_scale(x, target_exponent=target_exponent, channel_axis=channel_axis)
    return quantize(x / s) * s
