"""A pruning-aware transformer (SpAtten, arXiv 2012.09852) built from the modules of `nets`.

`PrunedLM` holds the same layers as `nets.TransformerLM` (one `nets._model.Block` per
layer: its norms, `nets.Attention` projections and dense or MoE FFN; `from_model` copies
a trained model's weights) and runs them with cascade token pruning, cascade head
pruning, local value pruning and progressive quantization (`nets._pruning`). Every
attention kind of `nets` (MHA, GQA, MFA, MLA), decoder or encoder.

Semantics (layer l = 0..n-1; "keep" fractions are cumulative, of the prunable tokens):
- layer l's attention runs on the tokens alive after layer l-1; the importance of each
  key accumulates the probabilities it receives from alive PROMPT rows (positions <
  `n_prunable`) over heads and layers; then the top kept_count(n_prunable, keep_l)
  prunable tokens survive (the tokens at positions >= n_prunable, e.g. the generated
  continuation of a decoder, are never pruned). The FFN of layer l and all later layers
  see only the survivors: their Q/K/V, FFN and (decoding) KV cache are gone.
- a pruned token's final representation is its output of the last layer it completed
  (its hidden state is frozen, as in PoWER-BERT), so the logits keep the input shape;
  a task that needs predictions at prunable positions pays for pruning them.
- heads: importance = sum |head output| over alive prompt rows, accumulated; after
  layer l the top kept_count(H, head_keep_l) alive heads survive (per sequence); a
  pruned head's output is zeroed (the hardware does not compute it).

Modes: `__call__` (hard: static kept counts from a `PrunePlan`, tokens gathered, so the
shapes shrink layer by layer and the Python loop over layers is unrolled; a scan needs
one shape), `soft` (the relaxation: per-layer keep-ratio ARRAYS as input, soft masks on
the importance ranks, every shape full; at temperature -> 0 equal to hard), and
`prefill` + `decode_step` (a pruned KV cache: layer l caches only the tokens alive at
its attention; generated tokens are appended, never pruned, and their attention is
accumulated into the cache's importance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import Array

from nets._config import ModelConfig
from nets._layers import embed_lookup, make_norm
from nets._model import Block, TransformerLM, layer_segments
from nets._pruning import (ProgressiveQuant, cascade_keep, gather_rows, head_importance, head_mask, kept_count,
                           local_value_prune, masked_softmax, paper_schedule, progressive_probs, select_tokens,
                           soft_head_mask, soft_keep_mask, token_importance)


@dataclass(frozen=True)
class PrunePlan:
    """Static pruning of a hard forward pass (hashable: pass it as a static jit argument).

    token_keep[l]: cumulative kept fraction of the prunable tokens after layer l.
    head_keep[l]: cumulative kept fraction of the heads after layer l.
    value_keep: fraction of each attention row's V rows fetched (local value pruning).
    progressive: MSB/LSB split of Q and K, or None for full-precision float scores.
    """

    token_keep: tuple[float, ...]
    head_keep: tuple[float, ...]
    value_keep: float = 1.0
    progressive: ProgressiveQuant | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "token_keep", cascade_keep(self.token_keep))
        object.__setattr__(self, "head_keep", cascade_keep(self.head_keep))
        if len(self.token_keep) != len(self.head_keep):
            raise ValueError(f"head_keep={self.head_keep!r}: must have one entry per layer like token_keep "
                             f"({len(self.token_keep)})")
        v = self.value_keep
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise ValueError(f"value_keep={v!r}: must be a kept fraction in (0, 1]")
        if self.progressive is not None and not isinstance(self.progressive, ProgressiveQuant):
            raise ValueError(f"progressive={self.progressive!r}: must be a nets ProgressiveQuant or None")

    @classmethod
    def none(cls, n_layers: int) -> "PrunePlan":
        """Nothing pruned (equals the unpruned network)."""
        return cls(token_keep=(1.0,) * n_layers, head_keep=(1.0,) * n_layers)

    @classmethod
    def paper(cls, n_layers: int, token_keep: float, head_keep: float = 1.0, **kw) -> "PrunePlan":
        """SpAtten's fixed schedule: tokens after the first 15% of layers, heads after 30%, linear ramps."""
        return cls(token_keep=tuple(paper_schedule(n_layers, token_keep)),
                   head_keep=tuple(paper_schedule(n_layers, head_keep, start_fraction=0.30)), **kw)

    @classmethod
    def from_keep(cls, token_keep, head_keep, **kw) -> "PrunePlan":
        """Harden learned keep ratios (arrays, e.g. `soft`'s inputs) into a static plan."""
        return cls(token_keep=tuple(float(v) for v in np.asarray(token_keep).ravel()),
                   head_keep=tuple(float(v) for v in np.asarray(head_keep).ravel()), **kw)


