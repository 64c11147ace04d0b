"""Duplex co-design demo (a): the expert split and the PIM's MACs per module, by gradient and by grid.

The objective is seconds per token x silicon area (`perf_per_area_objective`): more MACs
shorten the compute-bound PIM expert kernels but cost logic-die area. `codesign_split_macs`
moves a relaxation of (expert splits, MACs) by Adam and rounds it; `grid_search` is the
exhaustive check over integer splits and a grid of MAC counts. The system is `hwcost.duplex`
(module `_duplex`).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from nets import ModelConfig
from hwcost.targets._batching import ContinuousBatching, StepWork, step_work
from hwcost.targets._descent import minimize
from hwcost.targets._duplex import _LOGIC_MACS, Duplex, DuplexKnobs, devices_needed, duplex, duplex_xpu


class SplitMacs(eqx.Module):
    """Unconstrained parameters of demo (a): splits = E * sigmoid(u), MACs per module = exp(v)."""

    split_logits: Float[Array, " stage"]
    log_macs: Float[Array, ""]


def _design(params: SplitMacs, n_experts: int) -> tuple[DuplexKnobs, Array]:
    splits = n_experts * jax.nn.sigmoid(params.split_logits)
    return DuplexKnobs(splits[0], splits[1]), jnp.exp(params.log_macs)


def perf_per_area_objective(system: Duplex, work: StepWork, knobs: DuplexKnobs, macs_per_module: Array) -> Array:
    """Seconds per token x silicon area (xPU die + PIM logic) [s mm^2 / token]: 1 / (tokens/s/mm^2).

    More MACs shorten the compute-bound PIM expert kernels but cost logic-die area, so the
    product has an interior optimum (the PIM turns memory-bound above MACs ~ Op/B x bandwidth).
    """
    system = eqx.tree_at(lambda s: s.pim.macs_per_module, system, macs_per_module)
    cost = system.batching_cost(work, knobs)
    return cost.area_mm2 / cost.tokens_per_s


def codesign_split_macs(cfg: ModelConfig, batching: ContinuousBatching, steps: int = 300, learning_rate: float = 0.05,
                        sharpness: float = 20.0) -> dict:
    """Demo (a): optimise (expert splits, PIM MACs per module) by Adam on `perf_per_area_objective`.

    Returns the continuous optimum, its rounding (integer splits, MACs to a multiple of 64)
    and the objective at both. The objective uses the smooth roofline (sharpness p) so the
    gradient sees both sides of every kink.
    """
    if not (isinstance(steps, int) and steps > 0):
        raise ValueError(f"steps={steps!r}: must be a positive integer")
    work = step_work(cfg, batching.simulate(causal=cfg.causal), batching)
    n = work.n_experts
    if n == 0:
        raise ValueError(f"cfg={cfg.name!r}: must be an MoE model (the expert split needs routed experts)")
    system = duplex("coprocessing", n_devices=devices_needed(cfg, batching), sharpness=sharpness,
                    xpu=duplex_xpu(sharpness=sharpness))
    objective = jax.jit(lambda p: perf_per_area_objective(system, work, *_design(p, n)))
    params = SplitMacs(split_logits=jnp.zeros(2), log_macs=jnp.log(jnp.asarray(_LOGIC_MACS)))
    params, history = minimize(objective, params, learning_rate=learning_rate, steps=steps)
    knobs, macs = _design(params, n)
    split = (float(knobs.expert_split_decode), float(knobs.expert_split_mixed))
    relaxed = float(objective(params))
    # Rounding: the relaxation lets one expert straddle both processors, so the continuous
    # optimum can beat every integer split; take the best floor/ceil neighbour, then move the
    # MAC count alone by gradient at those integer splits and round it to a multiple of 64.
    neighbours = [(a, b) for a in {math.floor(split[0]), math.ceil(split[0])}
                  for b in {math.floor(split[1]), math.ceil(split[1])}]
    at_macs = [float(objective_at(system, work, a, b, macs)) for a, b in neighbours]
    split_int = neighbours[int(np.argmin(at_macs))]
    log_macs = jnp.log(macs)
    macs_only = jax.jit(jax.value_and_grad(lambda v: objective_at(system, work, *split_int, jnp.exp(v))))
    opt_macs = optax.adam(learning_rate)
    state_macs = opt_macs.init(log_macs)
    for _ in range(max(1, steps // 3)):
        _, grad = macs_only(log_macs)
        updates, state_macs = opt_macs.update(grad, state_macs, log_macs)
        log_macs = optax.apply_updates(log_macs, updates)
    macs_int = max(64, 64 * round(float(jnp.exp(log_macs)) / 64))
    return {"model": cfg.name, "batch": batching.batch, "devices": system.n_devices,
            "split_decode": split[0], "split_mixed": split[1], "macs_per_module": float(macs),
            "objective_relaxed": relaxed, "split_decode_int": split_int[0], "split_mixed_int": split_int[1],
            "macs_per_module_int": macs_int,
            "objective": float(objective_at(system, work, split_int[0], split_int[1], macs_int)),
            "objective_start": history[0], "split_start": n / 2,
            "objective_dispatch": float(objective_at(system, work, n, 0, _LOGIC_MACS)), "history": history,
            "system": system, "work": work}


def objective_at(system: Duplex, work: StepWork, split_decode: float, split_mixed: float, macs: float) -> Array:
    """`perf_per_area_objective` at a concrete (split_decode, split_mixed, MACs per module)."""
    dtype = work.generated.dtype
    knobs = DuplexKnobs(jnp.asarray(split_decode, dtype), jnp.asarray(split_mixed, dtype))
    return perf_per_area_objective(system, work, knobs, jnp.asarray(macs, dtype))


def grid_search(system: Duplex, work: StepWork, macs_grid: tuple[float, ...]) -> dict:
    """Exhaustive search over integer splits (0..E for each stage) x `macs_grid`: the best point."""
    n = work.n_experts
    s = np.arange(n + 1, dtype=np.float64)
    dec, mix, mac = np.meshgrid(s, s, np.asarray(macs_grid, np.float64), indexing="ij")
    dtype = work.generated.dtype
    values = jax.jit(jax.vmap(lambda a, b, c: objective_at(system, work, a, b, c)))(
        jnp.asarray(dec.ravel(), dtype), jnp.asarray(mix.ravel(), dtype), jnp.asarray(mac.ravel(), dtype))
    values = np.asarray(values)
    best = int(np.argmin(values))
    return {"split_decode": int(dec.ravel()[best]), "split_mixed": int(mix.ravel()[best]),
            "macs_per_module": float(mac.ravel()[best]), "objective": float(values[best]), "points": int(values.size)}
