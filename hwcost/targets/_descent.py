"""Plain gradient descent with optax for the targets' small co-design demos (one jitted step, a Python loop)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax


def minimize(loss: Callable[[Any], jax.Array], init: Any, *, learning_rate: float, steps: int) -> tuple[Any, list[float]]:
    """Adam on `loss` from `init` for `steps` steps; returns (final parameters, loss before each step)."""
    opt = optax.adam(learning_rate)

    @jax.jit
    def step(params, state):
        value, grad = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grad, state, params)
        return optax.apply_updates(params, updates), state, value

    params, state, history = init, opt.init(init), []
    for _ in range(steps):
        params, state, value = step(params, state)
        history.append(float(value))
    return params, history
