"""The transformer of `nets`: a decoder LM (causal) or an encoder (bidirectional), Flax NNX.

token embedding (+ learned positions) -> n_layers pre-norm blocks -> final norm -> LM head
(the embedding transposed if `cfg.tie_embeddings`). A block is
    x = x + attention(norm(x));  x = x + ffn(norm(x))      (ffn: dense MLP or MoE)
(pre-norm as in GPT-2, Radford et al. 2019, section 2.3, and Llama).

Layers are STACKED and SCANNED. The layer kinds (`cfg.layer_kinds`) are split into
segments, each a short unit of kinds repeated: DeepSeek-V3 is (dense,) x 3 then
(moe,) x 58; GLaM's alternating layers are one segment (dense, moe) x 16. A segment's
parameters carry a leading repeat axis (built with `nnx.vmap`) and the segment runs
under `nnx.scan`, so a 61-layer model traces and compiles one unit per segment.
Per-layer inputs ride along the scan like the cache: `quant` (`nets.LayerQuant`, format
probabilities for the KV cache and activations of every layer) is cut per segment into
(repeats, unit_length, formats) rows.

Cache layout (`init_cache`): a tuple with one dict per segment; each array has shape
(repeats, unit_length, batch, slots, ...), slots = `nets.cache_slots(max_len)`, and holds
the per-layer cache of `nets._attention` for the layer `start + repeat*unit_length + position`.
A call with a cache carries each segment's stack through its scan; every layer writes its new
tokens into the stack in place (`nets._cache_slot.CacheSlot`), so a donated decode step copies
no cache.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array

from nets._attention import Attention, cache_shapes
from nets._cache_slot import CacheSlot
from nets._config import ModelConfig
from nets._layer_quant import LayerQuant
from nets._layers import MLP, embed_lookup, make_norm
from nets._sharding import constrain

# The residual stream's layout under `nets.sharding_rules`: split by batch, d_model whole on every shard.
_RESIDUAL = ("activation_batch", None, None)

Segment = tuple[tuple[str, ...], int]
_MAX_UNIT = 8


def layer_segments(cfg: ModelConfig) -> tuple[Segment, ...]:
    """Split `cfg.layer_kinds` into (unit, repeats) runs, covering the layers in order.

    Greedy: from the first uncovered layer, take the unit length (1.._MAX_UNIT) that
    repeats at least twice and covers the most layers (the shortest unit on ties); a
    layer that starts no repetition is a segment of its own.
    """
    kinds = cfg.layer_kinds
    segments: list[Segment] = []
    start = 0
    while start < len(kinds):
        best_unit, best_repeats = (kinds[start],), 1
        for length in range(1, min(_MAX_UNIT, len(kinds) - start) + 1):
            unit = kinds[start:start + length]
            repeats = 1
            while kinds[start + repeats * length:start + (repeats + 1) * length] == unit:
                repeats += 1
            if repeats >= 2 and repeats * length > best_repeats * len(best_unit):
                best_unit, best_repeats = unit, repeats
        segments.append((best_unit, best_repeats))
        start += best_repeats * len(best_unit)
    return tuple(segments)


class Block(nnx.Module):
    """One pre-norm transformer layer; `kind` 'dense' (MLP of width d_ff) or 'moe' (`nets.MoE`)."""

    def __init__(self, cfg: ModelConfig, kind: str, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                 kernels: dict | None = None):
        if kind not in ("dense", "moe"):
            raise ValueError(f"layer kind={kind!r}: must be dense or moe")
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.kind = kind
        self.attn_norm = make_norm(cfg, cfg.d_model, **kw)
        self.attn = Attention(cfg, **kw, **(kernels or {}))
        self.ffn_norm = make_norm(cfg, cfg.d_model, **kw)
        if kind == "moe":
            from nets.moe import MoE  # written alongside; imported here so dense models never need it
            self.ffn = MoE(cfg, **kw)
        else:
            self.ffn = MLP(cfg, cfg.ffn.d_ff, use_bias=cfg.use_bias, **kw)

    def __call__(self, x_BxLxD: Array, *, positions_BxL: Array, cache=None, cache_index=None,
                 quant: LayerQuant | None = None):
        """Returns (x, new cache or None, load-balance loss of this layer (0 if dense)).

        `quant` (this layer's row of a `LayerQuant`) fake-quantises the normalised inputs of
        attention and FFN and the keys/values; None leaves them in full precision.
        """
        act = (lambda h: h) if quant is None else quant.act
        h_BxLxD, new_cache = self.attn(act(self.attn_norm(x_BxLxD)), positions_BxL=positions_BxL, cache=cache,
                                       cache_index=cache_index, kv_quant=None if quant is None else quant.kv)
        x_BxLxD = x_BxLxD + h_BxLxD
        if self.kind == "moe":
            f_BxLxD, moe_aux = self.ffn(act(self.ffn_norm(x_BxLxD)))
            balance = jnp.asarray(moe_aux["load_balance_loss"], jnp.float32)
        else:
            f_BxLxD, balance = self.ffn(act(self.ffn_norm(x_BxLxD))), jnp.zeros((), jnp.float32)
        return constrain(x_BxLxD + f_BxLxD, _RESIDUAL), new_cache, balance


class _Unit(nnx.Module):
    """The layers of one repeat of a segment (e.g. GLaM's (dense, moe) pair)."""

    def __init__(self, cfg: ModelConfig, kinds: tuple[str, ...], *, rngs: nnx.Rngs, dtype, param_dtype, kernels=None):
        self.blocks = nnx.List([Block(cfg, k, rngs=rngs, dtype=dtype, param_dtype=param_dtype, kernels=kernels)
                                for k in kinds])

    def __call__(self, x_BxLxD, *, positions_BxL, cache, cache_index, quant=None, repeat=None):
        """(x, cache, balance). With `cache` (the segment's whole stack, this unit being number `repeat`),
        each layer writes its new tokens into the stack in place (`nets._cache_slot`) and the stack is returned."""
        balance = jnp.zeros((), jnp.float32)
        for j, block in enumerate(self.blocks):
            slot = None if cache is None else CacheSlot(cache, repeat, j)
            x_BxLxD, slot, layer_balance = block(x_BxLxD, positions_BxL=positions_BxL, cache=slot,
                                                 cache_index=cache_index, quant=None if quant is None else quant.at(j))
            cache = None if slot is None else slot.stack
            balance = balance + layer_balance
        return x_BxLxD, cache, balance


def _stacked_unit(cfg: ModelConfig, kinds: tuple[str, ...], repeats: int, *, rngs: nnx.Rngs, dtype, param_dtype,
                  kernels=None):
    """`repeats` independently initialised units, parameters stacked on a leading axis."""

    @nnx.split_rngs(splits=repeats)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(unit_rngs: nnx.Rngs) -> _Unit:
        return _Unit(cfg, kinds, rngs=unit_rngs, dtype=dtype, param_dtype=param_dtype, kernels=kernels)

    return create(rngs)


# What the backward pass keeps of a layer's forward (jax.checkpoint_policies); the rest is recomputed.
REMAT_POLICIES = {
    "none": None,  # keep everything the backward pass needs (fastest, most memory)
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep the weight matmuls' outputs
    "full": jax.checkpoint_policies.nothing_saveable,  # keep only each layer's input; recompute the layer
}


def _unit_call(x_BxLxD, unit: _Unit, positions_BxL, quant):
    x_BxLxD, _, balance = unit(x_BxLxD, positions_BxL=positions_BxL, cache=None, cache_index=None, quant=quant)
    return x_BxLxD, balance


def _cached_unit_call(carry, unit: _Unit, repeat, positions_BxL, cache_index, quant):
    x_BxLxD, cache = carry
    x_BxLxD, cache, balance = unit(x_BxLxD, positions_BxL=positions_BxL, cache=cache, cache_index=cache_index,
                                   quant=quant, repeat=repeat)
    return (x_BxLxD, cache), balance


@functools.cache
def _segment_runner(remat: str):
    """The scan over a segment's stacked units, each unit under the rematerialisation policy `remat`."""
    body = _unit_call
    if remat != "none":
        body = nnx.remat(_unit_call, policy=REMAT_POLICIES[remat], prevent_cse=False)  # inside scan: no CSE risk
    return nnx.scan(body, in_axes=(nnx.Carry, 0, None, 0), out_axes=(nnx.Carry, 0))


@functools.cache
def _cached_segment_runner():
    """The scan of a call with a cache: the segment's stacked cache rides in the carry, so each unit writes its
    new tokens into it in place (`nets._cache_slot`) instead of the scan slicing it in and stacking it out."""
    return nnx.scan(_cached_unit_call, in_axes=(nnx.Carry, 0, 0, None, None, 0), out_axes=(nnx.Carry, 0))


class TransformerLM(nnx.Module):
    """Decoder LM (`cfg.causal`) or bidirectional encoder built from a `ModelConfig`.

    `dtype` is the compute dtype, `param_dtype` the storage dtype of the parameters.
    How it is computed, never what: `remat` (a key of `REMAT_POLICIES`) is what the backward
    pass keeps of each layer; `attention` and `decode_attention` pick the attention kernels of
    cache-free and one-token cached calls (`nets._sdpa`, `nets._decode`; None: their
    environment variables, else the fastest path that applies).
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                 remat: str = "none", attention: str | None = None, decode_attention: str | None = None):
        if not isinstance(cfg, ModelConfig):
            raise ValueError(f"cfg={cfg!r}: must be a nets.ModelConfig")
        if remat not in REMAT_POLICIES:
            raise ValueError(f"remat={remat!r}: must be one of {', '.join(REMAT_POLICIES)}")
        from nets._decode import DECODE_IMPLEMENTATIONS
        from nets._sdpa import ATTENTION_IMPLEMENTATIONS

        for name, value, allowed in (("attention", attention, ATTENTION_IMPLEMENTATIONS),
                                     ("decode_attention", decode_attention, DECODE_IMPLEMENTATIONS)):
            if value is not None and value not in allowed:
                raise ValueError(f"{name}={value!r}: must be one of {', '.join(allowed)} (or None)")
        self.cfg = cfg
        self.dtype = dtype
        self.remat = remat
        kernels = {"implementation": attention, "decode_implementation": decode_attention}
        self.segments_plan = layer_segments(cfg)
        embed_init = nnx.initializers.normal(stddev=0.02)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.embed = nnx.Embed(cfg.vocab_size, cfg.d_model, embedding_init=embed_init, **kw)
        if cfg.positions == "learned":
            self.pos_embed = nnx.Embed(cfg.max_seq_len, cfg.d_model, embedding_init=embed_init, **kw)
        self.segments = nnx.List([_stacked_unit(cfg, kinds, repeats, rngs=rngs, dtype=dtype, param_dtype=param_dtype,
                                                kernels=kernels) for kinds, repeats in self.segments_plan])
        self.final_norm = make_norm(cfg, cfg.d_model, **kw)
        if not cfg.tie_embeddings:
            self.lm_head = nnx.Linear(cfg.d_model, cfg.vocab_size, use_bias=False, **kw)

    def __call__(self, tokens_BxL: Array, *, cache=None, cache_index=None,
                 quant: LayerQuant | None = None) -> tuple[Array, dict]:
        """Logits (batch, length, vocab) and aux {"load_balance_loss": summed over MoE layers, "cache"}.

        With `cache` (from `init_cache`) the tokens are positions cache_index ..
        cache_index+length-1 and the returned aux["cache"] has them written in; `cache_index` is a
        scalar, or one position per sequence (batch,), so sequences at different positions share a call.
        `quant` (`nets.LayerQuant`) fake-quantises KV and activations per layer.
        """
        cfg = self.cfg
        B, L = tokens_BxL.shape
        if quant is not None:
            if not isinstance(quant, LayerQuant):
                raise ValueError(f"quant={type(quant).__name__}: must be a nets.LayerQuant or None")
            quant.check(cfg.n_layers)
        if cache is not None:
            if not cfg.causal:
                raise ValueError(f"causal={cfg.causal!r}: an encoder (bidirectional) model takes no KV cache")
            if cache_index is None:
                raise ValueError("cache_index=None: required when a cache is given")
            if len(cache) != len(self.segments_plan):
                raise ValueError(f"cache: has {len(cache)} segments, the model has {len(self.segments_plan)}")
        if cache is None and cfg.positions == "learned" and L > cfg.max_seq_len:
            raise ValueError(f"tokens length={L}: must be at most max_seq_len={cfg.max_seq_len} (learned positions)")
        start = jnp.zeros((), jnp.int32) if cache is None else jnp.asarray(cache_index, jnp.int32)
        if start.ndim and start.shape != (B,):
            raise ValueError(f"cache_index shape={start.shape}: must be a scalar or one position per sequence "
                             f"(batch={B},)")
        positions_BxL = jnp.broadcast_to(start[..., None] + jnp.arange(L, dtype=jnp.int32), (B, L))
        x_BxLxD = embed_lookup(self.embed, tokens_BxL)
        if cfg.positions == "learned":
            x_BxLxD = x_BxLxD + embed_lookup(self.pos_embed, positions_BxL)
        x_BxLxD = constrain(x_BxLxD, _RESIDUAL)
        new_cache, balance, first = [], jnp.zeros((), jnp.float32), 0
        for i, segment in enumerate(self.segments):
            kinds, repeats = self.segments_plan[i]
            seg_quant = None if quant is None else quant.segment(first, repeats, len(kinds))
            first += repeats * len(kinds)
            if cache is None:
                x_BxLxD, seg_balance = _segment_runner(self.remat)(x_BxLxD, segment, positions_BxL, seg_quant)
            else:
                (x_BxLxD, seg_cache), seg_balance = _cached_segment_runner()(
                    (x_BxLxD, cache[i]), segment, jnp.arange(repeats, dtype=jnp.int32), positions_BxL, start,
                    seg_quant)
                new_cache.append(seg_cache)
            balance = balance + seg_balance.sum()
        x_BxLxD = self.final_norm(x_BxLxD)
        logits_BxLxV = self.embed.attend(x_BxLxD) if cfg.tie_embeddings else self.lm_head(x_BxLxD)
        logits_BxLxV = constrain(logits_BxLxV, ("activation_batch", None, "activation_vocab"))
        return logits_BxLxV, {"load_balance_loss": balance, "cache": None if cache is None else tuple(new_cache)}


def init_cache(model_or_cfg: TransformerLM | ModelConfig, batch: int, max_len: int, dtype=None) -> tuple:
    """An empty KV cache for `batch` sequences of up to `max_len` tokens (layout: module docstring).

    It holds `nets.cache_slots(max_len)` slots (rounded up so decode kernels can tile it); the
    slots past those written are masked, so the outputs are those of an exact-length cache.

    dtype defaults to the model's compute dtype (float32 for a config); a 1-byte dtype
    (e.g. jnp.float8_e4m3fn) gives the 8-bit cache of the Step-3 paper's tables.
    """
    cfg = model_or_cfg.cfg if isinstance(model_or_cfg, TransformerLM) else model_or_cfg
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"model_or_cfg={model_or_cfg!r}: must be a TransformerLM or a nets.ModelConfig")
    if dtype is None:
        dtype = model_or_cfg.dtype if isinstance(model_or_cfg, TransformerLM) else jnp.float32
    for name, value in (("batch", batch), ("max_len", max_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name}={value!r}: must be a positive integer")
    if not cfg.causal:
        raise ValueError(f"causal={cfg.causal!r}: an encoder (bidirectional) model has no KV cache")
    if cfg.positions == "learned" and max_len > cfg.max_seq_len:
        raise ValueError(f"max_len={max_len}: must be at most max_seq_len={cfg.max_seq_len} with learned positions")
    shapes = cache_shapes(cfg, batch, max_len)
    return tuple({k: jnp.zeros((repeats, len(kinds)) + s, dtype) for k, s in shapes.items()}
                 for kinds, repeats in layer_segments(cfg))


def param_count(model: nnx.Module) -> int:
    """Number of scalars in the model's `nnx.Param` leaves (works on `nnx.eval_shape` output too)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


def generate(model: TransformerLM, prompt_BxL: Array, max_new_tokens: int, *, key: Array,
             temperature: float = 0.0) -> Array:
    """Continue `prompt` by `max_new_tokens` tokens; returns (batch, prompt_length + max_new_tokens).

    The prompt is prefilled once into a cache of the needed length (rounded up, `nets.cache_slots`), then tokens
    are decoded one at a time inside a `jax.lax.scan` (one compiled program for all
    steps). temperature 0 picks the argmax (greedy); otherwise tokens are sampled from
    softmax(logits / temperature) with key `fold_in(key, step)` at step `step`.
    """
    cfg = model.cfg
    if not cfg.causal:
        raise ValueError(f"causal={cfg.causal!r}: an encoder (bidirectional) model cannot generate")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: must be a positive integer")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"temperature={temperature!r}: must be a number >= 0 (0 = greedy)")
    prompt_BxL = jnp.asarray(prompt_BxL)
    if prompt_BxL.ndim != 2 or prompt_BxL.shape[1] == 0:
        raise ValueError(f"prompt shape={prompt_BxL.shape}: must be (batch, length) with length >= 1")
    total = prompt_BxL.shape[1] + max_new_tokens
    if cfg.positions == "learned" and total > cfg.max_seq_len:
        raise ValueError(f"max_new_tokens={max_new_tokens}: prompt + new tokens = {total} exceeds "
                         f"max_seq_len={cfg.max_seq_len} (learned positions)")
    graphdef, state = nnx.split(model)
    return _generate(graphdef, state, prompt_BxL, key, jnp.asarray(temperature, jnp.float32),
                     max_new_tokens=max_new_tokens, greedy=temperature == 0)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("max_new_tokens", "greedy"))
def _generate(graphdef, state, prompt_BxL, key, temperature, *, max_new_tokens: int, greedy: bool):
    B, L = prompt_BxL.shape

    def pick(logits_BxV, step):
        if greedy:
            return jnp.argmax(logits_BxV, axis=-1).astype(prompt_BxL.dtype)
        scaled = logits_BxV.astype(jnp.float32) / temperature
        return jax.random.categorical(jax.random.fold_in(key, step), scaled, axis=-1).astype(prompt_BxL.dtype)

    model = nnx.merge(graphdef, state)
    cache = init_cache(model, B, L + max_new_tokens)
    logits_BxLxV, aux = model(prompt_BxL, cache=cache, cache_index=0)
    first_B = pick(logits_BxLxV[:, -1], 0)

    def decode(carry, step):
        # The state rides in the carry (unchanged) so that the merged module's variables
        # belong to this trace level, as nnx transforms require.
        token_B, cache, step_state = carry
        step_model = nnx.merge(graphdef, step_state)
        logits_Bx1xV, step_aux = step_model(token_B[:, None], cache=cache, cache_index=L + step)
        return (pick(logits_Bx1xV[:, 0], step + 1), step_aux["cache"], step_state), token_B

    (last_B, _, _), tokens_NxB = jax.lax.scan(decode, (first_B, aux["cache"], state),
                                              jnp.arange(max_new_tokens - 1))
    return jnp.concatenate([prompt_BxL, tokens_NxB.T, last_B[:, None]], axis=1)
