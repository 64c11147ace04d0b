"""`nets.grouped`: one grouped matrix product for the routed experts, on the fastest correct path per backend.

    out[n] = lhs[n] @ rhs[g(n)]     lhs (N, K), rhs (G, K, M), group_sizes (G,) -> out (N, M)

where the rows of `lhs` are sorted by group: rows [sum(sizes[:g]), sum(sizes[:g+1])) use
`rhs[g]`. Every implementation computes this function, forward and both gradients
(d lhs[n] = d out[n] @ rhs[g(n)]^T, d rhs[g] = sum over g's rows of lhs[n]^T d out[n]; the
integer sizes get none):

  reference      `jax.lax.ragged_dot` with XLA's own lowering. Exact on every backend;
                 on GPU XLA (jax 0.10-0.11) expands it into dense zero-padded matmuls,
                 about G times the useful FLOPs (H100, jax 0.11.2, measured: 65536 rows,
                 768 -> 384, 8 groups: 2.84 ms forward+backward, 41 TFLOP/s of useful work).
  mosaic_gpu     Hopper GPUs (compute capability 9.x), bf16/fp16: the Pallas Mosaic-GPU
                 kernels jax ships in `jax.experimental.pallas.ops.gpu` (`ragged_dot_mgpu`
                 for the forward and, on the transposed weight, d lhs; `transposed_ragged_dot_mgpu`
                 for d rhs), joined by a custom VJP here. wgmma tiles need K a multiple of
                 64 and M, K multiples of 64 for the output tiles; other shapes take `reference`.
  pallas_triton  GPUs (compute capability >= 8.0) on a jax that ships the Pallas-Triton
                 grouped kernels of its optional `ragged_dot` lowering
                 (`jax._src.lax.pallas_lowerings.gpu.ragged_dot`: gmm, tgmm; absent from
                 jax 0.10.2 and 0.11.2). Called directly, so the choice stays scoped to this
                 function (the global flag `jax_ragged_dot_use_gpu_pallas_triton_lowering`
                 acts on every ragged_dot of a program, only when set around the outer jit).
  megablox       TPU: `jax.experimental.pallas.ops.tpu.megablox.gmm` (its own custom VJP),
                 rows padded to the row tile. Tested in Pallas interpret mode on CPU; not
                 timed on a TPU here.

`implementation=None` reads the environment variable CODESIGN_GROUPED_MATMUL (one of
IMPLEMENTATIONS; unset means "auto"); "auto" takes the backend's fastest kernel that can
take the shapes and dtype, `reference` elsewhere (CPU). The choice is made at trace time,
so a jitted caller compiles one program per choice.

`grouped_matmul` is the entry point (`nets.MoE` calls it); the kernels are also public one by one
(`mosaic_grouped_matmul`, `triton_grouped_matmul`, `megablox_grouped_matmul`, with their tile
settings), so tests and benchmarks can compare and time each against the reference.
"""

from __future__ import annotations

import functools
import os
from typing import Callable

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["IMPLEMENTATIONS", "ENV_VAR", "grouped_matmul", "resolve_implementation", "mosaic_refusal",
           "triton_kernels_available", "grouped_vjp", "mosaic_grouped_matmul", "triton_grouped_matmul",
           "megablox_grouped_matmul", "MOSAIC_FORWARD", "MOSAIC_TRANSPOSED", "TRITON_BLOCKS"]

ENV_VAR = "CODESIGN_GROUPED_MATMUL"
IMPLEMENTATIONS = ("auto", "reference", "mosaic_gpu", "pallas_triton", "megablox")

# Pallas-Triton tiles (rows, contraction, columns).
TRITON_BLOCKS = (128, 64, 128)
MEGABLOX_ROW_TILE = 128
# Mosaic-GPU tiles. Forward/d lhs: (block_m, block_k, max_concurrent_steps); block_n is the
# widest of MOSAIC_BLOCK_N dividing the output width. The fastest of a sweep on an H100
# (scripts/bench/gpu_speed.py, results/gpu_speed/) at 65536 rows x 768 <-> 384.
MOSAIC_FORWARD = (128, 64, 3)
MOSAIC_BLOCK_N = (192, 128, 64)
# d rhs (transposed kernel): (block_m, block_n, block_k over the rows, max_concurrent_steps).
MOSAIC_TRANSPOSED = (128, 128, 64, 4)

GroupedFn = Callable[[Array, Array, Array], Array]


def _capability() -> tuple[int, int]:
    capability = getattr(jax.devices()[0], "compute_capability", "0.0")
    return tuple(int(part) for part in str(capability).split(".")[:2])


