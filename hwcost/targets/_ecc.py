"""Cambricon-LLM's on-die ECC for in-flash compute (arXiv 2409.15654, on-die ECC
section): what it corrects, what survives, and bit flips injected
into real int8 weights with and without it.

Storage `encoding`: "twos" (two's complement, the int8 an NPU consumes: a sign flip moves a
small weight to about -128 or +127, exactly what the threshold catches) or "sign_magnitude"
(bit 7 the sign: a sign flip costs 2|w|, a flip of magnitude bit b costs 2^b). Scheme, per
flash page of P int8 weights (P = 16384): the top `protected_fraction` (1%, 163
of 16384) of the weights by magnitude are protected. Each protected weight stores a 14-bit
in-page address guarded by a 5-bit Hamming code (19-bit single-error-correcting codeword) and
two extra copies of its 8-bit value; the in-place value and the two copies are combined by a
bitwise majority vote of 3. Every unprotected weight whose read magnitude exceeds the smallest
protected magnitude (the page's threshold) must be a flip, and is clipped to 0.

With raw bit-error rate x per stored bit (independent flips):
- a voted bit is wrong when 2 or 3 copies flip: 3x^2(1-x) + x^3 = 3x^2 - 2x^3 (~3x^2);
- the address fails when its 19-bit codeword has 2 or more flips; the copies then cannot be
  matched to their weight and the in-place value is used as read (our reading of a failure);
- an unprotected weight whose flipped value lands above the threshold is zeroed (a sign or
  64 flip of a small weight); which flips land there depends on the page's weights, so the
  analytic function stops at the word level and `inject_bit_flips` measures the rest.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int8, UInt8

PAGE_WEIGHTS = 16384  # int8 weights per 16 KB page
PROTECTED_FRACTION = 0.01
ADDRESS_BITS = 14 + 5  # in-page address + Hamming parity: one 19-bit SEC codeword
WEIGHT_BITS = 8


def _check_rate(name: str, value) -> None:
    try:
        v = np.asarray(value, dtype=np.float64)
    except Exception:  # a tracer: nothing to check at trace time
        return
    if v.size and (not np.all(np.isfinite(v)) or np.any(v < 0) or np.any(v > 0.5)):
        raise ValueError(f"{name}={value!r}: must be a bit-error rate in [0, 0.5]")


def _check_fraction(protected_fraction: float, page_weights: int) -> int:
    if isinstance(page_weights, bool) or not isinstance(page_weights, int) or page_weights <= 0:
        raise ValueError(f"page_weights={page_weights!r}: must be a positive integer")
    if not isinstance(protected_fraction, (int, float)) or not 0 < protected_fraction < 1:
        raise ValueError(f"protected_fraction={protected_fraction!r}: must be in (0, 1)")
    return max(1, math.ceil(protected_fraction * page_weights))


def ecc_corruption(ber: Float[Array, "..."], protected_fraction: float = PROTECTED_FRACTION,
                   page_weights: int = PAGE_WEIGHTS) -> dict[str, Array]:
    """Weight corruption after the on-die ECC at raw bit-error rate `ber` (probabilities per weight).

    Returns, elementwise in `ber` (differentiable):
      protected_bit_error        wrong bit of a protected weight after the vote (3x^2 - 2x^3)
      address_failure            19-bit address codeword uncorrectable (>= 2 flips)
      protected_word_error       a protected weight read wrong
      unprotected_word_error     a weight with any flipped bit, no ECC: 1 - (1-x)^8
      changed_protected          share of a page's weights that differ from the stored value
                                 with ECC (a flipped unprotected weight is wrong or zeroed)
      changed_unprotected        the same without ECC (= unprotected_word_error)
    """
    _check_rate("ber", ber)
    _check_fraction(protected_fraction, page_weights)
    x = jnp.asarray(ber, jnp.result_type(float))
    f = float(protected_fraction)
    voted = 3 * x**2 - 2 * x**3
    address = 1 - (1 - x) ** ADDRESS_BITS - ADDRESS_BITS * x * (1 - x) ** (ADDRESS_BITS - 1)
    word = 1 - (1 - x) ** WEIGHT_BITS
    protected_word = (1 - address) * (1 - (1 - voted) ** WEIGHT_BITS) + address * word
    return {
        "protected_bit_error": voted, "address_failure": address, "protected_word_error": protected_word,
        "unprotected_word_error": word, "changed_protected": (1 - f) * word + f * protected_word,
        "changed_unprotected": word,
    }


def _flip_masks(key: Array, shape: tuple[int, ...], n_bits: int, ber: Array) -> Array:
    """uint32 masks over `shape`, each of the low `n_bits` bits set with probability `ber`."""
    draws = jax.random.bernoulli(key, ber, shape + (n_bits,))
    return jnp.sum(draws.astype(jnp.uint32) << jnp.arange(n_bits, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)


ENCODINGS = ("twos", "sign_magnitude")


def inject_bit_flips(key: Array, weights: Int8[Array, "..."], ber: Float[Array, ""], *, protect: bool,
                     protected_fraction: float = PROTECTED_FRACTION, page_weights: int = PAGE_WEIGHTS,
                     encoding: str = "twos") -> Int8[Array, "..."]:
    """`weights` (int8, any shape) as read back from flash at raw bit-error rate `ber`.

    protect=False: every stored bit (sign-magnitude byte) flips independently with probability `ber`.
    protect=True: the on-die ECC of the module docstring, page by page over the flattened
    array (the last page zero-padded): top-k protection with 3-way vote and Hamming-coded
    address, then unprotected values above the page threshold clipped to 0.
    encoding: how the int8 is stored (ENCODINGS, see the module docstring).
    Jit-able (`protect`, `protected_fraction`, `page_weights`, `encoding` static); `ber` may be traced.
    """
    weights = jnp.asarray(weights)
    if weights.dtype != jnp.int8:
        raise ValueError(f"weights.dtype={weights.dtype}: must be int8 (quantise first)")
    _check_rate("ber", ber)
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding={encoding!r}: must be one of {', '.join(ENCODINGS)}")
    k = _check_fraction(protected_fraction, page_weights)
    ber = jnp.asarray(ber, jnp.float32)
    encode, decode, magnitude_of = _CODECS[encoding]
    key_place, key_copies, key_address = jax.random.split(key, 3)
    flat = weights.reshape(-1)
    n = flat.size
    n_pages = max(1, -(-n // page_weights))
    pages = jnp.pad(flat, (0, n_pages * page_weights - n)).reshape(n_pages, page_weights)
    stored = encode(pages)
    in_place = stored ^ _flip_masks(key_place, pages.shape, WEIGHT_BITS, ber).astype(jnp.uint8)
    if not protect:
        read = in_place
    else:
        magnitude = jnp.abs(pages.astype(jnp.int16))
        top, index = jax.lax.top_k(magnitude, k)                    # [page, k]
        threshold = top[:, -1:]
        rows = jnp.arange(n_pages)[:, None]
        copies = stored[rows, index]                                 # [page, k]
        masks = _flip_masks(key_copies, (2,) + copies.shape, WEIGHT_BITS, ber).astype(jnp.uint8)
        a, b, c = in_place[rows, index], copies ^ masks[0], copies ^ masks[1]
        voted = (a & b) | (a & c) | (b & c)
        address_flips = jnp.sum(jax.random.bernoulli(key_address, ber, index.shape + (ADDRESS_BITS,)), axis=-1)
        protected_value = jnp.where(address_flips >= 2, a, voted)
        clipped = jnp.where(magnitude_of(in_place) > threshold, encode(jnp.zeros((), jnp.int8)), in_place)
        read = clipped.at[rows, index].set(protected_value)
    return decode(read).reshape(-1)[:n].reshape(weights.shape)


def _to_sign_magnitude(q: Array) -> Array:
    """int8 in [-127, 127] -> stored byte: sign bit 7, magnitude bits 0-6 (-128 saturates to -127)."""
    wide = q.astype(jnp.int16)
    return ((wide < 0).astype(jnp.uint8) << 7) | jnp.minimum(jnp.abs(wide), 127).astype(jnp.uint8)


def _from_sign_magnitude(byte: Array) -> Array:
    magnitude = (byte & 0x7F).astype(jnp.int16)
    return jnp.where(byte >= 128, -magnitude, magnitude).astype(jnp.int8)


def _to_twos(q: Array) -> Array:
    return jax.lax.bitcast_convert_type(q.astype(jnp.int8), jnp.uint8)


def _from_twos(byte: Array) -> Array:
    return jax.lax.bitcast_convert_type(byte, jnp.int8)


_CODECS = {
    "twos": (_to_twos, _from_twos, lambda byte: jnp.abs(_from_twos(byte).astype(jnp.int16))),
    "sign_magnitude": (_to_sign_magnitude, _from_sign_magnitude, lambda byte: (byte & 0x7F).astype(jnp.int16)),
}


def stored_bytes(weights: Int8[Array, "..."], encoding: str = "twos") -> UInt8[Array, "..."]:
    """The bytes that int8 `weights` are stored as under `encoding` (ENCODINGS): the bits `inject_bit_flips` flips.

    "twos": two's complement (the int8's own bits); "sign_magnitude": sign in bit 7, magnitude
    in bits 0-6 (-128 saturates to -127).
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding={encoding!r}: must be one of {', '.join(ENCODINGS)}")
    return _CODECS[encoding][0](jnp.asarray(weights))


