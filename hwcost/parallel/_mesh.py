"""`Parallelism`: how a step is split over devices, and `parse_mesh` for the `--mesh` text.

Mesh axes (sizes multiply to the device count), innermost first in the device order, the
Megatron-LM placement: tensor (inside a node, over NVLink), expert, fsdp, data, pipeline
(outermost). An axis group's members are as far apart as the product of the axes inside it,
which decides whether it stays in an NVLink domain (`hwcost.parallel.Topology.link`).

    tensor     attention heads and FFN width split (Megatron tensor parallelism)
    expert     MoE experts split; tokens dispatched by all-to-all
    fsdp       parameters, gradients and optimizer state sharded (ZeRO-3 / FSDP): weights
               all-gathered before use, gradients reduce-scattered
    data       replicas; gradients all-reduced once per iteration
    pipeline   layers split into stages, 1F1B schedule over `microbatches` micro-batches,
               `interleave` model chunks per stage (Narayanan et al., SC'21)

Execution options: sequence_parallel (Korthikanti et al., MLSys'23: layer norm and dropout
split over `tensor`, all-reduces become reduce-scatter + all-gather); recompute "none",
"selective" (the attention core only) or "full" (each layer's forward again in backward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nets import fail

AXES = ("data", "fsdp", "tensor", "expert", "pipeline")
RECOMPUTE = ("none", "selective", "full")


def _positive(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        fail(field, value, "must be a positive integer")


@dataclass(frozen=True)
class Parallelism:
    """Mesh sizes and execution options of a parallel step (module docstring)."""

    data: int = 1
    fsdp: int = 1
    tensor: int = 1
    expert: int = 1
    pipeline: int = 1
    microbatches: int = 1
    interleave: int = 1
    sequence_parallel: bool = False
    recompute: str = "none"

    def __post_init__(self) -> None:
        for name in AXES + ("microbatches", "interleave"):
            _positive(f"mesh.{name}", getattr(self, name))
        if self.recompute not in RECOMPUTE:
            fail("mesh.recompute", self.recompute, f"must be one of {', '.join(RECOMPUTE)}")
        if not isinstance(self.sequence_parallel, bool):
            fail("mesh.sequence_parallel", self.sequence_parallel, "must be true or false")
        if self.sequence_parallel and self.tensor == 1:
            fail("mesh.sequence_parallel", True, "needs tensor > 1 (it splits over the tensor axis)")
        if self.interleave > 1 and self.pipeline == 1:
            fail("mesh.interleave", self.interleave, "must be 1 without pipeline parallelism")

    @property
    def devices(self) -> int:
        return math.prod(getattr(self, axis) for axis in AXES)

    def stride(self, axis: str) -> int:
        """Distance in the device order between neighbours of `axis` (product of the axes inside it)."""
        order = ("tensor", "expert", "fsdp", "data", "pipeline")
        return math.prod(getattr(self, inner) for inner in order[:order.index(axis)])


def parse_axis_sizes(text: str, axes: tuple[str, ...] = AXES, field: str = "mesh",
                     wildcard: tuple[str, ...] = ()) -> dict[str, int | None]:
    """'data=2,tensor=4' as {axis: size}; an axis in `wildcard` may be written 'axis=*' (size None).

    The one reader of the `--mesh` text: `parse_mesh` here (pricing, with a pipeline axis) and
    `codesign.parallel.parse_mesh` (training, its own axes) both read through it. A bad entry
    raises `nets.InputError` naming `field`, the entry and what is allowed.
    """
    if not isinstance(text, str):
        fail(field, text, f"must be text like 'data=2,{axes[-1]}=4'")
    sizes: dict[str, int | None] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, sep, value = (part.strip() for part in entry.partition("="))
        if not sep or name not in axes:
            fail(field, text, f"entry {entry!r} must be AXIS=SIZE with AXIS one of {', '.join(axes)}")
        if name in sizes:
            fail(field, text, f"axis {name!r} is given twice")
        if name in wildcard and value == "*":
            sizes[name] = None
            continue
        try:
            size = int(value)
        except ValueError:
            size = 0
        if size < 1:
            fail(f"{field}.{name}", value, "must be a positive integer")
        sizes[name] = size
    return sizes


def parse_mesh(text: str, field: str = "mesh", **options) -> Parallelism:
    """'data=2,tensor=4' as a `Parallelism` (axes not named are 1); `options` set the execution fields.

    A bad entry raises `nets.InputError` naming `field`, the entry and what is allowed.
    """
    return Parallelism(**parse_axis_sizes(text, AXES, field), **options)