def _triton_kernels():
    """jax's Pallas-Triton gmm/tgmm, or None where this jax does not ship them."""
    try:
        from jax._src.lax.pallas_lowerings.gpu import ragged_dot as triton_ragged_dot
    except ImportError:
        return None
    return triton_ragged_dot


def triton_kernels_available() -> bool:
    """Whether this jax ships the Pallas-Triton grouped kernels (`triton_grouped_matmul` can run)."""
    return _triton_kernels() is not None


def _mosaic_kernels():
    """jax's Mosaic-GPU (Hopper) ragged_dot and transposed_ragged_dot modules, or None."""
    try:
        from jax.experimental.pallas.ops.gpu import ragged_dot_mgpu, transposed_ragged_dot_mgpu
    except ImportError:
        return None
    return ragged_dot_mgpu, transposed_ragged_dot_mgpu


def _tile(width: int, options: tuple[int, ...] = MOSAIC_BLOCK_N) -> int:
    """The widest tile in `options` that divides `width` (the last option where none does)."""
    return next((b for b in options if width % b == 0), options[-1])


def mosaic_refusal(lhs_shape, rhs_shape, dtype) -> str | None:
    """Why the Mosaic-GPU kernels cannot take this product (None: they can)."""
    if jax.default_backend() != "gpu" or _capability()[0] != 9:
        return "the Mosaic-GPU grouped kernels need a Hopper GPU (compute capability 9.x)"
    if _mosaic_kernels() is None:
        return f"this jax {jax.__version__} ships no Mosaic-GPU ragged_dot kernels"
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return f"dtype={jnp.dtype(dtype).name!r}: the Mosaic-GPU kernels take bfloat16 or float16"
    k, m = lhs_shape[1], rhs_shape[2]
    if k % 64 or m % 64:
        return f"K={k}, M={m}: the Mosaic-GPU kernels need both multiples of 64"
    return None


def resolve_implementation(implementation: str | None = None, lhs_shape=None, rhs_shape=None, dtype=None) -> str:
    """The implementation a call uses: the argument, else CODESIGN_GROUPED_MATMUL, with "auto" resolved.

    With shapes and dtype given, "auto" also checks that the kernel can take them.
    """
    name, source = implementation, "implementation"
    if name is None:
        name, source = os.environ.get(ENV_VAR, "auto") or "auto", ENV_VAR
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"{source}={name!r}: must be one of {', '.join(IMPLEMENTATIONS)}")
    if name != "auto":
        return name
    backend = jax.default_backend()
    if backend == "gpu":
        fits = lhs_shape is None or mosaic_refusal(lhs_shape, rhs_shape, dtype) is None
        if _capability()[0] == 9 and _mosaic_kernels() is not None and fits:
            return "mosaic_gpu"
        if _capability() >= (8, 0) and _triton_kernels() is not None:
            return "pallas_triton"
    if backend == "tpu":
        return "megablox"
    return "reference"


# ---- one custom VJP over three kernels ----------------------------------------------------
def grouped_vjp(forward: GroupedFn, transposed_rhs: GroupedFn, weight_grad: GroupedFn) -> GroupedFn:
    """A differentiable (lhs, rhs, sizes) -> out from three grouped kernels.

    forward(lhs, rhs, sizes) = out; transposed_rhs(d_out, rhs, sizes)[n] = d_out[n] @ rhs[g(n)]^T;
    weight_grad(lhs, d_out, sizes)[g] = sum over g's rows of lhs[n]^T d_out[n].
    """
    @jax.custom_vjp
    def grouped(lhs, rhs, sizes):
        return forward(lhs, rhs, sizes)

    def fwd(lhs, rhs, sizes):
        return forward(lhs, rhs, sizes), (lhs, rhs, sizes)

    def bwd(residuals, d_out):
        lhs, rhs, sizes = residuals
        d_out = d_out.astype(lhs.dtype)
        return (transposed_rhs(d_out, rhs, sizes).astype(lhs.dtype), weight_grad(lhs, d_out, sizes).astype(rhs.dtype),
                None)

    grouped.defvjp(fwd, bwd)
    return grouped


