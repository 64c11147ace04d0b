"""The one hardware-target protocol: `Target.cost(workload) -> Cost`.

Every target (GPU presets, a calibrated GPU, AFD, Duplex, Cambricon-LLM, SpAtten, XR-NPE)
is an `eqx.Module` that subclasses the abstract `Target` and implements one method,
`cost(work: Workload) -> Cost`. Its float array fields are its hardware parameters, so the
cost is differentiable in them and, through the workload, in the design knobs. Concrete
targets are final (never subclassed, no concrete method overridden: the equinox
abstract/final pattern); a variant is built by composition (a calibrated GPU holds a `GPU`).
A target's richer, paper-specific API (AFD's pipeline report, Duplex's continuous batching,
SpAtten's per-engine work) stays on the target under its own method names.

`Cost` holds five scalars, each a differentiable array:

    latency_s [s], energy_j [J], dollars [USD], memory_bytes [bytes], area_mm2 [mm^2]

and `breakdown`, a dict of arrays with target-specific detail (e.g. a GPU's
"op_latency_s"[op, slot]). A scalar the target does not model is NaN and absent from
`modelled` (a static frozenset); `Cost.value(field)` and `Cost.check_modelled` raise a
ValueError naming the target and the field, so choosing such a field as the optimised
metric is an error, never a silent zero. `Target.modelled` states the same set before any
costing, so a configuration can be checked up front.

Extension points (what later work adds without changing this protocol):
- single-op workloads: a `Workload` is a dict of per-op-class arrays, so a workload of one
  GEMM or one attention kernel is a Workload with that op's entries (`Workload.select`); a
  new operation class is a new name in `hwcost.OPS`, which every target iterates over.
- more precisions (fp32, tf32, fp8, int8, fp4): `Workload.op_bits[op]` is the operand
  precision per op class and slot, continuous; a target maps bits to a rate (a GPU
  interpolates between its per-precision peaks). A named format per op (integer vs float
  at equal bits) goes in as another per-op dict beside `op_bits`.
- per-layer activation formats and keep ratios: `Knobs` carries one entry per layer per
  knob (weight, KV and activation bits; FFN, token and head keep), and the workload keeps
  the knobs it was built from (`Workload.knobs`) so a target that re-derives work (AFD at
  its micro-batch, Duplex's batching steps, SpAtten's engine work) reads the same ones.
- meshes and collectives: `Workload.device_share` records the share of the model's work
  one device does (`Workload.scaled`), and the "comm" op class with "network" bytes holds
  traffic between devices; a mesh description (axes, sizes, topology) becomes one more
  static field of the workload, and collectives more op classes priced by a target's links.
- new outputs: anything a target reports beyond the five scalars goes in `breakdown`;
  a new scalar is a new entry of `Cost.SCALARS` that old targets leave unmodelled.
"""


import abc
from typing import Iterable

import equinox as eqx
from equinox import AbstractClassVar, AbstractVar
import jax.numpy as jnp
from jaxtyping import Array, Float

from hwcost._workload import OPS, Workload

SCALARS = ("latency_s", "energy_j", "dollars", "memory_bytes", "area_mm2")
ALL_MODELLED = frozenset(SCALARS)


def _check_modelled_names(owner: str, modelled: Iterable[str]) -> frozenset[str]:
    modelled = frozenset(modelled)
    unknown = sorted(modelled - ALL_MODELLED)
    if unknown:
        raise ValueError(f"{owner}.modelled={unknown[0]!r}: must be among {', '.join(SCALARS)}")
    return modelled


def require_modelled(target: str, modelled: frozenset[str], fields: Iterable[str], metric: str | None = None) -> None:
    """ValueError naming the target and the metric unless every one of `fields` is in `modelled`."""
    for name in fields:
        if name not in SCALARS:
            raise ValueError(f"field={name!r}: must be one of {', '.join(SCALARS)}")
        if name not in modelled:
            what = f"metric={metric!r} needs {name}" if metric and metric != name else f"metric={name!r}"
            raise ValueError(f"{what}, which target {target!r} does not model "
                             f"(it models {', '.join(s for s in SCALARS if s in modelled)})")


