"""A fused decode kernel for MLA's absorbed attention: one token per sequence against the latent cache.

Absorbed MLA is multi-query attention with one shared key/value "head": every query head scores
the kv_rank-wide latent plus the rope_dim-wide RoPE key, and its context is the probability-
weighted sum of the latent. The shipped Pallas-Triton decode kernel
(`jax.experimental.pallas.ops.gpu.decode_attention`) cannot take it: its key and value share
one head_dim (`decode_attn_unbatched` reshapes v with k's head_dim and returns q's shape), and
the Triton lowering takes only power-of-two arrays, so a 512 + 64 = 576-wide key fails
("Encountered an array of shape (16, 576)", measured on an H100); concatenating latent and
RoPE key would also copy the whole cache every step. This kernel is that split-K
flash-decoding kernel with the key in two parts, read from the cache arrays as stored:

    scores = q_latent . latent_t + q_rope . k_rope_t      (block_h heads x block_k slots, float32)
    context = sum_t softmax(scores * scale)_t latent_t     (online softmax over the split)

Grid: (batch, head blocks, splits). Each program reads its split of the latent once for
block_h query heads (all heads in one block where block_h >= n_heads, so the cache is read
once) and stops at the written length; the splits are combined outside (log-sum-exp). A
per-head constant added to every score (MLA's key bias, q . b_k) cancels in the softmax,
so the kernel takes none. On CPU it runs in Pallas interpret mode (tests only).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.experimental import pallas as pl

__all__ = ["MLATiles", "mla_decode", "mla_refusal", "mla_tiles"]

_NEG = float(jnp.finfo(jnp.float32).min)


class MLATiles(NamedTuple):
    """Tile of the MLA decode kernel: query heads per program, slots per step, splits, warps, stages.

    The defaults are the fastest of 11 tiles swept on an H100 (DeepSeek-V3, batch 32, 8192 slots: 0.295 ms,
    30.5% of the byte roofline, against 0.358 ms for nets' einsum; `scripts/bench/decode_attention.py
    --sweep`, results/gpu_speed/decode_roofline_h100_1920/; each tile timed once in one process).
    """
    block_h: int = 32
    block_k: int = 64
    k_splits: int = 4
    num_warps: int = 4
    num_stages: int = 2


def mla_tiles(slots: int, n_heads: int, best: MLATiles = MLATiles()) -> MLATiles | None:
    """The tile for a cache of `slots` tokens and `n_heads` query heads; None if no split fits.

    block_h: the best, or fewer for fewer heads (at least 16, Triton's smallest dot); block_k
    and k_splits must tile the slots (as `pallas_split`): the best where it divides, else a
    smaller block, with the split count nearest the best that divides the blocks.
    """
    block_h = max(16, min(best.block_h, 1 << (n_heads - 1).bit_length()))
    for block_k in (best.block_k, best.block_k // 2, 16):
        if block_k < 16 or slots % block_k:
            continue
        blocks = slots // block_k
        splits = [k for k in range(1, min(4 * best.k_splits, blocks) + 1) if blocks % k == 0]
        k_splits = min(splits, key=lambda k: (abs(math.log(k / best.k_splits)), -k))
        return best._replace(block_h=block_h, block_k=block_k, k_splits=k_splits)
    return None


def mla_refusal(kv_rank: int, rope_dim: int, slots: int | None) -> str | None:
    """Why the kernel cannot take this cache (None: it can)."""
    for name, width in (("kv_rank", kv_rank), ("rope_dim", rope_dim)):
        if width < 16 or width & (width - 1):
            return f"{name}={width}: the Pallas-Triton MLA kernel needs a power of two >= 16"
    if slots is not None and mla_tiles(slots, 16) is None:
        return f"cache slots={slots}: the Pallas-Triton MLA kernel needs a multiple of 16"
    return None


def _kernel(q_lat_ref, q_rope_ref, lat_ref, rope_ref, len_ref, o_ref, l_ref, m_ref, *, scale: float, block_k: int):
    """One (head block, split): online softmax over the split's written slots, context normalised."""
    block_h = q_lat_ref.shape[0]
    split = lat_ref.shape[0]
    start = pl.program_id(1) * split
    kv_len = len_ref[()]
    q_lat, q_rope = q_lat_ref[...], q_rope_ref[...]

    def body(step, carry):
        o, m, l = carry
        slot = pl.ds(step * block_k, block_k)
        lat = lat_ref[slot, :]
        s = (jnp.dot(q_lat, lat.T, preferred_element_type=jnp.float32)
             + jnp.dot(q_rope, rope_ref[slot, :].T, preferred_element_type=jnp.float32)) * scale
        visible = (start + step * block_k + jnp.arange(block_k)) < kv_len
        s = jnp.where(visible[None, :], s, _NEG)
        m_next = jnp.maximum(m, s.max(axis=-1))
        correction = jnp.exp(m - m_next)
        p = jnp.exp(s - m_next[:, None])
        o = correction[:, None] * o + jnp.dot(p.astype(lat.dtype), lat, preferred_element_type=jnp.float32)
        return o, m_next, correction * l + p.sum(axis=-1)

    steps = jnp.maximum(jnp.minimum(pl.cdiv(kv_len - start, block_k), split // block_k), 0)
    init = (jnp.zeros((block_h, lat_ref.shape[1]), jnp.float32), jnp.full((block_h,), _NEG, jnp.float32),
            jnp.zeros((block_h,), jnp.float32))
    o, m, l = jax.lax.fori_loop(0, steps, body, init)
    o_ref[...] = (o / jnp.where(l > 0, l, 1.0)[:, None]).astype(o_ref.dtype)
    l_ref[...] = l
    m_ref[...] = m


def _unbatched(q_lat_HxR, q_rope_HxP, lat_TxR, rope_TxP, kv_len, *, scale, tiles: MLATiles, interpret: bool):
    H, R = q_lat_HxR.shape
    T, P = rope_TxP.shape
    split = T // tiles.k_splits
    kernel = functools.partial(_kernel, scale=scale, block_k=tiles.block_k)
    o, l, m = pl.pallas_call(
        kernel,
        grid=(H // tiles.block_h, tiles.k_splits),
        in_specs=[pl.BlockSpec((tiles.block_h, R), lambda i, j: (i, 0)),
                  pl.BlockSpec((tiles.block_h, P), lambda i, j: (i, 0)),
                  pl.BlockSpec((split, R), lambda i, j: (j, 0)),
                  pl.BlockSpec((split, P), lambda i, j: (j, 0)),
                  pl.BlockSpec((), lambda i, j: ())],
        out_specs=[pl.BlockSpec((None, tiles.block_h, R), lambda i, j: (j, i, 0)),
                   pl.BlockSpec((None, tiles.block_h), lambda i, j: (j, i)),
                   pl.BlockSpec((None, tiles.block_h), lambda i, j: (j, i))],
        out_shape=[jax.ShapeDtypeStruct((tiles.k_splits, H, R), q_lat_HxR.dtype),
                   jax.ShapeDtypeStruct((tiles.k_splits, H), jnp.float32),
                   jax.ShapeDtypeStruct((tiles.k_splits, H), jnp.float32)],
        compiler_params=_compiler_params(tiles),
        interpret=interpret,
        name="mla_decode",
    )(q_lat_HxR, q_rope_HxP, lat_TxR, rope_TxP, kv_len)
    # combine the splits: each holds its normalised context, its sum l and max m of exp(scores)
    # the shipped kernel keeps its split maximum behind a barrier against NaNs seen after JIT compilation
    weight_SxH = l * jnp.exp(m - jax.lax.optimization_barrier(m.max(axis=0)))
    total_H = weight_SxH.sum(axis=0)
    ctx_HxR = jnp.einsum("sh,shr->hr", weight_SxH, o.astype(jnp.float32)) / jnp.where(total_H > 0, total_H, 1.0)[:, None]
    return ctx_HxR.astype(q_lat_HxR.dtype)


def _compiler_params(tiles: MLATiles):
    from jax.experimental.pallas import triton as pl_triton  # noqa: PLC0415 - GPU lowering options only

    return pl_triton.CompilerParams(num_warps=tiles.num_warps, num_stages=tiles.num_stages)


def mla_decode(q_latent_BxHxR: Array, q_rope_BxHxP: Array, latent_BxTxR: Array, k_rope_BxTxP: Array, kv_len, *,
               scale: float, tiles: MLATiles | None = None, interpret: bool | None = None) -> Array:
    """softmax((q_latent . latent + q_rope . k_rope) * scale) . latent over slots [0, kv_len), (B, H, R).

    `kv_len` (scalar or (B,), may be traced); `tiles` None: `mla_tiles(T, H)`; `interpret`
    None: interpret mode off a GPU.
    """
    B, H, R = q_latent_BxHxR.shape
    T = latent_BxTxR.shape[1]
    tiles = tiles or mla_tiles(T, H)
    if tiles is None or T % (tiles.block_k * tiles.k_splits):
        raise ValueError(f"cache slots={T}: tiles {tiles} do not divide it (use nets.cache_slots)")
    dtype = latent_BxTxR.dtype
    padded = -(-H // tiles.block_h) * tiles.block_h  # whole head blocks; the padding heads are dropped below
    q_lat = jnp.pad(q_latent_BxHxR.astype(dtype), ((0, 0), (0, padded - H), (0, 0)))
    q_rope = jnp.pad(q_rope_BxHxP.astype(dtype), ((0, 0), (0, padded - H), (0, 0)))
    lengths_B = jnp.broadcast_to(jnp.asarray(kv_len, jnp.int32), (B,))
    run = functools.partial(_unbatched, scale=scale, tiles=tiles,
                            interpret=jax.default_backend() != "gpu" if interpret is None else interpret)
    return jax.vmap(run)(q_lat, q_rope, latent_BxTxR, k_rope_BxTxP, lengths_B)[:, :H]
