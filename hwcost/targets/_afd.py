"""Attention-FFN disaggregation (AFD, Step-3: arXiv 2507.19427, sections 3-5).

Attention instances (data parallel, they own the KV cache) and FFN instances (TP+EP) run on
hardware chosen independently and exchange each layer's hidden states over the network.
Decoding is a 3-stage pipeline (attention -> communication -> FFN) over `micro_batches`
micro-batches, so each resource handles every micro-batch once per layer:

    TPOT = micro_batches * (sum_l smooth_max(t_attention[l], t_network[l], t_ffn[l])
                            + t_embedding_and_lm_head)                                 [s]
    tokens per GPU per second (TGS) = batch / ((attention GPUs + FFN GPUs) * TPOT)

With a TPOT service-level target (SLA), each stage gets TPOT / (3 * layers) per layer
(Step-3: 50 ms over 61 layers, 272 us). The paper's per-token cost analysis (Tables 5/6)
and its minimum MoE sparsity (Table 7) are here too.

As a `hwcost.Target`, `AFDTarget.cost(work)` costs one decode step of the workload's model,
scenario and knobs on the whole deployment: latency_s = TPOT [s], energy_j and dollars of
the step over all GPUs [J, USD], memory_bytes = resident bytes of all GPUs together, area_mm2
= silicon of all GPUs; the pipeline detail (stage times, TGS, SLA slack, per-GPU memory) is
in the breakdown. `AFDTarget.deployment_cost(cfg, scenario, knobs)` returns the full `AFDCost`.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from nets import ModelConfig
from hwcost.targets._gpu import GPU
from hwcost.targets._target import ALL_MODELLED, Cost, Target, check_phase, check_workload, whole_model_inputs
from hwcost._scenario import Scenario
from hwcost._smooth import smooth_max
from hwcost._workload import ATTENTION_SIDE, FFN_SIDE, OPS, Knobs, Workload, workload

# A decode batch large enough that weight reads are amortised to nothing per token (they are
# below 1e-5 of the per-token bytes for every zoo model): the limit in which Step-3's cost
# tables charge only FLOPs for projections and FFNs.
AMORTISED_BATCH = 1 << 20
_MODEL_OPS = ("embedding", "lm_head")


def stage_budget_s(tpot_sla_s: float, n_layers: int, stages: int = 3) -> float:
    """Time per layer per pipeline stage that meets a TPOT target [s] (Step-3: 50 ms, 61 layers, 3 stages)."""
    return tpot_sla_s / stages / n_layers


def transfer_bytes(cfg: ModelConfig, micro_batch: int, ffn_instances: int, dispatch_bits: float = 8.0,
                   combine_bits: float = 16.0) -> tuple[float, float]:
    """(attention->FFN, FFN->attention) bytes one attention GPU moves per layer per micro-batch.

    Each token's hidden state goes to every FFN instance (experts are sharded over them)
    and comes back from each: instances * micro_batch * d_model * bits / 8 (Step-3's 2A2F
    example: 2 * 128 * 7168 bytes out at FP8, twice that back at BF16).
    """
    values = ffn_instances * micro_batch * cfg.d_model
    return values * dispatch_bits / 8, values * combine_bits / 8


def min_moe_sparsity(ffn_gpu: GPU, hidden: int, n_layers: int, network_bytes_per_s: float, tpot_sla_s: float,
                     stages: int = 3, weight_bits: float = 8.0, dispatch_bits: float = 8.0,
                     combine_bits: float = 16.0) -> Array:
    """Smallest MoE sparsity S = (active experts)/(total) at which the FFN side is compute bound (Table 7).

    An expert GEMM over N tokens reads weight_bits/8 bytes per weight and does 2N FLOPs per
    weight, so it reaches peak when N >= peak * (weight_bits/8) / (2 * bandwidth). With
    sparsity S a batch of B_MoE tokens gives N = S * B_MoE, and the batch's hidden states
    ((dispatch + combine)/8 * H * B_MoE bytes per layer) must cross the network within the
    stage budget TPOT / (stages * L):

        S >= (dispatch+combine)/8 * H * peak * (weight_bits/8) * stages * L / (2 * bandwidth * net * TPOT)

    which for FP8 out, BF16 back, FP8 weights and 3 stages is the paper's
    H * FLOPs * L / (Net * Bandwidth * 11.1 ms) with 11.1 ms = 2/9 * 50 ms.
    """
    peak = 1.0 / ffn_gpu.seconds_per_flop(jnp.asarray(weight_bits))
    bytes_per_value = (dispatch_bits + combine_bits) / 8
    bandwidth = ffn_gpu.mem_bandwidth * ffn_gpu.memory_efficiency
    return (bytes_per_value * hidden * peak * (weight_bits / 8) * stages * n_layers
            / (2 * bandwidth * network_bytes_per_s * tpot_sla_s))


def throughput_tgs(batch: float, n_gpus: float, tpot_s: float) -> float:
    """Tokens per GPU per second: a decode step yields `batch` tokens every TPOT on n GPUs."""
    return batch / (n_gpus * tpot_s)


def paper_accounting(target: GPU) -> GPU:
    """The target as Step-3's cost tables see it: sharp roofline, activations never reach HBM."""
    return eqx.tree_at(lambda g: (g.sharpness, g.activation_traffic), target,
                       (jnp.asarray(jnp.inf, target.sharpness.dtype), jnp.zeros_like(target.activation_traffic)))


