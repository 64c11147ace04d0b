"""SpAtten keep ratios as knobs of the joint loop.

Cascade token and head pruning (SpAtten, Wang, Zhang & Han, HPCA 2021, arXiv 2012.09852,
section III-A) gets one learnable keep ratio per layer, next to the weight-format and
FFN-width knobs of `codesign.joint._space.DesignSpace`:

  token_keep_logit [L]   keep_l = cummin_{m<=l} sigmoid(logit_m): kept fraction of the
                         prunable tokens AFTER layer l's attention (cumulative, a pruned
                         token never comes back, hence the cumulative minimum)
  head_keep_logit  [L]   the same for the query heads

The network reads them through `nets.PrunedLM.soft` (soft top-k masks on the accumulated
importance ranks, sigmoid((keep*n - rank - 0.5) / (T*n)), temperature T annealed by the
joint loop's schedule, the one the FFN width gate uses). The weights stay in
`nets.TransformerLM`'s scanned layout (so `train()`, checkpoints, `init_net_params` of a
pretrain and the weight transform `DesignSpace.apply` are unchanged); each forward pass
applies the format / width transform and then unstacks the layers into a `PrunedLM`
(`pruned_params`, a pure pytree function, so gradients reach the stacked weights).

The workload reads the same ratios through `hwcost.pruning_knobs` (layer l attends what
survived layer l-1): fewer KV-cache reads and attention FLOPs on a GPU target, less
DRAM traffic on `hwcost.SpAtten`. In a decode scenario the context is the prunable
prompt and the generated tokens are never pruned (as in `PrunedLM`), so the attended
fraction is (keep * context + g) / (context + g) with g = (gen_len - 1) / 2 the mean
number of generated tokens attended (hwcost's averaging over the generation).

Limitation: `PrunedLM.soft` has no per-layer KV / activation fake-quant (`nets.LayerQuant`),
so a `PruningSpace` searches weight formats, FFN width and the pruning knobs, never KV or
activation formats (kv_formats and act_formats must be ()).

Hardening keeps the DesignSpace's choices and rounds the keep ratios to the static
counts of a `nets.PrunePlan`: kept_count(n_tokens, keep_l) tokens and kept_count(H, keep_l)
heads per layer; `HardenedPruningTrainer` fine-tunes the network with that plan applied
exactly (hard top-k, gathers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

import hwcost
import nets
from codesign.joint._trainer import JointConfig, JointTrainer
from codesign.joint._space import WIDTH_MULTIPLE, DesignSpace, _key_name, _segment_starts
from codesign.training._trainer import TrainConfig, Trainer

_BIG_LOGIT = 30.0


@dataclass(frozen=True)
class PruningSpace(DesignSpace):
    """A DesignSpace plus per-layer token and head keep ratios (module docstring).

    search_tokens / search_heads: whether the token / head keep ratios are knobs (else 1).
    init_token_keep / init_head_keep: their initial value, in (0, 1).
    """

    kv_formats: tuple[str, ...] = ()
    search_tokens: bool = True
    search_heads: bool = True
    init_token_keep: float = 0.95
    init_head_keep: float = 0.95

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("kv_formats", "act_formats"):
            if getattr(self, field):
                raise ValueError(f"{field}={getattr(self, field)!r}: must be () in a PruningSpace "
                                 "(PrunedLM.soft has no per-layer KV/activation fake-quant)")
        for field in ("init_token_keep", "init_head_keep"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
                raise ValueError(f"{field}={value!r}: must be in (0, 1)")
        for field in ("search_tokens", "search_heads"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"{field}={getattr(self, field)!r}: must be True or False")

    # ---- knobs -------------------------------------------------------------------------
    def init(self, cfg: nets.ModelConfig) -> dict[str, jax.Array]:
        knobs = super().init(cfg)
        logit = lambda p: jnp.full((cfg.n_layers,), jnp.log(p / (1.0 - p)), jnp.float32)  # noqa: E731
        knobs["token_keep_logit"] = logit(self.init_token_keep)
        knobs["head_keep_logit"] = logit(self.init_head_keep)
        return knobs

    def cheapest(self, cfg: nets.ModelConfig) -> dict[str, jax.Array]:
        knobs = super().cheapest(cfg)
        for key, searched in (("token_keep_logit", self.search_tokens), ("head_keep_logit", self.search_heads)):
            knobs[key] = jnp.full((cfg.n_layers,), -_BIG_LOGIT if searched else _BIG_LOGIT, jnp.float32)
        return knobs

    def token_keep(self, knobs: dict) -> jax.Array:
        """Cumulative kept fraction of the prunable tokens after each layer, shape (L,)."""
        if not self.search_tokens:
            return jnp.ones_like(knobs["token_keep_logit"])
        return nets.monotone_keep(jax.nn.sigmoid(knobs["token_keep_logit"]))

    def head_keep(self, knobs: dict) -> jax.Array:
        """Cumulative kept fraction of the heads after each layer, shape (L,)."""
        if not self.search_heads:
            return jnp.ones_like(knobs["head_keep_logit"])
        return nets.monotone_keep(jax.nn.sigmoid(knobs["head_keep_logit"]))

    def workload_knobs(self, cfg: nets.ModelConfig, knobs: dict, scenario: hwcost.Scenario) -> hwcost.Knobs:
        """DesignSpace's knobs with the attended token and head fractions of the keep ratios."""
        base = super().workload_knobs(cfg, knobs, scenario)
        return _with_pruning(base, self.token_keep(knobs), self.head_keep(knobs), scenario)

    # ---- hardening ---------------------------------------------------------------------
    def harden(self, cfg: nets.ModelConfig, knobs: dict, multiple: int = WIDTH_MULTIPLE, *,
               n_tokens: int | None = None) -> dict[str, Any]:
        """DesignSpace.harden plus token_keep / head_keep (learned ratios), n_tokens and the
        static counts token_counts[l] = kept_count(n_tokens, keep_l), head_counts[l] = kept_count(H, keep_l).

        n_tokens: prunable tokens per sequence (default the model's max_seq_len).
        """
        n_tokens = cfg.max_seq_len if n_tokens is None else n_tokens
        if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens <= 0:
            raise ValueError(f"n_tokens={n_tokens!r}: must be a positive integer (prunable tokens per sequence)")
        out = super().harden(cfg, knobs, multiple)
        # kept_count needs (0, 1]; sigmoid of a very negative logit can underflow to 0 in float32
        token = [max(float(v), 1e-9) for v in jax.device_get(self.token_keep(knobs))]
        head = [max(float(v), 1e-9) for v in jax.device_get(self.head_keep(knobs))]
        out.update(token_keep=token, head_keep=head, n_tokens=n_tokens,
                   token_counts=[nets.kept_count(n_tokens, k) for k in token],
                   head_counts=[nets.kept_count(cfg.attention.n_heads, k) for k in head])
        return out

    def prune_plan(self, hardened: dict[str, Any], **plan_kw) -> nets.PrunePlan:
        """The static PrunePlan of a hardened design (plan_kw: value_keep, progressive)."""
        _check_pruning(hardened)
        return nets.PrunePlan.from_keep(hardened["token_keep"], hardened["head_keep"], **plan_kw)

    def hard_workload_knobs(self, cfg: nets.ModelConfig, hardened: dict[str, Any],
                            scenario: hwcost.Scenario) -> hwcost.Knobs:
        """Exact hwcost knobs of the hardened design: the kept counts as fractions."""
        base = super().hard_workload_knobs(cfg, hardened, scenario)
        _check_pruning(hardened)
        token = jnp.asarray([c / hardened["n_tokens"] for c in hardened["token_counts"]], jnp.float32)
        head = jnp.asarray([c / cfg.attention.n_heads for c in hardened["head_counts"]], jnp.float32)
        return _with_pruning(base, token, head, scenario)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "search_tokens": self.search_tokens, "search_heads": self.search_heads,
                "init_token_keep": self.init_token_keep, "init_head_keep": self.init_head_keep}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PruningSpace":
        return cls(formats=tuple(d["formats"]), kv_formats=tuple(d["kv_formats"]),
                   act_formats=tuple(d["act_formats"]), search_ffn_width=bool(d["search_ffn_width"]),
                   init_keep=float(d["init_keep"]), search_tokens=bool(d["search_tokens"]),
                   search_heads=bool(d["search_heads"]), init_token_keep=float(d["init_token_keep"]),
                   init_head_keep=float(d["init_head_keep"]))