# ---- Mosaic GPU (Hopper) ------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def mosaic_grouped_matmul(forward_cfg: tuple = MOSAIC_FORWARD, transposed_cfg: tuple = MOSAIC_TRANSPOSED,
                          kernels=None) -> GroupedFn:
    """Differentiable grouped matmul over jax's Mosaic-GPU kernels (or `kernels`: twins with their signatures)."""
    modules = kernels or _mosaic_kernels()
    if modules is None:
        raise ValueError(f"{ENV_VAR}='mosaic_gpu': this jax {jax.__version__} ships no Mosaic-GPU ragged_dot kernels")
    ragged, transposed = modules
    block_m, block_k, steps = forward_cfg
    t_block_m, t_block_n, t_block_k, t_steps = transposed_cfg

    def forward(lhs, rhs, sizes):
        return ragged.ragged_dot(lhs, rhs, group_sizes=sizes, block_m=block_m, block_n=_tile(rhs.shape[2]),
                                 block_k=block_k, max_concurrent_steps=steps, grid_block_n=1)

    def transposed_rhs(d_out, rhs, sizes):
        return forward(d_out, jnp.swapaxes(rhs, 1, 2), sizes)

    def weight_grad(lhs, d_out, sizes):
        return transposed.transposed_ragged_dot(
            lhs, d_out, group_sizes=sizes, block_m=_tile(lhs.shape[1], (t_block_m, 64)),
            block_n=_tile(d_out.shape[1], (t_block_n, 64)), block_k=t_block_k,
            max_concurrent_steps=t_steps, grid_block_n=1)

    return grouped_vjp(forward, transposed_rhs, weight_grad)


# ---- Pallas-Triton (GPU) ------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def triton_grouped_matmul(blocks: tuple[int, int, int] = TRITON_BLOCKS, *, interpret: bool = False,
                          kernels=None) -> GroupedFn:
    """Differentiable grouped matmul over jax's Pallas-Triton gmm/tgmm (or `kernels` with their signatures)."""
    k = kernels or _triton_kernels()
    if k is None:
        raise ValueError(f"{ENV_VAR}='pallas_triton': this jax {jax.__version__} ships no Pallas-Triton "
                         "grouped kernels (jax._src.lax.pallas_lowerings.gpu.ragged_dot)")
    block_m, block_k, block_n = blocks

    def gmm(lhs, rhs, sizes, trans_rhs=False):
        return k.gmm(lhs, rhs, sizes, block_m=block_m, block_k=block_k, block_n=block_n, trans_rhs=trans_rhs,
                     interpret=interpret)

    return grouped_vjp(gmm, functools.partial(gmm, trans_rhs=True),
                       lambda lhs, d_out, sizes: k.tgmm(lhs, d_out, sizes, block_m=block_m, block_n=block_n,
                                                        block_k=block_k, interpret=interpret))


# ---- megablox (TPU) -----------------------------------------------------------------------
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


# ---- the one entry point ------------------------------------------------------------------
def grouped_matmul(lhs_NxK: Array, rhs_GxKxM: Array, group_sizes_G: Array, *,
                   implementation: str | None = None) -> Array:
    """out[n] = lhs[n] @ rhs[g(n)] for rows sorted by group, sum(group_sizes) == N (module docstring); (N, M)."""
    if lhs_NxK.ndim != 2 or rhs_GxKxM.ndim != 3 or lhs_NxK.shape[1] != rhs_GxKxM.shape[1]:
        raise ValueError(f"lhs shape={tuple(lhs_NxK.shape)}, rhs shape={tuple(rhs_GxKxM.shape)}: must be "
                         "(N, K) and (G, K, M) with the same K")
    if group_sizes_G.shape != (rhs_GxKxM.shape[0],):
        raise ValueError(f"group_sizes shape={tuple(group_sizes_G.shape)}: must be (G,)=({rhs_GxKxM.shape[0]},)")
    name = resolve_implementation(implementation, lhs_NxK.shape, rhs_GxKxM.shape, lhs_NxK.dtype)
    sizes = group_sizes_G.astype(jnp.int32)
    if name == "mosaic_gpu":
        refusal = mosaic_refusal(lhs_NxK.shape, rhs_GxKxM.shape, lhs_NxK.dtype)
        if refusal:
            raise ValueError(f"implementation 'mosaic_gpu' cannot run here: {refusal}")
        return mosaic_grouped_matmul()(lhs_NxK, rhs_GxKxM.astype(lhs_NxK.dtype), sizes)
    if name == "pallas_triton":
        return triton_grouped_matmul()(lhs_NxK, rhs_GxKxM, sizes)
    if name == "megablox":
        return megablox_grouped_matmul(lhs_NxK, rhs_GxKxM, sizes, interpret=jax.default_backend() != "tpu")
    return jax.lax.ragged_dot(lhs_NxK, rhs_GxKxM, group_sizes_G)
