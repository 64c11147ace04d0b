"""`nets.embed_lookup`: the same rows as `nnx.Embed`, with a float32 scatter-add for its gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nets import embed_lookup


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_lookup_equals_nnx_embed_and_its_gradient_sums_in_float32(dtype):
    embed = nnx.Embed(7, 5, dtype=dtype, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    ids = jnp.asarray([[0, 3, 3, 6], [3, 3, 3, 1]])   # repeated rows: the gradient must sum them
    out = embed_lookup(embed, ids)
    assert out.dtype == dtype
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(embed(ids), np.float32))

    table = embed.embedding[...]
    cot = jax.random.normal(jax.random.key(1), ids.shape + (5,), jnp.float32).astype(dtype)

    def loss(t):
        e = nnx.Embed(7, 5, dtype=dtype, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
        e.embedding[...] = t
        return jnp.sum(embed_lookup(e, ids).astype(jnp.float32) * cot.astype(jnp.float32))

    grad = jax.grad(loss)(table)
    expected = np.zeros((7, 5), np.float32)
    np.add.at(expected, np.asarray(ids).ravel(), np.asarray(cot, np.float32).reshape(-1, 5))
    assert grad.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-6, atol=1e-6)


def test_float_ids_are_a_clear_error():
    embed = nnx.Embed(7, 5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="ids dtype"):
        embed_lookup(embed, jnp.zeros((2,), jnp.float32))
