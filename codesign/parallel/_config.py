"""`ParallelConfig`: the sizes of the four mesh axes, parsed from `--mesh data=2,fsdp=4` or a config JSON.

Axes (the order of the mesh, outermost first):
  data    pure data parallelism: the batch split, parameters and optimiser state replicated;
  fsdp    fully sharded data parallelism (ZeRO-3): the batch split AND every parameter and its
          optimiser moments split along d_model ("embed"), gathered layer by layer by XLA;
  tensor  Megatron tensor parallelism: attention heads and FFN / expert widths ("heads", "mlp")
          and the vocabulary split, activations all-reduced where the layout changes;
  expert  expert parallelism: MoE experts split, tokens sent to their experts by all-to-all;
          outside the MoE the axis acts as a further data axis (the batch is split over it).
`data=None` (the default, written `data=*` or left out of `--mesh`) takes every device the
other axes leave, so the default is the plain data parallelism over all devices.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import hwcost.parallel
from nets import fail

AXES = ("data", "fsdp", "tensor", "expert")


@dataclass(frozen=True)
class ParallelConfig:
    """Mesh axis sizes; the product must equal the number of devices (checked by `make_mesh`)."""

    data: int | None = None
    fsdp: int = 1
    tensor: int = 1
    expert: int = 1

    def __post_init__(self) -> None:
        for name in AXES:
            value = getattr(self, name)
            if value is None and name == "data":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(f"mesh.{name}", value, "must be a positive integer" + (" (or * for the rest)" if name == "data"
                                                                               else ""))

    def sizes(self, n_devices: int) -> dict[str, int]:
        """The four axis sizes for `n_devices` devices (data filled in when None)."""
        others = self.fsdp * self.tensor * self.expert
        data = self.data
        if data is None:
            if n_devices % others:
                fail("mesh", self.to_text(), f"fsdp*tensor*expert={others} must divide the device count {n_devices}")
            data = n_devices // others
        sizes = {"data": data, "fsdp": self.fsdp, "tensor": self.tensor, "expert": self.expert}
        if math.prod(sizes.values()) != n_devices:
            fail("mesh", self.to_text(), f"the axis sizes multiply to {math.prod(sizes.values())}, "
                                         f"not the device count {n_devices}")
        return sizes

    def to_text(self) -> str:
        """The `--mesh` spelling: only the axes that differ from the default."""
        parts = [f"{name}={getattr(self, name)}" for name in AXES
                 if getattr(self, name) != (None if name == "data" else 1)]
        return ",".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ParallelConfig":
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                fail(f"mesh.{key}", data[key], f"unknown mesh axis; the axes are {', '.join(AXES)}")
        return cls(**data)


def parse_mesh(text: str | dict | ParallelConfig | None) -> ParallelConfig:
    """`ParallelConfig` from '--mesh' text ('data=2,fsdp=4'; '' or None: the default), a dict or itself."""
    if isinstance(text, ParallelConfig):
        return text
    if text is None or text == "":
        return ParallelConfig()
    if isinstance(text, dict):
        return ParallelConfig.from_dict(text)
    if not isinstance(text, str):
        fail("mesh", text, "must be text like 'data=2,fsdp=4', a dict of axis sizes or a ParallelConfig")
    return ParallelConfig(**hwcost.parallel.parse_axis_sizes(text, AXES, "mesh", wildcard=("data",)))
