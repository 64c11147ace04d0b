"""The design space: continuous relaxations of per-layer choices, read by the network AND the workload.

Knobs are a plain dict pytree, a sibling of the network parameters (never inside an
NNX module):
  w_logits        [L, F]   logits over candidate weight formats per layer
  kv_logits       [L, Fk]  logits over candidate KV-cache formats per layer (when searched)
  act_logits      [L, Fa]  logits over activation formats per layer (when `act_formats` is set)
  ffn_keep_logit  [L]      logit of the kept fraction of each layer's FFN / expert hidden width

The network reads them through a transformation of its parameters, so the model code
is unchanged: every block weight matrix of layer l becomes the mixture
sum_f softmax(w_logits[l])_f * fake_quant(W, format_f) (straight-through gradient), and the
rows of each FFN down-projection are scaled by a soft structured gate
m_j = sigmoid((keep * F - j - 0.5) / (temperature * F)) over the hidden index j, which
equals zeroing the hidden units j >= keep*F at temperature -> 0. Keys/values and
activations are fake-quantised inside the forward pass through `nets.LayerQuant` (the
model's `quant` argument), with the softmax of kv_logits / act_logits as mixture weights.
The workload reads the same knobs as expected bits (softmax @ bits) and expected kept
fraction. Every knob the cost sees is also seen by the network, so no knob can be driven
to its cheapest value for free.

A knob dict may carry a scalar "hard" (added by the trainer, never trained): at 1 the format
probabilities are the argmax one-hot in the forward pass with the softmax's gradient behind
them (straight-through hardening; see `JointConfig.straight_through`).

Hardening (`harden`) takes the argmax formats and rounds kept widths to multiples of 8
(tensor-core and SIMD friendly); `apply_hard` / `hard_quant` / `hard_workload_knobs` are
the exact (0/1 mask, one format) counterparts used by recovery fine-tuning, export and
`codesign verify`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import hwcost
import nets
from nets.formats import fake_quant, get_format, mixture_fake_quant

DEFAULT_FORMATS = ("bf16", "fp8_e4m3", "fp4_e2m1")
DEFAULT_KV_FORMATS = ("bf16", "fp8_e4m3", "mxfp4")  # raw fp4 (max 6) cannot hold unscaled keys; MX scales per 32
WIDTH_MULTIPLE = 8
_FFN_DOWN = ("down", "expert_down", "shared_down")  # parameter names whose hidden axis is the gated one
_NOT_QUANTISED = ("router_kernel",)  # routing decisions stay in float32


@dataclass(frozen=True)
class DesignSpace:
    """Which choices are searched. `formats` are names from `nets.formats.FORMAT_NAMES`."""

    formats: tuple[str, ...] = DEFAULT_FORMATS
    kv_formats: tuple[str, ...] = DEFAULT_KV_FORMATS  # () = KV cache not searched (scenario's kv_bits)
    act_formats: tuple[str, ...] = ()                 # () = activations not searched (scenario's act_bits)
    search_ffn_width: bool = True
    init_keep: float = 0.95

    def __post_init__(self) -> None:
        if not self.formats:
            raise ValueError("formats=(): must name at least one format")
        for field in ("formats", "kv_formats", "act_formats"):
            names = getattr(self, field)
            if isinstance(names, str) or not isinstance(names, (tuple, list)):
                raise ValueError(f"{field}={names!r}: must be a tuple of format names")
            for name in names:
                get_format(name)  # raises ValueError listing the known names
            if len(set(names)) != len(names):
                raise ValueError(f"{field}={names!r}: names must be distinct")
        if not 0.0 < self.init_keep < 1.0:
            raise ValueError(f"init_keep={self.init_keep!r}: must be in (0, 1)")

    @property
    def format_bits(self) -> jax.Array:
        return _bits(self.formats)

    def init(self, cfg: nets.ModelConfig) -> dict[str, jax.Array]:
        """Uniform format logits; FFN keep logit at `init_keep`."""
        n = cfg.n_layers
        logit = jnp.log(self.init_keep / (1.0 - self.init_keep))
        knobs = {"w_logits": jnp.zeros((n, len(self.formats)), jnp.float32),
                 "ffn_keep_logit": jnp.full((n,), logit, jnp.float32)}
        if self.kv_formats:
            knobs["kv_logits"] = jnp.zeros((n, len(self.kv_formats)), jnp.float32)
        if self.act_formats:
            knobs["act_logits"] = jnp.zeros((n, len(self.act_formats)), jnp.float32)
        return knobs

    def cheapest(self, cfg: nets.ModelConfig) -> dict[str, jax.Array]:
        """Knobs at the cheap corner: the fewest-bit format everywhere, FFN keep at its minimum."""
        n, big = cfg.n_layers, 30.0
        knobs = {"w_logits": big * jax.nn.one_hot(jnp.full((n,), int(jnp.argmin(self.format_bits))),
                                                  len(self.formats)),
                 "ffn_keep_logit": jnp.full((n,), -big if self.search_ffn_width else big, jnp.float32)}
        for key, names in (("kv_logits", self.kv_formats), ("act_logits", self.act_formats)):
            if names:
                knobs[key] = big * jax.nn.one_hot(jnp.full((n,), int(jnp.argmin(_bits(names)))), len(names))
        return knobs

    # ---- what the workload reads ------------------------------------------------
    def format_probs(self, knobs: dict) -> jax.Array:
        return _probs(knobs["w_logits"], knobs.get("hard"))

    def kv_probs(self, knobs: dict) -> jax.Array | None:
        return _probs(knobs["kv_logits"], knobs.get("hard")) if self.kv_formats else None

    def act_probs(self, knobs: dict) -> jax.Array | None:
        return _probs(knobs["act_logits"], knobs.get("hard")) if self.act_formats else None

    def ffn_keep(self, knobs: dict) -> jax.Array:
        if not self.search_ffn_width:
            return jnp.ones_like(knobs["ffn_keep_logit"])
        return jax.nn.sigmoid(knobs["ffn_keep_logit"])

    def workload_knobs(self, cfg: nets.ModelConfig, knobs: dict, scenario: hwcost.Scenario) -> hwcost.Knobs:
        """The hwcost knobs implied by the design knobs: expected weight bits and kept FFN width."""
        default = hwcost.Knobs.default(cfg.n_layers, scenario)
        kv, act = self.kv_probs(knobs), self.act_probs(knobs)
        return hwcost.Knobs(weight_bits=self.format_probs(knobs) @ self.format_bits,
                            kv_bits=default.kv_bits if kv is None else kv @ _bits(self.kv_formats),
                            act_bits=default.act_bits if act is None else act @ _bits(self.act_formats),
                            ffn_keep=self.ffn_keep(knobs), token_keep=default.token_keep,
                            head_keep=default.head_keep)

    def network_quant(self, knobs: dict) -> nets.LayerQuant | None:
        """What the forward pass reads: KV / activation format probabilities per layer."""
        if not self.kv_formats and not self.act_formats:
            return None
        return nets.LayerQuant(kv_probs=self.kv_probs(knobs), act_probs=self.act_probs(knobs),
                               kv_formats=tuple(self.kv_formats), act_formats=tuple(self.act_formats))

    # ---- what the network reads -------------------------------------------------
    def apply(self, cfg: nets.ModelConfig, params: Any, knobs: dict, temperature: jax.Array | float,
              widths: jax.Array | None = None) -> Any:
        """Network parameters as the knobs see them (fake-quantised mixtures, gated FFN rows).

        `widths` ([L] kept hidden units, traced) replaces the soft FFN gate by the exact 0/1 mask
        of a hardened design; with one-hot knobs (`hard_knobs`) the result equals `apply_hard`'s
        while the design stays an argument of the compiled function, not a constant of it.
        """
        probs_LxF = self.format_probs(knobs)
        keep_L = self.ffn_keep(knobs)
        formats = [get_format(n) for n in self.formats]
        starts = _segment_starts(cfg)

        def transform(path, value):
            names = [_key_name(k) for k in path]
            if "segments" not in names or value.ndim < 3 or any(n in names for n in _NOT_QUANTISED):
                return value  # embeddings, LM head, norms, router: outside the per-layer knobs
            seg = int(names[names.index("segments") + 1])
            pos = int(names[names.index("blocks") + 1])
            unit_len, first = starts[seg]
            layers_R = first + pos + unit_len * jnp.arange(value.shape[0])
            out = jax.vmap(lambda w, p: mixture_fake_quant(w, p, formats))(value, probs_LxF[layers_R])
            if self.search_ffn_width and any(n in names for n in _FFN_DOWN):
                hidden_axis = value.ndim - 2  # (..., F, D): the rows of a down-projection
                width = value.shape[hidden_axis]
                if widths is None:
                    gates_RxF = jax.vmap(lambda k: soft_width_gate(k, width, temperature))(keep_L[layers_R])
                else:
                    gates_RxF = (jnp.arange(width)[None, :] < jnp.asarray(widths)[layers_R][:, None])
                shape = (value.shape[0],) + (1,) * (hidden_axis - 1) + (value.shape[hidden_axis], 1)
                out = out * gates_RxF.reshape(shape).astype(out.dtype)
            return out

        return jax.tree_util.tree_map_with_path(transform, params)

    def harden(self, cfg: nets.ModelConfig, knobs: dict, multiple: int = WIDTH_MULTIPLE) -> dict[str, Any]:
        """Discrete choices: argmax formats per layer, kept width rounded to a multiple (at least one).

        Returns {"formats", "kv_formats", "act_formats" (lists of names per layer, the last two
        empty when not searched), "ffn_widths" (kept hidden units per layer)}.
        """
        # on the host (numpy; the same first-maximum rule as jnp.argmax): no eager JAX op to dispatch
        # or compile, so a path that hardens after every step pays microseconds, not milliseconds
        def pick(logits, names):
            return [names[int(i)] for i in np.argmax(np.asarray(logits), axis=-1)] if names else []

        keep = self.ffn_keep(knobs) if self.search_ffn_width else [1.0] * cfg.n_layers  # ffn_keep's ones, host-side
        widths = []
        for layer, full in enumerate(full_widths(cfg)):
            kept = int(round(float(keep[layer]) * full / multiple)) * multiple
            widths.append(int(min(full, max(multiple, kept))))
        return {"formats": pick(knobs["w_logits"], self.formats),
                "kv_formats": pick(knobs.get("kv_logits"), self.kv_formats),
                "act_formats": pick(knobs.get("act_logits"), self.act_formats),
                "ffn_widths": widths}

    def hard_knobs(self, hardened: dict[str, Any]) -> dict[str, jax.Array]:
        """Knob logits that select exactly the hardened formats (for the weight transform)."""
        def one_hot(choice, names):
            return 1e4 * jax.nn.one_hot(jnp.asarray([names.index(c) for c in choice]), len(names))
        check_hardened(self, hardened)
        knobs = {"w_logits": one_hot(hardened["formats"], self.formats),
                 "ffn_keep_logit": jnp.zeros((len(hardened["formats"]),), jnp.float32)}
        if self.kv_formats:
            knobs["kv_logits"] = one_hot(hardened["kv_formats"], self.kv_formats)
        if self.act_formats:
            knobs["act_logits"] = one_hot(hardened["act_formats"], self.act_formats)
        return knobs

    def apply_hard(self, cfg: nets.ModelConfig, params: Any, hardened: dict[str, Any]) -> Any:
        """Network parameters of the hardened design: one format per layer, FFN rows >= width zeroed."""
        check_hardened(self, hardened)
        formats = [get_format(n) for n in hardened["formats"]]
        widths = hardened["ffn_widths"]
        starts = _segment_starts(cfg)

        def transform(path, value):
            names = [_key_name(k) for k in path]
            if "segments" not in names or value.ndim < 3 or any(n in names for n in _NOT_QUANTISED):
                return value
            seg = int(names[names.index("segments") + 1])
            pos = int(names[names.index("blocks") + 1])
            unit_len, first = starts[seg]
            rows = []
            for r in range(value.shape[0]):
                layer = first + pos + unit_len * r
                w = fake_quant(value[r], formats[layer]).astype(value.dtype)  # STE: recovery trains W
                if self.search_ffn_width and any(n in names for n in _FFN_DOWN):
                    hidden_axis = w.ndim - 2
                    keep = (jnp.arange(w.shape[hidden_axis]) < widths[layer]).astype(w.dtype)
                    w = w * keep.reshape((1,) * (hidden_axis) + (-1, 1))
                rows.append(w)
            return jnp.stack(rows)

        return jax.tree_util.tree_map_with_path(transform, params)

    def hard_quant(self, cfg: nets.ModelConfig, hardened: dict[str, Any]) -> nets.LayerQuant | None:
        if not self.kv_formats and not self.act_formats:
            return None
        return nets.one_hot_quant(cfg.n_layers, kv_formats=tuple(self.kv_formats),
                                  kv_choice=hardened["kv_formats"] or None, act_formats=tuple(self.act_formats),
                                  act_choice=hardened["act_formats"] or None)

    def hard_workload_knobs(self, cfg: nets.ModelConfig, hardened: dict[str, Any],
                            scenario: hwcost.Scenario) -> hwcost.Knobs:
        """The hwcost knobs of the hardened design: exact bits and kept fractions."""
        check_hardened(self, hardened)
        default = hwcost.Knobs.default(cfg.n_layers, scenario)
        bits = lambda names: jnp.asarray([get_format(n).bits for n in names], jnp.float32)  # noqa: E731
        keep = jnp.asarray([w / full for w, full in zip(hardened["ffn_widths"], full_widths(cfg))], jnp.float32)
        return hwcost.Knobs(weight_bits=bits(hardened["formats"]),
                            kv_bits=bits(hardened["kv_formats"]) if hardened["kv_formats"] else default.kv_bits,
                            act_bits=bits(hardened["act_formats"]) if hardened["act_formats"] else default.act_bits,
                            ffn_keep=keep if self.search_ffn_width else default.ffn_keep,
                            token_keep=default.token_keep, head_keep=default.head_keep)

    def to_dict(self) -> dict[str, Any]:
        return {"formats": list(self.formats), "kv_formats": list(self.kv_formats),
                "act_formats": list(self.act_formats), "search_ffn_width": self.search_ffn_width,
                "init_keep": self.init_keep}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DesignSpace":
        return cls(formats=tuple(d["formats"]), kv_formats=tuple(d["kv_formats"]),
                   act_formats=tuple(d["act_formats"]), search_ffn_width=bool(d["search_ffn_width"]),
                   init_keep=float(d["init_keep"]))


def _probs(logits: jax.Array, hard: jax.Array | None) -> jax.Array:
    """softmax(logits); with a scalar `hard` of 1, the argmax one-hot in the forward pass and the softmax's
    gradient in the backward pass (straight-through), so training sees the design it will deploy."""
    probs = jax.nn.softmax(logits, axis=-1)
    if hard is None:
        return probs
    one_hot = jax.nn.one_hot(jnp.argmax(probs, axis=-1), probs.shape[-1], dtype=probs.dtype)
    return probs + jnp.asarray(hard, probs.dtype) * jax.lax.stop_gradient(one_hot - probs)


def _bits(names) -> jax.Array:
    return jnp.asarray([get_format(n).bits for n in names], jnp.float32)


def full_widths(cfg: nets.ModelConfig) -> list[int]:
    """The unpruned FFN hidden width of each layer: d_expert for MoE layers, d_ff for dense ones."""
    return [cfg.ffn.d_expert if kind == "moe" else cfg.ffn.d_ff for kind in cfg.layer_kinds]


def design_knobs(space: DesignSpace, cfg: nets.ModelConfig, hardened: dict[str, Any]) -> dict[str, jax.Array]:
    """The arrays that select exactly the hardened design: one-hot format logits (`hard_knobs`) and the
    kept FFN hidden units per layer ("widths", read by `DesignSpace.apply(..., widths=)` as a 0/1 mask)."""
    check_hardened(space, hardened)
    widths = hardened["ffn_widths"] if space.search_ffn_width else full_widths(cfg)
    return {"knobs": space.hard_knobs(hardened), "widths": jnp.asarray(widths, jnp.float32)}


def check_hardened(space: DesignSpace, hardened: dict[str, Any]) -> None:
    """ValueError naming the first entry of a hardened design that this space cannot hold."""
    for key in ("formats", "kv_formats", "act_formats", "ffn_widths"):
        if key not in hardened or not isinstance(hardened[key], list):
            raise ValueError(f"hardened.{key}={hardened.get(key)!r}: must be a list (one entry per layer)")
    n = len(hardened["formats"])
    for key, names in (("formats", space.formats), ("kv_formats", space.kv_formats),
                       ("act_formats", space.act_formats)):
        values = hardened[key]
        if names and len(values) != n:
            raise ValueError(f"hardened.{key}: {len(values)} entries, expected {n} (one per layer)")
        for v in values:
            if v not in names:
                raise ValueError(f"hardened.{key} entry={v!r}: must be one of {', '.join(names) or '(none searched)'}")
    if len(hardened["ffn_widths"]) != n or not all(isinstance(w, int) and w > 0 for w in hardened["ffn_widths"]):
        raise ValueError(f"hardened.ffn_widths={hardened['ffn_widths']!r}: must be {n} positive integers")


def soft_width_gate(keep: jax.Array, width: int, temperature: jax.Array | float) -> jax.Array:
    """Gate over hidden units 0..width-1: ~1 below keep*width, ~0 above; sharp as temperature -> 0."""
    j = jnp.arange(width, dtype=jnp.float32)
    return jax.nn.sigmoid((keep * width - j - 0.5) / (jnp.asarray(temperature, jnp.float32) * width))


def _segment_starts(cfg: nets.ModelConfig) -> list[tuple[int, int]]:
    """(unit length, first layer index) of each scanned segment of `nets.layer_segments`."""
    out, first = [], 0
    for unit, repeats in nets.layer_segments(cfg):
        out.append((len(unit), first))
        first += len(unit) * repeats
    return out


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)
