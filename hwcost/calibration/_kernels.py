"""The kernels a program launches: per kernel group, FLOPs, HBM bytes, bits and waste per launch.

Two sources, one record layout (`item_kernels`' columns): a `hwcost.Workload` (one launch per
op class and layer slot, the attention core fused; `workload_kernels`), and an item of a
kernel data file (a GEMM, a norm, a copy, or a workload restricted to some ops), which is
turned into a workload first (`hwcost.op_workload`), so a measured item and a user's
`target.cost(workload)` price exactly the same kernels.

The records also carry what a program may execute beyond the workload's mathematical counts;
whether it does is the software profile's business (`hwcost.Software`), never the GPU's:
  - routed experts: `waste` = E on the slots that route and `extra_bytes` = the unrouted
    experts' weights, charged by a profile with dense_experts (XLA's dense zero-padded
    lowering of `jax.lax.ragged_dot`; the fitted waste exponent comes out at ~1 on the H200,
    which confirms that reading for the program measured there);
  - norms: `extra_bytes` = the norm's input, read again by each pass beyond the first a
    profile's `norm_reads` says the program makes;
  - whole-model decode steps: a "kv_copy" row (copy=COPY_KV) that reads and writes the
    layer's KV cache once, launched `kv_cache_copies` times by the profile (`SCAN_CACHE_COPIES`
    to start for ours, 0 for the roofline);
  - whole-model steps: a "weight_copy" row (copy=COPY_WEIGHTS) per layer that reads and writes
    the layer's weights once, launched `weight_copies` times (the scan's weight slices).
Columns `rows` (output rows of a GEMM launch, for tile padding) and `step` (the phase index
of a whole step, -1 otherwise, for the step composition) feed the software's shape terms.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from hwcost._ops import is_whole_step, op_workload
from hwcost._workload import ATTENTION_CORE, OPS, Workload
from hwcost.calibration._efficiency import KERNEL_GROUPS
from hwcost.calibration._software import COPY_KV, COPY_WEIGHTS, STEP_PHASES, kernel_seconds
from hwcost.targets._gpu import GPU

_GEMM_OPS = ("q_proj", "kv_proj", "o_proj", "ffn_dense", "moe_shared", "router", "lm_head")
OP_GROUP = {**{op: "gemm" for op in _GEMM_OPS}, "attn_score": "attention", "attn_value": "attention",
            "moe_routed": "moe", "norm": "norm", "embedding": "elementwise"}
_RECORD = ("group", "flops", "bytes", "bits", "waste", "copy", "extra_bytes", "launches", "rows", "step")


def _family(work: Workload, op: str) -> str:
    """The kernel family of op class `op` in `work` (attention: one per attention kind, decode apart)."""
    group = OP_GROUP[op]
    if group == "attention" and work.config is not None:
        phase = {"decode": "decode_", "train": "train_"}.get(work.phase, "")
        return f"attention_{phase}{work.config.attention.kind}"
    return group


def _gemm_rows(work: Workload, op: str, lm_head_scale: float):
    """Output rows of one launch of GEMM class `op` (tile padding), or 0 for a kernel that is no GEMM."""
    tokens = work.tokens
    if op == "lm_head":
        if work.scenario is None or work.phase == "train":
            return tokens
        return float(work.scenario.batch) * lm_head_scale
    if op == "moe_routed":
        return tokens * max(work.top_k, 1) / max(work.n_experts, 1) if work.config is not None else tokens
    return tokens if OP_GROUP.get(op) in ("gemm", "moe") else 0.0 * tokens


def workload_kernels(work: Workload, traffic=1.0, *, lm_head_scale: float = 1.0,
                     whole_step: bool | None = None) -> dict[str, dict]:
    """Per kernel (op class, the attention core fused), per slot: the record columns of `item_kernels`.

    Arrays over slots, except `group`, `copy` and `step`, which are Python numbers (one per
    kernel: they select curves and terms at trace time).

    One launch per (kernel, slot) that has work. `traffic` is the fraction of activation
    bytes that reach HBM (the GPU's activation_traffic). `lm_head_scale` multiplies the LM
    head's FLOPs and activation bytes (a measured prefill that computes logits for every
    position, not only the last, has lm_head_scale = prompt length). A whole step
    (`whole_step`, default `hwcost.is_whole_step(work)`) marks its rows with its phase (the
    software's step composition) and, in decode, adds a "kv_copy" kernel (elementwise
    group, copy=1) that reads and writes the layer's KV cache once per copy the software
    makes (module docstring).
    """
    whole = is_whole_step(work) if whole_step is None else whole_step
    step = float(STEP_PHASES.index(work.phase)) if whole and work.phase in STEP_PHASES else -1.0
    slots = jnp.zeros_like(work.op_flops["lm_head"])
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
                if o == "norm" and kind == "activations" and value is not None:
                    # the norm's input (half its activation traffic: x read, y written), read again per extra pass
                    extra = 0.5 * scale * value
                if value is not None:
                    hbm = hbm + scale * value * (lm_head_scale if (o == "lm_head" and kind == "activations") else 1.0)
        if isinstance(flops, int) and isinstance(hbm, float):
            continue
        flops = flops * (lm_head_scale if op == "lm_head" else 1.0) + slots
        bits = work.op_bits.get(op, slots + 16.0)
        waste = slots + 1.0
        if op == "moe_routed" and "router" in work.op_flops:
            # E where a slot routes (an MoE layer), 1 elsewhere: a count, not a design variable
            waste = jnp.where(work.op_flops["router"] > 0, float(max(work.n_experts, 1)), 1.0)
        out[op if op != "attn_score" else "attention"] = {
            "group": KERNEL_GROUPS.index(_family(work, op)), "flops": flops, "bytes": hbm + slots, "bits": bits,
            "waste": waste, "copy": 0.0, "extra_bytes": extra + slots,
            "rows": _gemm_rows(work, op, lm_head_scale) + slots, "step": step}
    if whole and work.phase == "decode":
        # the cache attended in a decode step is the whole resident cache of the layer (token_keep aside)
        cache = sum(work.op_bytes.get("kv", {}).get(o, 0.0) for o in ATTENTION_CORE)
        if not isinstance(cache, (int, float)):
            out["kv_copy"] = {"group": KERNEL_GROUPS.index("elementwise"), "flops": slots, "bytes": 2.0 * cache + slots,
                              "bits": slots + 16.0, "waste": slots + 1.0, "copy": COPY_KV, "extra_bytes": slots,
                              "rows": slots, "step": step}
    if whole:
        # each layer's weights, sliced out of the stacked weights by the layer scan (the model slot is no layer)
        layer = jnp.arange(slots.shape[-1]) < work.n_layers
        weights = sum(work.op_bytes.get("weights", {}).get(op, 0.0) for op in OPS if op not in ("embedding", "lm_head"))
        if not isinstance(weights, (int, float)):
            out["weight_copy"] = {"group": KERNEL_GROUPS.index("elementwise"), "flops": slots,
                                  "bytes": 2.0 * weights * layer + slots, "bits": slots + 16.0, "waste": slots + 1.0,
                                  "copy": COPY_WEIGHTS, "extra_bytes": slots, "rows": slots, "step": step}
    return out


def item_kernels(describe: dict) -> dict[str, np.ndarray]:
    """The kernels one measured item runs, as columns (`_RECORD`: group, flops, bytes, bits, waste, copy,
    extra_bytes, launches, rows, step).

    `describe` is an item's "describe" entry in a kernel data file (`hwcost.op_workload`):
      {"type": "gemm", "m", "n", "k", "bits_in", "bits_out", "compute_bits"?}: C[m,n] = A[m,k] @ B[k,n],
        B the weights, compute_bits the rate's format (19 for TF32; default bits_in);
      {"type": "norm", "tokens", "width", "bits"}: an RMSNorm over tokens x width;
      {"type": "copy", "elements", "bits"}: an elementwise copy;
      {"type": "workload", "config", "scenario", "ops"?, "lm_head_positions"?}: `hwcost.workload`
        of a nets config and scenario, restricted to `ops` (a kernel, a layer or a whole step).
    Identical rows over layers are merged into one row with a launch count.
    """
    work, program = op_workload(describe)
    counts: dict[tuple, float] = {}
    columns = [c for c in _RECORD if c not in ("group", "launches")]
    for k in workload_kernels(work, 1.0, lm_head_scale=program["lm_head_scale"],
                              whole_step=program["whole_step"]).values():
        cols = [np.broadcast_to(np.asarray(k[c], np.float64), np.shape(k["flops"])) for c in columns]
        for values in zip(*cols):
            row = dict(zip(columns, values))
            if row["flops"] + row["bytes"] > 0:
                key = (float(k["group"]),) + tuple(float(row[c]) for c in columns)
                counts[key] = counts.get(key, 0.0) + 1.0
    order = ("group",) + tuple(columns)
    table = np.asarray([key + (n,) for key, n in counts.items()], np.float64).reshape(-1, len(order) + 1)
    named = {name: table[:, i] for i, name in enumerate(order + ("launches",))}
    return {name: named[name] for name in _RECORD}


def roofline_seconds(describe: dict, device: GPU) -> float:
    """The uncalibrated roofline time [s] of an item on `device` (a lower bound of the measurement)."""
    k = item_kernels(describe)
    return float(jnp.sum(kernel_seconds(device, None, jnp.asarray(k["group"], jnp.int32), k["flops"], k["bytes"],
                                        k["bits"], k["waste"], k["launches"], k["copy"],
                                        k["extra_bytes"], k["rows"], k["step"])))
