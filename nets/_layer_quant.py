"""Per-layer fake quantisation of activations and of the KV cache, driven from outside the model.

Weights are quantised by transforming the parameter pytree (the model code never sees it);
activations and keys/values exist only inside the forward pass, so the model takes one
more optional argument, `quant: LayerQuant`, that carries per-layer format probabilities:

  kv_probs   [n_layers, len(kv_formats)]   keys and values (MLA: the cached latent and
                                           RoPE key) are replaced, right after they are
                                           computed and before they are cached or attended,
                                           by sum_f p_f * fake_quant(x, f)
  act_probs  [n_layers, len(act_formats)]  the normalised inputs of attention and of the
                                           FFN (the operands of q/k/v and up/gate
                                           projections) likewise

With one-hot probabilities this is plain quantisation-aware training in the chosen format;
with softmax probabilities it is the relaxed choice of the joint loop (straight-through
estimator: the gradient reaches x unchanged and each p_f through <upstream, q_f(x)>).
Either field may be None (that part stays in full precision). The formats are static
(pytree metadata), the probabilities are arrays scanned over layers with the parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from nets.formats import get_format, mixture_fake_quant


@dataclasses.dataclass(frozen=True)
class LayerQuant:
    """Format probabilities per layer for the KV cache and for activations (see module docstring)."""

    kv_probs: Any = None
    act_probs: Any = None
    kv_formats: tuple[str, ...] = ()
    act_formats: tuple[str, ...] = ()

    # No __post_init__ checks: jax rebuilds this pytree with placeholder leaves during
    # transformations. The model calls `check(n_layers)` on what a user passes in.
    def check(self, n_layers: int) -> None:
        """ValueError unless each given probs array is (n_layers, one entry per format) of known formats."""
        for probs, formats, name in ((self.kv_probs, self.kv_formats, "kv"), (self.act_probs, self.act_formats, "act")):
            if probs is None:
                continue
            for f in formats:
                get_format(f)  # ValueError naming the known formats
            shape = getattr(probs, "shape", None)
            if shape != (n_layers, len(formats)):
                raise ValueError(f"{name}_probs shape={shape}: must be (n_layers={n_layers}, "
                                 f"len({name}_formats)={len(formats)})")

    def segment(self, first: int, repeats: int, unit_len: int) -> "LayerQuant":
        """The rows of layers first .. first + repeats*unit_len - 1 as (repeats, unit_len, formats)."""
        def take(probs):
            if probs is None:
                return None
            rows = probs[first:first + repeats * unit_len]
            return rows.reshape(repeats, unit_len, rows.shape[-1])
        return dataclasses.replace(self, kv_probs=take(self.kv_probs), act_probs=take(self.act_probs))

    def at(self, index: int) -> "LayerQuant":
        """The probabilities of position `index` along the leading axis."""
        pick = lambda p: None if p is None else p[index]  # noqa: E731
        return dataclasses.replace(self, kv_probs=pick(self.kv_probs), act_probs=pick(self.act_probs))

    def kv(self, x: jax.Array) -> jax.Array:
        """Keys/values of ONE layer (probs of shape (formats,)) as the cache will hold them."""
        return x if self.kv_probs is None else mixture_fake_quant(x, self.kv_probs, self.kv_formats)

    def act(self, x: jax.Array) -> jax.Array:
        """Activations of ONE layer entering its projections."""
        return x if self.act_probs is None else mixture_fake_quant(x, self.act_probs, self.act_formats)


jax.tree_util.register_dataclass(LayerQuant, data_fields=["kv_probs", "act_probs"],
                                 meta_fields=["kv_formats", "act_formats"])


def one_hot_quant(n_layers: int, *, kv_formats: tuple[str, ...] = (), kv_choice: list[str] | None = None,
                  act_formats: tuple[str, ...] = (), act_choice: list[str] | None = None) -> LayerQuant:
    """A `LayerQuant` that applies exactly one named format per layer (hardened choices)."""
    def rows(formats, choice, name):
        if choice is None:
            return None, ()
        if len(choice) != n_layers:
            raise ValueError(f"{name}: {len(choice)} entries, the model has n_layers={n_layers}")
        formats = tuple(formats) or tuple(dict.fromkeys(choice))
        for c in choice:
            if c not in formats:
                raise ValueError(f"{name} entry={c!r}: must be one of {', '.join(formats)}")
        idx = jnp.asarray([formats.index(c) for c in choice])
        return jax.nn.one_hot(idx, len(formats), dtype=jnp.float32), formats

    kv, kv_f = rows(kv_formats, kv_choice, "kv_formats")
    act, act_f = rows(act_formats, act_choice, "act_formats")
    quant = LayerQuant(kv_probs=kv, act_probs=act, kv_formats=kv_f, act_formats=act_f)
    quant.check(n_layers)
    return quant
