"""Time of one training iteration or one inference step of a model split over a mesh of GPUs.

Training (Megatron-LM's schedule; Narayanan et al., SC'21; Korthikanti et al., MLSys'23):
per micro-batch and layer, on one device (tensor size t, sequence parallelism sp):

    compute   = passes * roofline(GEMM FLOPs / t, GEMM bytes / t) + passes * attention FLOPs / t
                (+ attention FLOPs / t again with selective recompute)
    memory    = passes * (replicated / (t if sp else 1) + score / t + ffn / t) / (HBM bandwidth x efficiency)
                (+ score / t again with selective recompute)
    passes    = 3 (forward 1, backward 2), 4 with full recomputation
    comm      = tensor: without sp, all-reduces of the hidden state (2 forward, 2 backward,
                2 more with full recompute); with sp, all-gathers and reduce-scatters (2 + 2 forward,
                2 + 2 backward, 2 all-gathers redone in backward because the linear layers keep
                only their sharded input, and 2 + 2 more with full recompute); expert: 2 all-to-alls each way per pass of an
                MoE layer; fsdp: weights all-gathered per pass, gradients reduce-scattered
    exposed   = comm - overlap[axis] * min(comm, compute + memory)

A pipeline stage's micro-batch time is the sum over its layers plus its sends (each
tensor-parallel rank sends hidden / t to the next stage, 1F1B with `interleave` chunks: 2 x
interleave sends per micro-batch; without sp the receiver all-gathers them over NVLink, the
scatter-gather optimisation) and, on the last stage, the logit layer (3 x 2 T d V / t FLOPs,
cross-entropy traffic). The iteration takes

    m * max(stage) + (p - 1) / interleave * mean(stage)        (1F1B bubble: (p-1)/(v m) of the ideal)
    + exposed data-parallel gradient all-reduce + optimizer step

The optimizer step streams `optimizer_bytes_per_param` bytes per local parameter through HBM
(default 40: Megatron's mixed-precision Adam reads the fp32 gradient twice, the fp32 master
weight and both moments, writes weight, moments and the fp16 copy, and zeroes the gradient).
GEMM compute time is FLOPs x `gpu.seconds_per_flop(bits)` (the GPU's peak times its
compute_efficiency); memory time uses its HBM bandwidth times memory_efficiency.

Inference (prefill or decode): every device runs its 1/t share of the non-expert work and its
experts' share of the routed work (`hwcost.GPU.cost` on the workload of its batch), plus 2
tensor all-reduces per layer, 2 all-to-alls per MoE layer, fsdp weight all-gathers and
(p - 1) pipeline sends; stages run one after another for one step.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

import hwcost
import nets
from nets import fail
from hwcost.parallel._collectives import all_gather_s, all_reduce_s, all_to_all_s, reduce_scatter_s, send_recv_s
from hwcost.parallel._layer import layer_work
from hwcost.parallel._mesh import Parallelism
from hwcost.parallel._topology import Topology

MODELLED = frozenset({"latency_s", "dollars", "memory_bytes"})
OPTIMIZER_BYTES_PER_PARAM = 40.0
STATE_BYTES_PER_PARAM = 18.0  # fp16 weight 2 + fp32 gradient 4 + fp32 master 4 + Adam moments 8 (Korthikanti et al.)
_MOE_OPS = ("moe_routed",)


class Overlap(eqx.Module):
    """Fraction in [0, 1] of each axis's communication hidden behind compute (0: all exposed)."""

    tensor: Float[Array, ""] | float = 0.0
    expert: Float[Array, ""] | float = 0.0
    fsdp: Float[Array, ""] | float = 0.0
    data: Float[Array, ""] | float = 0.0
    pipeline: Float[Array, ""] | float = 0.0


def pipeline_bubble_fraction(stages: int, microbatches: int, interleave: int = 1) -> float:
    """Idle share of the 1F1B schedule relative to the ideal time: (p - 1) / (interleave * m)."""
    for name, value in (("mesh.pipeline", stages), ("mesh.microbatches", microbatches),
                        ("mesh.interleave", interleave)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(name, value, "must be a positive integer")
    return (stages - 1) / (interleave * microbatches)


def _exposed(comm, overlap, window):
    return comm - overlap * jnp.minimum(comm, window)


def _stage_bounds(n_layers: int, stages: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n_layers, stages + 1).round().astype(int)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(stages)]


