"""Logical axis names for every parameter of `nets`, and the ambient rules that map them to a mesh.

The Flax/MaxText convention: a parameter's dimensions carry LOGICAL names ("embed",
"heads", "mlp", "expert", ...), activations are constrained with logical names too, and
ONE rules table (a sequence of (logical name, mesh axes) pairs, e.g. `codesign.parallel.RULES`)
maps the names to the axes of a `jax.sharding.Mesh`. Changing the parallelism is changing
the mesh or the table, never the model.

Names are given by a PATH-BASED rules function (`logical_axes`), not stored on the
`nnx.Param`s (`nnx.with_partitioning` / a `sharding_names` metadata field). Why: it needs
no edit to any module (nnx.Linear, nnx.Embed, the norms and our MoE/attention alike),
the metadata key was renamed within flax 0.12 (`sharding` -> `sharding_names`) while a
parameter's path (`.../attn/wq_b/kernel`) is the same on every 0.12.x, and the same
function names any tree whose leaves sit at such paths: the optimiser state (optax's mu
and nu mirror the parameters' paths) and a joint trainer's {"net": ...} dictionary.
A leaf no rule knows (a design knob, a step counter) gets no names: replicated.

Parameters stacked by `nnx.vmap` over a segment's repeats (`nets._model`) carry extra
leading axes; they are named "layers" (never split: the scan runs over them).

Attention choices (see also `codesign.parallel`): query heads and the output projection's
rows are split over "heads"; MFA's shared K/V head(s) ("kv_heads": the K/V projections are
n_kv_heads*head_dim wide, 1 head in MFA) and MLA's latent ("kv_lora": wkv_a and the
latent's norm) are REPLICATED: one K/V head cannot be split by heads, splitting its
head_dim would cost an all-reduce of the scores in every layer, and both are small (MFA:
d_model*head_dim per projection; MLA: d_model*(kv_rank+rope_dim)), so every tensor shard
computes them in full and attends with its own query heads. MLA's up-projection wkv_b
(kv_rank -> n_heads*[key|value]) is laid out per head, so it is split by heads like the query.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["logical_axes", "tree_logical_axes", "logical_spec", "ShardingRules", "sharding_rules",
           "active_rules", "constrain"]

Names = tuple[str | None, ...]

# The parameter's own dimensions, by (parent module, parameter) or by parameter name alone.
_KERNEL_AXES: dict[str, tuple[str, str]] = {
    "wq": ("embed", "heads"), "wq_a": ("embed", "q_lora"), "wq_b": ("q_lora", "heads"),
    "wk": ("embed", "kv_heads"), "wv": ("embed", "kv_heads"),
    "wkv_a": ("embed", "kv_lora"), "wkv_b": ("kv_lora", "heads"), "wo": ("heads", "embed"),
    "gate": ("embed", "mlp"), "up": ("embed", "mlp"), "down": ("mlp", "embed"),
    "lm_head": ("embed", "vocab"),
}
_NORMS = {"attn_norm": "embed_norm", "ffn_norm": "embed_norm", "final_norm": "embed_norm", "q_norm": "q_lora",
          "kv_norm": "kv_lora", "q_head_norm": "head_dim", "k_head_norm": "head_dim"}
_OWN_AXES: dict[str, Names] = {
    "router_kernel": ("embed", None),
    "expert_gate": ("expert", "embed", "mlp"), "expert_up": ("expert", "embed", "mlp"),
    "expert_down": ("expert", "mlp", "embed"),
    "shared_gate": (None, "embed", "mlp"), "shared_up": (None, "embed", "mlp"), "shared_down": (None, "mlp", "embed"),
}


def _key_name(key: Any) -> str | None:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            value = getattr(key, attr)
            return value if isinstance(value, str) else None
    return None


def logical_axes(path: Sequence[Any], ndim: int) -> Names:
    """The logical name of each of the `ndim` dimensions of the leaf at `path` (None: unnamed).

    `path` is a jax key path or a sequence of names; integer keys and flax's trailing
    "value" are ignored. Unknown leaves get all-None (replicated).
    """
    names = [n for n in (_key_name(k) if not isinstance(k, str) else k for k in path) if n and n != "value"]
    own: Names | None = None
    if names:
        leaf, parent = names[-1], names[-2] if len(names) > 1 else ""
        if leaf in _OWN_AXES:
            own = _OWN_AXES[leaf]
        elif leaf == "embedding" and parent in ("embed", "pos_embed"):
            own = ("vocab" if parent == "embed" else None, "embed")
        elif leaf in ("kernel", "bias") and parent in _KERNEL_AXES:
            own = _KERNEL_AXES[parent] if leaf == "kernel" else _KERNEL_AXES[parent][1:]
        elif leaf in ("scale", "bias") and parent in _NORMS:
            own = (_NORMS[parent],)
    if own is None or len(own) > ndim:
        return (None,) * ndim
    return ("layers",) * (ndim - len(own)) + own


def tree_logical_axes(tree: Any) -> Any:
    """`logical_axes` of every array leaf of `tree` (same structure; leaves are tuples of names)."""
    return jax.tree_util.tree_map_with_path(lambda path, x: logical_axes(path, len(x.shape)), tree)


@dataclass(frozen=True)
class ShardingRules:
    """A mesh and the (logical name, mesh axes) table that maps names onto it."""

    mesh: Mesh
    rules: tuple[tuple[str, tuple[str, ...]], ...]

    def mesh_axes(self, name: str | None) -> tuple[str, ...]:
        """The mesh axes (of size > 1) a logical name maps to; () if none."""
        for logical, axes in self.rules:
            if logical == name:
                return tuple(a for a in axes if self.mesh.shape[a] > 1)
        return ()

    def spec(self, names: Names, shape: Sequence[int]) -> PartitionSpec:
        return logical_spec(names, shape, self.mesh, self.rules)

    def sharding(self, names: Names, shape: Sequence[int]) -> NamedSharding:
        return NamedSharding(self.mesh, self.spec(names, shape))

    def tree_shardings(self, tree: Any) -> Any:
        """A NamedSharding for every array leaf of `tree`, from its path's logical names."""
        return jax.tree_util.tree_map_with_path(
            lambda path, x: self.sharding(logical_axes(path, len(x.shape)), x.shape), tree)


