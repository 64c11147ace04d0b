"""The grouped matmul of the routed experts: every implementation equals a per-group numpy product.

The reference is float64 numpy (a loop over groups, no ragged_dot); each implementation is
checked forward and for both gradients, in float32 (tight) and bf16 (bf16 tolerance).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import grouped as grouped_kernels
from nets.grouped import grouped_matmul, resolve_implementation, triton_grouped_matmul

F32_TOL = 1e-5
BF16_TOL = 2e-2  # relative to the largest |value|: 8 mantissa bits over a K-term sum


@pytest.fixture(autouse=True)
def _full_precision_matmuls():
    with jax.default_matmul_precision("highest"):
        yield


def problem(n_rows=40, k=24, m=20, sizes=(9, 0, 17, 14), seed=0, dtype=jnp.float32):
    key_lhs, key_rhs, key_cot = jax.random.split(jax.random.key(seed), 3)
    lhs = jax.random.normal(key_lhs, (n_rows, k), dtype)
    rhs = jax.random.normal(key_rhs, (len(sizes), k, m), dtype)
    cotangent = jax.random.normal(key_cot, (n_rows, m), dtype)
    return lhs, rhs, jnp.asarray(sizes, jnp.int32), cotangent


def numpy_reference(lhs, rhs, sizes, cotangent):
    """(out, d lhs, d rhs) of sum(out * cotangent), by a loop over the groups in float64."""
    lhs, rhs, cot = (np.asarray(a, np.float64) for a in (lhs, rhs, cotangent))
    out, d_lhs, d_rhs = np.zeros((len(lhs), rhs.shape[2])), np.zeros_like(lhs), np.zeros_like(rhs)
    start = 0
    for g, size in enumerate(np.asarray(sizes)):
        rows = slice(start, start + int(size))
        out[rows] = lhs[rows] @ rhs[g]
        d_lhs[rows] = cot[rows] @ rhs[g].T
        d_rhs[g] = lhs[rows].T @ cot[rows]
        start += int(size)
    return out, d_lhs, d_rhs


def value_and_grads(fn, lhs, rhs, sizes, cotangent):
    out, vjp = jax.vjp(lambda a, b: fn(a, b, sizes), lhs, rhs)
    return (out, *vjp(cotangent.astype(out.dtype)))


def assert_matches(actual, expected, tol):
    for a, e in zip(actual, expected):
        a = np.asarray(jnp.asarray(a, jnp.float32), np.float64)
        scale = max(1.0, float(np.max(np.abs(e))))
        np.testing.assert_allclose(a, e, atol=tol * scale, rtol=tol)


class JnpTritonTwins:
    """Plain-jnp stand-ins with the signatures of jax's Pallas-Triton gmm/tgmm (no ragged_dot inside)."""

    @staticmethod
    def gmm(x, a, sizes, *, block_m, block_k, block_n, trans_rhs, interpret):
        del block_m, block_k, block_n, interpret
        weights = jnp.swapaxes(a, 1, 2) if trans_rhs else a
        ends = jnp.cumsum(sizes)
        group_of_row = jnp.searchsorted(ends, jnp.arange(x.shape[0]), side="right")
        in_a_group = jnp.arange(x.shape[0]) < ends[-1]
        per_row = jnp.einsum("nk,nkm->nm", x, weights[jnp.minimum(group_of_row, len(sizes) - 1)])
        return jnp.where(in_a_group[:, None], per_row, 0).astype(x.dtype)

    @staticmethod
    def tgmm(x, y, sizes, *, block_m, block_n, block_k, interpret):
        del block_m, block_n, block_k, interpret
        ends = jnp.cumsum(sizes)
        rows = jnp.arange(x.shape[0])
        member_GxN = (rows[None, :] >= (ends - sizes)[:, None]) & (rows[None, :] < ends[:, None])
        return jnp.einsum("gn,nk,nm->gkm", member_GxN.astype(x.dtype), x, y).astype(x.dtype)


class MosaicRaggedTwin:
    """Stand-in for jax's ragged_dot_mgpu module (keyword tiles, as the Hopper kernel takes them)."""

    @staticmethod
    def ragged_dot(lhs, rhs, *, group_sizes, block_m, block_n, block_k, max_concurrent_steps, grid_block_n):
        assert rhs.shape[2] % block_n == 0 and lhs.shape[1] % block_k == 0, "tiles must divide the widths"
        return JnpTritonTwins.gmm(lhs, rhs, group_sizes, block_m=block_m, block_k=block_k, block_n=block_n,
                                  trans_rhs=False, interpret=False)


