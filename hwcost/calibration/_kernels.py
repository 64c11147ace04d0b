"""The kernels a program launches: per kernel group, FLOPs, HBM bytes, bits and waste per launch.

Two sources, one record layout (`item_kernels`' columns): a `hwcost.Workload` (one launch per
op class and layer slot, the attention core fused; `workload_kernels`), and an item of a
kernel data file (a GEMM, a norm, a copy, or a workload restricted to some ops;
`item_kernels`).

What today's JAX program executes beyond the workload's mathematical counts (each a fixed
property of the program, derived from its structure, never fitted):
  - routed experts: XLA lowers `jax.lax.ragged_dot` to dense zero-padded matmuls over all E
    experts (`nets.MoE`), so waste = E (the workload's `n_experts`, on the slots that route)
    and the kernel reads every expert's weights (`extra_bytes`); the fitted waste exponent
    comes out at ~1 on the H200, which confirms the reading;
  - whole-model decode steps: the layer scan copies each layer's KV cache SCAN_CACHE_COPIES
    times (a "kv_copy" kernel of the elementwise group, charged to the attention core).
The uncalibrated roofline (eff=None in `kernel_seconds`) ignores both: it is the plain `GPU`,
a lower bound.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import nets
from hwcost._scenario import Scenario
from hwcost._workload import ATTENTION_CORE, OPS, Workload, workload
from hwcost.calibration._efficiency import KERNEL_GROUPS, kernel_seconds
from hwcost.targets._gpu import GPU

_GEMM_OPS = ("q_proj", "kv_proj", "o_proj", "ffn_dense", "moe_shared", "router", "lm_head")
OP_GROUP = {**{op: "gemm" for op in _GEMM_OPS}, "attn_score": "attention", "attn_value": "attention",
            "moe_routed": "moe", "norm": "elementwise", "embedding": "elementwise"}
_RECORD = ("group", "flops", "bytes", "bits", "waste", "copy", "extra_bytes", "launches")
# Full copies of each layer's KV cache in one decode step of `nets.TransformerLM`, a property of
# the program, not of the GPU (fixed, never fitted). Its layers run under a scan with the stacked
# cache as scanned input and output (nets/_model.py); the compiled step (XLA's optimised HLO of a
# 4-layer decode step, inspected on the CPU backend, jax 0.10.2) slices each layer's cache out of
# the input stack (a dynamic-slice: one copy), writes the updated layer into the output stack (a
# dynamic-update-slice: one copy) and copies the whole output stack once after the loop (one
# copy); each copy reads and writes the cache once. The zero-fill of the output stack before the
# loop (a write only) is left out.
SCAN_CACHE_COPIES = 3.0
"""Copies of each layer's KV cache that one whole-model decode step of `nets.TransformerLM` makes (fixed, never fitted)."""


def workload_kernels(work: Workload, traffic=1.0, *, lm_head_scale: float = 1.0,
                     cache_copies: float = 0.0) -> dict[str, dict]:
    """Per kernel (op class, the attention core fused), per slot: FLOPs, HBM bytes, bits, waste.

    One launch per (kernel, slot) that has work. `traffic` is the fraction of activation
    bytes that reach HBM (the GPU's activation_traffic). `lm_head_scale` multiplies the LM
    head's FLOPs and activation bytes (a measured prefill that computes logits for every
    position, not only the last, has lm_head_scale = prompt length). `cache_copies` > 0 adds
    a "kv_copy" kernel (elementwise group) that reads and writes the layer's KV cache that
    many times in a decode step (SCAN_CACHE_COPIES for a whole `nets.TransformerLM` step).
    """
    out = {}
    for op in OPS:
        if op not in OP_GROUP or op == "attn_value":
            continue
        ops = ATTENTION_CORE if op == "attn_score" else (op,)
        flops = sum(work.op_flops[o] for o in ops if o in work.op_flops)
        hbm, extra = 0.0, 0.0
        for kind, scale in (("weights", 1.0), ("kv", 1.0), ("activations", traffic)):
            for o in ops:
                value = work.op_bytes.get(kind, {}).get(o)
                if o == "moe_routed" and kind == "weights" and value is not None:
                    # the dense-expanded ragged_dot reads every expert, not only those routed to
                    extra = jnp.maximum(work.op_resident["moe_routed"] - value, 0.0)
                if value is not None:
                    hbm = hbm + scale * value * (lm_head_scale if (o == "lm_head" and kind == "activations") else 1.0)
        if isinstance(flops, int) and isinstance(hbm, float):
            continue
        slots = jnp.zeros_like(work.op_flops["lm_head"])
        flops = flops * (lm_head_scale if op == "lm_head" else 1.0) + slots
        bits = work.op_bits.get(op, jnp.full_like(work.op_flops["lm_head"], 16.0))
        waste = jnp.ones_like(work.op_flops["lm_head"])
        if op == "moe_routed" and "router" in work.op_flops:
            # E where a slot routes (an MoE layer), 1 elsewhere: a count, not a design variable
            waste = jnp.where(work.op_flops["router"] > 0, float(max(work.n_experts, 1)), 1.0)
        out[op if op != "attn_score" else "attention"] = {
            "group": KERNEL_GROUPS.index(OP_GROUP[op]), "flops": flops, "bytes": hbm + slots, "bits": bits,
            "waste": waste, "extra_bytes": extra + slots}
    if cache_copies and work.phase == "decode":
        # the cache attended in a decode step is the whole resident cache of the layer (token_keep aside)
        cache = sum(work.op_bytes.get("kv", {}).get(o, 0.0) for o in ATTENTION_CORE)
        if not isinstance(cache, (int, float)):
            ones = jnp.ones_like(work.op_flops["lm_head"])
            out["kv_copy"] = {"group": KERNEL_GROUPS.index("elementwise"), "flops": 0.0 * ones,
                              "bytes": 2.0 * cache_copies * cache * ones, "bits": 16.0 * ones, "waste": ones,
                              "copy": ones, "extra_bytes": 0.0 * ones}
    return out



