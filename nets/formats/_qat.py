"""Fake quantisation for quantisation-aware training, with straight-through estimators.

Forward: the exact quantiser of a registered number format (`NumberFormat.quantize`).
Backward: the straight-through estimator (Bengio, Leonard & Courville 2013, arXiv 1308.3432):
  - "identity": dq/dx := 1 everywhere;
  - "clipped":  dq/dx := 1 where |x| <= the format's max_abs, 0 outside (the saturated
    region gets no gradient, as in the clipped STE of Hubara et al. 2017, arXiv 1609.07061;
    formats whose range adapts to the data, MX and the scaled variants, never clip).
The STE is a `jax.custom_vjp`, so the forward value is exactly the quantised value (no
x + stop_gradient(q - x) rounding error) and the function is jit- and vmap-safe.

`mixture_fake_quant` is the continuous relaxation of a per-layer format choice (as in
differentiable NAS, DARTS, arXiv 1806.09055, and its mixed-precision use in FBNet / DNAS,
arXiv 1812.00090): sum_i p_i fake_quant(x, fmt_i), differentiable in the probabilities p
(d/dp_i = q_i(x), contracted with the upstream gradient) and in x through the STEs.
Weights and activations use it alike.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from nets.formats._registry import NumberFormat, get_format

__all__ = ["STE_KINDS", "fake_quant", "mixture_fake_quant"]

STE_KINDS = ("identity", "clipped")


def _resolve(fmt: str | NumberFormat) -> NumberFormat:
    if isinstance(fmt, NumberFormat):
        return fmt
    if isinstance(fmt, str):
        return get_format(fmt)
    raise ValueError(f"fmt must be a format name or a NumberFormat, got {fmt!r}")


@functools.lru_cache(maxsize=None)
def _fake_quant_fn(fmt: NumberFormat, ste: str):
    @jax.custom_vjp
    def fake_quant_x(x):
        return fmt.quantize(x)

    def forward(x):
        return fmt.quantize(x), (x if ste == "clipped" else None)

    def backward(x, grad):
        if ste == "identity":
            return (grad,)
        inside = jnp.abs(x.astype(jnp.float32)) <= fmt.max_abs
        return (jnp.where(inside, grad, jnp.zeros_like(grad)),)

    fake_quant_x.defvjp(forward, backward)
    return fake_quant_x


def fake_quant(x, fmt: str | NumberFormat, *, ste: str = "identity") -> jax.Array:
    """Quantise x to `fmt` in the forward pass; straight-through gradient in the backward.

    x: float array (any shape and floating dtype; the result has x's dtype).
    fmt: a registry name (e.g. "posit(8,0)", "mxfp4") or a NumberFormat.
    ste: "identity" or "clipped" (zero gradient where |x| > fmt.max_abs).
    """
    if ste not in STE_KINDS:
        raise ValueError(f"ste must be one of {STE_KINDS}, got {ste!r}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"fake_quant needs a floating-point x, got dtype {x.dtype}")
    return _fake_quant_fn(_resolve(fmt), ste)(x)


def mixture_fake_quant(x, probs, fmts: Sequence[str | NumberFormat], *, ste: str = "identity") -> jax.Array:
    """sum_i probs[i] * fake_quant(x, fmts[i]): the relaxed per-layer format choice.

    probs: shape (len(fmts),), typically softmax of a layer's format logits (not renormalised
    here, so a caller may pass any weights). The sum is accumulated in float32 and returned
    in x's dtype. Gradient w.r.t. probs[i] is <upstream, q_i(x)>.
    """
    fmts = tuple(_resolve(f) for f in fmts)
    if not fmts:
        raise ValueError("fmts must name at least one format, got an empty sequence")
    probs = jnp.asarray(probs)
    if probs.shape != (len(fmts),):
        raise ValueError(f"probs must have shape ({len(fmts)},) to match fmts, got {probs.shape}")
    x = jnp.asarray(x)
    total = jnp.zeros(x.shape, jnp.float32)
    for i, fmt in enumerate(fmts):
        total = total + probs[i].astype(jnp.float32) * fake_quant(x, fmt, ste=ste).astype(jnp.float32)
    return total.astype(x.dtype)
