"""Fake quantisation: exact forward, straight-through backward, the differentiable mixture."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets.formats import FORMAT_NAMES, fake_quant, get_format, mixture_fake_quant


def assert_close(actual, expected, tol: float = 1e-6):
    """The one tolerance policy here: |a - e| <= tol * (1 + |e|) in float32; NaN never passes."""
    actual = np.asarray(actual, np.float32)
    expected = np.asarray(expected, np.float32)
    assert actual.shape == expected.shape
    np.testing.assert_array_less(np.abs(actual - expected), tol * (1 + np.abs(expected)) + 1e-30)


def sample(shape=(4, 64), seed=0, scale=3.0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32) * scale


@pytest.mark.parametrize("name", FORMAT_NAMES + ("posit(4,1)@channel", "fp4_e2m1@tensor"))
def test_forward_is_exact_quantiser_and_identity_ste_has_unit_gradient(name):
    x = sample()
    assert np.array_equal(np.asarray(fake_quant(x, name)), np.asarray(get_format(name).quantize(x)))
    grad = jax.grad(lambda v: fake_quant(v, name).sum())(x)
    assert_close(grad, np.ones(x.shape))


@pytest.mark.parametrize("name", ["posit(8,0)", "posit(4,1)", "fp8_e4m3", "fp4_e2m1", "fp8_e5m2"])
def test_clipped_ste_zeroes_gradient_outside_range(name):
    fmt = get_format(name)
    m = fmt.max_abs
    x = jnp.asarray([0.0, 0.5 * m, -0.5 * m, m, -m, 1.01 * m, -1.01 * m, 10 * m], jnp.float32)
    grad = jax.jit(jax.grad(lambda v: fake_quant(v, fmt, ste="clipped").sum()))(x)
    assert_close(grad, [1, 1, 1, 1, 1, 0, 0, 0])
    assert_close(fake_quant(x, fmt, ste="clipped"), fmt.quantize(x))  # forward unchanged


def test_adaptive_range_formats_never_clip():
    x = sample(scale=1e6)
    for name in ("mxfp4", "posit(8,0)@tensor"):
        assert_close(jax.grad(lambda v: fake_quant(v, name, ste="clipped").sum())(x), np.ones(x.shape))


def test_gradient_passes_upstream_through():
    x = sample(seed=1)
    upstream = sample(seed=2)
    grad = jax.grad(lambda v: jnp.sum(upstream * fake_quant(v, "posit(16,1)")))(x)
    assert_close(grad, upstream)


def test_fake_quant_keeps_dtype_and_jits_once():
    x = sample().astype(jnp.bfloat16)
    assert fake_quant(x, "fp8_e4m3").dtype == jnp.bfloat16
    traces = []

    @jax.jit
    def step(v):
        traces.append(1)
        return jax.grad(lambda w: fake_quant(w, "posit(8,0)", ste="clipped").sum())(v)

    step(sample(seed=3))
    step(sample(seed=4))
    assert len(traces) == 1


FMTS = ("fp4_e2m1", "posit(4,1)", "posit(8,0)", "mxfp8_e4m3", "fp32")


def test_mixture_value_and_gradients():
    x = sample(seed=5)
    probs = jax.nn.softmax(jnp.asarray([0.3, -1.0, 2.0, 0.1, -0.5]))
    quantised = [np.asarray(get_format(name).quantize(x), np.float64) for name in FMTS]
    expected = sum(float(p) * q for p, q in zip(probs, quantised))
    assert_close(mixture_fake_quant(x, probs, FMTS), expected)

    loss = lambda v, p: mixture_fake_quant(v, p, FMTS).sum()
    grad_x, grad_p = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, probs)
    assert_close(grad_p, [q.sum() for q in quantised], tol=1e-5)  # d/dp_i = sum q_i(x)
    assert_close(grad_x, np.full(x.shape, float(probs.sum())), tol=1e-5)  # identity STEs


def test_mixture_gradient_matches_finite_differences():
    x = sample(seed=6, shape=(2, 32))
    upstream = sample(seed=7, shape=(2, 32))
    logits = jnp.asarray([0.5, -0.2, 0.1, 0.0, 0.3])
    loss = lambda lg: jnp.sum(upstream * mixture_fake_quant(x, jax.nn.softmax(lg), FMTS))
    grad = np.asarray(jax.grad(loss)(logits))
    eps = 1e-2
    for i in range(len(FMTS)):
        step = jnp.zeros_like(logits).at[i].set(eps)
        numeric = (float(loss(logits + step)) - float(loss(logits - step))) / (2 * eps)
        assert abs(grad[i] - numeric) <= 2e-3 * (1 + abs(numeric))


def test_mixture_with_one_hot_equals_single_format():
    x = sample(seed=8)
    one_hot = jnp.asarray([0.0, 0.0, 1.0, 0.0, 0.0])
    assert np.array_equal(np.asarray(mixture_fake_quant(x, one_hot, FMTS)),
                          np.asarray(fake_quant(x, "posit(8,0)")))


def test_bad_arguments():
    x = sample()
    with pytest.raises(ValueError, match="ste"):
        fake_quant(x, "fp4_e2m1", ste="tanh")
    with pytest.raises(ValueError, match="unknown number format"):
        fake_quant(x, "int3")
    with pytest.raises(ValueError, match="floating"):
        fake_quant(jnp.arange(4), "fp4_e2m1")
    with pytest.raises(ValueError, match="probs must have shape"):
        mixture_fake_quant(x, jnp.ones(3) / 3, FMTS)
    with pytest.raises(ValueError, match="at least one"):
        mixture_fake_quant(x, jnp.ones(0), [])