class MosaicTransposedTwin:
    """Stand-in for jax's transposed_ragged_dot_mgpu module."""

    @staticmethod
    def transposed_ragged_dot(lhs, rhs, *, group_sizes, block_m, block_n, block_k, max_concurrent_steps,
                              grid_block_n):
        assert lhs.shape[1] % block_m == 0 and rhs.shape[1] % block_n == 0, "tiles must divide the widths"
        return JnpTritonTwins.tgmm(lhs, rhs, group_sizes, block_m=block_m, block_n=block_n, block_k=block_k,
                                   interpret=False)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, F32_TOL), (jnp.bfloat16, BF16_TOL)])
def test_reference_path_matches_numpy(dtype, tol):
    lhs, rhs, sizes, cot = problem(dtype=dtype)
    got = value_and_grads(lambda a, b, s: grouped_matmul(a, b, s, implementation="reference"), lhs, rhs, sizes, cot)
    assert_matches(got, numpy_reference(lhs, rhs, sizes, cot), tol)


@pytest.mark.parametrize("sizes", [(9, 0, 17, 14), (40, 0, 0, 0), (0, 0, 0, 33)])  # last: 7 rows in no group
def test_triton_custom_vjp_wiring_matches_numpy(sizes):
    """The custom VJP routes d lhs through the transposed gmm and d rhs through tgmm, jitted."""
    lhs, rhs, sizes, cot = problem(sizes=sizes)
    fn = jax.jit(triton_grouped_matmul(kernels=JnpTritonTwins))
    assert_matches(value_and_grads(fn, lhs, rhs, sizes, cot), numpy_reference(lhs, rhs, sizes, cot), F32_TOL)


@pytest.mark.parametrize("k,m", [(128, 64), (192, 320)])  # widths that take 128/192- and 64-wide tiles
def test_mosaic_custom_vjp_wiring_matches_numpy(k, m):
    """Forward, d lhs (the forward kernel on the transposed weight) and d rhs (the transposed kernel), jitted."""
    lhs, rhs, sizes, cot = problem(n_rows=40, k=k, m=m, sizes=(9, 0, 17, 14))
    fn = jax.jit(grouped_kernels.mosaic_grouped_matmul(kernels=(MosaicRaggedTwin, MosaicTransposedTwin)))
    assert_matches(value_and_grads(fn, lhs, rhs, sizes, cot), numpy_reference(lhs, rhs, sizes, cot), F32_TOL)


@pytest.mark.skipif(not grouped_kernels.triton_kernels_available(), reason="this jax ships no Pallas-Triton grouped kernels")
@pytest.mark.parametrize("dtype,tol", [(jnp.float32, F32_TOL), (jnp.bfloat16, BF16_TOL)])
def test_triton_kernels_in_interpret_mode_match_numpy(dtype, tol):
    lhs, rhs, sizes, cot = problem(n_rows=48, k=32, m=32, sizes=(20, 0, 13, 9), dtype=dtype)
    fn = triton_grouped_matmul((16, 16, 16), interpret=True)
    assert_matches(value_and_grads(fn, lhs, rhs, sizes, cot), numpy_reference(lhs, rhs, sizes, cot), tol)


@pytest.mark.slow
def test_megablox_in_interpret_mode_matches_numpy():
    lhs, rhs, sizes, cot = problem(n_rows=40, k=24, m=20, sizes=(9, 0, 17, 14))
    got = value_and_grads(lambda a, b, s: grouped_kernels.megablox_grouped_matmul(a, b, s, interpret=True),
                          lhs, rhs, sizes, cot)
    assert_matches(got, numpy_reference(lhs, rhs, sizes, cot), F32_TOL)


def test_auto_is_reference_on_cpu_and_env_forces_a_choice(monkeypatch):
    if jax.default_backend() != "cpu":
        pytest.skip("checks the CPU choice")
    monkeypatch.delenv(grouped_kernels.ENV_VAR, raising=False)
    assert resolve_implementation() == "reference"
    monkeypatch.setenv(grouped_kernels.ENV_VAR, "megablox")
    assert resolve_implementation() == "megablox"
    assert resolve_implementation("reference") == "reference"  # the argument wins over the environment
    monkeypatch.setenv(grouped_kernels.ENV_VAR, "cublas")
    with pytest.raises(ValueError, match="CODESIGN_GROUPED_MATMUL='cublas'"):
        resolve_implementation()


def test_bad_shapes_name_the_argument():
    lhs, rhs, sizes, _ = problem()
    with pytest.raises(ValueError, match="lhs shape"):
        grouped_matmul(lhs[:, :5], rhs, sizes)
    with pytest.raises(ValueError, match="group_sizes shape"):
        grouped_matmul(lhs, rhs, sizes[:2])
    with pytest.raises(ValueError, match="implementation='dense'"):
        grouped_matmul(lhs, rhs, sizes, implementation="dense")
    if jax.default_backend() == "cpu":
        with pytest.raises(ValueError, match="'mosaic_gpu' cannot run here: .*Hopper"):
            grouped_matmul(lhs, rhs, sizes, implementation="mosaic_gpu")
