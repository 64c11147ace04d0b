"""The joint accuracy-cost objective and its trainer: one jitted step moves weights and knobs together.

loss = task + aux_weight * load_balance + lam * log(metric(cost(workload(cfg, scenario, knobs))))

The network and the workload read the same knobs (`codesign._space.DesignSpace`); the
gradient of one `jax.grad` over {"net": parameters, "knobs": knobs} reaches both, and
`optax.partition` gives each group its own optimiser (AdamW with the training schedule
for the network, Adam at `knob_lr` for the knobs). The log makes lambda a trade-off
between relative changes: a 1% cheaper design is worth lam/100 nats wherever the cost sits.
The gate temperature anneals geometrically from `temperature_start` to `temperature_end`.
Everything else (sharded step, checkpoints, exact resume, metrics) is `codesign._train`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import hwcost
from codesign._space import DesignSpace
from codesign._train import TrainConfig, Trainer, lm_loss, make_optimizer

METRICS = ("latency", "energy", "dollars", "edp")


def cost_metric(cost: hwcost.Cost, metric: str) -> jax.Array:
    """latency [s], energy [J], dollars [USD] or energy-delay product [J*s] of one scenario step."""
    if metric == "latency":
        return cost.latency_s
    if metric == "energy":
        return cost.energy_j
    if metric == "dollars":
        return cost.dollars
    if metric == "edp":
        return cost.energy_j * cost.latency_s
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

    def __post_init__(self) -> None:
        if not isinstance(self.lam, (int, float)) or not 0 <= self.lam < float("inf"):
            raise ValueError(f"lam={self.lam!r}: must be a finite number >= 0")
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r}: must be one of {', '.join(METRICS)}")
        if self.target not in hwcost.PRESETS:
            raise ValueError(f"target={self.target!r}: must be one of {', '.join(hwcost.PRESETS)}")
        if not 0 < self.temperature_end <= self.temperature_start:
            raise ValueError(f"temperature_end={self.temperature_end!r}: must be in (0, temperature_start]")
        if not self.knob_lr > 0:
            raise ValueError(f"knob_lr={self.knob_lr!r}: must be positive")

    def scenario(self) -> hwcost.Scenario:
        return hwcost.Scenario(phase="decode", batch=self.scenario_batch, context_len=self.scenario_context)


class JointTrainer(Trainer):
    """A Trainer whose trainable state is {"net": parameters, "knobs": design knobs}."""

    def __init__(self, tc: TrainConfig, jc: JointConfig, space: DesignSpace | None = None):
        self.jc = jc
        self.space = space or DesignSpace()
        self.target = hwcost.gpu(jc.target)
        self.scenario = jc.scenario()
        super().__init__(tc)

    def init_trainable(self, net_params: Any) -> Any:
        return {"net": net_params, "knobs": self.space.init(self.cfg)}

    def build_optimizer(self) -> optax.GradientTransformation:
        return optax.partition({"net": make_optimizer(self.tc), "knobs": optax.adam(self.jc.knob_lr)},
                               lambda tree: {"net": jax.tree.map(lambda _: "net", tree["net"]),
                                             "knobs": jax.tree.map(lambda _: "knobs", tree["knobs"])})

    def temperature(self, step: jax.Array) -> jax.Array:
        frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(self.tc.steps - 1, 1), 0.0, 1.0)
        return self.jc.temperature_start * (self.jc.temperature_end / self.jc.temperature_start) ** frac

    def model_from(self, params: Any, temperature: jax.Array | float | None = None) -> nnx.Module:
        t = self.jc.temperature_end if temperature is None else temperature
        net = self.space.apply(self.cfg, params["net"], params["knobs"], t)
        return nnx.merge(self.graphdef, net, self.rest)

    def cost(self, knobs: dict) -> hwcost.Cost:
        hk = self.space.workload_knobs(self.cfg, knobs, self.scenario)
        return self.target.cost(hwcost.workload(self.cfg, self.scenario, hk))

    def objective(self, params: Any, inputs: jax.Array, targets: jax.Array, step: jax.Array):
        logits, aux = self.model_from(params, self.temperature(step))(inputs)
        task = lm_loss(logits, targets)
        balance = aux["load_balance_loss"]
        value = cost_metric(self.cost(params["knobs"]), self.jc.metric)
        total = task + self.tc.aux_weight * balance + self.jc.lam * jnp.log(value)
        knobs = params["knobs"]
        return total, {"loss": task, "load_balance_loss": balance, "cost": value,
                       "weight_bits": jnp.mean(self.space.format_probs(knobs) @ self.space.format_bits),
                       "ffn_keep": jnp.mean(self.space.ffn_keep(knobs))}