def _check_pruning(hardened: dict[str, Any]) -> None:
    for key in ("token_keep", "head_keep", "token_counts", "head_counts"):
        if not isinstance(hardened.get(key), list):
            raise ValueError(f"hardened.{key}={hardened.get(key)!r}: must be a list (one entry per layer)")
    n = hardened.get("n_tokens")
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"hardened.n_tokens={n!r}: must be a positive integer")


def _with_pruning(base: hwcost.Knobs, token_keep_after: jax.Array, head_keep_after: jax.Array,
                  scenario: hwcost.Scenario) -> hwcost.Knobs:
    """`hwcost.pruning_knobs` with the never-pruned generated tokens of a decode scenario counted."""
    if scenario.phase == "decode":
        context, generated = float(scenario.context_len), (scenario.gen_len - 1) / 2
        token_keep_after = (token_keep_after * context + generated) / (context + generated)
    return hwcost.pruning_knobs(base, token_keep_after, head_keep_after)


# ---- the network path ------------------------------------------------------------------
def pruned_params(cfg: nets.ModelConfig, params: nnx.State) -> nnx.State:
    """TransformerLM parameters (scanned segments, stacked layers) as PrunedLM parameters (blocks.<layer>).

    A pure pytree function (slices of the stacked arrays), so gradients flow back to the
    stacked layout; `nets.PrunedLM.from_model` does the same on modules.
    """
    starts = _segment_starts(cfg)
    out = []
    for path, var in nnx.to_flat_state(params):
        names = [_key_name(k) for k in path]
        if names and names[0] == "segments":
            unit_len, first = starts[int(names[1])]
            pos = int(names[3])
            stacked = var[...]
            for r in range(stacked.shape[0]):
                out.append((("blocks", first + r * unit_len + pos) + tuple(path[4:]), var.replace(stacked[r])))
        else:
            out.append((path, var))
    return nnx.from_flat_state(out)


