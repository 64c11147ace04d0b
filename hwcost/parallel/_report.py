"""`parallel_report`: a scenario's step split over a mesh of GPU-preset devices, as plain floats (for the CLI).

The topology follows the GPU: A100 and A800 sit in a DGX A100 (NVLink 3, HDR InfiniBand), every
other preset in a DGX H100 (NVLink 4, NDR InfiniBand) — an assumption for chips whose own
node is not modelled (pass a `Topology` to `training_step` / `inference_step` for another).
Training uses the scenario's batch as the global batch, micro-batches of one sequence when
the mesh has a pipeline axis (else one micro-batch per replica), no recomputation, no overlap.
"""

from __future__ import annotations

import hwcost
import nets
from hwcost.parallel._mesh import Parallelism
from hwcost.parallel._step import inference_step, training_step
from hwcost.parallel._topology import Topology, topology

_A100_CLASS = ("a100-sxm", "a800")


def default_topology(gpu_name: str) -> Topology:
    """The node a GPU preset is assumed to sit in (module docstring)."""
    return topology("dgx-a100" if gpu_name in _A100_CLASS else "dgx-h100")


def parallel_report(cfg: nets.ModelConfig, par: Parallelism, device: hwcost.Target,
                    scenario: hwcost.Scenario) -> dict:
    """Latency [s], dollars [USD, all devices], memory per device [bytes] and the parts [s] of one step."""
    topo = default_topology(getattr(device, "name", ""))
    if scenario.phase == "train":
        replicas = par.data * par.fsdp * par.expert
        local = scenario.batch // replicas if scenario.batch % replicas == 0 else 1
        if par.pipeline > 1 and par.microbatches == 1:
            par = Parallelism(**{**par.__dict__, "microbatches": max(local, 1)})
        cost = training_step(cfg, par, device, topo, global_batch=scenario.batch, seq_len=scenario.context_len,
                             bits=scenario.act_bits)
    else:
        cost = inference_step(cfg, par, device, topo, scenario)
    parts = {k: float(v) for k, v in cost.breakdown.items() if k.endswith("_s")}
    return {"devices": par.devices, "mesh": {axis: getattr(par, axis) for axis in ("data", "fsdp", "tensor", "expert",
                                                                                 "pipeline")},
            "topology": topo.name, "latency_s": float(cost.latency_s), "dollars": float(cost.dollars),
            "memory_bytes": float(cost.memory_bytes), "parts_s": parts}
