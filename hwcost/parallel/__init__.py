"""hwcost.parallel: the cost of a step split over many GPUs (collectives over a topology).

    topo = hwcost.parallel.topology("dgx-a100")
    mesh = hwcost.parallel.parse_mesh("tensor=8,pipeline=8", microbatches=64, interleave=3,
                                      sequence_parallel=True, recompute="selective")
    cost = hwcost.parallel.training_step(cfg, mesh, hwcost.get_target("a100"), topo,
                                         global_batch=64, seq_len=2048)
    cost.latency_s, cost.breakdown["tensor_s"], cost.breakdown["bubble_s"]

Collectives (`all_reduce_s`, `all_gather_s`, `reduce_scatter_s`, `all_to_all_s`,
`send_recv_s`) are alpha-beta ring (or tree) formulas in jnp, differentiable in the bytes,
the link bandwidths and latencies of a `Topology` (an NVLink domain and the network between
nodes) and the `Overlap` fractions. `training_step` prices a Megatron-style iteration under
data / fsdp / tensor / expert / pipeline parallelism with recomputation options;
`inference_step` a prefill or decode step.
"""

from hwcost.parallel._collectives import (ALGORITHMS, COLLECTIVES, all_gather_s, all_reduce_s, all_to_all_s,
                                          bus_bandwidth, collective_s, reduce_scatter_s, send_recv_s)
from hwcost.parallel._layer import ATTENTION_KERNELS, layer_work
from hwcost.parallel._mesh import AXES, RECOMPUTE, Parallelism, parse_axis_sizes, parse_mesh
from hwcost.parallel._step import (OPTIMIZER_BYTES_PER_PARAM, Overlap, inference_step, pipeline_bubble_fraction,
                                   training_step)
from hwcost.parallel._topology import TOPOLOGIES, Topology, topology
from hwcost.parallel._report import default_topology, parallel_report

__all__ = [
    "Topology", "topology", "TOPOLOGIES",
    "all_reduce_s", "all_gather_s", "reduce_scatter_s", "all_to_all_s", "send_recv_s", "collective_s",
    "bus_bandwidth", "ALGORITHMS", "COLLECTIVES",
    "Parallelism", "parse_mesh", "parse_axis_sizes", "AXES", "RECOMPUTE",
    "layer_work", "ATTENTION_KERNELS", "training_step", "inference_step", "Overlap", "pipeline_bubble_fraction",
    "OPTIMIZER_BYTES_PER_PARAM", "parallel_report", "default_topology",
]
