"""Where the devices of a mesh sit and how fast they talk: an NVLink domain and a network between nodes.

A `Topology` is an `eqx.Module` whose float fields are link parameters (differentiable):

    nvlink_bandwidth   [bytes/s]  per GPU, one direction, inside a node (NVLink through NVSwitch)
    nvlink_latency     [s]        per step of a collective inside a node
    network_bandwidth  [bytes/s]  per GPU, one direction, between nodes (one NIC per GPU)
    network_latency    [s]        per step of a collective that crosses nodes

`gpus_per_node` (static) is the size of the NVLink domain. A group of `size` devices whose
members are `stride` apart in the device order (the mesh axes inside it multiplied) stays in
one node when size * stride <= gpus_per_node, and then uses NVLink; otherwise its ring crosses
the network, whose per-GPU NIC is the bottleneck (`Topology.link`).

Presets (`topology(name)`), from datasheets; latencies are stated assumptions:
- dgx-a100: 8 A100 SXM4 per node, NVLink 3 600 GB/s bidirectional = 300 GB/s per direction
  (A100 datasheet), eight HDR InfiniBand NICs of 200 Gbit/s = 25 GB/s per GPU per direction
  (DGX A100 user guide: 8 x single-port ConnectX-6 for the compute fabric; Selene's nodes).
- dgx-h100: 8 H100 SXM5 per node, NVLink 4 900 GB/s bidirectional = 450 GB/s per direction
  (H100 datasheet), eight NDR 400 Gbit/s NICs = 50 GB/s per GPU (DGX H100 user guide).
Latency per step: 1 us inside a node and 5 us across nodes (assumptions of the order of the
NCCL tuning model's hardware latencies; they matter only for small messages).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from nets import fail

_FIELDS = ("nvlink_bandwidth", "nvlink_latency", "network_bandwidth", "network_latency")


class Topology(eqx.Module):
    """Links of a cluster (module docstring; units in the field names' documentation)."""

    nvlink_bandwidth: Float[Array, ""]
    nvlink_latency: Float[Array, ""]
    network_bandwidth: Float[Array, ""]
    network_latency: Float[Array, ""]
    gpus_per_node: int = eqx.field(static=True, default=8)
    name: str = eqx.field(static=True, default="topology")

    def __check_init__(self) -> None:
        if isinstance(self.gpus_per_node, bool) or not isinstance(self.gpus_per_node, int) or self.gpus_per_node < 1:
            fail(f"{self.name}.gpus_per_node", self.gpus_per_node, "must be a positive integer")
        for field in _FIELDS:
            try:
                value = float(getattr(self, field))
            except Exception:  # a tracer or a stacked batch: nothing to check here
                continue
            positive = field.endswith("bandwidth")
            if not (value > 0 if positive else value >= 0) or value != value or value == float("inf"):
                fail(f"{self.name}.{field}", value, f"must be a finite {'positive' if positive else 'non-negative'} "
                                                    "number")

    def link(self, size: int, stride: int = 1) -> tuple[Array, Array]:
        """(bandwidth [bytes/s], latency [s per step]) of a group of `size` devices `stride` apart."""
        if size * stride <= self.gpus_per_node:
            return self.nvlink_bandwidth, self.nvlink_latency
        return self.network_bandwidth, self.network_latency


# name: (GPUs per node, NVLink bytes/s per direction, network bytes/s per GPU per direction)
_PRESETS = {"dgx-a100": (8, 300e9, 25e9), "dgx-h100": (8, 450e9, 50e9)}
NVLINK_LATENCY_S = 1e-6
NETWORK_LATENCY_S = 5e-6
TOPOLOGIES: tuple[str, ...] = tuple(_PRESETS)


def topology(name: str, dtype=jnp.float32, **overrides: float) -> Topology:
    """The preset topology `name` (see TOPOLOGIES), with any link field overridden."""
    if name not in _PRESETS:
        fail("topology", name, f"must be one of {', '.join(TOPOLOGIES)}")
    per_node, nvlink, network = _PRESETS[name]
    fields = dict(nvlink_bandwidth=nvlink, nvlink_latency=NVLINK_LATENCY_S, network_bandwidth=network,
                  network_latency=NETWORK_LATENCY_S)
    for key in overrides:
        if key not in fields:
            fail("topology field", key, f"must be one of {', '.join(fields)}")
    fields.update(overrides)
    return Topology(**{k: jnp.asarray(v, dtype) for k, v in fields.items()}, gpus_per_node=per_node, name=name)