def logical_spec(names: Names, shape: Sequence[int], mesh: Mesh,
                 rules: Sequence[tuple[str, Sequence[str]]]) -> PartitionSpec:
    """The PartitionSpec of an array of `shape` whose dimensions have logical `names`.

    Each name takes, in the table's order, the mesh axes it maps to that are larger than
    1, not yet used by an earlier dimension and whose product still divides the dimension
    (an axis that would not divide it is left out: that dimension stays replicated over it).
    """
    table = {logical: tuple(axes) for logical, axes in reversed(list(rules))}  # first entry wins
    used: set[str] = set()
    spec = []
    for name, size in zip(names, shape):
        chosen: list[str] = []
        for axis in table.get(name, ()) if name else ():
            n = mesh.shape[axis]
            if n > 1 and axis not in used and size % (math.prod(mesh.shape[a] for a in chosen) * n) == 0:
                chosen.append(axis)
        used.update(chosen)
        spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
    return PartitionSpec(*spec)


_ACTIVE: contextvars.ContextVar[ShardingRules | None] = contextvars.ContextVar("nets_sharding_rules", default=None)


@contextlib.contextmanager
def sharding_rules(rules: ShardingRules | None) -> Iterator[None]:
    """Within the block, `constrain` and the MoE's expert-parallel dispatch follow `rules` (None: off).

    Read at trace time: wrap the tracing of a jitted function (its first call) in it.
    """
    token = _ACTIVE.set(rules)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_rules() -> ShardingRules | None:
    return _ACTIVE.get()


def constrain(x: jax.Array, names: Names) -> jax.Array:
    """`jax.lax.with_sharding_constraint` of `x` to its logical `names` under the active rules (no-op without)."""
    rules = _ACTIVE.get()
    if rules is None:
        return x
    return jax.lax.with_sharding_constraint(x, rules.sharding(names, x.shape))