def _check(cfg, par: Parallelism, gpu, topo) -> None:
    if not isinstance(cfg, nets.ModelConfig):
        fail("cfg", type(cfg).__name__, "must be a nets.ModelConfig")
    if not isinstance(par, Parallelism):
        fail("mesh", type(par).__name__, "must be a hwcost.parallel.Parallelism")
    if not isinstance(gpu, hwcost.GPU):
        fail("target", getattr(gpu, "name", type(gpu).__name__), "parallel costs need a GPU-like target "
             f"(one of {', '.join(hwcost.PRESETS)})")
    if not isinstance(topo, Topology):
        fail("topology", type(topo).__name__, "must be a hwcost.parallel.Topology")
    if par.pipeline * par.interleave > cfg.n_layers:
        fail("mesh.pipeline", par.pipeline, f"times interleave {par.interleave} must be at most n_layers="
                                            f"{cfg.n_layers}")
    if cfg.attention.n_heads % par.tensor:
        fail("mesh.tensor", par.tensor, f"must divide n_heads={cfg.attention.n_heads}")
    if par.expert > 1 and (cfg.ffn.kind != "moe" or cfg.ffn.n_experts % par.expert):
        fail("mesh.expert", par.expert, "must divide the routed experts of an MoE model "
                                        f"(n_experts={cfg.ffn.n_experts if cfg.ffn.kind == 'moe' else 0})")


def training_step(cfg: nets.ModelConfig, par: Parallelism, gpu: hwcost.GPU, topo: Topology, *,
                  global_batch: int, seq_len: int, overlap: Overlap | None = None, bits: float = 16.0,
                  attention: str = "flash", optimizer_bytes_per_param: float = OPTIMIZER_BYTES_PER_PARAM,
                  grad_bits: float = 32.0) -> hwcost.Cost:
    """One training iteration of `global_batch` sequences of `seq_len` tokens (module docstring).

    Returns a `hwcost.Cost` with latency_s [s per iteration], dollars [USD for all devices]
    and memory_bytes [per device: weights, gradients, optimizer state and stored activations];
    `breakdown` holds the iteration's parts in seconds (compute_s, memory_s, tensor_s, expert_s,
    fsdp_s, pipeline_s, bubble_s, data_s, optimizer_s, head_s) and activation_bytes.
    """
    _check(cfg, par, gpu, topo)
    overlap = Overlap() if overlap is None else overlap
    replicas = par.data * par.fsdp * par.expert
    if global_batch % (replicas * par.microbatches):
        fail("mesh.microbatches", par.microbatches, f"times data x fsdp x expert = {replicas} must divide "
                                                    f"global_batch={global_batch}")
    return _training_step(cfg, par, gpu, topo, overlap, global_batch, seq_len, bits, attention,
                          optimizer_bytes_per_param, grad_bits)