# ---- the attention core on the projections of `nets.Attention` -----------------------------------
def _queries(attn, x_BxLxD: Array, pos_BxL: Array) -> tuple[Array, ...]:
    a = attn.cfg.attention
    q_BxLxHxQ = attn._query(x_BxLxD)
    if a.kind == "mla":
        return q_BxLxHxQ[..., :a.head_dim], attn._rope(q_BxLxHxQ[..., a.head_dim:], pos_BxL)
    return (attn._rope(q_BxLxHxQ, pos_BxL),)


def _new_kv(attn, x_BxLxD: Array, pos_BxL: Array) -> dict[str, Array]:
    """What a layer caches per token: K and V (MHA/GQA/MFA) or latent and RoPE key (MLA)."""
    a = attn.cfg.attention
    B, L, _ = x_BxLxD.shape
    if a.kind == "mla":
        kv_a = attn.wkv_a(x_BxLxD)
        latent = attn.kv_norm(kv_a[..., :a.kv_rank])
        k_rope = attn._rope(kv_a[..., None, a.kv_rank:], pos_BxL)[:, :, 0, :]
        return {"latent": latent, "k_rope": k_rope}
    k = attn.wk(x_BxLxD).reshape(B, L, a.n_kv_heads, a.head_dim)
    if a.qk_norm:
        k = attn.k_head_norm(k)
    return {"k": attn._rope(k, pos_BxL), "v": attn.wv(x_BxLxD).reshape(B, L, a.n_kv_heads, a.head_dim)}


def _expand(attn, kv: dict[str, Array]) -> tuple[tuple[Array, ...], Array]:
    """(key parts, values) to attend to; MLA expands its latent with wkv_b (the explicit form)."""
    a = attn.cfg.attention
    if a.kind == "mla":
        B, T, _ = kv["latent"].shape
        kv_BxTxHx2K = attn.wkv_b(kv["latent"]).reshape(B, T, a.n_heads, 2 * a.head_dim)
        return (kv_BxTxHx2K[..., :a.head_dim], kv["k_rope"]), kv_BxTxHx2K[..., a.head_dim:]
    return (kv["k"],), kv["v"]


def _scores(attn, q_parts, k_parts) -> Array:
    """Scaled scores (B, H, L, T); grouped heads are laid out h = kv_head * group + g, as in `wo`."""
    a = attn.cfg.attention
    scale = 1.0 / math.sqrt(a.qk_head_dim)
    if a.kind == "mla":
        return (jnp.einsum("blhk,bthk->bhlt", q_parts[0], k_parts[0])
                + jnp.einsum("blhp,btp->bhlt", q_parts[1], k_parts[1])) * scale
    B, L = q_parts[0].shape[:2]
    q = q_parts[0].reshape(B, L, a.n_kv_heads, a.group_size, a.head_dim)
    s = jnp.einsum("blngk,btnk->bnglt", q, k_parts[0]) * scale
    return s.reshape(B, a.n_heads, L, -1)


def _mix(attn, p_BxHxLxT: Array, v) -> Array:
    """Per-head outputs (B, L, H, head_dim)."""
    a = attn.cfg.attention
    if a.kind == "mla":
        return jnp.einsum("bhlt,bthk->blhk", p_BxHxLxT, v)
    B, H, L, T = p_BxHxLxT.shape
    out = jnp.einsum("bnglt,btnk->blngk", p_BxHxLxT.reshape(B, a.n_kv_heads, a.group_size, L, T), v)
    return out.reshape(B, L, H, a.head_dim)


