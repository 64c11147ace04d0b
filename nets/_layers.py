"""Basic layers of `nets`: the norm chosen by a config, rotary position embedding, the dense MLP,
the embedding lookup.

Everything is Flax NNX; parameter shapes match `nets._params` exactly (a LayerNorm has a
scale and a bias, an RMSNorm a scale only, an MLP has biases iff `cfg.use_bias`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array

from nets._config import ModelConfig


def make_norm(cfg: ModelConfig, width: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
              param_dtype=jnp.float32) -> nnx.Module:
    """The normalisation `cfg.norm` over the last axis of width `width`.

    'rmsnorm' (Zhang & Sennrich 2019, eq. 4): x / sqrt(mean(x^2) + eps) * g, one scale vector.
    'layernorm' (Ba et al. 2016): (x - mean) / sqrt(var + eps) * g + b, a scale and a bias.
    """
    if cfg.norm == "rmsnorm":
        return nnx.RMSNorm(width, epsilon=cfg.norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    if cfg.norm == "layernorm":
        return nnx.LayerNorm(width, epsilon=cfg.norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    raise ValueError(f"norm={cfg.norm!r}: must be one of rmsnorm, layernorm")


def embed_lookup(embed: nnx.Embed, ids: Array) -> Array:
    """Rows `ids` of `embed`'s table, gathered in the table's (storage) dtype, then cast to its compute dtype.

    `nnx.Embed` casts the table first and gathers in the compute dtype, so with bfloat16 compute
    the backward pass is a bfloat16 scatter-add: GPUs have no native bf16 atomic add, XLA emits
    a compare-and-swap loop, and with many tokens per row (a byte vocabulary, positions) it
    serialises. Measured on an H100: one 17.6 ms scatter per step, a quarter of codesign-100m's
    16x1024 step. Gathering from the float32 table makes the backward a float32 scatter-add
    (native atomics) and the result is the same numbers: a row cast after the gather equals the
    row of the cast table.
    """
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"ids dtype={ids.dtype}: must be an integer type")
    rows = jnp.take(embed.embedding[...], ids, axis=0)
    return rows if embed.dtype is None else rows.astype(embed.dtype)


def rope_frequencies(dim: int, theta: float) -> Array:
    """Inverse frequencies theta^(-2i/dim), i = 0..dim/2-1 (Su et al., RoFormer, arXiv 2104.09864, eq. 15)."""
    if dim <= 0 or dim % 2:
        raise ValueError(f"rope dim={dim!r}: must be a positive even number")
    return 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))


def apply_rope(x_BxLxHxK: Array, positions_BxL: Array, theta: float) -> Array:
    """Rotate the last axis of `x` by its token positions (RoFormer eq. 34).

    Layout is "rotate-half" (GPT-NeoX / Llama in Hugging Face): dimension i is paired
    with i + K/2, not with its neighbour (the "interleaved" layout of the paper). The two
    are the same function up to a fixed permutation of the projection's output columns,
    so nothing is lost; rotate-half needs no strided gathers. Positions are passed
    explicitly so that cached decoding rotates a new token by its absolute position.
    The angles are computed in float32 whatever the dtype of `x`.
    """
    dim = x_BxLxHxK.shape[-1]
    angles_BxLxF = positions_BxL.astype(jnp.float32)[..., None] * rope_frequencies(dim, theta)
    cos_BxLx1xF = jnp.cos(angles_BxLxF)[:, :, None, :]
    sin_BxLx1xF = jnp.sin(angles_BxLxF)[:, :, None, :]
    x = x_BxLxHxK.astype(jnp.float32)
    x1, x2 = x[..., : dim // 2], x[..., dim // 2:]
    rotated = jnp.concatenate([x1 * cos_BxLx1xF - x2 * sin_BxLx1xF, x2 * cos_BxLx1xF + x1 * sin_BxLx1xF], axis=-1)
    return rotated.astype(x_BxLxHxK.dtype)


def activation_fn(name: str):
    """The elementwise nonlinearity of an FFN ('swiglu' gates with SiLU, Shazeer 2020, eq. 6)."""
    if name == "swiglu":
        return jax.nn.silu
    if name == "gelu":
        return jax.nn.gelu
    if name == "relu":
        return jax.nn.relu
    raise ValueError(f"ffn.activation={name!r}: must be one of swiglu, gelu, relu")


class MLP(nnx.Module):
    """Position-wise feed-forward network of hidden width `width`.

    SwiGLU (Shazeer, GLU Variants Improve Transformer, arXiv 2002.05202, eq. 6):
    down(silu(gate(x)) * up(x)), three matrices. GELU / ReLU: down(act(up(x))), two.
    `width` is a parameter (not read from the config) so that MoE experts and the dense
    FFN share this module.
    """

    def __init__(self, cfg: ModelConfig, width: int, *, use_bias: bool, rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32):
        if width <= 0:
            raise ValueError(f"mlp width={width!r}: must be a positive integer")
        activation_fn(cfg.ffn.activation)  # validates the name early
        self.activation = cfg.ffn.activation
        linear = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if self.activation == "swiglu":
            self.gate = nnx.Linear(cfg.d_model, width, **linear)
        self.up = nnx.Linear(cfg.d_model, width, **linear)
        self.down = nnx.Linear(width, cfg.d_model, **linear)

    def __call__(self, x_BxLxD: Array) -> Array:
        act = activation_fn(self.activation)
        if self.activation == "swiglu":
            h_BxLxF = act(self.gate(x_BxLxD)) * self.up(x_BxLxD)
        else:
            h_BxLxF = act(self.up(x_BxLxD))
        return self.down(h_BxLxF)
