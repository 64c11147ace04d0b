"""Hardware targets the joint loop can optimise against, and their learnable parameters.

A target is an `eqx.Module` of `hwcost` whose scalar float fields are its hardware
parameters (`hwcost.GPU` presets, `hwcost.XRNPE`). The joint loop can make a named subset
of them learnable: they are optimised in log space (positive by construction), each kept
within a factor `hw_range` of its preset value (a box: the cost model is only trusted near
the silicon it describes), and put back into the module with `eqx.tree_at`, so the
gradient reaches them through the same cost evaluation as the design knobs.

A learnable parameter must have a price in the metric, or the optimiser makes it as large
(or as small) as the box allows: more GPU bandwidth is free in latency, more XR-NPE MAC
units are free in latency but cost area. The energy-delay-area product ("edap") prices
area, which gives `n_macs` of the XR-NPE an interior optimum at the compute/memory balance.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import hwcost

TARGETS: tuple[str, ...] = tuple(hwcost.PRESETS) + ("xrnpe",)


def make_target(name: str, overrides: dict[str, float] | None = None) -> eqx.Module:
    """The preset target `name` (see TARGETS) with any hardware parameter overridden."""
    if name not in TARGETS:
        raise ValueError(f"target={name!r}: must be one of {', '.join(TARGETS)}")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(hardware_fields(_preset(name))))
    if unknown:
        raise ValueError(f"target parameter={unknown[0]!r}: {name} has {', '.join(hardware_fields(_preset(name)))}")
    return hwcost.xrnpe(**overrides) if name == "xrnpe" else hwcost.gpu(name, **overrides)


def _preset(name: str) -> eqx.Module:
    return hwcost.xrnpe() if name == "xrnpe" else hwcost.gpu(name)


def hardware_fields(target: eqx.Module) -> tuple[str, ...]:
    """Names of the target's scalar float fields (its hardware parameters)."""
    out = []
    for name, value in vars(target).items():
        if isinstance(value, jax.Array) and value.shape == () and jnp.issubdtype(value.dtype, jnp.floating):
            out.append(name)
    return tuple(out)


def target_params(target: eqx.Module) -> dict[str, float]:
    """Every hardware parameter as a plain float (for a deployment file)."""
    return {name: float(np.asarray(getattr(target, name))) for name in hardware_fields(target)}


def check_learnable(name: str, fields: tuple[str, ...]) -> None:
    allowed = hardware_fields(_preset(name))
    for field in fields:
        if field not in allowed:
            raise ValueError(f"hardware={field!r}: not a parameter of target {name}; allowed {', '.join(allowed)}")


def init_log_params(target: eqx.Module, fields: tuple[str, ...]) -> dict[str, jax.Array]:
    return {f: jnp.log(jnp.asarray(getattr(target, f), jnp.float32)) for f in fields}


def with_log_params(target: eqx.Module, log_params: dict[str, jax.Array], hw_range: float) -> eqx.Module:
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