def decode_cost_per_token(cfg: ModelConfig, target: GPU, context_len: int, bits: float = 8.0) -> dict[str, Array]:
    """Step-3's per-token decode cost [USD] of the attention side and the FFN side (Table 6 / 1e6).

    attention = max(attention FLOPs * U_flop, KV bytes * U_byte) + projection FLOPs * U_flop,
    FFN = FFN FLOPs * U_flop, which is this target's roofline at the sharp limit with weights
    amortised over a large batch and activations on chip. Embedding and LM head excluded.
    """
    scenario = Scenario(phase="decode", batch=AMORTISED_BATCH, context_len=context_len, weight_bits=bits,
                        kv_bits=bits, act_bits=bits)
    cost = paper_accounting(target).cost(workload(cfg, scenario))
    return {"attention": cost.of_ops(ATTENTION_SIDE) / AMORTISED_BATCH,
            "ffn": cost.of_ops(FFN_SIDE) / AMORTISED_BATCH}


def cheapest_per_side(cfg: ModelConfig, targets: dict[str, GPU], context_len: int, bits: float = 8.0) -> dict:
    """AFD's hardware choice: the cheapest target for attention and for FFN, independently.

    Returns the chosen names, their per-token costs [USD] and the total (communication
    assumed hidden, as in the paper's AFD totals).
    """
    if not targets:
        raise ValueError("targets={}: must name at least one GPU")
    costs = {name: decode_cost_per_token(cfg, t, context_len, bits) for name, t in targets.items()}
    attention = min(costs, key=lambda n: float(costs[n]["attention"]))
    ffn = min(costs, key=lambda n: float(costs[n]["ffn"]))
    total = costs[attention]["attention"] + costs[ffn]["ffn"]
    return {"attention_target": attention, "attention_usd": costs[attention]["attention"],
            "ffn_target": ffn, "ffn_usd": costs[ffn]["ffn"], "total_usd": total}


class AFDCost(eqx.Module):
    """AFD decode: tpot_s [s], tokens_per_gpu_s [tokens/GPU/s], dollars_per_token [USD],
    energy_j_per_token [J], sla_slack_s [s] (TPOT target minus TPOT; negative = missed),
    `stage_s[stage, layer]` [s] (attention, network, FFN per micro-batch),
    attention_memory_bytes / ffn_memory_bytes [bytes per GPU]."""

    tpot_s: Float[Array, ""]
    tokens_per_gpu_s: Float[Array, ""]
    dollars_per_token: Float[Array, ""]
    energy_j_per_token: Float[Array, ""]
    sla_slack_s: Float[Array, ""]
    stage_s: Float[Array, "stage layer"]
    attention_memory_bytes: Float[Array, ""]
    ffn_memory_bytes: Float[Array, ""]


def _side_cost(target: GPU, work: Workload, ops: tuple[str, ...]) -> Cost:
    return target.cost(work.select(ops))