def _workload_of(describe: dict) -> tuple[Workload, float, float]:
    cfg = nets.ModelConfig.from_dict(describe["config"])
    scenario = Scenario(**describe["scenario"])
    work = workload(cfg, scenario)
    ops = describe.get("ops")
    if ops is not None:
        work = work.select(tuple(ops))
    head = describe.get("lm_head_positions", "last")
    if head not in ("last", "all"):
        raise ValueError(f"lm_head_positions={head!r}: must be 'last' or 'all'")
    scale = float(scenario.context_len) if (head == "all" and scenario.phase == "prefill") else 1.0
    # a whole model (its LM head included) scans its layers over the cache; one layer alone does not
    whole = ops is None or "lm_head" in ops
    return work, scale, SCAN_CACHE_COPIES if whole else 0.0


def item_kernels(describe: dict) -> dict[str, np.ndarray]:
    """The kernels one measured item runs, as columns (group, flops, bytes, bits, waste, copy, extra_bytes, launches).

    `describe` is an item's "describe" entry in a kernel data file:
      {"type": "gemm", "m", "n", "k", "bits_in", "bits_out"}: C[m,n] = A[m,k] @ B[k,n], B the weights;
      {"type": "norm", "tokens", "width", "bits"}: an RMSNorm over tokens x width;
      {"type": "workload", "config", "scenario", "ops"?, "lm_head_positions"?}: `hwcost.workload`
        of a nets config and scenario, restricted to `ops` (a kernel, a layer or a whole step).
    Identical (kernel, size) rows over layers are merged into one row with a launch count.
    """
    if not isinstance(describe, dict) or describe.get("type") not in ("gemm", "norm", "copy", "workload"):
        raise ValueError(f"describe.type={describe.get('type') if isinstance(describe, dict) else describe!r}: "
                         "must be one of gemm, norm, copy, workload")
    kind = describe["type"]
    if kind == "gemm":
        m, n, k = (float(describe[x]) for x in ("m", "n", "k"))
        b_in, b_out = float(describe["bits_in"]), float(describe["bits_out"])
        rows = [(KERNEL_GROUPS.index("gemm"), 2 * m * n * k, (k * n + m * k) * b_in / 8 + m * n * b_out / 8, b_in, 1.0, 0.0, 0.0, 1.0)]
    elif kind == "norm":
        t, w, b = (float(describe[x]) for x in ("tokens", "width", "bits"))
        rows = [(KERNEL_GROUPS.index("elementwise"), 4 * t * w, (2 * t * w + w) * b / 8, b, 1.0, 0.0, 0.0, 1.0)]
    elif kind == "copy":
        n, b = float(describe["elements"]), float(describe["bits"])
        rows = [(KERNEL_GROUPS.index("elementwise"), n, 2 * n * b / 8, b, 1.0, 0.0, 0.0, 1.0)]
    else:
        work, scale, copies = _workload_of(describe)
        counts: dict[tuple, float] = {}
        for k in workload_kernels(work, 1.0, lm_head_scale=scale, cache_copies=copies).values():
            cols = [np.broadcast_to(np.asarray(k[c], np.float64), np.shape(k["flops"]))
                    for c in ("flops", "bytes", "bits", "waste", "extra_bytes")]
            for flops, hbm, bits, waste, extra in zip(*cols):
                if flops + hbm > 0:
                    key = (k["group"], float(flops), float(hbm), float(bits), float(waste),
                           float(np.max(k.get("copy", 0.0))), float(extra))
                    counts[key] = counts.get(key, 0.0) + 1.0
        rows = [key + (n,) for key, n in counts.items()]
    table = np.asarray(rows, np.float64).reshape(-1, len(_RECORD))
    return {name: table[:, i] for i, name in enumerate(_RECORD)}


def roofline_seconds(describe: dict, device: GPU) -> float:
    """The uncalibrated roofline time [s] of an item on `device` (a lower bound of the measurement)."""
    k = item_kernels(describe)
    return float(jnp.sum(kernel_seconds(device, None, jnp.asarray(k["group"], jnp.int32), k["flops"], k["bytes"],
                                        k["bits"], k["waste"], k["launches"], k["copy"],
                                        k["extra_bytes"])))