class _PrunedNetwork:
    """The PrunedLM graph of a Trainer's config; `build(tl_params)` merges converted parameters into it."""

    def __init__(self, trainer: Trainer, net_params: Any):
        pruned = nets.PrunedLM.from_model(nnx.merge(trainer.graphdef, net_params, trainer.rest))
        self.graphdef, _, self.rest = nnx.split(pruned, nnx.Param, ...)
        self.cfg = trainer.cfg

    def build(self, tl_params: Any) -> nets.PrunedLM:
        return nnx.merge(self.graphdef, pruned_params(self.cfg, tl_params), self.rest)


class PruningJointTrainer(JointTrainer):
    """JointTrainer whose knobs include the token / head keep ratios (module docstring).

    The trainable pytree is `{"net", "knobs"[, "hw"][, "dual"]}` as in JointTrainer, with
    knobs["token_keep_logit"], knobs["head_keep_logit"] added; every sequence position is
    prunable (n_tokens = tc.seq_len) and the loss is the LM loss at every position, so a
    pruned token's prediction (from its state when pruned) is part of the price of pruning.

    spatten: an `hwcost.SpAtten` to cost on instead of the JointConfig's target: the metric
    (latency, energy, edp, edap) is then that of SpAtten's attention engine (its DRAM
    traffic is logged as `dram_bytes`); learnable hardware parameters and the budget form
    are GPU/XR-NPE only.
    """

    def __init__(self, tc: TrainConfig, jc: JointConfig, space: PruningSpace | None = None,
                 init_net_params: Any = None, *, spatten: hwcost.SpAtten | None = None):
        space = PruningSpace() if space is None else space
        if not isinstance(space, PruningSpace):
            raise ValueError(f"space={type(space).__name__}: must be a PruningSpace")
        if spatten is not None:
            if not isinstance(spatten, hwcost.SpAtten):
                raise ValueError(f"spatten={type(spatten).__name__}: must be an hwcost.SpAtten or None")
            if jc.metric == "dollars":
                raise ValueError(f"metric={jc.metric!r}: with spatten must be latency, energy, edp or edap")
            if jc.hardware or jc.budget is not None:
                raise ValueError(f"hardware={jc.hardware!r}: with spatten must be () and budget None "
                                 "(learnable parameters and budget checks are those of the GPU/XR-NPE targets)")
        self.spatten = spatten
        super().__init__(tc, jc, space, init_net_params)
        self.n_tokens = tc.seq_len
        self.pruned = _PrunedNetwork(self, jax.device_get(self.params["net"]))

    def forward(self, params: Any, inputs: jax.Array, step: jax.Array | None):
        t = self.jc.temperature_end if step is None else self.temperature(step)
        knobs = params["knobs"]
        net = self.space.apply(self.cfg, params["net"], knobs, t)
        return self.pruned.build(net).soft(inputs, token_keep=self.space.token_keep(knobs),
                                           head_keep=self.space.head_keep(knobs), temperature=t)

    def cost(self, knobs: dict, target=None):
        if self.spatten is None:
            return super().cost(knobs, target)
        hk = self.space.workload_knobs(self.cfg, knobs, self.scenario)
        return self.spatten.attention_cost(hwcost.spatten_workload(self.cfg, self.scenario, hk))

    def objective(self, params: Any, inputs: jax.Array, targets: jax.Array, step: jax.Array):
        loss, metrics = super().objective(params, inputs, targets, step)
        knobs = params["knobs"]
        metrics["token_keep"] = jnp.mean(self.space.token_keep(knobs))
        metrics["head_keep"] = jnp.mean(self.space.head_keep(knobs))
        if self.spatten is not None:
            metrics["dram_bytes"] = self.cost(knobs).dram_bytes
        return loss, metrics

    def harden(self, params: Any | None = None) -> dict[str, Any]:
        """The hardened design of the current (or given) knobs, counts for n_tokens = tc.seq_len."""
        params = jax.device_get(self.params if params is None else params)
        return self.space.harden(self.cfg, params["knobs"], n_tokens=self.n_tokens)

    def hard_cost(self, hardened: dict[str, Any], params: Any | None = None):
        """Predicted Cost (or SpAttenCost) of a hardened design on this trainer's target."""
        hk = self.space.hard_workload_knobs(self.cfg, hardened, self.scenario)
        if self.spatten is not None:
            return self.spatten.attention_cost(hwcost.spatten_workload(self.cfg, self.scenario, hk))
        return self.target(params).cost(hwcost.workload(self.cfg, self.scenario, hk))


class HardenedPruningTrainer(Trainer):
    """Plain training with a hardened pruning design applied exactly: one format per layer, 0/1 FFN
    width masks (`DesignSpace.apply_hard`) and the hard `PrunePlan` (top-k tokens and heads, gathers)."""

    def __init__(self, tc: TrainConfig, space: PruningSpace, hardened: dict[str, Any], init_params: Any = None,
                 **plan_kw):
        if hardened.get("n_tokens") != tc.seq_len:
            raise ValueError(f"hardened.n_tokens={hardened.get('n_tokens')!r}: must equal seq_len={tc.seq_len} "
                             "(the static counts are for that many tokens)")
        self.space, self.hardened = space, hardened
        self.plan = space.prune_plan(hardened, **plan_kw)
        super().__init__(tc, init_params)
        self.pruned = _PrunedNetwork(self, jax.device_get(self.params))

    def forward(self, params: Any, inputs: jax.Array, step: jax.Array | None):
        net = self.space.apply_hard(self.cfg, params, self.hardened)
        return self.pruned.build(net)(inputs, plan=self.plan)


__all__ = ["HardenedPruningTrainer", "PruningJointTrainer", "PruningSpace", "pruned_params"]
