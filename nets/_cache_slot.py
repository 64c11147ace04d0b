"""One layer's place in a segment's stacked KV cache, written in place.

`nets.TransformerLM` stacks a segment's cache as arrays of shape (repeats, unit_length, batch,
slots, ...) (`nets.init_cache`). Handing each layer its own slice of the stack and stacking the
updated slices again makes whole copies of the cache on every call: a decode step, which writes
one token per layer, then moves the cache several times over (`hwcost.SCAN_CACHE_COPIES`, read
off the compiled step). A `CacheSlot` names one layer's place instead: `write` puts the new
tokens straight into the stack (one `dynamic_update_slice` of the tokens' size on the stack that
the layer scan carries, so XLA updates it in place), and `slot[name]` reads the layer's whole
cache after the write, for the attention kernel.

Attention takes either this or a plain dict (one layer's own arrays, `nets.init_layer_cache`);
`write_cache` is the one function that updates both.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array


@dataclasses.dataclass(frozen=True)
class CacheSlot:
    """Layer `position` of unit `repeat` (a traced scalar: the scan's step) in `stack` (name -> stacked array)."""

    stack: dict[str, Array]
    repeat: Any
    position: int = 0

    def _start(self, array: Array, slot) -> tuple:
        zero = jnp.zeros((), jnp.int32)
        return (jnp.asarray(self.repeat, jnp.int32), jnp.asarray(self.position, jnp.int32), zero,
                jnp.asarray(slot, jnp.int32)) + (zero,) * (array.ndim - 4)

    def __getitem__(self, name: str) -> Array:
        """The layer's whole cache array `name` (batch, slots, ...)."""
        array = self.stack[name]
        start = self._start(array, 0)
        return jax.lax.dynamic_slice(array, start, (1, 1) + array.shape[2:])[0, 0]

    def write(self, new: dict[str, Array], cache_index) -> "CacheSlot":
        """The slot with `new[name]` (batch, length, ...) written at slots cache_index.. of this layer
        (`cache_index` a scalar, or one first slot per sequence (batch,); `write_cache`)."""
        stack = dict(self.stack)
        for name, value in new.items():
            array = stack[name]
            if jnp.ndim(cache_index) == 0:
                stack[name] = jax.lax.dynamic_update_slice(array, value.astype(array.dtype)[None, None],
                                                           self._start(array, cache_index))
            else:
                rows_Bx1, slots_BxL = _row_slots(value, cache_index)
                stack[name] = array.at[jnp.asarray(self.repeat, jnp.int32), self.position, rows_Bx1, slots_BxL].set(
                    value.astype(array.dtype), mode="drop")
        return dataclasses.replace(self, stack=stack)


jax.tree_util.register_dataclass(CacheSlot, data_fields=["stack", "repeat"], meta_fields=["position"])


def _row_slots(value_BxLx: Array, cache_index_B) -> tuple[Array, Array]:
    """Index arrays (rows (B, 1), slots (B, L)) of sequence b's tokens at slots cache_index[b] + 0 .. L-1."""
    B, L = value_BxLx.shape[:2]
    start_B = jnp.asarray(cache_index_B, jnp.int32)
    if start_B.shape != (B,):
        raise ValueError(f"cache_index shape={start_B.shape}: must be a scalar or (batch={B},)")
    return jnp.arange(B)[:, None], start_B[:, None] + jnp.arange(L)[None, :]


def write_cache(cache, new: dict[str, Array], cache_index):
    """`cache` (a layer's dict of (batch, slots, ...) arrays, or a `CacheSlot`) with `new` written at cache_index.

    `cache_index` a scalar: every sequence's tokens go to slots cache_index.. (a `dynamic_update_slice`, whose
    start XLA clamps into the cache); one slot per sequence (batch,): sequence b's go to cache_index[b]..
    (a scatter; tokens past the last slot are dropped), so sequences at different positions share one call.
    """
    if isinstance(cache, CacheSlot):
        return cache.write(new, cache_index)
    out = dict(cache)
    for name, value in new.items():
        array = cache[name]
        if jnp.ndim(cache_index) == 0:
            start = (jnp.zeros((), jnp.int32), jnp.asarray(cache_index, jnp.int32)) + (
                jnp.zeros((), jnp.int32),) * (array.ndim - 2)
            out[name] = jax.lax.dynamic_update_slice(array, value.astype(array.dtype), start)
        else:
            rows_Bx1, slots_BxL = _row_slots(value, cache_index)
            out[name] = array.at[rows_Bx1, slots_BxL].set(value.astype(array.dtype), mode="drop")
    return out
