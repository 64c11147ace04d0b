"""Which fused kernel computes softmax(q k^T * scale) v for training and cache-free prefill.

The einsum form in `nets._attention` is the reference and runs everywhere. Where it can,
the attention module hands the product to `jax.nn.dot_product_attention` instead, which
takes grouped keys/values directly (n_heads a multiple of n_kv_heads: MHA, GQA, and MFA's
single K/V head) in the (batch, length, heads, head_dim) layout the module already uses:

  cudnn   cuDNN's fused flash attention (GPU): bf16/fp16 operands, head_dim a multiple of
          8 and at most 128, causal or unmasked, the queries and keys the same tokens
          (no cache). Forward and backward are fused; the scores never reach HBM.
  xla     the same call with XLA's own lowering: no speed-up, used to test the plumbing
          (layout, grouping, scale, causal mask) on CPU against the einsum path.
  einsum  the reference (returned as None by `fused_attention`: the caller keeps its path).

`implementation=None` reads CODESIGN_ATTENTION ("auto", "einsum", "xla", "cudnn"; unset
means "auto"): "auto" takes cudnn where every condition above holds on a GPU, else einsum.
Forcing "cudnn" where a condition fails raises a ValueError naming it. MLA (value head
dim differs from the query's) and any call with a KV cache keep the einsum path.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["ATTENTION_IMPLEMENTATIONS", "attention_implementation", "fused_attention"]

ENV_VAR = "CODESIGN_ATTENTION"
ATTENTION_IMPLEMENTATIONS = ("auto", "einsum", "xla", "cudnn")
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def _cudnn_refusal(dtype, head_dim: int, value_head_dim: int, cached: bool) -> str | None:
    """Why cuDNN's fused attention cannot take this call (None: it can)."""
    if jax.default_backend() != "gpu":
        return f"backend={jax.default_backend()!r}: cuDNN runs on GPU only"
    if jnp.dtype(dtype) not in [jnp.dtype(d) for d in _CUDNN_DTYPES]:
        return f"dtype={jnp.dtype(dtype).name!r}: cuDNN attention takes bfloat16 or float16"
    if head_dim % 8 or head_dim > 128:
        return f"head_dim={head_dim}: cuDNN attention needs a multiple of 8 up to 128"
    if value_head_dim != head_dim:
        return f"value head_dim={value_head_dim}: must equal the query/key head_dim={head_dim}"
    if cached:
        return "cache: a call with a KV cache keeps the einsum path"
    return None


def attention_implementation(dtype, head_dim: int, value_head_dim: int, cached: bool,
                             implementation: str | None = None) -> str:
    """The implementation a call with these properties uses: "einsum", "xla" or "cudnn"."""
    name, source = implementation, "implementation"
    if name is None:
        name, source = os.environ.get(ENV_VAR, "auto") or "auto", ENV_VAR
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"{source}={name!r}: must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)}")
    refusal = _cudnn_refusal(dtype, head_dim, value_head_dim, cached)
    if name == "auto":
        return "einsum" if refusal else "cudnn"
    if name == "cudnn" and refusal:
        raise ValueError(f"{source}='cudnn' cannot run here: {refusal}")
    if name == "xla" and (cached or value_head_dim != head_dim):
        return "einsum"
    return name


def fused_attention(q_BxLxHxK: Array, k_BxTxNxK: Array, v_BxTxNxK: Array, *, causal: bool, scale: float,
                    cached: bool = False, implementation: str | None = None) -> Array | None:
    """softmax(q k^T * scale) v (B, L, H, K) through the chosen fused kernel, or None for the einsum path."""
    name = attention_implementation(q_BxLxHxK.dtype, q_BxLxHxK.shape[-1], v_BxTxNxK.shape[-1], cached,
                                    implementation)
    if name == "einsum":
        return None
    return jax.nn.dot_product_attention(q_BxLxHxK, k_BxTxNxK, v_BxTxNxK, scale=scale, is_causal=causal,
                                        implementation=name)
