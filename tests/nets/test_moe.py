"""MoE FFN: grouped (ragged) computation vs a naive per-token reference, load balance, grads, stacking."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nets import ModelConfig, count_params, activation_fn, MoE, moe_reference
from nets.moe import numpy_activation

TOL = 1e-5
D_MODEL, N_EXPERTS, D_EXPERT = 16, 6, 12


@pytest.fixture(autouse=True)
def _full_precision_matmuls():
    """float32 matmuls at full precision (GPUs default to TF32, which breaks the 1e-5 comparisons)."""
    with jax.default_matmul_precision("highest"):
        yield


def assert_close(actual, expected, tol=TOL):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), atol=tol, rtol=tol)


def moe_cfg(activation="swiglu", n_shared=0, top_k=2, n_experts=N_EXPERTS, d_model=D_MODEL) -> ModelConfig:
    return ModelConfig(d_model=d_model, n_layers=1).replace(ffn=dict(
        kind="moe", activation=activation, n_experts=n_experts, top_k=top_k, d_expert=D_EXPERT,
        n_shared_experts=n_shared))


def inputs(batch=2, length=7, d_model=D_MODEL, seed=1):
    return jax.random.normal(jax.random.key(seed), (batch, length, d_model))


@nnx.jit
def apply(moe, x):
    return moe(x)


def set_router(moe: MoE, weight) -> None:
    moe.router_kernel[...] = jnp.asarray(weight, jnp.float32)


# ---- the grouped computation equals the naive reference ---------------------------------------
@pytest.mark.parametrize("n_shared", [0, 2])
@pytest.mark.parametrize("activation", ["swiglu", "gelu", "relu"])
def test_matches_naive_per_token_reference(activation, n_shared):
    moe = MoE(moe_cfg(activation, n_shared), rngs=nnx.Rngs(0))
    x = inputs()
    y_ref, aux_ref = moe_reference(moe, x)
    # The premise: no near-tie between the k-th and (k+1)-th router probability of any token.
    sorted_probs = -np.sort(-aux_ref["probabilities"], axis=-1)
    assert np.min(sorted_probs[:, moe.top_k - 1] - sorted_probs[:, moe.top_k]) > 1e-4
    _, _, experts, gates = moe.route(x.reshape(-1, D_MODEL))
    np.testing.assert_array_equal(np.asarray(experts), aux_ref["experts"])
    assert_close(gates, aux_ref["gates"])
    for y, aux in (apply(moe, x), moe(x)):  # jitted and eager
        assert y.shape == x.shape and y.dtype == jnp.float32
        assert_close(y, y_ref)
        assert_close(aux["load_balance_loss"], aux_ref["load_balance_loss"])
        assert_close(aux["expert_fraction"], aux_ref["expert_fraction"])
        assert int(aux["tokens_per_expert"].sum()) == x.shape[0] * x.shape[1] * moe.top_k
    assert np.count_nonzero(aux_ref["expert_fraction"]) >= 2  # several groups really were exercised


def test_reference_activations_are_the_layers_activations():
    z = np.linspace(-6.0, 6.0, 101)
    for name in ("swiglu", "gelu", "relu"):
        assert_close(numpy_activation(name, z), activation_fn(name)(jnp.asarray(z, jnp.float32)))


@pytest.mark.parametrize("n_shared", [0, 1])
@pytest.mark.parametrize("activation", ["swiglu", "gelu"])
def test_all_experts_with_uniform_router_is_mean_of_experts(activation, n_shared):
    moe = MoE(moe_cfg(activation, n_shared, top_k=N_EXPERTS), rngs=nnx.Rngs(2))
    set_router(moe, jnp.zeros((D_MODEL, N_EXPERTS)))
    x = inputs()
    act = activation_fn(activation)

    def dense_ffns(x_BxLxD, up, down, gate=None):  # every expert on every token: (n, B, L, D)
        up_h = jnp.einsum("bld,edf->eblf", x_BxLxD, up[...], precision="highest")
        h = act(jnp.einsum("bld,edf->eblf", x_BxLxD, gate[...], precision="highest")) * up_h if gate is not None \
            else act(up_h)
        return jnp.einsum("eblf,efd->ebld", h, down[...], precision="highest")

    gated = activation == "swiglu"
    expected = dense_ffns(x, moe.expert_up, moe.expert_down, moe.expert_gate if gated else None).mean(axis=0)
    if n_shared:
        expected = expected + dense_ffns(x, moe.shared_up, moe.shared_down, moe.shared_gate if gated else None).sum(0)
    y, aux = apply(moe, x)
    assert_close(y, expected)
    assert_close(aux["load_balance_loss"], 1.0)
    assert_close(aux["expert_fraction"], np.full(N_EXPERTS, 1.0 / N_EXPERTS))


# ---- load-balancing loss --------------------------------------------------------------------
@pytest.mark.parametrize("top_k", [1, 2, N_EXPERTS])
def test_load_balance_is_one_when_uniform_and_larger_when_skewed(top_k):
    moe = MoE(moe_cfg(top_k=top_k), rngs=nnx.Rngs(0))
    x = inputs()
    set_router(moe, jnp.zeros((D_MODEL, N_EXPERTS)))
    assert_close(apply(moe, x)[1]["load_balance_loss"], 1.0)
    # Skew: feature 0 of every token is positive and votes for expert 0 only.
    x_pos = jnp.abs(x)
    skew = jnp.zeros((D_MODEL, N_EXPERTS)).at[:, 0].set(1.0)
    set_router(moe, skew)
    aux = apply(moe, x_pos)[1]
    loss = aux["load_balance_loss"]
    _, ref = moe_reference(moe, x_pos)
    assert_close(loss, ref["load_balance_loss"])
    if top_k < N_EXPERTS:
        assert float(loss) > 1.5
        assert float(aux["expert_fraction"][0]) == pytest.approx(1.0 / top_k)
    else:  # every expert chosen by every token: f is uniform, so the loss is E * mean(P) / E = 1 whatever P
        assert_close(loss, 1.0)
    set_router(moe, 30.0 * skew)  # fully concentrated top-1 routing: the loss tends to E
    if top_k == 1:
        assert float(apply(moe, x_pos)[1]["load_balance_loss"]) == pytest.approx(N_EXPERTS, rel=1e-3)


_HYPOTHESIS_MOES = {k: MoE(moe_cfg(top_k=k), rngs=nnx.Rngs(3)) for k in (1, 2, 4)}


_ROUTER_WEIGHTS = arrays(np.float32, (D_MODEL, N_EXPERTS), elements=st.floats(-3.0, 3.0, width=32))


@settings(max_examples=40, deadline=None)
@given(weight=_ROUTER_WEIGHTS, top_k=st.sampled_from([1, 2, 4]), seed=st.integers(0, 2**16))
def test_load_balance_at_least_uniform_value_for_identical_tokens(weight, top_k, seed):
    """For a batch of identical tokens the loss is (E/k) * (sum of the top-k probabilities) >= 1."""
    moe = _HYPOTHESIS_MOES[top_k]
    set_router(moe, weight)
    token = jax.random.normal(jax.random.key(seed), (D_MODEL,))
    x = jnp.broadcast_to(token, (2, 3, D_MODEL))
    loss = float(apply(moe, x)[1]["load_balance_loss"])
    assert loss >= 1.0 - TOL
    probs = jax.nn.softmax(token @ jnp.asarray(weight))
    assert_close(loss, N_EXPERTS / top_k * float(jnp.sort(probs)[-top_k:].sum()))


def test_load_balance_is_not_a_lower_bound_for_arbitrary_batches():
    """Documented limitation: with f and P anti-correlated the loss dips below its uniform value.

    Two experts, top-1, router = identity: two tokens barely prefer expert 0 (p ~ 0.505),
    one token strongly prefers expert 1, so f = (2/3, 1/3) while P ~ (0.34, 0.66).
    """
    moe = MoE(moe_cfg(top_k=1, n_experts=2, d_model=2), rngs=nnx.Rngs(0))
    set_router(moe, jnp.eye(2))
    x = jnp.asarray([[[0.02, 0.0], [0.02, 0.0], [0.0, 10.0]]])
    loss = apply(moe, x)[1]["load_balance_loss"]
    assert_close(loss, moe_reference(moe, x)[1]["load_balance_loss"])
    assert float(loss) < 0.9


def test_router_z_loss():
    moe = MoE(moe_cfg(), rngs=nnx.Rngs(0))
    x = inputs()
    logits = np.asarray(x, np.float64).reshape(-1, D_MODEL) @ np.asarray(moe.router_kernel[...], np.float64)
    lse = np.log(np.exp(logits).sum(-1))
    assert_close(apply(moe, x)[1]["router_z_loss"], np.mean(lse ** 2))


# ---- gradients, compilation, stacking -------------------------------------------------------
def test_gradients_reach_router_and_experts_jitted():
    moe = MoE(moe_cfg("swiglu", n_shared=1), rngs=nnx.Rngs(0))
    x = inputs(length=16)

    def loss_fn(m):
        y, aux = m(x)
        return jnp.mean(jnp.square(y)) + 0.1 * aux["load_balance_loss"]

    loss, grads = nnx.jit(nnx.value_and_grad(loss_fn))(moe)
    counts = np.asarray(apply(moe, x)[1]["tokens_per_expert"])
    assert np.all(counts > 0)  # every expert receives tokens, so every expert must get a gradient
    for name, g in nnx.to_flat_state(grads):
        g = np.asarray(g[...])
        assert np.all(np.isfinite(g)), name
        per_slice = np.abs(g).reshape(g.shape[0], -1).sum(-1) if g.ndim == 3 else np.abs(g).sum(0)
        assert np.all(per_slice > 0), f"{name}: a zero gradient slice {per_slice}"

    # Directional finite differences. Routing is piecewise constant in the router weight, so each
    # check uses the largest step that keeps every token's choice of experts (asserted found).
    graphdef, params = nnx.split(moe)
    f = jax.jit(lambda p: loss_fn(nnx.merge(graphdef, p)))
    choices = jax.jit(lambda p: nnx.merge(graphdef, p).route(x.reshape(-1, D_MODEL))[2])
    assert float(loss) == pytest.approx(float(f(params)), rel=1e-6)
    for moved in ({"router_kernel"}, {"expert_gate", "expert_up", "expert_down", "shared_gate", "shared_up",
                                      "shared_down"}):
        seeds = {name: i for i, name in enumerate(sorted(moved))}
        direction = jax.tree_util.tree_map_with_path(
            lambda path, p: jax.random.normal(jax.random.key(seeds[path[0].key]), p.shape) if path[0].key in seeds
            else jnp.zeros_like(p), params)  # noqa: B023

        def shifted(step):
            return jax.tree.map(lambda p, d: p + step * d, params, direction)  # noqa: B023

        eps = next((e for e in (1e-2, 3e-3, 1e-3, 3e-4) if all(
            np.array_equal(choices(shifted(s * e)), choices(params)) for s in (1.0, -1.0))), None)
        assert eps is not None, "no finite-difference step keeps the routing fixed"
        numeric = (float(f(shifted(eps))) - float(f(shifted(-eps)))) / (2 * eps)
        analytic = sum(float(jnp.vdot(grads[name][...], direction[name][...])) for name in moved)
        assert analytic == pytest.approx(numeric, rel=1e-2), (moved, eps)


def test_compiles_once_per_shape():
    traces = []

    @nnx.jit
    def forward(m, x):
        traces.append(x.shape)
        return m(x)

    moe = MoE(moe_cfg(), rngs=nnx.Rngs(0))
    forward(moe, inputs(seed=1))
    forward(moe, inputs(seed=2))
    assert len(traces) == 1
    forward(moe, inputs(length=3))
    forward(moe, inputs(length=3, seed=4))
    assert len(traces) == 2


def test_vmap_stacked_layers_scan_and_vmap_apply():
    cfg = moe_cfg("swiglu", n_shared=1)

    @nnx.split_rngs(splits=2)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return MoE(cfg, rngs=rngs)

    stacked = create(nnx.Rngs(0))
    assert stacked.expert_gate.shape == (2, N_EXPERTS, D_MODEL, D_EXPERT)
    assert stacked.router_kernel.shape == (2, D_MODEL, N_EXPERTS)
    graphdef, state = nnx.split(stacked)
    layers = [nnx.merge(graphdef, jax.tree.map(lambda v: v[i], state)) for i in range(2)]
    assert not np.allclose(layers[0].router_kernel[...], layers[1].router_kernel[...])
    x = inputs()

    @nnx.jit
    def run_scan(moe, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
        def step(h, layer):
            y, aux = layer(h)
            return h + y, aux["load_balance_loss"]
        return step(x, moe)

    h, balances = run_scan(stacked, x)
    expected_h, expected_balances = x, []
    for layer in layers:
        y, y_ref_aux = moe_reference(layer, expected_h)
        expected_h = expected_h + y
        expected_balances.append(y_ref_aux["load_balance_loss"])
    assert_close(h, expected_h)
    assert_close(balances, expected_balances)

    @nnx.jit
    def run_vmap(moe, x):  # both layers on the same input, in parallel (batches ragged_dot and top_k)
        return nnx.vmap(lambda layer, x: layer(x)[0], in_axes=(0, None))(moe, x)

    assert_close(run_vmap(stacked, x), np.stack([moe_reference(layer, x)[0] for layer in layers]))


# ---- structure, dtypes, errors --------------------------------------------------------------
@pytest.mark.parametrize("activation,n_shared", [("swiglu", 2), ("gelu", 0), ("relu", 1)])
def test_parameters_match_analytic_count(activation, n_shared):
    cfg = moe_cfg(activation, n_shared)
    moe = nnx.eval_shape(lambda: MoE(cfg, rngs=nnx.Rngs(0)))
    shapes = {name: tuple(v.shape) for name, v in nnx.to_flat_state(nnx.state(moe, nnx.Param))}
    E, D, F = N_EXPERTS, D_MODEL, D_EXPERT
    expected = {("router_kernel",): (D, E), ("expert_up",): (E, D, F), ("expert_down",): (E, F, D)}
    if activation == "swiglu":
        expected[("expert_gate",)] = (E, D, F)
    if n_shared:
        expected.update({("shared_up",): (n_shared, D, F), ("shared_down",): (n_shared, F, D)})
        if activation == "swiglu":
            expected[("shared_gate",)] = (n_shared, D, F)
    assert shapes == expected
    counts = count_params(cfg)
    assert sum(np.prod(s) for s in shapes.values()) == counts.router + counts.ffn_moe_routed + counts.ffn_moe_shared


def test_bfloat16_compute_close_to_float32():
    cfg = moe_cfg("swiglu", n_shared=1)
    x = inputs()
    y32, _ = apply(MoE(cfg, rngs=nnx.Rngs(0)), x)
    y16, aux16 = apply(MoE(cfg, rngs=nnx.Rngs(0), dtype=jnp.bfloat16), x)
    assert y16.dtype == jnp.bfloat16 and aux16["load_balance_loss"].dtype == jnp.float32
    assert_close(y16.astype(jnp.float32), y32, tol=5e-2)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="ffn.kind"):
        MoE(ModelConfig(), rngs=nnx.Rngs(0))
    moe = MoE(moe_cfg(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="d_model=16"):
        moe(jnp.zeros((2, 3, D_MODEL + 1)))
    with pytest.raises(ValueError, match="x shape"):
        moe(jnp.zeros((3, D_MODEL)))


@pytest.mark.slow  # two gradient compiles (~1 min on 2 cores); the default suite checks the same gradients by finite differences
def test_dispatch_gather_backward_equals_autodiff_scatter_add(monkeypatch):
    """The custom VJPs of the row gathers (backward by gathers) give autodiff's gradients (scatter-add)."""
    import nets.moe as moe_module
    top_k = 3
    moe = MoE(moe_cfg("swiglu", n_shared=1, top_k=top_k), rngs=nnx.Rngs(3))
    x = inputs(length=11, seed=5)
    cot = jax.random.normal(jax.random.key(9), x.shape)

    def grads():
        graphdef, params = nnx.split(moe)

        def f(p, x):
            return jnp.vdot(nnx.merge(graphdef, p)(x)[0], cot)
        return jax.jit(jax.grad(f, argnums=(0, 1)))(params, x)

    fast_params, fast_x = grads()
    monkeypatch.setattr(moe_module, "_dispatch_rows", lambda x, order, inverse: x[order // top_k])
    monkeypatch.setattr(moe_module, "_permute_rows", lambda x, perm, inverse: x[perm])
    ref_params, ref_x = grads()
    assert_close(fast_x, ref_x, 1e-6)
    for a, b in zip(jax.tree.leaves(fast_params), jax.tree.leaves(ref_params)):
        assert_close(a, b, 1e-6)