class Cost(eqx.Module):
    """What a workload costs on a target (module docstring): five scalars and a breakdown.

    latency_s [s], energy_j [J], dollars [USD], memory_bytes [bytes], area_mm2 [mm^2]:
    differentiable scalars, NaN where the target does not model them (see `modelled`).
    breakdown: target-specific arrays; GPU-like targets give "op_latency_s" and
    "op_dollars" [op, slot] (dense over `hwcost.OPS`). target: the target's name.
    """

    latency_s: Float[Array, ""]
    energy_j: Float[Array, ""]
    dollars: Float[Array, ""]
    memory_bytes: Float[Array, ""]
    area_mm2: Float[Array, ""]
    breakdown: dict[str, Array]
    target: str = eqx.field(static=True, default="target")
    modelled: frozenset[str] = eqx.field(static=True, default=ALL_MODELLED)

    SCALARS = SCALARS

    def __check_init__(self) -> None:
        _check_modelled_names("cost", self.modelled)

    @classmethod
    def of(cls, target: str, modelled: frozenset[str], breakdown: dict[str, Array] | None = None,
           **values: Array) -> "Cost":
        """A Cost with `values` for the modelled scalars and NaN for the others."""
        modelled = _check_modelled_names(target, modelled)
        if "latency_s" not in modelled:
            raise ValueError(f"{target}.modelled={sorted(modelled)}: must include latency_s (every target times a step)")
        missing = sorted(modelled - set(values))
        if missing:
            raise ValueError(f"{target}: modelled field {missing[0]!r} has no value")
        extra = sorted(set(values) - modelled)
        if extra:
            raise ValueError(f"{target}: {extra[0]!r} has a value but is not modelled "
                             f"(modelled: {', '.join(sorted(modelled))})")
        like = values["latency_s"]
        scalars = {name: (jnp.asarray(values[name]) + 0.0 * like if name in modelled
                          else jnp.full(jnp.shape(like), jnp.nan, jnp.result_type(like)))
                   for name in SCALARS}
        return cls(**scalars, breakdown=dict(breakdown or {}), target=target, modelled=modelled)

    # ---- access with a clear error for what is not modelled --------------------------
    def check_modelled(self, fields: Iterable[str], metric: str | None = None) -> None:
        """ValueError unless every one of `fields` is modelled by this cost's target."""
        require_modelled(self.target, self.modelled, fields, metric)

    def value(self, field: str) -> Array:
        """The scalar `field`, or ValueError if the target does not model it."""
        self.check_modelled((field,))
        return getattr(self, field)

    def scalars(self) -> dict[str, Array]:
        """The modelled scalars only."""
        return {name: getattr(self, name) for name in SCALARS if name in self.modelled}

    # ---- per-operation breakdown (GPU-like targets) ------------------------------------
    def _op_field(self, field: str) -> Array:
        if field not in self.breakdown:
            have = ", ".join(sorted(self.breakdown)) or "nothing"
            raise ValueError(f"breakdown[{field!r}]: target {self.target!r} has no per-operation {field} "
                             f"(its breakdown holds {have})")
        return self.breakdown[field]

    @property
    def op_latency_s(self) -> Float[Array, "op slot"]:
        """Latency per operation class (OPS order) and slot [s]."""
        return self._op_field("op_latency_s")

    @property
    def op_dollars(self) -> Float[Array, "op slot"]:
        """Dollars per operation class (OPS order) and slot [USD]."""
        return self._op_field("op_dollars")

    def by_op(self, field: str = "op_latency_s") -> dict[str, Array]:
        """Per-operation-class totals over slots, keyed by OPS names."""
        values = jnp.sum(self._op_field(field), axis=-1)
        return {op: values[..., i] for i, op in enumerate(OPS)}

    def of_ops(self, ops: tuple[str, ...], field: str = "op_dollars") -> Array:
        """Total of the breakdown `field` over the operation classes `ops`."""
        values = self._op_field(field)
        mask = jnp.asarray([op in ops for op in OPS], dtype=values.dtype)
        return jnp.sum(values * mask[:, None])


class Target(eqx.Module):
    """A hardware target: `cost(work) -> Cost` (module docstring).

    name: what `hwcost.get_target` and reports call it. modelled: the Cost scalars this
    target computes (a class constant); the others come back NaN and raise when asked for.
    """

    name: AbstractVar[str]
    modelled: AbstractClassVar[frozenset[str]]

    @abc.abstractmethod
    def cost(self, work: Workload) -> Cost:
        """What one step of `work` costs on this target."""
        raise NotImplementedError

    def check_metric(self, fields: Iterable[str], metric: str | None = None) -> None:
        """ValueError unless this target models every one of `fields` (before any costing)."""
        require_modelled(self.name, self.modelled, fields, metric)


def check_workload(target: str, work) -> Workload:
    """`work` if it is a Workload, else a ValueError naming the target."""
    if not isinstance(work, Workload):
        raise ValueError(f"work={type(work).__name__}: must be a hwcost.Workload ({target}.cost)")
    return work


def whole_model_inputs(target: str, work: Workload):
    """(config, scenario, knobs) a workload was built from, for targets that re-derive their own work.

    Such a target (AFD at its micro-batch, Duplex's batching step, SpAtten's engine work)
    needs the whole model of one step: a workload built by `hwcost.workload`, not
    restricted to some op classes nor scaled to one device's share.
    """
    if work.config is None or work.scenario is None:
        raise ValueError(f"work.config=None: {target} re-derives its work from the model config; "
                         "build the workload with hwcost.workload(cfg, scenario, knobs)")
    if work.ops != OPS:
        raise ValueError(f"work.ops={work.ops!r}: {target} costs the whole model; pass the workload before select()")
    if work.device_share != 1.0:
        raise ValueError(f"work.device_share={work.device_share!r}: {target} costs the whole model; "
                         "pass the workload before scaled()")
    return work.config, work.scenario, work.knobs


def check_phase(target: str, work: Workload, allowed: tuple[str, ...]) -> None:
    if work.phase not in allowed:
        raise ValueError(f"phase={work.phase!r}: target {target!r} models {' and '.join(allowed)} only "
                         f"(allowed: {', '.join(allowed)})")
