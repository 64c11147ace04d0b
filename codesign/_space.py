"""The design space: continuous relaxations of per-layer choices, read by the network AND the workload.

Knobs are a plain dict pytree, a sibling of the network parameters (never inside an
NNX module):
  w_logits        [L, F]  logits over candidate weight formats per layer
  ffn_keep_logit  [L]     logit of the kept fraction of each layer's FFN / expert hidden width

The network reads them through a transformation of its parameters, so the model code
is unchanged: every block weight matrix of layer l becomes the mixture
sum_f softmax(w_logits[l])_f * fake_quant(W, format_f) (straight-through gradient), and the
rows of each FFN down-projection are scaled by a soft structured gate
m_j = sigmoid((keep * F - j - 0.5) / (temperature * F)) over the hidden index j, which
equals zeroing the hidden units j >= keep*F at temperature -> 0. The workload reads the same
knobs as expected bits (softmax @ bits) and expected kept fraction (mean gate).

Not covered yet: KV-cache precision (the network has no hook to fake-quantise K/V, and a
knob the network ignores would be driven to its cheapest value for free).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

import hwcost
import nets
from nets.formats import get_format, mixture_fake_quant

DEFAULT_FORMATS = ("bf16", "fp8_e4m3", "fp4_e2m1")
_FFN_DOWN = ("down", "expert_down", "shared_down")  # parameter names whose hidden axis is the gated one
_NOT_QUANTISED = ("router_kernel",)  # routing decisions stay in float32


@dataclass(frozen=True)
class DesignSpace:
    """Which choices are searched. `formats` are names from `nets.formats.FORMAT_NAMES`."""

    formats: tuple[str, ...] = DEFAULT_FORMATS
    search_ffn_width: bool = True
    init_keep: float = 0.95

    def __post_init__(self) -> None:
        if not self.formats:
            raise ValueError("formats=(): must name at least one format")
        for name in self.formats:
            get_format(name)  # raises ValueError listing the known names
        if not 0.0 < self.init_keep < 1.0:
            raise ValueError(f"init_keep={self.init_keep!r}: must be in (0, 1)")

    @property
    def format_bits(self) -> jax.Array:
        return jnp.asarray([get_format(n).bits for n in self.formats], jnp.float32)

    def init(self, cfg: nets.ModelConfig) -> dict[str, jax.Array]:
        """Uniform format logits; FFN keep logit at `init_keep`."""
        n = cfg.n_layers
        logit = jnp.log(self.init_keep / (1.0 - self.init_keep))
        return {"w_logits": jnp.zeros((n, len(self.formats)), jnp.float32),
                "ffn_keep_logit": jnp.full((n,), logit, jnp.float32)}

    # ---- what the workload reads ------------------------------------------------
    def format_probs(self, knobs: dict) -> jax.Array:
        return jax.nn.softmax(knobs["w_logits"], axis=-1)

    def ffn_keep(self, knobs: dict) -> jax.Array:
        if not self.search_ffn_width:
            return jnp.ones_like(knobs["ffn_keep_logit"])
        return jax.nn.sigmoid(knobs["ffn_keep_logit"])

    def workload_knobs(self, cfg: nets.ModelConfig, knobs: dict, scenario: hwcost.Scenario) -> hwcost.Knobs:
        """The hwcost knobs implied by the design knobs: expected weight bits and kept FFN width."""
        default = hwcost.Knobs.default(cfg.n_layers, scenario)
        return hwcost.Knobs(weight_bits=self.format_probs(knobs) @ self.format_bits, kv_bits=default.kv_bits,
                            act_bits=default.act_bits, ffn_keep=self.ffn_keep(knobs),
                            token_keep=default.token_keep, head_keep=default.head_keep)

    # ---- what the network reads -------------------------------------------------
    def apply(self, cfg: nets.ModelConfig, params: Any, knobs: dict, temperature: jax.Array | float) -> Any:
        """Network parameters as the knobs see them (fake-quantised mixtures, gated FFN rows)."""
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
                gates_RxF = jax.vmap(lambda k: soft_width_gate(k, value.shape[hidden_axis], temperature))(
                    keep_L[layers_R])
                shape = (value.shape[0],) + (1,) * (hidden_axis - 1) + (value.shape[hidden_axis], 1)
                out = out * gates_RxF.reshape(shape).astype(out.dtype)
            return out

        return jax.tree_util.tree_map_with_path(transform, params)

    def harden(self, cfg: nets.ModelConfig, knobs: dict, multiple: int = 8) -> dict[str, Any]:
        """Discrete choices: argmax format per layer, kept width rounded to a multiple (at least one)."""
        fmt_idx = jnp.argmax(knobs["w_logits"], axis=-1)
        keep = self.ffn_keep(knobs)
        widths = []
        for layer, kind in enumerate(cfg.layer_kinds):
            full = cfg.ffn.d_expert if kind == "moe" else cfg.ffn.d_ff
            kept = int(round(float(keep[layer]) * full / multiple)) * multiple
            widths.append(int(min(full, max(multiple, kept))))
        return {"formats": [self.formats[int(i)] for i in fmt_idx], "ffn_widths": widths}


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
