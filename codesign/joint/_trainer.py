"""The joint accuracy-cost objective and its trainer: one jitted step moves weights, knobs and hardware.

Penalty form (budget None):
    loss = task + aux_weight * load_balance + lam * log(metric(cost))
Constrained form (cost <= budget), by a Lagrange multiplier mu >= 0 with dual ascent:
    loss = task + aux_weight * load_balance + mu * (log(metric(cost)) - log(budget))
    mu  <- max(0, mu + dual_lr * (log(metric) - log(budget)))       (every step)
(`lam` is the multiplier's initial value in that form.) The metric is latency [s], energy [J],
dollars [USD], the energy-delay product edp [J*s] or the energy-delay-area product edap
[J*s*mm^2] of one scenario step.

The network and the workload read the same knobs (`codesign.joint._space.DesignSpace`); the
target's learnable hardware parameters (`codesign.joint._targets`) sit beside them. One
`jax.grad` over {"net", "knobs", "hw", "dual"} reaches all of them, and `optax.partition`
gives each group its own optimiser: AdamW with the training schedule for the network, Adam
at `knob_lr` for the knobs, Adam at `hw_lr` for log hardware parameters, projected gradient
ascent for the multiplier. The log makes lambda a trade-off between relative changes: a 1%
cheaper design is worth lam/100 nats wherever the cost sits. The gate temperature anneals
geometrically from `temperature_start` to `temperature_end`. Straight-through hardening
(`straight_through` = s > 0): over the final fraction s of the steps the forward pass (network and
cost) uses the argmax formats while gradients still reach the logits through the softmax, so the
weights finish training under the design that `harden` will export (no mixture-to-argmax gap).
Everything else (sharded step, checkpoints, exact resume, metrics) is `codesign.training._trainer`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import hwcost
from codesign.joint import _targets
from codesign.joint._space import DesignSpace
from codesign.training._trainer import TrainConfig, Trainer, lm_loss, make_optimizer

METRICS = ("latency", "energy", "dollars", "edp", "edap")
# the Cost fields each metric reads: a target that does not model one cannot be optimised for it
METRIC_FIELDS = {"latency": ("latency_s",), "energy": ("energy_j",), "dollars": ("dollars",),
                 "edp": ("energy_j", "latency_s"), "edap": ("energy_j", "latency_s", "area_mm2")}


def cost_metric(cost: hwcost.Cost, metric: str) -> jax.Array:
    """latency [s], energy [J], dollars [USD] or energy-delay product [J*s] of one scenario step.

    ValueError naming the target and the metric if the target does not model a field it needs.
    """
    if metric in METRIC_FIELDS and isinstance(cost, hwcost.Cost):
        cost.check_modelled(METRIC_FIELDS[metric], metric)
    if metric == "latency":
        return cost.latency_s
    if metric == "energy":
        return cost.energy_j
    if metric == "dollars":
        return cost.dollars
    if metric == "edp":
        return cost.energy_j * cost.latency_s
    if metric == "edap":
        return cost.energy_j * cost.latency_s * cost.area_mm2
    raise ValueError(f"metric={metric!r}: must be one of {', '.join(METRICS)}")


@dataclass(frozen=True)
class JointConfig:
    lam: float = 0.1
    metric: str = "latency"
    target: str = "h200"
    knob_lr: float = 0.05
    temperature_start: float = 0.3
    temperature_end: float = 0.02
    scenario_batch: int = 64
    scenario_context: int = 2048
    hardware: tuple[str, ...] = ()   # learnable hardware parameters of the target
    hw_lr: float = 0.05
    hw_range: float = 8.0
    budget: float | None = None      # constrained form: metric <= budget (metric's unit)
    dual_lr: float = 0.5
    straight_through: float = 0.0   # final fraction of the steps trained on the argmax design (straight-through)

    def __post_init__(self) -> None:
        if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not 0 <= self.lam < float("inf"):
            raise ValueError(f"lam={self.lam!r}: must be a finite number >= 0")
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r}: must be one of {', '.join(METRICS)}")
        _targets.check_metric(self.target, METRIC_FIELDS[self.metric], self.metric)  # also checks the name
        if isinstance(self.hardware, str):
            raise ValueError(f"hardware={self.hardware!r}: must be a tuple of parameter names")
        _targets.check_learnable(self.target, tuple(self.hardware))
        if self.budget is not None and not (isinstance(self.budget, (int, float)) and 0 < self.budget < math.inf):
            raise ValueError(f"budget={self.budget!r}: must be a positive finite number (in the metric's unit)")
        for name in ("hw_lr", "dual_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be positive")
        if not self.hw_range > 1:
            raise ValueError(f"hw_range={self.hw_range!r}: must be > 1 (a factor around the preset)")
        if not 0 < self.temperature_end <= self.temperature_start:
            raise ValueError(f"temperature_end={self.temperature_end!r}: must be in (0, temperature_start]")
        if not 0.0 <= self.straight_through <= 1.0:
            raise ValueError(f"straight_through={self.straight_through!r}: must be a fraction in [0, 1]")
        if not self.knob_lr > 0:
            raise ValueError(f"knob_lr={self.knob_lr!r}: must be positive")

    def scenario(self) -> hwcost.Scenario:
        return hwcost.Scenario(phase="decode", batch=self.scenario_batch, context_len=self.scenario_context)


def check_budget(cfg, space: DesignSpace, jc: JointConfig) -> None:
    """ValueError if `jc.budget` is below the cost of the cheapest design the space holds.

    The cheapest corner is the fewest-bit formats and the minimum FFN width, on the target
    with each learnable hardware parameter at whichever end of its box is cheaper (the
    metrics are monotone in each parameter over the box for the targets here).
    """
    if jc.budget is None:
        return
    knobs = space.cheapest(cfg)
    work = hwcost.workload(cfg, jc.scenario(), space.workload_knobs(cfg, knobs, jc.scenario()))
    base = _targets.make_target(jc.target)
    cheapest = math.inf
    for corner in range(2 ** len(jc.hardware)):
        logs = {f: jnp.log(jnp.asarray(getattr(base, f), jnp.float32))
                + (1 if corner >> i & 1 else -1) * math.log(jc.hw_range) for i, f in enumerate(jc.hardware)}
        target = _targets.with_log_params(base, logs, jc.hw_range)
        cheapest = min(cheapest, float(cost_metric(target.cost(work), jc.metric)))
    if jc.budget < cheapest:
        raise ValueError(f"budget={jc.budget!r}: unreachable; the cheapest design of this space costs "
                         f"{cheapest:.4g} ({jc.metric}) on {jc.target}")


def _dual_ascent(lr: float) -> optax.GradientTransformation:
    """Projected gradient ASCENT on a non-negative multiplier: mu <- max(0, mu + lr * dL/dmu)."""
    def update(grads, state, params):
        return jax.tree.map(lambda m, g: jnp.maximum(m + lr * g, 0.0) - m, params, grads), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class JointTrainer(Trainer):
    """A Trainer whose trainable state is `{"net", "knobs"[, "hw"][, "dual"]}` (see module docstring)."""

    def __init__(self, tc: TrainConfig, jc: JointConfig, space: DesignSpace | None = None,
                 init_net_params: Any = None):
        self.jc = jc
        self.space = space or DesignSpace()
        self.base_target = _targets.make_target(jc.target)
        self.scenario = jc.scenario()
        check_budget(tc.model_config(), self.space, jc)
        super().__init__(tc, init_net_params)

    def init_trainable(self, net_params: Any) -> Any:
        tree = {"net": net_params, "knobs": self.space.init(self.cfg)}
        if self.jc.hardware:
            tree["hw"] = _targets.init_log_params(self.base_target, tuple(self.jc.hardware))
        if self.jc.budget is not None:
            tree["dual"] = {"mu": jnp.asarray(self.jc.lam, jnp.float32)}
        return tree

    def optimizer_groups(self) -> dict[str, optax.GradientTransformation]:
        """One optimiser per top-level key of the trainable state."""
        return {"net": make_optimizer(self.tc), "knobs": optax.adam(self.jc.knob_lr),
                "hw": optax.adam(self.jc.hw_lr), "dual": _dual_ascent(self.jc.dual_lr)}

    def build_optimizer(self) -> optax.GradientTransformation:
        return optax.partition(self.optimizer_groups(),
                               lambda tree: {k: jax.tree.map(lambda _: k, v) for k, v in tree.items()})

    def progress(self, step: jax.Array) -> jax.Array:
        """Fraction of the schedule done at `step` (0 at the first step, 1 at the last)."""
        return jnp.clip(jnp.asarray(step, jnp.float32) / max(self.tc.steps - 1, 1), 0.0, 1.0)

    def temperature(self, step: jax.Array) -> jax.Array:
        return self.jc.temperature_start * (self.jc.temperature_end / self.jc.temperature_start) ** self.progress(step)

    def knobs_at(self, params: Any, step: jax.Array | None) -> dict:
        """The knobs the step sees: in the final `straight_through` fraction of the schedule, marked "hard"
        (argmax formats forward, softmax gradient backward); evaluation (step None) sees the soft mixture."""
        knobs = params["knobs"]
        if step is None or not self.jc.straight_through:
            return knobs
        hard = (self.progress(step) >= 1.0 - self.jc.straight_through - 1e-6).astype(jnp.float32)
        return {**knobs, "hard": hard}

    def model_from(self, params: Any, temperature: jax.Array | float | None = None) -> nnx.Module:
        t = self.jc.temperature_end if temperature is None else temperature
        net = self.space.apply(self.cfg, params["net"], params["knobs"], t)
        return nnx.merge(self.graphdef, net, self.rest)

    def forward(self, params: Any, inputs: jax.Array, step: jax.Array | None):
        temperature = None if step is None else self.temperature(step)
        params = {**params, "knobs": self.knobs_at(params, step)}
        quant = self.space.network_quant(params["knobs"])
        return self.model_from(params, temperature)(inputs, quant=quant)

    def target(self, params: Any | None = None):
        """The hardware the cost is evaluated on: the preset with the learned parameters put in."""
        params = self.params if params is None else params
        return _targets.with_log_params(self.base_target, params.get("hw", {}), self.jc.hw_range)

    def cost(self, knobs: dict, target=None) -> hwcost.Cost:
        hk = self.space.workload_knobs(self.cfg, knobs, self.scenario)
        return (target or self.base_target).cost(hwcost.workload(self.cfg, self.scenario, hk))

    def objective(self, params: Any, inputs: jax.Array, targets: jax.Array, step: jax.Array):
        logits, aux = self.forward(params, inputs, step)
        task = lm_loss(logits, targets)
        balance = aux["load_balance_loss"]
        knobs = self.knobs_at(params, step)
        value = cost_metric(self.cost(knobs, self.target(params)), self.jc.metric)
        if self.jc.budget is None:
            penalty = self.jc.lam * jnp.log(value)
        else:
            penalty = params["dual"]["mu"] * (jnp.log(value) - jnp.log(self.jc.budget))
        metrics = {"loss": task, "load_balance_loss": balance, "cost": value,
                   "weight_bits": jnp.mean(self.space.format_probs(knobs) @ self.space.format_bits),
                   "ffn_keep": jnp.mean(self.space.ffn_keep(knobs))}
        if self.space.kv_formats:
            metrics["kv_bits"] = jnp.mean(self.space.workload_knobs(self.cfg, knobs, self.scenario).kv_bits)
        if "dual" in params:
            metrics["mu"] = params["dual"]["mu"]
        for name, log_value in params.get("hw", {}).items():
            metrics[f"hw_{name}"] = getattr(self.target(params), name)
        return task + self.tc.aux_weight * balance + penalty, metrics