def _attend(attn, xn_BxLxD, q_pos_BxL, kv, k_pos_BxT, k_valid_BxT, *, head_w_BxH, value_keep, progressive,
            key_log_mask_BxT=None):
    """One attention: returns (y (B,L,D), probs (B,H,L,T), head outputs (B,L,H,K), recompute flags (B,H,L))."""
    cfg = attn.cfg
    q_parts = _queries(attn, xn_BxLxD, q_pos_BxL)
    k_parts, v = _expand(attn, kv)
    visible = k_valid_BxT[:, None, :]
    if cfg.causal:
        visible = visible & (k_pos_BxT[:, None, :] <= q_pos_BxL[:, :, None])
    visible_Bx1xLxT = visible[:, None]
    log_mask = None if key_log_mask_BxT is None else key_log_mask_BxT[:, None, None, :]
    if progressive is None:
        p = masked_softmax(_scores(attn, q_parts, k_parts), visible_Bx1xLxT, log_mask)
        recompute = jnp.zeros(p.shape[:-1], bool)
    else:
        fn = lambda qp, kp: _scores(attn, qp, kp) + (0.0 if log_mask is None else log_mask)  # noqa: E731
        p, recompute = progressive_probs(fn, q_parts, k_parts, visible_Bx1xLxT, progressive)
    p_used = local_value_prune(p, value_keep, visible_Bx1xLxT)
    heads_BxLxHxK = _mix(attn, p_used.astype(xn_BxLxD.dtype), v) * head_w_BxH[:, None, :, None].astype(xn_BxLxD.dtype)
    B, L = xn_BxLxD.shape[:2]
    y = attn.wo(heads_BxLxHxK.reshape(B, L, -1))
    return y, p, heads_BxLxHxK, recompute


def _ffn(block, x_BxLxD):
    h = block.ffn_norm(x_BxLxD)
    if block.kind == "moe":
        y, aux = block.ffn(h)
        return y, jnp.asarray(aux["load_balance_loss"], jnp.float32)
    return block.ffn(h), jnp.zeros((), jnp.float32)