@eqx.filter_jit  # one compiled program per (model, mesh, shapes): eager dispatch of its small ops is slower
def _training_step(cfg, par, gpu, topo, overlap, global_batch, seq_len, bits, attention, optimizer_bytes_per_param,
                   grad_bits) -> hwcost.Cost:
    replicas = par.data * par.fsdp * par.expert
    micro_batch = global_batch // (replicas * par.microbatches)
    t, e, p, v, m = par.tensor, par.expert, par.pipeline, par.interleave, par.microbatches
    w = layer_work(cfg, micro_batch, seq_len, bits, attention)
    seconds_per_flop = gpu.seconds_per_flop(jnp.asarray(bits, jnp.float32))
    seconds_per_byte = 1.0 / (gpu.mem_bandwidth * gpu.memory_efficiency)
    inv_sharpness = 1.0 / gpu.sharpness
    passes = 4.0 if par.recompute == "full" else 3.0
    sp_split = t if par.sequence_parallel else 1

    def roofline(flops, nbytes):
        return hwcost.smooth_max2(flops * seconds_per_flop, nbytes * seconds_per_byte, 1.0 / inv_sharpness)

    compute = passes * (roofline(w["gemm_flops"] / t, w["gemm_bytes"] / t)
                        + roofline(w["expert_flops"] / t, 0.0 * w["expert_flops"]) + w["attn_flops"] / t
                        * seconds_per_flop)
    memory = passes * (w["replicated_bytes"] / sp_split + (w["score_bytes"] + w["ffn_bytes"]) / t) * seconds_per_byte
    if par.recompute == "selective":
        compute = compute + w["attn_flops"] / t * seconds_per_flop
        memory = memory + w["score_bytes"] / t * seconds_per_byte

    bw, lat = topo.link(t, 1)
    hidden = w["hidden_bytes"]
    if par.sequence_parallel:
        redo = 2 if par.recompute == "full" else 0
        gathers, scatters = 6 + redo, 4 + redo
        tensor = gathers * all_gather_s(hidden, t, bw, lat) + scatters * reduce_scatter_s(hidden, t, bw, lat)
    else:
        tensor = (4 + (2 if par.recompute == "full" else 0)) * all_reduce_s(hidden, t, bw, lat)
    bw, lat = topo.link(e, t)
    expert = 2 * (passes - 1) * all_to_all_s(w["dispatch_bytes"] / t, e, bw, lat)
    bw, lat = topo.link(par.fsdp, t * e)
    weight_bytes = (w["params"] - w["expert_params"] + w["expert_params"] / e) / t * bits / 8
    fsdp = ((passes - 1) * all_gather_s(weight_bytes, par.fsdp, bw, lat)
            + reduce_scatter_s(weight_bytes * grad_bits / bits, par.fsdp, bw, lat))
    busy = compute + memory
    layer_s = (busy + _exposed(tensor, overlap.tensor, busy) + _exposed(expert, overlap.expert, busy)
               + _exposed(fsdp, overlap.fsdp, busy))

    head_s = roofline(3 * w["head_flops"] / t, 0.0) + 2 * w["head_bytes"] / t * seconds_per_byte
    pipeline_s = jnp.zeros(())
    if p > 1:
        bw, lat = topo.link(p, par.devices // p)
        tp_bw, tp_lat = topo.link(t, 1)
        per_send = send_recv_s(hidden[0] / t, bw, lat)
        if not par.sequence_parallel:
            per_send = per_send + all_gather_s(hidden[0], t, tp_bw, tp_lat)
        pipeline_s = _exposed(2 * v * per_send, overlap.pipeline, jnp.sum(busy) / p)
    stage_s = jnp.stack([jnp.sum(layer_s[lo:hi]) for lo, hi in _stage_bounds(cfg.n_layers, p)]) + pipeline_s
    stage_s = stage_s.at[-1].add(head_s)
    steady_s = m * jnp.max(stage_s)
    bubble_s = (p - 1) / v * jnp.mean(stage_s)

    local_params = (w["model_params"] - np.sum(w["expert_params"]) * (1 - 1 / e)) / (t * p * par.fsdp)
    # gradients of replicated weights are summed over data x expert (expert weights over data only: not
    # separated here); the group leaves the node as soon as its outermost axis does
    group = par.data * e
    bw, lat = topo.link(par.data, t * e * par.fsdp) if par.data > 1 else topo.link(e, t)
    data = all_reduce_s(local_params * grad_bits / 8, group, bw, lat)
    backward_window = steady_s * 2 / passes
    data_s = _exposed(data, overlap.data, backward_window)
    optimizer_s = local_params * optimizer_bytes_per_param * seconds_per_byte
    latency = steady_s + bubble_s + data_s + optimizer_s

    activation_bytes = _activation_bytes(cfg, par, micro_batch, seq_len, bits)
    memory_bytes = local_params * STATE_BYTES_PER_PARAM + activation_bytes
    scale = m * cfg.n_layers / p  # the steady state's parts on a mean stage (the bubble is its own part)
    breakdown = {
        "compute_s": scale * jnp.mean(compute), "memory_s": scale * jnp.mean(memory),
        "tensor_s": scale * jnp.mean(_exposed(tensor, overlap.tensor, busy)),
        "expert_s": scale * jnp.mean(_exposed(expert, overlap.expert, busy)),
        "fsdp_s": scale * jnp.mean(_exposed(fsdp, overlap.fsdp, busy)),
        "pipeline_s": m * pipeline_s, "head_s": m * head_s, "bubble_s": bubble_s, "data_s": data_s,
        "optimizer_s": jnp.asarray(optimizer_s), "activation_bytes": jnp.asarray(activation_bytes, jnp.float32)}
    price = gpu.price_per_hour / 3600.0 * par.devices
    return hwcost.Cost.of(f"{gpu.name}x{par.devices}", MODELLED, breakdown, latency_s=latency,
                          dollars=price * latency, memory_bytes=memory_bytes)


def _activation_bytes(cfg: nets.ModelConfig, par: Parallelism, micro_batch: int, seq_len: int, bits: float) -> float:
    """Stored activations on the first stage [bytes] (Korthikanti et al., MLSys'23, eqs. 2-6 and Table 2).

    Per layer, at 16 bits: none s b h (10 + 24/t + 5 a s / (h t)) (sequence parallel: 34/t + 5 a s
    / (h t)); selective drops the 5 a s / (h t) term; full keeps the layer input 2 s b h (/t with
    sequence parallelism). First stage: layers per stage x min(p, m) micro-batches in flight,
    x (1 + (p-1)/(p v)) when interleaved.
    """
    s, b, h, a, t = seq_len, micro_batch, cfg.d_model, cfg.attention.n_heads, par.tensor
    scale = bits / 16.0
    if par.recompute == "full":
        per_layer = 2 * s * b * h / (t if par.sequence_parallel else 1)
    else:
        base = 34 / t if par.sequence_parallel else 10 + 24 / t
        score = 0.0 if par.recompute == "selective" else 5 * a * s / (h * t)
        per_layer = s * b * h * (base + score)
    p, m, v = par.pipeline, par.microbatches, par.interleave
    in_flight = min(p, m) * (1 + (p - 1) / (p * v) if v > 1 else 1)
    return scale * per_layer * math.ceil(cfg.n_layers / p) * in_flight


def inference_step(cfg: nets.ModelConfig, par: Parallelism, gpu: hwcost.GPU, topo: Topology,
                   scenario: hwcost.Scenario) -> hwcost.Cost:
    """One prefill or decode step of `scenario` (its batch over data x fsdp x expert): module docstring."""
    _check(cfg, par, gpu, topo)
    if scenario.phase == "train":
        fail("scenario.phase", "train", "use training_step for training (inference_step: prefill or decode)")
    replicas = par.data * par.fsdp * par.expert
    if scenario.batch % replicas:
        fail("mesh", f"data x fsdp x expert = {replicas}", f"must divide the batch {scenario.batch}")
    return _inference_step(cfg, par, gpu, topo, scenario)


@eqx.filter_jit
def _inference_step(cfg, par, gpu, topo, scenario) -> hwcost.Cost:
    replicas = par.data * par.fsdp * par.expert
    t, e, p = par.tensor, par.expert, par.pipeline
    local = scenario.replace(batch=scenario.batch // replicas)
    work = hwcost.workload(cfg, local)
    other = tuple(op for op in hwcost.OPS if op not in _MOE_OPS)
    compute = gpu.cost(work.select(other).scaled(1.0 / t)).latency_s
    if cfg.ffn.kind == "moe":
        routed = hwcost.workload(cfg, local.replace(batch=local.batch * e)).select(_MOE_OPS)
        compute = compute + gpu.cost(routed.scaled(1.0 / (t * e))).latency_s
    ab = scenario.act_bits / 8
    hidden = float(local.tokens) * cfg.d_model * ab
    bw, lat = topo.link(t, 1)
    tensor = 2 * cfg.n_layers * all_reduce_s(hidden, t, bw, lat)
    bw, lat = topo.link(e, t)
    expert = 2 * cfg.n_moe_layers * all_to_all_s(hidden * max(cfg.ffn.top_k, 1) / t, e, bw, lat)
    bw, lat = topo.link(par.fsdp, t * e)
    fsdp = all_gather_s(work.footprint[0] / t, par.fsdp, bw, lat)
    bw, lat = topo.link(p, par.devices // p)
    pipeline = (p - 1) * send_recv_s(hidden / t, bw, lat)
    latency = compute + tensor + expert + fsdp + pipeline
    breakdown = {"compute_s": compute, "tensor_s": tensor, "expert_s": expert, "fsdp_s": fsdp,
                 "pipeline_s": pipeline}
    memory = jnp.sum(work.footprint) / (t * p * par.fsdp)
    price = gpu.price_per_hour / 3600.0 * par.devices
    return hwcost.Cost.of(f"{gpu.name}x{par.devices}", MODELLED, breakdown, latency_s=latency,
                          dollars=price * latency, memory_bytes=memory)
