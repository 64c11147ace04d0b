"""Hardware targets the joint loop can optimise against, and their learnable parameters.

A target is any `hwcost.Target`, found by name or calibrated preset file through
`hwcost.get_target` (`TARGETS` lists the fixed names). Its scalar float fields are its
hardware parameters. The joint loop can make a named subset of them learnable: they are
optimised in log space (positive by construction), each kept within a factor `hw_range` of
its preset value (a box: the cost model is only trusted near the silicon it describes), and
put back into the module with `eqx.tree_at`, so the gradient reaches them through the same
cost evaluation as the design knobs.

A learnable parameter must have a price in the metric, or the optimiser makes it as large
(or as small) as the box allows: more GPU bandwidth is free in latency, more XR-NPE MAC
units are free in latency but cost area. The energy-delay-area product ("edap") prices
area, which gives `n_macs` of the XR-NPE an interior optimum at the compute/memory balance.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import hwcost

TARGETS: tuple[str, ...] = hwcost.TARGETS


def make_target(name: str, overrides: dict[str, float] | None = None) -> hwcost.Target:
    """The target `name` (`hwcost.get_target`) with any of its hardware parameters overridden."""
    target = hwcost.get_target(name)
    overrides = dict(overrides or {})
    if not overrides:
        return target
    fields = hardware_fields(target)
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"target parameter={unknown[0]!r}: {name} has {', '.join(fields) or 'none'}")
    # a replace (not tree_at) so that the target's own checks see the new values
    return dataclasses.replace(target, **{k: jnp.asarray(v, getattr(target, k).dtype) for k, v in overrides.items()})


def hardware_fields(target: hwcost.Target) -> tuple[str, ...]:
    """Names of the target's scalar float fields (its hardware parameters)."""
    out = []
    for name, value in vars(target).items():
        if isinstance(value, jax.Array) and value.shape == () and jnp.issubdtype(value.dtype, jnp.floating):
            out.append(name)
    return tuple(out)


def target_params(target: hwcost.Target) -> dict[str, float]:
    """Every hardware parameter as a plain float (for a deployment file)."""
    return {name: float(np.asarray(getattr(target, name))) for name in hardware_fields(target)}


def check_learnable(name: str, fields: tuple[str, ...]) -> None:
    allowed = hardware_fields(hwcost.get_target(name))
    for field in fields:
        if field not in allowed:
            raise ValueError(f"hardware={field!r}: not a parameter of target {name}; "
                             f"allowed {', '.join(allowed) or 'none'}")


def check_metric(name: str, fields: tuple[str, ...], metric: str) -> None:
    """ValueError naming the target and the metric unless the target models every one of `fields`."""
    hwcost.get_target(name).check_metric(fields, metric)


def init_log_params(target: hwcost.Target, fields: tuple[str, ...]) -> dict[str, jax.Array]:
    return {f: jnp.log(jnp.asarray(getattr(target, f), jnp.float32)) for f in fields}


def with_log_params(target: hwcost.Target, log_params: dict[str, jax.Array], hw_range: float) -> hwcost.Target:
    """`target` with each named field set to exp(log value), clipped to [preset/hw_range, preset*hw_range]."""
    if not log_params:
        return target
    names = tuple(log_params)
    values = []
    for f in names:
        preset = jnp.log(jnp.asarray(getattr(target, f), jnp.float32))
        values.append(jnp.exp(jnp.clip(log_params[f], preset - jnp.log(hw_range), preset + jnp.log(hw_range))))
    return eqx.tree_at(lambda t: tuple(getattr(t, f) for f in names), target, tuple(values))


def as_plain(params: dict[str, Any]) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in params.items()}
