"""The device mesh, the logical-axis rules table, state placement and multi-process start-up.

`RULES` is the one table (Flax/MaxText convention) from the logical names that `nets`
gives every parameter and activation (`nets.logical_axes`) to the axes of the mesh built
from a `ParallelConfig`. A name maps to a tuple of mesh axes; an axis of size 1, or one
that would not divide the dimension, is skipped (`nets.logical_spec`), so one table serves
every mesh shape. Choices:
  batch of activations   data, fsdp and expert (expert acts as a data axis outside the MoE)
  embed (d_model)         fsdp: every matrix touching the residual stream is ZeRO-3 split
  heads, mlp, vocab       tensor: Megatron's column/row split of attention, FFN and LM head
  expert                  expert: each expert shard holds n_experts/expert experts
  q_lora, kv_lora         fsdp for storage; never tensor: MLA's latent and the low-rank query
                          are shared by all heads, so they are replicated over tensor (split, the
                          latent's norm would need an all-reduce and the per-head up-projection
                          an all-gather of the latent in every layer, to save d_model*(kv_rank+
                          rope_dim) parameters a layer; see `nets.logical_axes`, docs/parallel.md)
  kv_heads                nothing: MFA's single shared K/V head is replicated (a tiny
                          projection; splitting one head's width would all-reduce the scores)
  layers                  nothing: the scanned layer axis stays whole
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

import nets
from codesign.parallel._config import AXES, ParallelConfig, parse_mesh

RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("activation_batch", ("data", "fsdp", "expert")),
    ("activation_vocab", ("tensor",)),
    ("embed", ("fsdp",)),
    ("q_lora", ("fsdp",)),
    ("kv_lora", ("fsdp",)),
    ("heads", ("tensor",)),
    ("mlp", ("tensor",)),
    ("vocab", ("tensor",)),
    ("expert", ("expert",)),
    ("kv_heads", ()),
    ("layers", ()),
)


def make_mesh(config: ParallelConfig | str | None = None, devices: Any = None) -> Mesh:
    """A mesh with the four axes of `AXES` (sizes from `config`; size-1 axes included) over `devices`.

    `devices` defaults to every device of every process (`jax.devices()`).
    """
    config = parse_mesh(config)
    devices = list(jax.devices() if devices is None else devices)
    sizes = config.sizes(len(devices))
    shape = tuple(sizes[a] for a in AXES)
    if devices == list(jax.devices()):
        return jax.make_mesh(shape, AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))
    return Mesh(np.asarray(devices).reshape(shape), AXES)


def mesh_rules(mesh: Mesh) -> nets.ShardingRules:
    """`RULES` bound to `mesh`: use with `nets.sharding_rules(...)` around tracing, and for state placement."""
    return nets.ShardingRules(mesh, RULES)


def bytes_per_device(tree: Any) -> int:
    """The largest number of bytes of `tree`'s arrays that any one device holds, summed from its shards."""
    per_device: dict[Any, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in getattr(leaf, "addressable_shards", ()):
            per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
    return max(per_device.values(), default=0)


def expected_bytes_per_device(tree: Any, rules: nets.ShardingRules) -> int:
    """Bytes per device the rules imply: each leaf's bytes over the product of the mesh axes splitting it."""
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        spec = rules.spec(nets.logical_axes(path, leaf.ndim), leaf.shape)
        split = 1
        for entry in spec:
            for axis in (() if entry is None else (entry,) if isinstance(entry, str) else entry):
                split *= rules.mesh.shape[axis]
        total += leaf.size * leaf.dtype.itemsize // split
    return total


def initialize_distributed() -> bool:
    """Start `jax.distributed` when this process is one of several; True if it did.

    Reads JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
    JAX_PROCESS_ID; with CODESIGN_DISTRIBUTED=auto instead, jax's cluster auto-detection
    (SLURM, Open MPI, Kubernetes, TPU pods) supplies them. On CPU the collectives go
    through gloo. Call before any other JAX work; a single process (none of these set)
    does nothing.
    """
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    auto = os.environ.get("CODESIGN_DISTRIBUTED") == "auto"
    if not address and not auto:
        return False
    if address:
        for name in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
            if not os.environ.get(name, "").isdigit():
                nets.fail(name, os.environ.get(name),
                          "must be a non-negative integer when JAX_COORDINATOR_ADDRESS is set")
    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if address:
        jax.distributed.initialize(coordinator_address=address, num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                                   process_id=int(os.environ["JAX_PROCESS_ID"]))
    else:
        jax.distributed.initialize()
    return True
