"""Training under a hardened design that is an ARGUMENT of the compiled step: one compilation per space.

`HardenedTrainer` bakes its design into the traced function (one compilation per design, 50-120 s
on a small CPU); a search or a protocol that trains hundreds of designs cannot afford that.
`DesignTrainer` keeps the design in its trainable state beside the network:

    {"net": network parameters, "design": {"knobs": one-hot logits (`DesignSpace.hard_knobs`),
                                           "widths": kept FFN hidden units per layer (float32)}}

The forward pass is `DesignSpace.apply(..., widths=...)` with those one-hot knobs: the mixture of
fake-quantised copies with probabilities exactly 1 and 0 (softmax of +-1e4 logits underflows to 0),
and the exact 0/1 FFN mask, i.e. the same network `apply_hard` builds, while every format of the
space stays in the traced graph. The design never moves (`optax.set_to_zero` on it); only the network
trains, with the `TrainConfig`'s optimiser. Changing design, seed or starting weights recompiles
nothing: `train(hardened, init, seed=...)` resets the state and runs `tc.steps` steps. The seed picks
the data order through the step index (a batch is drawn from `fold_in(data_key, step)`; seed s uses
steps s * SEED_STRIDE onward), so it too is an argument of the step, not a constant.

The price: every step fake-quantises each weight into every format of the space (the weight
transform is per parameter, not per token, so this is small next to the matmuls of a batch).
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from codesign.joint._space import DesignSpace, design_knobs, full_widths
from codesign.training._trainer import TrainConfig, Trainer, make_optimizer

SEED_STRIDE = 1_000_000  # seed s trains on the batches of steps s * SEED_STRIDE, s * SEED_STRIDE + 1, ...


class DesignTrainer(Trainer):
    """Plain training of the network under a hardened design held in the state (see module docstring)."""

    def __init__(self, tc: TrainConfig, space: DesignSpace, init_net_params: Any = None):
        self.space = space
        super().__init__(tc, init_net_params)
        self.init_net = jax.device_get(self.params["net"])

    def design_state(self, hardened: dict[str, Any] | None = None) -> dict[str, jax.Array]:
        """The state leaves of a hardened design (None: the first format everywhere, full widths)."""
        full = [int(w) for w in full_widths(self.cfg)]
        if hardened is None:
            n = self.cfg.n_layers
            hardened = {"formats": [self.space.formats[0]] * n,
                        "kv_formats": [self.space.kv_formats[0]] * n if self.space.kv_formats else [],
                        "act_formats": [self.space.act_formats[0]] * n if self.space.act_formats else [],
                        "ffn_widths": full}
        return design_knobs(self.space, self.cfg, hardened)

    def init_trainable(self, net_params: Any) -> Any:
        return {"net": net_params, "design": self.design_state()}

    def build_optimizer(self) -> optax.GradientTransformation:
        return optax.partition({"net": make_optimizer(self.tc), "design": optax.set_to_zero()},
                               lambda tree: {k: jax.tree.map(lambda _: k, v) for k, v in tree.items()})

    def model_from(self, params: Any):
        from flax import nnx

        design = params["design"]
        net = self.space.apply(self.cfg, params["net"], design["knobs"], 1.0, widths=design["widths"])
        return nnx.merge(self.graphdef, net, self.rest)

    def forward(self, params: Any, inputs: jax.Array, step: jax.Array | None):
        return self.model_from(params)(inputs, quant=self.space.network_quant(params["design"]["knobs"]))

    def state_for(self, hardened: dict[str, Any], net_params: Any = None) -> dict[str, Any]:
        """Trainable state of `hardened` on `net_params` (None: the weights given at construction)."""
        net = self.init_net if net_params is None else net_params
        tree = {"net": net, "design": self.design_state(hardened)}
        return jax.device_put(tree, self.rules.tree_shardings(tree))

    def load(self, hardened: dict[str, Any], net_params: Any = None) -> None:
        """Put `hardened` on `net_params` into the trainer and reset the optimiser (no recompilation)."""
        self.params = self.state_for(hardened, net_params)
        opt_state = self.optimizer.init(self.params)
        self.opt_state = jax.device_put(opt_state, self.rules.tree_shardings(opt_state))

    def train(self, hardened: dict[str, Any], net_params: Any = None, *, seed: int = 0,
              steps: int | None = None) -> float:
        """Train `hardened` from `net_params` for `steps` (default `tc.steps`) steps on seed `seed`'s
        batches; the validation loss [nats/byte]. The trained state stays in `self.params`."""
        if not (isinstance(seed, int) and seed >= 0):
            raise ValueError(f"seed={seed!r}: must be a non-negative integer")
        self.load(hardened, net_params)
        start = seed * SEED_STRIDE
        for step in range(start, start + (self.tc.steps if steps is None else steps)):
            self.advance(step)
        return self.evaluate()

    def loss_of(self, hardened: dict[str, Any], net_params: Any = None) -> float:
        """Validation loss of `hardened` applied to `net_params` without training (post-training quantisation)."""
        return self.evaluate(self.state_for(hardened, net_params))
