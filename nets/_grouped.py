"""One grouped matrix product for the routed experts, on the fastest correct path per backend.

    out[n] = lhs[n] @ rhs[g(n)]     lhs (N, K), rhs (G, K, M), group_sizes (G,) -> out (N, M)

where the rows of `lhs` are sorted by group: rows [sum(sizes[:g]), sum(sizes[:g+1])) use
`rhs[g]` (rows past sum(sizes) give zeros). Every implementation computes exactly this
function, forward and both gradients (d lhs and d rhs; the integer sizes get none):

  reference      `jax.lax.ragged_dot` with XLA's own lowering. Exact on every backend;
                 on GPU XLA (jax 0.10-0.11) expands it into dense zero-padded matmuls,
                 about G times the useful FLOPs.
  pallas_triton  GPU (compute capability >= 8.0): the Pallas-Triton grouped kernels that
                 jax ships for its optional `ragged_dot` lowering (`gmm` for the forward
                 and d lhs with the transposed weight, `tgmm` for d rhs), called directly
                 through a custom VJP with block sizes chosen here. Calling them directly
                 scopes the choice to this function; the global flag
                 `jax_ragged_dot_use_gpu_pallas_triton_lowering` would act on every
                 `ragged_dot` of the program, and only where it is set around the
                 outermost `jit`.
  megablox       TPU: `jax.experimental.pallas.ops.tpu.megablox.gmm` (its own custom VJP,
                 `tgmm` for d rhs); rows padded to the row tile. Tested in Pallas interpret
                 mode on CPU; no TPU timing exists for it here.

`implementation=None` reads the environment variable CODESIGN_GROUPED_MATMUL (one of
"auto", "reference", "pallas_triton", "megablox"; unset means "auto"); "auto" takes the
backend's kernel where it exists and `reference` elsewhere (CPU). The choice is made at
trace time, so a jitted caller compiles one program per choice.
"""

from __future__ import annotations

import functools
import os
from typing import Callable

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["IMPLEMENTATIONS", "grouped_matmul", "resolve_implementation"]

ENV_VAR = "CODESIGN_GROUPED_MATMUL"
IMPLEMENTATIONS = ("auto", "reference", "pallas_triton", "megablox")

# Pallas-Triton tiles (rows, contraction, columns) for bf16 on Hopper; measured per shape by
# scripts/bench/moe_grouped.py, which sweeps them (results/gpu_speed/).
TRITON_BLOCKS = (128, 64, 128)
MEGABLOX_ROW_TILE = 128


def _triton_kernels():
    """jax's Pallas-Triton gmm/tgmm, or None where this jax does not ship them."""
    try:
        from jax._src.lax.pallas_lowerings.gpu import ragged_dot as triton_ragged_dot
    except ImportError:
        return None
    return triton_ragged_dot


def _gpu_supports_triton() -> bool:
    if jax.default_backend() != "gpu" or _triton_kernels() is None:
        return False
    capability = getattr(jax.devices()[0], "compute_capability", "0.0")
    return tuple(int(part) for part in str(capability).split(".")[:2]) >= (8, 0)


def resolve_implementation(implementation: str | None = None) -> str:
    """The implementation a call will use: the argument, else CODESIGN_GROUPED_MATMUL, with "auto" resolved."""
    name = implementation
    source = "implementation"
    if name is None:
        name, source = os.environ.get(ENV_VAR, "auto") or "auto", ENV_VAR
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"{source}={name!r}: must be one of {', '.join(IMPLEMENTATIONS)}")
    if name != "auto":
        return name
    backend = jax.default_backend()
    if backend == "gpu" and _gpu_supports_triton():
        return "pallas_triton"
    if backend == "tpu":
        return "megablox"
    return "reference"


# ---- Pallas-Triton (GPU) ---------------------------------------------------------------
def triton_grouped_matmul(blocks: tuple[int, int, int] = TRITON_BLOCKS, *, interpret: bool = False,
                          kernels=None) -> Callable[[Array, Array, Array], Array]:
    """A differentiable (lhs, rhs, group_sizes) -> out over Pallas-Triton kernels with tiles `blocks`.

    `kernels` (an object with `gmm` and `tgmm` of jax's signatures) replaces jax's own, so
    that the custom VJP's wiring can be tested against plain jnp twins on any backend.
    """
    return _triton_vjp(tuple(blocks), interpret, kernels)


