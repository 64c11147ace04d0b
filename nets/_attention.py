"""One attention module for the four kinds of `AttentionConfig`: MHA, GQA, MFA and MLA.

Parameters (names and shapes match `nets._params.attention_params`):
  query     wq: d -> n_heads*qk_head_dim, or, when q_rank > 0, the low-rank path
            wq_a: d -> q_rank, q_norm, wq_b: q_rank -> n_heads*qk_head_dim.
  MHA/GQA/MFA  wk, wv: d -> n_kv_heads*head_dim (MFA = low-rank query + few shared K/V
            heads, Step-3, arXiv 2507.19427 section 2; GQA, Ainslie et al., arXiv 2305.13245).
  MLA       wkv_a: d -> kv_rank + rope_dim, kv_norm on the kv_rank part, wkv_b: kv_rank ->
            n_heads*2*head_dim laid out per head as [key (no RoPE) | value]; the rope_dim
            part of wkv_a's output is ONE key shared by all heads that carries RoPE
            (DeepSeek-V2, arXiv 2405.04434, eqs. 9-19; DeepSeek-V3 arXiv 2412.19437 sec. 2.1.1).
  output    wo: n_heads*head_dim -> d.
  biases    on every projection iff cfg.use_bias; on wq, wk, wv also iff attention.qkv_bias (Qwen2).
  qk_norm   q_head_norm, k_head_norm over one head (qk_head_dim), before RoPE (Qwen3).

KV cache: a plain dict of arrays (a pytree, so layers can be scanned over it), or a `CacheSlot`
(the layer's place in the model's stacked cache, written in place; `nets._cache_slot`).
MHA/GQA/MFA cache "k" and "v", each (batch, slots, n_kv_heads, head_dim). MLA caches
only "latent" (batch, slots, kv_rank), already normalised, and "k_rope" (batch,
slots, rope_dim), already rotated, and attends in the ABSORBED form (DeepSeek-V2
appendix C): wkv_b's key half is folded into the query and its value half into the
output, so scores are taken against the latent directly. Without a cache MLA expands
K and V explicitly; the tests check that both forms agree.

`slots` = `cache_slots(max_len)`: the requested length rounded up (to a multiple of 16, and of
128 from 1024 tokens on) so that a decode kernel can tile the cache at every length (a cache of
context + 1 tokens is odd); the extra slots are never written, so they stay masked.

Token i of a call is written to cache slot `cache_index + i`; a key slot is visible to
a query iff it has been written and (decoder) is not after the query's slot. So slot
index is the token's position in the sequence; `positions` only drive RoPE.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array

from nets._cache_slot import CacheSlot, write_cache
from nets._config import ModelConfig
from nets._layers import apply_rope, make_norm
from nets._decode import grouped_decode, latent_decode
from nets._sdpa import fused_attention

Cache = dict[str, Array] | CacheSlot  # a layer's own arrays, or its place in a segment's stack (nets._cache_slot)


SLOT_MULTIPLE_SMALL, SLOT_MULTIPLE, LONG_CACHE = 16, 128, 1024


def cache_slots(max_len: int) -> int:
    """Slots a cache of `max_len` tokens holds: rounded up to a multiple of 16 (of 128 from 1024 tokens on).

    The split-K decode kernels cut the cache into whole blocks of at least 16 slots per split;
    128 lets the measured best tiles (64 or 128 slots a block) divide every long cache into their best
    split counts, at most 127 slots (1.5% at 8192 tokens) of memory more. A short cache (e.g. the
    ATTS pipeline's few hundred bytes a slot) only needs whole 16-slot blocks: a 128 multiple would read
    up to 40% more slots in every einsum decode step. Slots past those written stay masked.
    """
    multiple = SLOT_MULTIPLE if max_len >= LONG_CACHE else SLOT_MULTIPLE_SMALL
    return -(-max_len // multiple) * multiple


def cache_shapes(cfg: ModelConfig, batch: int, max_len: int) -> dict[str, tuple[int, ...]]:
    """Shapes of one layer's cache arrays for `max_len` tokens, `cache_slots(max_len)` slots (module docstring)."""
    a = cfg.attention
    max_len = cache_slots(max_len)
    if a.kind == "mla":
        return {"latent": (batch, max_len, a.kv_rank), "k_rope": (batch, max_len, a.rope_dim)}
    return {"k": (batch, max_len, a.n_kv_heads, a.head_dim), "v": (batch, max_len, a.n_kv_heads, a.head_dim)}


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=jnp.float32) -> Cache:
    """An empty (zero) cache of one attention layer for `batch` sequences of up to `max_len` tokens."""
    for name, value in (("batch", batch), ("max_len", max_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name}={value!r}: must be a positive integer")
    if not cfg.causal:
        raise ValueError(f"causal={cfg.causal!r}: an encoder (bidirectional) model has no KV cache")
    return {name: jnp.zeros(shape, dtype) for name, shape in cache_shapes(cfg, batch, max_len).items()}


def cache_bytes_per_token_per_layer(cfg: ModelConfig, bytes_per_value: float) -> float:
    """KV-cache bytes one token adds to one layer (Step-3 paper, arXiv 2507.19427, Table 2).

    MHA/GQA/MFA: 2*n_kv_heads*head_dim values (Step-3 MFA: 2*256 = 512 B at 8 bits);
    MLA: kv_rank + rope_dim values (DeepSeek-V3: 512 + 64 = 576 B at 8 bits).
    """
    if isinstance(bytes_per_value, bool) or not isinstance(bytes_per_value, (int, float)) or not bytes_per_value > 0:
        raise ValueError(f"bytes_per_value={bytes_per_value!r}: must be a positive number of bytes")
    return cfg.attention.cache_values_per_token() * bytes_per_value


class Attention(nnx.Module):
    """Multi-head attention of kind `cfg.attention.kind`; causal iff `cfg.causal`.

    `implementation` picks the kernel of cache-free calls (training, prefill; `nets._sdpa`),
    `decode_implementation` the kernel of one-token cached calls (`nets._decode`); None reads
    their environment variables, and both default to the fastest path that applies.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                 implementation: str | None = None, decode_implementation: str | None = None):
        a, d = cfg.attention, cfg.d_model
        if a.kind == "mla" and a.qk_norm:
            raise ValueError("attention.qk_norm=True: not supported with kind mla (a normalised key cannot "
                             "be absorbed into the query for latent-cache decoding)")
        self.cfg = cfg
        self.dtype = dtype
        self.implementation = implementation
        self.decode_implementation = decode_implementation

        def linear(d_in: int, d_out: int, bias: bool = cfg.use_bias) -> nnx.Linear:
            return nnx.Linear(d_in, d_out, use_bias=bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

        def norm(width: int) -> nnx.Module:
            return make_norm(cfg, width, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

        q_width = a.n_heads * a.qk_head_dim
        if a.q_rank:
            self.wq_a = linear(d, a.q_rank)
            self.q_norm = norm(a.q_rank)
            self.wq_b = linear(a.q_rank, q_width)
        else:
            self.wq = linear(d, q_width, cfg.use_bias or a.qkv_bias)
        if a.kind == "mla":
            self.wkv_a = linear(d, a.kv_rank + a.rope_dim)
            self.kv_norm = norm(a.kv_rank)
            self.wkv_b = linear(a.kv_rank, 2 * a.n_heads * a.head_dim)
        else:
            self.wk = linear(d, a.n_kv_heads * a.head_dim, cfg.use_bias or a.qkv_bias)
            self.wv = linear(d, a.n_kv_heads * a.head_dim, cfg.use_bias or a.qkv_bias)
        self.wo = linear(a.n_heads * a.head_dim, d)
        if a.qk_norm:
            self.q_head_norm = norm(a.qk_head_dim)
            self.k_head_norm = norm(a.qk_head_dim)

    # ---- pieces --------------------------------------------------------------------
    def _rope(self, x_BxLxHxK: Array, positions_BxL: Array) -> Array:
        if self.cfg.positions != "rope":
            return x_BxLxHxK
        return apply_rope(x_BxLxHxK, positions_BxL, self.cfg.rope_theta)

    def _query(self, x_BxLxD: Array) -> Array:
        a = self.cfg.attention
        q = self.wq_b(self.q_norm(self.wq_a(x_BxLxD))) if a.q_rank else self.wq(x_BxLxD)
        q_BxLxHxK = q.reshape(*x_BxLxD.shape[:2], a.n_heads, a.qk_head_dim)
        if a.qk_norm:
            q_BxLxHxK = self.q_head_norm(q_BxLxHxK)
        return q_BxLxHxK

    def _mask(self, n_queries: int, n_keys: int, cache_index) -> Array:
        """Visible (query, key) pairs, (1 or batch, L, T): written slots, and not after the query if causal.

        `cache_index` None (no cache), a scalar, or one position per sequence (batch,): then each row has its mask.
        """
        start_Bx1x1 = jnp.zeros((1, 1, 1), jnp.int32) if cache_index is None else (
            jnp.asarray(cache_index, jnp.int32).reshape(-1, 1, 1))
        q_slot_BxLx1 = start_Bx1x1 + jnp.arange(n_queries)[None, :, None]
        k_slot_1x1xT = jnp.arange(n_keys)[None, None, :]
        if cache_index is None:
            visible = jnp.ones((1, n_queries, n_keys), bool)
        else:
            visible = jnp.broadcast_to(k_slot_1x1xT < start_Bx1x1 + n_queries,
                                       (start_Bx1x1.shape[0], n_queries, n_keys))
        if self.cfg.causal:
            visible = visible & (k_slot_1x1xT <= q_slot_BxLx1)
        return visible

    def _softmax(self, scores: Array, visible_LxT: Array) -> Array:
        scores = jnp.where(visible_LxT, scores.astype(jnp.float32), jnp.finfo(jnp.float32).min)
        return jax.nn.softmax(scores, axis=-1).astype(self.dtype)

    # ---- forward -------------------------------------------------------------------
    def __call__(self, x_BxLxD: Array, *, positions_BxL: Array, cache: Cache | None = None,
                 cache_index=None, kv_quant=None) -> tuple[Array, Cache | None]:
        """Attend `x` (batch, length, d_model) to itself, or to the cache plus itself.

        With `cache`, the new keys/values (or MLA latents) are written at slot
        `cache_index` (a scalar, or one slot per sequence of shape (batch,); may be traced)
        and the query attends to the whole cache, unwritten slots masked.
        Returns (y (batch, length, d_model), new cache or None).
        `kv_quant` (a function of one array, e.g. `LayerQuant.kv`) is applied to the new keys
        and values (MLA: latent and RoPE key) before they are cached or attended.
        """
        kv_quant = kv_quant or (lambda t: t)
        if cache is not None:
            if not self.cfg.causal:
                raise ValueError(f"causal={self.cfg.causal!r}: an encoder (bidirectional) model takes no KV cache")
            if cache_index is None:
                raise ValueError("cache_index=None: required when a cache is given")
        if self.cfg.attention.kind == "mla":
            return self._mla(x_BxLxD, positions_BxL, cache, cache_index, kv_quant)
        return self._grouped(x_BxLxD, positions_BxL, cache, cache_index, kv_quant)

    def _grouped(self, x_BxLxD, positions_BxL, cache, cache_index, kv_quant):
        """MHA, GQA and MFA: n_heads queries share n_kv_heads keys/values in groups."""
        a = self.cfg.attention
        B, L, _ = x_BxLxD.shape
        q_BxLxHxK = self._rope(self._query(x_BxLxD), positions_BxL)
        k_BxLxNxK = self.wk(x_BxLxD).reshape(B, L, a.n_kv_heads, a.head_dim)
        v_BxLxNxK = self.wv(x_BxLxD).reshape(B, L, a.n_kv_heads, a.head_dim)
        if a.qk_norm:
            k_BxLxNxK = self.k_head_norm(k_BxLxNxK)
        k_BxLxNxK = kv_quant(self._rope(k_BxLxNxK, positions_BxL))
        v_BxLxNxK = kv_quant(v_BxLxNxK)
        new_cache = None
        if cache is not None:
            new_cache = write_cache(cache, {"k": k_BxLxNxK, "v": v_BxLxNxK}, cache_index)
            if L == 1:  # a decode step: a kernel that reads the cache as stored (nets._decode), if one applies
                out_BxHxK = grouped_decode(q_BxLxHxK[:, 0], new_cache["k"], new_cache["v"], cache_index + 1,
                                           scale=1.0 / math.sqrt(a.qk_head_dim), kind=a.kind,
                                           implementation=self.decode_implementation)
                if out_BxHxK is not None:
                    return self.wo(out_BxHxK.astype(self.dtype).reshape(B, L, a.n_heads * a.head_dim)), new_cache
            k_BxLxNxK = new_cache["k"].astype(self.dtype)
            v_BxLxNxK = new_cache["v"].astype(self.dtype)
        fused_BxLxHxK = fused_attention(q_BxLxHxK, k_BxLxNxK.astype(q_BxLxHxK.dtype),
                                        v_BxLxNxK.astype(q_BxLxHxK.dtype), causal=self.cfg.causal,
                                        scale=1.0 / math.sqrt(a.qk_head_dim), cached=cache is not None,
                                        implementation=self.implementation)
        if fused_BxLxHxK is not None:  # a fused kernel (nets._sdpa) where one can take the call
            return self.wo(fused_BxLxHxK.reshape(B, L, a.n_heads * a.head_dim)), new_cache
        T = k_BxLxNxK.shape[1]
        q_BxLxNxGxK = q_BxLxHxK.reshape(B, L, a.n_kv_heads, a.group_size, a.head_dim)
        scores_BxNxGxLxT = jnp.einsum("blngk,btnk->bnglt", q_BxLxNxGxK, k_BxLxNxK) / math.sqrt(a.qk_head_dim)
        p_BxNxGxLxT = self._softmax(scores_BxNxGxLxT, self._mask(L, T, cache_index)[:, None, None])
        out_BxLxNxGxK = jnp.einsum("bnglt,btnk->blngk", p_BxNxGxLxT, v_BxLxNxK)
        return self.wo(out_BxLxNxGxK.reshape(B, L, a.n_heads * a.head_dim)), new_cache

    def _mla(self, x_BxLxD, positions_BxL, cache, cache_index, kv_quant):
        """Multi-head latent attention: expanded without a cache, absorbed with one."""
        a = self.cfg.attention
        B, L, _ = x_BxLxD.shape
        H, K, R = a.n_heads, a.head_dim, a.kv_rank
        q_BxLxHxQ = self._query(x_BxLxD)
        q_nope_BxLxHxK = q_BxLxHxQ[..., :K]
        q_rope_BxLxHxP = self._rope(q_BxLxHxQ[..., K:], positions_BxL)
        kv_a_BxLx_ = self.wkv_a(x_BxLxD)
        latent_BxLxR = kv_quant(self.kv_norm(kv_a_BxLx_[..., :R]))
        k_rope_BxLxP = kv_quant(self._rope(kv_a_BxLx_[..., None, R:], positions_BxL)[:, :, 0, :])
        scale = 1.0 / math.sqrt(a.qk_head_dim)
        if cache is None:
            kv_BxLxHx2K = self.wkv_b(latent_BxLxR).reshape(B, L, H, 2 * K)
            k_nope_BxLxHxK, v_BxLxHxK = kv_BxLxHx2K[..., :K], kv_BxLxHx2K[..., K:]
            scores_BxHxLxT = (jnp.einsum("blhk,bthk->bhlt", q_nope_BxLxHxK, k_nope_BxLxHxK)
                              + jnp.einsum("blhp,btp->bhlt", q_rope_BxLxHxP, k_rope_BxLxP)) * scale
            p_BxHxLxT = self._softmax(scores_BxHxLxT, self._mask(L, L, None)[:, None])
            out_BxLxHxK = jnp.einsum("bhlt,bthk->blhk", p_BxHxLxT, v_BxLxHxK)
            return self.wo(out_BxLxHxK.reshape(B, L, H * K)), None

        new_cache = write_cache(cache, {"latent": latent_BxLxR, "k_rope": k_rope_BxLxP}, cache_index)
        latent_BxTxR = new_cache["latent"].astype(self.dtype)
        k_rope_BxTxP = new_cache["k_rope"].astype(self.dtype)
        T = latent_BxTxR.shape[1]
        w_RxHx2xK = self.wkv_b.kernel[...].astype(self.dtype).reshape(R, H, 2, K)
        wk_RxHxK, wv_RxHxK = w_RxHx2xK[:, :, 0], w_RxHx2xK[:, :, 1]
        # q . (c Wk + bk) = (q Wk^T) . c + q . bk : the key up-projection moves onto the query.
        q_latent_BxLxHxR = jnp.einsum("blhk,rhk->blhr", q_nope_BxLxHxK, wk_RxHxK)
        b_Hx2xK = None if self.wkv_b.bias is None else self.wkv_b.bias[...].astype(self.dtype).reshape(H, 2, K)
        if L == 1:  # a decode step: heads folded into one matmul against the latent (nets._decode), if chosen
            bias_BxH = None if b_Hx2xK is None else jnp.einsum("bhk,hk->bh", q_nope_BxLxHxK[:, 0], b_Hx2xK[:, 0])
            ctx_BxHxR = latent_decode(q_latent_BxLxHxR[:, 0], q_rope_BxLxHxP[:, 0], new_cache["latent"],
                                      new_cache["k_rope"], cache_index + 1, scale=scale, score_bias_BxH=bias_BxH,
                                      implementation=self.decode_implementation)
            if ctx_BxHxR is not None:
                out_BxHxK = jnp.einsum("bhr,rhk->bhk", ctx_BxHxR.astype(self.dtype), wv_RxHxK)
                if b_Hx2xK is not None:
                    out_BxHxK = out_BxHxK + b_Hx2xK[:, 1]
                return self.wo(out_BxHxK.reshape(B, L, H * K)), new_cache
        scores_BxHxLxT = (jnp.einsum("blhr,btr->bhlt", q_latent_BxLxHxR, latent_BxTxR)
                          + jnp.einsum("blhp,btp->bhlt", q_rope_BxLxHxP, k_rope_BxTxP))
        if b_Hx2xK is not None:
            scores_BxHxLxT = scores_BxHxLxT + jnp.einsum("blhk,hk->bhl", q_nope_BxLxHxK, b_Hx2xK[:, 0])[..., None]
        p_BxHxLxT = self._softmax(scores_BxHxLxT * scale, self._mask(L, T, cache_index)[:, None])
        # sum_t p_t (c_t Wv + bv) = (sum_t p_t c_t) Wv + bv, since the weights sum to one.
        ctx_BxLxHxR = jnp.einsum("bhlt,btr->blhr", p_BxHxLxT, latent_BxTxR)
        out_BxLxHxK = jnp.einsum("blhr,rhk->blhk", ctx_BxLxHxR, wv_RxHxK)
        if b_Hx2xK is not None:
            out_BxLxHxK = out_BxLxHxK + b_Hx2xK[:, 1]
        return self.wo(out_BxLxHxK.reshape(B, L, H * K)), new_cache