class AFDTarget(Target):
    """Attention GPUs + FFN GPUs + a network link, run as a 3-stage pipeline (module docstring).

    attention, ffn: the GPU of each side (independent choices). link_bandwidth [bytes/s]:
    network bandwidth of one attention GPU. tpot_sla_s [s]: the TPOT target. sharpness: the
    smooth max over the three stages. attention_gpus, ffn_gpus, ffn_instances,
    micro_batches: the deployment (static integers; Step-3's 2A2F = 16 + 16 GPUs, 2 FFN
    instances, 3 micro-batches).
    """

    attention: GPU
    ffn: GPU
    link_bandwidth: Float[Array, ""]
    tpot_sla_s: Float[Array, ""]
    sharpness: Float[Array, ""]
    attention_gpus: int = eqx.field(static=True, default=16)
    ffn_gpus: int = eqx.field(static=True, default=16)
    ffn_instances: int = eqx.field(static=True, default=2)
    micro_batches: int = eqx.field(static=True, default=3)
    name: str = eqx.field(static=True, default="afd")
    modelled: ClassVar[frozenset[str]] = ALL_MODELLED

    def __check_init__(self) -> None:
        for name in ("attention_gpus", "ffn_gpus", "ffn_instances", "micro_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"afd.{name}={value!r}: must be a positive integer")
        if self.ffn_gpus % self.ffn_instances:
            raise ValueError(f"afd.ffn_instances={self.ffn_instances!r}: must divide ffn_gpus={self.ffn_gpus}")

    def micro_batch_per_attention_gpu(self, scenario: Scenario) -> int:
        per = self.attention_gpus * self.micro_batches
        if scenario.batch % per:
            raise ValueError(f"batch={scenario.batch!r}: must be a multiple of attention_gpus * micro_batches = {per}")
        return scenario.batch // per

    def cost(self, work: Workload) -> Cost:
        """One decode step of `work`'s model and scenario on the whole deployment (module docstring)."""
        check_workload(self.name, work)
        check_phase(self.name, work, ("decode",))
        cfg, scenario, knobs = whole_model_inputs(self.name, work)
        run = self.deployment_cost(cfg, scenario, knobs)
        batch = float(scenario.batch)
        return Cost.of(
            self.name, self.modelled,
            {"stage_s": run.stage_s, "tokens_per_gpu_s": run.tokens_per_gpu_s, "sla_slack_s": run.sla_slack_s,
             "attention_memory_bytes": run.attention_memory_bytes, "ffn_memory_bytes": run.ffn_memory_bytes},
            latency_s=run.tpot_s, energy_j=run.energy_j_per_token * batch, dollars=run.dollars_per_token * batch,
            memory_bytes=self.attention_gpus * run.attention_memory_bytes + self.ffn_gpus * run.ffn_memory_bytes,
            area_mm2=self.attention_gpus * self.attention.area_mm2 + self.ffn_gpus * self.ffn.area_mm2)

    def deployment_cost(self, cfg: ModelConfig, scenario: Scenario, knobs: Knobs | None = None) -> AFDCost:
        """Decode TPOT, throughput, dollars and energy of `scenario.batch` concurrent sequences."""
        if scenario.phase != "decode":
            raise ValueError(f"phase={scenario.phase!r}: AFD serves decode only (allowed: decode)")
        micro = self.micro_batch_per_attention_gpu(scenario)
        attention_work = workload(cfg, scenario.replace(batch=micro), knobs)
        ffn_work = workload(cfg, scenario.replace(batch=micro * self.attention_gpus), knobs)
        ffn_share = ffn_work.scaled(1.0 / self.ffn_gpus)
        layers = slice(0, cfg.n_layers)
        attention_cost = _side_cost(self.attention, attention_work, ATTENTION_SIDE + _MODEL_OPS)
        ffn_cost = _side_cost(self.ffn, ffn_share, FFN_SIDE)
        side_mask = jnp.asarray([op in ATTENTION_SIDE for op in OPS], attention_cost.op_latency_s.dtype)
        model_mask = jnp.asarray([op in _MODEL_OPS for op in OPS], attention_cost.op_latency_s.dtype)
        attention_s = jnp.sum(attention_cost.op_latency_s[:, layers] * side_mask[:, None], axis=0)
        model_s = jnp.sum(attention_cost.op_latency_s * model_mask[:, None])
        ffn_s = jnp.sum(ffn_cost.op_latency_s[:, layers], axis=0)
        network = attention_work.op_bytes["network"]["comm"][layers]
        network_s = self.ffn_instances * network / self.link_bandwidth
        stage_s = jnp.stack([attention_s, network_s, ffn_s])
        tpot = self.micro_batches * (jnp.sum(smooth_max(stage_s, self.sharpness)) + model_s)
        n_gpus = self.attention_gpus + self.ffn_gpus
        price = (self.attention_gpus * self.attention.price_per_hour + self.ffn_gpus * self.ffn.price_per_hour) / 3600
        energy = self.micro_batches * (self.attention_gpus * attention_cost.energy_j + self.ffn_gpus * ffn_cost.energy_j)
        attention_weights = jnp.sum(attention_work.resident * (side_mask + model_mask)[:, None])
        kv_per_gpu = attention_work.footprint[1] * self.micro_batches
        ffn_mask = jnp.asarray([op in FFN_SIDE for op in OPS], attention_cost.op_latency_s.dtype)
        ffn_weights = jnp.sum(attention_work.resident * ffn_mask[:, None])
        return AFDCost(
            tpot_s=tpot, tokens_per_gpu_s=scenario.batch / (n_gpus * tpot),
            dollars_per_token=price * tpot / scenario.batch, energy_j_per_token=energy / scenario.batch,
            sla_slack_s=self.tpot_sla_s - tpot, stage_s=stage_s,
            attention_memory_bytes=attention_weights + kv_per_gpu,
            ffn_memory_bytes=ffn_weights / self.ffn_gpus)


def afd(attention: GPU, ffn: GPU, link_gbps: float, tpot_sla_s: float = 0.05, attention_gpus: int = 16,
        ffn_gpus: int = 16, ffn_instances: int = 2, micro_batches: int = 3, sharpness: float = 16.0,
        name: str = "afd") -> AFDTarget:
    """An AFDTarget from plain numbers (link in Gbit/s per attention GPU)."""
    if not link_gbps > 0:
        raise ValueError(f"link_gbps={link_gbps!r}: must be positive")
    if not tpot_sla_s > 0:
        raise ValueError(f"tpot_sla_s={tpot_sla_s!r}: must be positive")
    dtype = attention.peak_flops_bf16.dtype
    return AFDTarget(attention=attention, ffn=ffn, link_bandwidth=jnp.asarray(link_gbps * 1e9 / 8, dtype),
                     tpot_sla_s=jnp.asarray(tpot_sla_s, dtype), sharpness=jnp.asarray(sharpness, dtype),
                     attention_gpus=attention_gpus, ffn_gpus=ffn_gpus, ffn_instances=ffn_instances,
                     micro_batches=micro_batches, name=name)