def quantize_int8(weights: Float[Array, "... d_in d_out"], per_channel: bool = True
                  ) -> tuple[Int8[Array, "... d_in d_out"], Float[Array, "..."]]:
    """Symmetric int8: q = round(w / s) in [-127, 127], s = max|w| / 127 per output channel (the
    last axis, reduced over d_in) or, with per_channel=False, one scale per matrix."""
    weights = jnp.asarray(weights)
    if weights.ndim < 2:
        raise ValueError(f"weights.ndim={weights.ndim}: must be at least 2 (... d_in d_out)")
    axes = (-2,) if per_channel else (-2, -1)
    scale = jnp.max(jnp.abs(weights), axis=axes, keepdims=True) / 127.0
    scale = jnp.where(scale > 0, scale, 1.0)
    q = jnp.clip(jnp.round(weights / scale), -127, 127).astype(jnp.int8)
    return q, scale


def quantize_per_channel(weights: Float[Array, "... d_in d_out"]) -> tuple[Int8[Array, "... d_in d_out"],
                                                                          Float[Array, "... 1 d_out"]]:
    """`quantize_int8` with one scale per output channel."""
    return quantize_int8(weights, per_channel=True)


def dequantize(q: Int8[Array, "..."], scale: Float[Array, "..."], dtype=jnp.float32) -> Float[Array, "..."]:
    return q.astype(dtype) * scale.astype(dtype)
