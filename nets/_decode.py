"""Which kernel computes one decode step's attention: one new token per sequence against its KV cache.

The einsum form in `nets._attention` is the reference and runs everywhere. A decode step
(a cached call of one token) reads the whole cache and does little arithmetic per byte, so
its speed is the fraction of the HBM bandwidth it reaches. The paths here take the cache in
the layout `nets._attention.init_cache` stores it, (batch, tokens, kv_heads, head_dim) or
MLA's (batch, tokens, kv_rank) latent and (batch, tokens, rope_dim) RoPE key, so no path
copies it; key slot t is visible iff t < kv_len (the slots written so far, this token's
included: a causal decoder's one query sees every written slot).

  cudnn   MHA/GQA/MFA: `jax.nn.dot_product_attention(implementation="cudnn")` with the query
          as one token and `key_value_seq_lengths` as the padding mask (GPU; bf16/fp16,
          head_dim a multiple of 8 up to 128).
  pallas  MHA/GQA/MFA: the split-K flash-decoding kernel of
          `jax.experimental.pallas.ops.gpu.decode_attention.gqa` (Pallas-Triton; every
          query head of one K/V head in one block, so each cache row is read once; head_dim a
          power of two). MLA: the same kernel with the key in two parts, latent and RoPE key
          (`nets._mla_decode`; the shipped one takes neither a 576-wide key nor a value
          narrower than the key). On CPU they run in Pallas interpret mode (tests only).
  folded  MFA and absorbed MLA, where all query heads share one key/value "head": the heads
          are folded into the rows of one (batch, heads, width) x (batch, tokens, width)
          matmul, so the cache is read as a plain (tokens, width) operand with no
          per-head broadcast; GQA/MHA fold each group the same way.
  xla     `jax.nn.dot_product_attention(implementation="xla")` with the same lengths: the
          cudnn call's plumbing, tested on CPU.
  einsum  the reference (`decode_attention` returns None: the module keeps its path).

`implementation=None` reads CODESIGN_DECODE_ATTENTION ("auto" or one of the names; unset means
"auto"). "auto" on a GPU with a bf16/fp16 cache: cudnn where it applies (head_dim <= 128: MHA, GQA),
else pallas where it applies (Step-3's MFA, head_dim 256, and absorbed MLA, whose 576/512 widths
cuDNN rejects: a cache of a multiple of 16 slots), else einsum. The fused MLA kernel at its swept
tile measured 0.295 ms against the einsum's 0.358 ms (H100, DeepSeek-V3, batch 32, 8192 slots).
Measured on an H100 at batch 32, cache 8192, fraction of the decode roofline: Llama-2-7B MHA
cudnn 90.4% (einsum 84.5%), Llama-3-70B GQA cudnn 87.1% (einsum 27.8%), Step-3 MFA pallas
63.2% with 16 splits, 68.9% with 8 (einsum 50.5%, folded 49.9%), DeepSeek-V3 MLA einsum 28.8%
(folded 19.3%).
A forced path that cannot take the call raises a ValueError naming why.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
from jax import Array

from nets._mla_decode import mla_decode, mla_refusal

__all__ = ["DECODE_IMPLEMENTATIONS", "decode_implementation", "grouped_decode", "latent_decode", "pallas_split"]

ENV_VAR = "CODESIGN_DECODE_ATTENTION"
DECODE_IMPLEMENTATIONS = ("auto", "einsum", "folded", "xla", "cudnn", "pallas")
_HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
PALLAS_WARPS, PALLAS_STAGES = 4, 2  # of the split-K kernel (its defaults; measured with the tiles of pallas_split)


def pallas_split(slots: int, head_dim: int) -> tuple[int, int] | None:
    """(block_k, k_splits) of the Pallas-Triton kernel for a cache of `slots` tokens; None if none fits.

    The kernel reshapes the cache into k_splits pieces of whole blocks, so block_k * k_splits
    must divide the slot count. The measured best (block 128, 16 splits at head_dim <= 128;
    block 64, 8 splits above) is taken where it divides, else the largest block of at least 16
    that divides, with the split count nearest the best (up to 4 times it) that divides the blocks
    (a `nets.cache_slots` cache of 8193 tokens, 8320 slots: block 64, 10 splits).
    """
    best_block, best_splits = (64, 8) if head_dim > 128 else (128, 16)
    for block_k in (best_block, best_block // 2, best_block // 4, 16):
        if block_k < 16 or slots % block_k:
            continue
        blocks = slots // block_k
        splits = [k for k in range(1, min(4 * best_splits, blocks) + 1) if blocks % k == 0]
        return block_k, min(splits, key=lambda k: (abs(math.log(k / best_splits)), -k))
    return None


def _refusal(name: str, kind: str, dtype, head_dim: int, slots: int | None = None,
             rope_dim: int | None = None) -> str | None:
    """Why `name` cannot compute this decode call of a `slots`-token cache (None: it can)."""
    on_gpu = jax.default_backend() == "gpu"
    if kind == "mla" and name == "pallas":
        return mla_refusal(head_dim, 16 if rope_dim is None else rope_dim, slots)
    if kind == "mla" and name in ("cudnn", "xla"):
        return f"kind='mla': {name} needs equal key and value widths (the latent is {head_dim} wide plus RoPE)"
    if name == "cudnn":
        if not on_gpu:
            return f"backend={jax.default_backend()!r}: cuDNN runs on GPU only"
        if jnp.dtype(dtype) not in _HALF:
            return f"dtype={jnp.dtype(dtype).name!r}: cuDNN attention takes bfloat16 or float16"
        if head_dim % 8 or head_dim > 128:
            return f"head_dim={head_dim}: cuDNN attention needs a multiple of 8 up to 128"
    if name == "pallas" and (head_dim & (head_dim - 1) or head_dim < 16):
        return f"head_dim={head_dim}: the Pallas-Triton kernel needs a power of two >= 16"
    if name == "pallas" and slots is not None and pallas_split(slots, head_dim) is None:
        return f"cache slots={slots}: the Pallas-Triton kernel needs a multiple of 16"
    return None


def decode_implementation(kind: str, dtype, head_dim: int, implementation: str | None = None,
                          slots: int | None = None, rope_dim: int | None = None) -> str:
    """The path a decode call of attention `kind` with this cache dtype, head_dim and slot count takes.

    MLA: head_dim is the latent's kv_rank and rope_dim the RoPE key's width.
    """
    name, source = implementation, "decode implementation"
    if name is None:
        name, source = os.environ.get(ENV_VAR, "auto") or "auto", ENV_VAR
    if name not in DECODE_IMPLEMENTATIONS:
        raise ValueError(f"{source}={name!r}: must be one of {', '.join(DECODE_IMPLEMENTATIONS)}")
    if name == "auto":
        if jax.default_backend() != "gpu" or jnp.dtype(dtype) not in _HALF:
            return "einsum"
        # pallas only for MFA and MLA (one shared K/V head): with several its (heads, tokens) layout costs a cache
        # transpose; cudnn cannot take MLA's unequal key and value widths
        for candidate in ("cudnn", "pallas") if kind == "mfa" else ("pallas",) if kind == "mla" else ("cudnn",):
            if not _refusal(candidate, kind, dtype, head_dim, slots, rope_dim):
                return candidate
        return "einsum"
    refusal = _refusal(name, kind, dtype, head_dim, slots, rope_dim)
    if refusal:
        raise ValueError(f"{source}={name!r} cannot run here: {refusal}")
    return name


def _visible_T(n_slots: int, kv_len, ndim: int) -> Array:
    """Slots [0, kv_len) as a mask for scores of `ndim` axes, slots last: (T,), or (B, 1.., T) per row."""
    kv_len = jnp.asarray(kv_len)
    visible = jnp.arange(n_slots) < kv_len[..., None]
    return visible if kv_len.ndim == 0 else visible.reshape(visible.shape[:1] + (1,) * (ndim - 2) + (n_slots,))


def _masked_softmax(scores, visible, dtype) -> Array:
    scores = jnp.where(visible, scores.astype(jnp.float32), jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores, axis=-1).astype(dtype)


def grouped_decode(q_BxHxK: Array, k_BxTxNxK: Array, v_BxTxNxK: Array, kv_len, *, scale: float,
                   kind: str, implementation: str | None = None) -> Array | None:
    """softmax(q k^T * scale) v over the visible slots, (B, H, K); None where the einsum reference runs.

    `kv_len` (scalar or (B,), may be traced): slots [0, kv_len) are visible.
    """
    B, H, K = q_BxHxK.shape
    T, N = k_BxTxNxK.shape[1], k_BxTxNxK.shape[2]
    name = decode_implementation(kind, k_BxTxNxK.dtype, K, implementation, slots=T)
    if name == "einsum":
        return None
    q_BxHxK = q_BxHxK.astype(k_BxTxNxK.dtype)
    if name in ("cudnn", "xla"):
        lengths_B = jnp.broadcast_to(jnp.asarray(kv_len, jnp.int32), (B,))
        out = jax.nn.dot_product_attention(q_BxHxK[:, None], k_BxTxNxK, v_BxTxNxK, scale=scale,
                                           key_value_seq_lengths=lengths_B, implementation=name)
        return out[:, 0]
    if name == "pallas":
        from jax.experimental.pallas.ops.gpu import decode_attention

        group = H // N
        block_h = max(16, 1 << (group - 1).bit_length())
        block_k, k_splits = pallas_split(T, K)
        lengths_B = jnp.broadcast_to(jnp.asarray(kv_len, jnp.int32), (B,))
        return decode_attention.gqa(q_BxHxK, k_BxTxNxK, v_BxTxNxK, kv_seq_len=lengths_B, sm_scale=scale,
                                    block_h=block_h, block_k=block_k, k_splits=k_splits, num_warps=PALLAS_WARPS,
                                    num_stages=PALLAS_STAGES, interpret=jax.default_backend() != "gpu")
    # folded: per K/V head, its group of query heads are the rows of one matmul against the cache
    q_BxNxGxK = q_BxHxK.reshape(B, N, H // N, K)
    if N == 1:  # MFA: the cache is a plain (tokens, head_dim) operand per sequence
        scores_BxGxT = jnp.einsum("bgk,btk->bgt", q_BxNxGxK[:, 0], k_BxTxNxK[:, :, 0]) * scale
        p_BxGxT = _masked_softmax(scores_BxGxT, _visible_T(T, kv_len, 3), q_BxHxK.dtype)
        return jnp.einsum("bgt,btk->bgk", p_BxGxT, v_BxTxNxK[:, :, 0])
    scores_BxNxGxT = jnp.einsum("bngk,btnk->bngt", q_BxNxGxK, k_BxTxNxK) * scale
    p_BxNxGxT = _masked_softmax(scores_BxNxGxT, _visible_T(T, kv_len, 4), q_BxHxK.dtype)
    return jnp.einsum("bngt,btnk->bngk", p_BxNxGxT, v_BxTxNxK).reshape(B, H, K)


def latent_decode(q_latent_BxHxR: Array, q_rope_BxHxP: Array, latent_BxTxR: Array, k_rope_BxTxP: Array,
                  kv_len, *, scale: float, score_bias_BxH: Array | None = None,
                  implementation: str | None = None) -> Array | None:
    """MLA's absorbed attention for one token: the context in latent space, (B, H, R); None: einsum path.

    scores = (q_latent . latent + q_rope . k_rope + bias) * scale over the visible slots; the
    context sum_t p_t latent_t is what the value up-projection then maps per head. The fused
    kernel ("pallas") drops `score_bias_BxH`: a per-head constant cancels in the softmax.
    """
    (T, R), P = latent_BxTxR.shape[1:], k_rope_BxTxP.shape[-1]
    name = decode_implementation("mla", latent_BxTxR.dtype, R, implementation, slots=T, rope_dim=P)
    if name == "einsum":
        return None
    if name == "pallas":
        return mla_decode(q_latent_BxHxR, q_rope_BxHxP, latent_BxTxR, k_rope_BxTxP, kv_len, scale=scale)
    dtype = latent_BxTxR.dtype
    scores_BxHxT = (jnp.einsum("bhr,btr->bht", q_latent_BxHxR.astype(dtype), latent_BxTxR,
                               preferred_element_type=jnp.float32)
                    + jnp.einsum("bhp,btp->bht", q_rope_BxHxP.astype(dtype), k_rope_BxTxP,
                                 preferred_element_type=jnp.float32))
    if score_bias_BxH is not None:
        scores_BxHxT = scores_BxHxT + score_bias_BxH[..., None].astype(jnp.float32)
    p_BxHxT = _masked_softmax(scores_BxHxT * scale, _visible_T(latent_BxTxR.shape[1], kv_len, 3), dtype)
    return jnp.einsum("bht,btr->bhr", p_BxHxT, latent_BxTxR)

