"""XR-NPE target: published figures, lane scaling, energy ordering, gradients, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwcost import xrnpe

NAMES = ["posit(16,1)", "posit(8,0)", "posit(4,1)", "fp4_e2m1"]


def test_published_figures():
    e = xrnpe()
    np.testing.assert_allclose(float(e.clock_hz), 1.72e9, rtol=1e-6)
    np.testing.assert_allclose(float(e.energy_per_mac(jnp.float32(16.0))), 14e-12, rtol=1e-6)
    np.testing.assert_allclose(float(e.area_per_mac_mm2), 0.016, rtol=1e-6)
    np.testing.assert_allclose(float(xrnpe(n_macs=1.0).area_mm2()), 0.016, rtol=1e-6)


def _compute_bound(e, name):
    """Latency of a compute-bound layer (many tokens) all in one format."""
    lat, _ = e.cost_formats(jnp.asarray([2e9]), jnp.ones((1, 1)), [name], tokens=1e6)
    return float(lat)


def test_lane_throughput():
    e = xrnpe(sharpness=1e3)
    t16, t8, t4 = (_compute_bound(e, n) for n in ("posit(16,1)", "posit(8,0)", "posit(4,1)"))
    np.testing.assert_allclose(t16 / t4, 4.0, rtol=1e-3)
    np.testing.assert_allclose(t8 / t4, 2.0, rtol=1e-3)
    np.testing.assert_allclose(float(e.macs_per_second(jnp.float32(4.0)) / e.macs_per_second(jnp.float32(16.0))), 4.0)


def test_energy_lower_at_lower_bits():
    e = xrnpe()
    energies = [float(e.cost_formats(jnp.asarray([1e6, 3e6]), jnp.ones((2, 1)), [n])[1])
                for n in ("posit(16,1)", "posit(8,0)", "fp4_e2m1")]
    assert energies[0] > energies[1] > energies[2] > 0


def _x64():
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # older jax
    return enable_x64()


def test_gradient_matches_finite_differences():
    with _x64():
        e = xrnpe(dtype=jnp.float64)
        flops = jnp.asarray([4e6, 1e6, 9e6], jnp.float64)
        logits = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float64)

        def f(lg, which):
            return e.cost_formats(flops, jax.nn.softmax(lg, axis=1), NAMES, tokens=8.0)[which] * 1e6

        for which in (0, 1):
            g = jax.grad(f)(logits, which)
            assert np.all(np.isfinite(np.asarray(g)))
            h = 1e-6
            fd = np.zeros((3, 4))
            for i in range(3):
                for j in range(4):
                    d = jnp.zeros((3, 4), jnp.float64).at[i, j].set(h)
                    fd[i, j] = (f(logits + d, which) - f(logits - d, which)) / (2 * h)
            np.testing.assert_allclose(np.asarray(g), fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("flops, probs, names, arg", [
    ([1e6, 1e6], np.ones((3, 1)), ["posit(8,0)"], "format_probs_LxF"),
    ([1e6], np.ones((1, 2)), ["posit(8,0)"], "format_probs_LxF"),
    ([1e6], -np.ones((1, 1)), ["posit(8,0)"], "format_probs_LxF"),
    ([-1e6], np.ones((1, 1)), ["posit(8,0)"], "workload_flops_per_layer"),
    ([1e6], np.ones((1, 1)), ["int3"], "format_names"),
])
def test_bad_input(flops, probs, names, arg):
    with pytest.raises(ValueError, match=arg):
        xrnpe().cost_formats(jnp.asarray(flops), jnp.asarray(probs), names)


def test_bad_hardware_param():
    with pytest.raises(ValueError, match="clock_hz"):
        xrnpe(clock_hz=-1.0)


def test_workload_cost_lower_bits_faster_and_cheaper():
    import hwcost
    import nets
    cfg = nets.zoo.get("codesign-100m")
    sc = hwcost.Scenario(phase="prefill", batch=1, context_len=64)
    base = hwcost.Knobs.default(cfg.n_layers, sc)
    e = xrnpe()
    costs = [e.cost(hwcost.workload(cfg, sc, eqx_replace(base, b))) for b in (16.0, 8.0, 4.0)]
    lat = [float(c.latency_s) for c in costs]
    en = [float(c.energy_j) for c in costs]
    assert lat[0] > lat[1] > lat[2] > 0 and en[0] > en[1] > en[2] > 0
    g = jax.grad(lambda b: e.cost(hwcost.workload(cfg, sc, eqx_replace(base, b))).energy_j)(jnp.float32(8.0))
    assert np.isfinite(float(g)) and float(g) > 0
    with pytest.raises(ValueError, match="work"):
        e.cost("not a workload")


def eqx_replace(knobs, bits):
    """Knobs with every layer's weight, KV and activation bits set to `bits`."""
    import equinox as eqx
    full = jnp.full_like(knobs.weight_bits, 1.0) * bits
    return eqx.tree_at(lambda k: (k.weight_bits, k.kv_bits, k.act_bits), knobs, (full, full, full))