class PrunedLM(nnx.Module):
    """A `TransformerLM`'s layers run with SpAtten pruning (module docstring for the semantics)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        if not isinstance(cfg, ModelConfig):
            raise ValueError(f"cfg={cfg!r}: must be a nets.ModelConfig")
        self.cfg = cfg
        self.dtype = dtype
        embed_init = nnx.initializers.normal(stddev=0.02)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.embed = nnx.Embed(cfg.vocab_size, cfg.d_model, embedding_init=embed_init, **kw)
        if cfg.positions == "learned":
            self.pos_embed = nnx.Embed(cfg.max_seq_len, cfg.d_model, embedding_init=embed_init, **kw)
        self.blocks = nnx.List([Block(cfg, kind, **kw) for kind in cfg.layer_kinds])
        self.final_norm = make_norm(cfg, cfg.d_model, **kw)
        if not cfg.tie_embeddings:
            self.lm_head = nnx.Linear(cfg.d_model, cfg.vocab_size, use_bias=False, **kw)

    @classmethod
    def from_model(cls, model: TransformerLM) -> "PrunedLM":
        """A PrunedLM with the weights of `model` (its scanned, stacked layers unstacked)."""
        if not isinstance(model, TransformerLM):
            raise ValueError(f"model={type(model).__name__}: must be a nets.TransformerLM")
        cfg = model.cfg
        out = nnx.eval_shape(lambda: cls(cfg, rngs=nnx.Rngs(0), dtype=model.dtype))
        nnx.update(out, jax.tree.map(jnp.zeros_like, nnx.state(out)))  # materialise, then overwrite below
        nnx.update(out.embed, nnx.state(model.embed))
        nnx.update(out.final_norm, nnx.state(model.final_norm))
        if cfg.positions == "learned":
            nnx.update(out.pos_embed, nnx.state(model.pos_embed))
        if not cfg.tie_embeddings:
            nnx.update(out.lm_head, nnx.state(model.lm_head))
        first = 0
        for seg, (kinds, repeats) in enumerate(layer_segments(cfg)):
            for r in range(repeats):
                for j in range(len(kinds)):
                    stacked = nnx.state(model.segments[seg].blocks[j])
                    nnx.update(out.blocks[first + r * len(kinds) + j], jax.tree.map(lambda a, r=r: a[r], stacked))
            first += repeats * len(kinds)
        return out

    # ---- shared pieces ---------------------------------------------------------------------
    def _embed(self, tokens_BxL, pos_BxL):
        x = embed_lookup(self.embed, tokens_BxL)
        if self.cfg.positions == "learned":
            x = x + embed_lookup(self.pos_embed, pos_BxL)
        return x

    def _logits(self, x_BxLxD):
        x = self.final_norm(x_BxLxD)
        return self.embed.attend(x) if self.cfg.tie_embeddings else self.lm_head(x)

    def _check_tokens(self, tokens_BxL, n_prunable):
        tokens_BxL = jnp.asarray(tokens_BxL)
        if tokens_BxL.ndim != 2 or tokens_BxL.shape[1] == 0:
            raise ValueError(f"tokens shape={tokens_BxL.shape}: must be (batch, length) with length >= 1")
        L = tokens_BxL.shape[1]
        n_prunable = L if n_prunable is None else n_prunable
        if isinstance(n_prunable, bool) or not isinstance(n_prunable, int) or not 1 <= n_prunable <= L:
            raise ValueError(f"n_prunable={n_prunable!r}: must be an integer in [1, {L}] (leading prunable tokens)")
        return tokens_BxL, n_prunable

    def _check_plan(self, plan):
        if not isinstance(plan, PrunePlan):
            raise ValueError(f"plan={type(plan).__name__}: must be a nets PrunePlan")
        if len(plan.token_keep) != self.cfg.n_layers:
            raise ValueError(f"plan.token_keep: {len(plan.token_keep)} entries: must have one per layer "
                             f"(n_layers={self.cfg.n_layers})")

    # ---- hard mode ------------------------------------------------------------------------
    def __call__(self, tokens_BxL: Array, *, plan: PrunePlan, n_prunable: int | None = None,
                 _collect_cache: bool = False) -> tuple[Array, dict]:
        """Logits (batch, length, vocab) of the hard-pruned pass, and aux.

        aux: load_balance_loss; kept_positions (per layer, (batch, k_l) original positions
        alive after layer l); importance (per layer, (batch, T_l) accumulated importance of
        the tokens alive at layer l's attention, after adding its probabilities); head_masks (per layer, (batch, H), heads alive after layer l);
        lsb_rows / rows (recomputed and total attention rows, progressive quantization;
        their ratio is the fraction of rows that needed the LSBs); token_importance.
        """
        self._check_plan(plan)
        tokens_BxL, n_prunable = self._check_tokens(tokens_BxL, n_prunable)
        H = self.cfg.attention.n_heads
        B, L = tokens_BxL.shape
        pos_BxT = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
        x_full = self._embed(tokens_BxL, pos_BxT)
        x_BxTxD = x_full
        imp_BxT = jnp.zeros((B, L), jnp.float32)
        imp_BxH = jnp.zeros((B, H), jnp.float32)
        heads_BxH = jnp.ones((B, H), jnp.float32)
        batch_B1 = jnp.arange(B)[:, None]
        aux = {"kept_positions": [], "head_masks": [], "importance": [], "lsb_rows": jnp.zeros((), jnp.float32),
               "rows": jnp.zeros((), jnp.float32), "load_balance_loss": jnp.zeros((), jnp.float32)}
        layer_caches = []
        for layer, block in enumerate(self.blocks):
            T = x_BxTxD.shape[1]
            kv = _new_kv(block.attn, block.attn_norm(x_BxTxD), pos_BxT)
            if _collect_cache:
                layer_caches.append((kv, pos_BxT, heads_BxH))
            y, p, heads_out, recompute = _attend(
                block.attn, block.attn_norm(x_BxTxD), pos_BxT, kv, pos_BxT, jnp.ones((B, T), bool),
                head_w_BxH=heads_BxH, value_keep=plan.value_keep, progressive=plan.progressive)
            x_BxTxD = x_BxTxD + y
            prompt_BxT = (pos_BxT < n_prunable).astype(jnp.float32)
            imp_BxT = imp_BxT + token_importance(p, prompt_BxT, heads_BxH)
            imp_BxH = imp_BxH + head_importance(heads_out, prompt_BxT)
            aux["lsb_rows"] = aux["lsb_rows"] + jnp.sum(recompute * heads_BxH[:, :, None])
            aux["rows"] = aux["rows"] + jnp.sum(jnp.broadcast_to(heads_BxH[:, :, None], recompute.shape))
            aux["importance"].append(imp_BxT)
            k = kept_count(n_prunable, plan.token_keep[layer]) + (L - n_prunable)
            if k < T:
                idx_BxK = select_tokens(imp_BxT, k, protect_BxT=pos_BxT >= n_prunable)
                x_BxTxD, pos_BxT, imp_BxT = (gather_rows(x_BxTxD, idx_BxK), gather_rows(pos_BxT, idx_BxK),
                                             gather_rows(imp_BxT, idx_BxK))
            kh = kept_count(H, plan.head_keep[layer])
            if kh < H:
                heads_BxH = heads_BxH * head_mask(imp_BxH, kh, heads_BxH)
            f, balance = _ffn(block, x_BxTxD)
            x_BxTxD = x_BxTxD + f
            aux["load_balance_loss"] = aux["load_balance_loss"] + balance
            x_full = x_full.at[batch_B1, pos_BxT].set(x_BxTxD)
            aux["kept_positions"].append(pos_BxT)
            aux["head_masks"].append(heads_BxH)
        aux["token_importance"] = imp_BxT
        if _collect_cache:
            aux["_layer_caches"] = layer_caches
        return self._logits(x_full), aux

    # ---- soft mode (the relaxation) ------------------------------------------------------------
    def soft(self, tokens_BxL: Array, *, token_keep: Array, head_keep: Array, temperature: Array | float,
             n_prunable: int | None = None, value_keep: float = 1.0,
             progressive: ProgressiveQuant | None = None) -> tuple[Array, dict]:
        """Logits with soft token and head masks; `token_keep`/`head_keep` are (n_layers,) arrays (knobs).

        Layer l: keys enter the softmax with log m_{l-1}; after the attention the token mask
        becomes m_l = m_{l-1} * soft_keep_mask(importance, token_keep[l], temperature) (the
        rank key is importance * m_{l-1}, so pruned tokens rank last); a token's update from
        layer l (attention and FFN) is scaled by m_l, i.e. frozen once pruned. Heads alike
        with head_keep. aux: "token_keep" / "head_keep" (n_layers,) expected kept fractions
        (means of the masks over prunable tokens / heads; what a workload should read),
        lsb_rows, rows, load_balance_loss. The keep arrays are NOT made monotone here (a
        cascade is monotone by construction); see `monotone_keep`.
        """
        tokens_BxL, n_prunable = self._check_tokens(tokens_BxL, n_prunable)
        H, n = self.cfg.attention.n_heads, self.cfg.n_layers
        token_keep, head_keep = jnp.asarray(token_keep, jnp.float32), jnp.asarray(head_keep, jnp.float32)
        for name, arr in (("token_keep", token_keep), ("head_keep", head_keep)):
            if arr.shape != (n,):
                raise ValueError(f"{name} shape={arr.shape}: must be ({n},), one keep ratio per layer")
        B, L = tokens_BxL.shape
        pos_BxL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
        candidate_BxL = pos_BxL < n_prunable
        prompt_BxL = candidate_BxL.astype(jnp.float32)
        x = self._embed(tokens_BxL, pos_BxL)
        m_BxL = jnp.ones((B, L), jnp.float32)
        hm_BxH = jnp.ones((B, H), jnp.float32)
        imp_BxL = jnp.zeros((B, L), jnp.float32)
        imp_BxH = jnp.zeros((B, H), jnp.float32)
        token_fracs, head_fracs = [], []
        aux = {"lsb_rows": jnp.zeros((), jnp.float32), "rows": jnp.zeros((), jnp.float32),
               "load_balance_loss": jnp.zeros((), jnp.float32)}
        valid = jnp.ones((B, L), bool)
        for layer, block in enumerate(self.blocks):
            xn = block.attn_norm(x)
            kv = _new_kv(block.attn, xn, pos_BxL)
            log_m = jnp.log(jnp.maximum(m_BxL, 1e-30))
            y, p, heads_out, recompute = _attend(block.attn, xn, pos_BxL, kv, pos_BxL, valid, head_w_BxH=hm_BxH,
                                                 value_keep=value_keep, progressive=progressive,
                                                 key_log_mask_BxT=log_m)
            row_w = jax.lax.stop_gradient(m_BxL) * prompt_BxL
            imp_BxL = imp_BxL + token_importance(p, row_w, hm_BxH)
            imp_BxH = imp_BxH + head_importance(heads_out, row_w)
            aux["lsb_rows"] = aux["lsb_rows"] + jnp.sum(recompute * (hm_BxH[:, :, None] * m_BxL[:, None, :]))
            aux["rows"] = aux["rows"] + jnp.sum(hm_BxH[:, :, None] * m_BxL[:, None, :])
            rank_key = imp_BxL * jax.lax.stop_gradient(m_BxL)
            m_BxL = m_BxL * soft_keep_mask(rank_key, token_keep[layer], temperature, candidate_BxL, n_prunable)
            hm_BxH = hm_BxH * soft_head_mask(imp_BxH * jax.lax.stop_gradient(hm_BxH), head_keep[layer], temperature)
            f, balance = _ffn(block, x + y)
            x = x + m_BxL[..., None].astype(x.dtype) * (y + f)
            aux["load_balance_loss"] = aux["load_balance_loss"] + balance
            token_fracs.append(jnp.sum(m_BxL * prompt_BxL) / (B * n_prunable))
            head_fracs.append(jnp.mean(hm_BxH))
        aux["token_keep"] = jnp.stack(token_fracs)
        aux["head_keep"] = jnp.stack(head_fracs)
        return self._logits(x), aux

    # ---- decoding with a pruned cache --------------------------------------------------------
    def prefill(self, prompt_BxP: Array, *, plan: PrunePlan, max_new_tokens: int) -> tuple[Array, dict]:
        """Hard-pruned pass over the prompt (all prompt tokens prunable) and the pruned cache.

        `cache["layers"][l]`: the layer's cached K/V (or MLA latent + RoPE key) of the tokens
        alive at its attention, plus `max_new_tokens` empty slots; "pos" their positions,
        "heads" the head mask the layer used, "importance" their accumulated importance
        (decode steps keep adding to it); cache["n_prompt"] the prompt length (static).
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens={max_new_tokens!r}: must be a positive integer")
        if not self.cfg.causal:
            raise ValueError(f"causal={self.cfg.causal!r}: an encoder (bidirectional) model has no KV cache")
        logits, aux = self(prompt_BxP, plan=plan, _collect_cache=True)
        layers = []
        for kv, pos_BxT, heads_BxH in aux.pop("_layer_caches"):
            B, T = pos_BxT.shape
            pad = lambda a: jnp.concatenate([a, jnp.zeros((B, max_new_tokens) + a.shape[2:], a.dtype)], 1)  # noqa
            layers.append({"kv": {k: pad(v) for k, v in kv.items()}, "pos": pad(pos_BxT),
                           "heads": heads_BxH, "importance": jnp.zeros((B, T + max_new_tokens), jnp.float32),
                           "n_kept": jnp.asarray(T, jnp.int32)})
        return logits, {"layers": layers, "n_prompt": jnp.asarray(prompt_BxP.shape[1], jnp.int32),
                        "step": jnp.zeros((), jnp.int32)}

    def decode_step(self, token_B: Array, cache: dict, *, plan: PrunePlan) -> tuple[Array, dict]:
        """Logits (batch, vocab) of the next token after `token_B`, and the updated cache.

        The token (position n_prompt + step) passes every layer (never pruned) and attends
        to that layer's cached survivors plus the tokens generated so far.
        """
        self._check_plan(plan)
        token_B = jnp.asarray(token_B)
        B = token_B.shape[0]
        step = cache["step"]
        pos_Bx1 = jnp.broadcast_to(cache["n_prompt"] + step, (B, 1)).astype(jnp.int32)
        x = self._embed(token_B[:, None], pos_Bx1)
        new_layers = []
        for block, lc in zip(self.blocks, cache["layers"]):
            n_slots = lc["pos"].shape[1]
            slot = lc["n_kept"] + step
            xn = block.attn_norm(x)
            new = _new_kv(block.attn, xn, pos_Bx1)
            kv = {k: jax.lax.dynamic_update_slice_in_dim(lc["kv"][k], new[k].astype(lc["kv"][k].dtype), slot, axis=1)
                  for k in lc["kv"]}
            pos = jax.lax.dynamic_update_slice_in_dim(lc["pos"], pos_Bx1, slot, axis=1)
            valid = jnp.broadcast_to(jnp.arange(n_slots) <= slot, (B, n_slots))
            y, p, _, _ = _attend(block.attn, xn, pos_Bx1, kv, pos, valid, head_w_BxH=lc["heads"],
                                 value_keep=plan.value_keep, progressive=plan.progressive)
            x = x + y
            f, _ = _ffn(block, x)
            x = x + f
            new_layers.append(dict(lc, kv=kv, pos=pos,
                                   importance=lc["importance"] + token_importance(p, None, lc["heads"])))
        return self._logits(x)[:, 0], dict(cache, layers=new_layers, step=step + 1)


def monotone_keep(keep_L: Array) -> Array:
    """Cumulative minimum over layers (differentiable): what a cascade can actually keep."""
    return jax.lax.associative_scan(jnp.minimum, jnp.asarray(keep_L))