@functools.lru_cache(maxsize=None)
def _triton_vjp(blocks, interpret, kernels):
    k = kernels or _triton_kernels()
    if k is None:
        raise ValueError(f"{ENV_VAR}='pallas_triton': this jax {jax.__version__} ships no Pallas-Triton "
                         "grouped kernels (jax._src.lax.pallas_lowerings.gpu.ragged_dot)")
    block_m, block_k, block_n = blocks

    def gmm(lhs, rhs, sizes, trans_rhs=False):
        return k.gmm(lhs, rhs, sizes, block_m=block_m, block_k=block_k, block_n=block_n, trans_rhs=trans_rhs,
                     interpret=interpret)

    @jax.custom_vjp
    def grouped(lhs, rhs, sizes):
        return gmm(lhs, rhs, sizes)

    def fwd(lhs, rhs, sizes):
        return gmm(lhs, rhs, sizes), (lhs, rhs, sizes)

    def bwd(residuals, d_out):
        lhs, rhs, sizes = residuals
        d_out = d_out.astype(lhs.dtype)
        d_lhs = gmm(d_out, rhs, sizes, trans_rhs=True)  # d_out[n] @ rhs[g(n)]^T
        # d rhs[g] = sum over the rows n of group g of lhs[n]^T d_out[n]
        d_rhs = k.tgmm(lhs, d_out, sizes, block_m=block_m, block_n=block_n, block_k=block_k, interpret=interpret)
        return d_lhs.astype(lhs.dtype), d_rhs.astype(rhs.dtype), None

    grouped.defvjp(fwd, bwd)
    return grouped


# ---- megablox (TPU) --------------------------------------------------------------------
def megablox_grouped_matmul(lhs: Array, rhs: Array, group_sizes: Array, *, interpret: bool = False) -> Array:
    """megablox `gmm` (TPU kernel, or Pallas interpret mode) with the rows padded to its row tile."""
    from jax.experimental.pallas.ops.tpu.megablox import ops as megablox

    n_rows, tile = lhs.shape[0], MEGABLOX_ROW_TILE
    padded = -(-n_rows // tile) * tile
    lhs_padded = jnp.pad(lhs, ((0, padded - n_rows), (0, 0)))  # extra rows belong to no group
    tiling = (tile, min(128, lhs.shape[1]), min(128, rhs.shape[2]))
    out = megablox.gmm(lhs_padded, rhs, group_sizes.astype(jnp.int32), lhs.dtype, tiling, None, None, False,
                       interpret)
    return out[:n_rows]


# ---- the one entry point ---------------------------------------------------------------
def grouped_matmul(lhs_NxK: Array, rhs_GxKxM: Array, group_sizes_G: Array, *,
                   implementation: str | None = None) -> Array:
    """out[n] = lhs[n] @ rhs[g(n)] for rows sorted by group (see the module docstring); (N, M) in lhs's dtype."""
    if lhs_NxK.ndim != 2 or rhs_GxKxM.ndim != 3 or lhs_NxK.shape[1] != rhs_GxKxM.shape[1]:
        raise ValueError(f"lhs shape={tuple(lhs_NxK.shape)}, rhs shape={tuple(rhs_GxKxM.shape)}: must be "
                         "(N, K) and (G, K, M) with the same K")
    if group_sizes_G.shape != (rhs_GxKxM.shape[0],):
        raise ValueError(f"group_sizes shape={tuple(group_sizes_G.shape)}: must be (G,)=({rhs_GxKxM.shape[0]},)")
    name = resolve_implementation(implementation)
    if name == "pallas_triton":
        return triton_grouped_matmul()(lhs_NxK, rhs_GxKxM, group_sizes_G.astype(jnp.int32))
    if name == "megablox":
        return megablox_grouped_matmul(lhs_NxK, rhs_GxKxM, group_sizes_G, interpret=jax.default_backend() != "tpu")
    return jax.lax.ragged_dot(lhs_NxK, rhs_GxKxM, group_sizes_G)
