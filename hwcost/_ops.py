"""Single-op workloads: one GEMM, attention call, grouped MoE GEMM, norm or elementwise op.

    work = hwcost.gemm_op(4096, 4096, 4096, "fp32")          # a Workload of one kernel
    hwcost.get_target("h100").cost(work).latency_s           # priced like any step
    hwcost.op_workload(describe)                             # from a kernel data file's "describe"

Every target prices these through the one protocol (`Target.cost(workload)`); a layer or a
step is `hwcost.workload(cfg, scenario)` (optionally `.select(ops)`). A single op is a
`Workload` with one slot, its work put in the op class of the same kernel group:

    GEMM C[m,n] = A[m,k] @ B[k,n]   -> "ffn_dense"  (B counted as weights, A and C as activations)
    grouped MoE GEMM                -> "moe_routed" (+ "router"): a one-layer MoE workload
    attention (train/prefill/decode)-> "attn_score" + "attn_value" (+ projections with `projections=True`)
    RMSNorm over tokens x width     -> "norm"
    elementwise (copy, activation)  -> "embedding"  (the elementwise kernel group)

Formats (`FORMATS`): the storage width sets the bytes, the compute format the rate
(`hwcost.GPU`'s per-precision peaks): fp32 (32-bit storage, FP32 rate), tf32 (32-bit
storage, TF32 rate: 19 bits), bf16/fp16 (16), fp8 and int8 (8; INT8 priced at the FP8
anchor, `hwcost.GPU`), fp4 (4).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

import nets
from hwcost._scenario import Scenario
from hwcost._workload import ATTENTION_CORE, PROJECTIONS, Workload, workload

# format: (storage bits, compute-rate bits)
FORMATS: dict[str, tuple[float, float]] = {
    "fp32": (32.0, 32.0), "tf32": (32.0, 19.0), "bf16": (16.0, 16.0), "fp16": (16.0, 16.0),
    "fp8": (8.0, 8.0), "int8": (8.0, 8.0), "fp4": (4.0, 4.0)}
ATTENTION_OP_KINDS = ("mha", "gqa", "mfa", "mla")
DESCRIBE_TYPES = ("gemm", "norm", "copy", "elementwise", "grouped_gemm", "workload")


def format_bits(dtype: str) -> tuple[float, float]:
    """(storage bits, compute-rate bits) of a format name in FORMATS."""
    if dtype not in FORMATS:
        nets.fail("dtype", dtype, f"must be one of {', '.join(FORMATS)}")
    return FORMATS[dtype]


def _size(field: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        nets.fail(field, value, "must be a positive finite number")
    return float(value)


def _one_slot(op: str, flops: float, weights: float, activations: float, bits: float, tokens: float = 1.0) -> Workload:
    """A Workload of one kernel in op class `op` (one slot; nothing resident but its weights).

    `tokens`: the rows of a GEMM's output (its tile padding), 1 for other kernels.
    """
    one = lambda v: jnp.asarray([v], jnp.float32)  # noqa: E731
    op_bytes = {"weights": {op: one(weights)} if weights else {}, "activations": {op: one(activations)}}
    return Workload(op_flops={op: one(flops), **({} if op == "lm_head" else {"lm_head": one(0.0)})},
                    op_bytes=op_bytes, op_bits={op: one(bits), "lm_head": one(bits)}, op_resident={op: one(weights)},
                    footprint=jnp.asarray([weights, 0.0, activations], jnp.float32),
                    tokens=jnp.asarray(tokens, jnp.float32), n_layers=1, phase="op", ops=(op, "lm_head"))


def gemm_op(m: int, n: int, k: int, dtype: str = "bf16", out_dtype: str = "bf16") -> Workload:
    """C[m,n] = A[m,k] @ B[k,n] in `dtype` (B the weights), the result stored in `out_dtype`."""
    m, n, k = (_size(f, v) for f, v in (("m", m), ("n", n), ("k", k)))
    storage, rate = format_bits(dtype)
    out_bits = format_bits(out_dtype)[0]
    return _one_slot("ffn_dense", 2 * m * n * k, k * n * storage / 8, (m * k * storage + m * n * out_bits) / 8, rate, m)


def norm_op(tokens: int, width: int, dtype: str = "bf16") -> Workload:
    """An RMSNorm over tokens x width (4 FLOPs per value; reads x and the scale, writes y)."""
    t, w = _size("tokens", tokens), _size("width", width)
    bits = format_bits(dtype)[0]
    return _one_slot("norm", 4 * t * w, w * bits / 8, 2 * t * w * bits / 8, bits)


def elementwise_op(elements: int, dtype: str = "bf16", reads: int = 1, writes: int = 1,
                   flops_per_element: float = 1.0) -> Workload:
    """An elementwise kernel over `elements` values: `reads` inputs read, `writes` outputs written."""
    e = _size("elements", elements)
    bits = format_bits(dtype)[0]
    moved = (_size("reads", reads) + _size("writes", writes)) * e * bits / 8
    return _one_slot("embedding", flops_per_element * e, 0.0, moved, bits)


def attention_config(kind: str, d_model: int, heads: int, head_dim: int, kv_heads: int | None = None,
                     **changes) -> nets.ModelConfig:
    """A one-layer config whose attention is `kind` in the shape of its zoo namesake.

    MHA: kv_heads = heads; GQA: heads // 8 KV heads (or `kv_heads`); MFA (Step-3): one KV head
    of width 2 * head_dim, query rank d_model // 4; MLA (DeepSeek): query rank d_model // 4,
    latent rank min(d_model, 4 * head_dim), RoPE width head_dim // 2.
    """
    if kind not in ATTENTION_OP_KINDS:
        nets.fail("attention", kind, f"must be one of {', '.join(ATTENTION_OP_KINDS)}")
    a = {"mha": dict(kind="mha", n_heads=heads, n_kv_heads=kv_heads or heads, head_dim=head_dim),
         "gqa": dict(kind="gqa", n_heads=heads, n_kv_heads=kv_heads or max(1, heads // 8), head_dim=head_dim),
         "mfa": dict(kind="mfa", n_heads=heads, n_kv_heads=kv_heads or 1, head_dim=2 * head_dim, q_rank=d_model // 4),
         "mla": dict(kind="mla", n_heads=heads, n_kv_heads=heads, head_dim=head_dim, q_rank=d_model // 4,
                     kv_rank=min(d_model, 4 * head_dim), rope_dim=head_dim // 2)}[kind]
    a.update(changes)
    return nets.ModelConfig(name=f"attn-{kind}", vocab_size=256, d_model=d_model, n_layers=1, max_seq_len=1 << 20,
                            attention=nets.AttentionConfig(**a), ffn=nets.FFNConfig(d_ff=4 * d_model))


def attention_op(kind: str, phase: str, batch: int, context: int, *, d_model: int = 2048, heads: int = 16,
                 head_dim: int = 128, kv_heads: int | None = None, dtype: str = "bf16",
                 projections: bool = False) -> Workload:
    """One attention layer's core (score and value products, one fused kernel) of `kind` in `phase`.

    phase "decode": `batch` new tokens against `context` cached; "prefill": `batch` prompts of
    `context` tokens; "train": the same forward and its backward. `projections=True` adds the
    q/kv/o projections (the whole `nets.Attention` call).
    """
    cfg = attention_config(kind, d_model, heads, head_dim, kv_heads)
    bits = format_bits(dtype)[0]
    scenario = Scenario(phase=phase, batch=batch, context_len=context, weight_bits=bits, kv_bits=bits, act_bits=bits)
    return workload(cfg, scenario).select(ATTENTION_CORE + (PROJECTIONS if projections else ()))


def moe_config(d_model: int, d_expert: int, experts: int, top_k: int) -> nets.ModelConfig:
    """A one-layer MoE config (SwiGLU experts of width d_expert, no shared expert)."""
    return nets.ModelConfig(name="moe", vocab_size=256, d_model=d_model, n_layers=1, max_seq_len=4096,
                            ffn=nets.FFNConfig(kind="moe", d_ff=4 * d_model, n_experts=experts, top_k=top_k,
                                               d_expert=d_expert))


def moe_op(tokens: int, experts: int, top_k: int, *, d_model: int = 2048, d_expert: int = 1024,
           dtype: str = "bf16", router: bool = True) -> Workload:
    """The grouped expert GEMMs of one MoE layer over `tokens` tokens (uniform routing), with its router."""
    bits = format_bits(dtype)[0]
    scenario = Scenario(phase="decode", batch=tokens, weight_bits=bits, act_bits=bits, kv_bits=bits)
    return workload(moe_config(d_model, d_expert, experts, top_k), scenario).select(
        ("moe_routed",) + (("router",) if router else ()))


def op_workload(describe: dict) -> tuple[Workload, dict]:
    """The Workload of a kernel data file's `describe` entry, and how a program runs it.

    Returns (work, program) where program = {"lm_head_scale": float, "whole_step": bool}: a
    measured prefill that computes logits for every position has lm_head_scale = prompt length;
    whole_step says the item is a whole-model step (its LM head included). Types:
      {"type": "gemm", "m", "n", "k", "bits_in", "bits_out", "compute_bits"?}
      {"type": "norm", "tokens", "width", "bits"}
      {"type": "copy", "elements", "bits"}   (read once, written once)
      {"type": "elementwise", "elements", "bits", "reads"?, "writes"?, "flops_per_element"?}
      {"type": "grouped_gemm", "rows", "groups", "n", "k", "bits", "phase"?}: rows sorted by group, each
        group's rows times its own (k, n) weight (`nets.grouped_matmul`), every group's weight read;
        phase "train": forward and backward (the input's and the weights' gradients, two more
        grouped GEMMs of the same size), 3x the FLOPs and bytes in one kernel, as a training
        workload prices each op class
      {"type": "workload", "config", "scenario", "ops"?, "lm_head_positions"?}
    """
    if not isinstance(describe, dict) or describe.get("type") not in DESCRIBE_TYPES:
        raise ValueError(f"describe.type={describe.get('type') if isinstance(describe, dict) else describe!r}: "
                         f"must be one of {', '.join(DESCRIBE_TYPES)}")
    kind = describe["type"]
    plain = {"lm_head_scale": 1.0, "whole_step": False}
    if kind == "gemm":
        m, n, k = (_size(x, describe[x]) for x in ("m", "n", "k"))
        b_in, b_out = _size("bits_in", describe["bits_in"]), _size("bits_out", describe["bits_out"])
        rate = _size("compute_bits", describe.get("compute_bits", b_in))
        return _one_slot("ffn_dense", 2 * m * n * k, k * n * b_in / 8, (m * k * b_in + m * n * b_out) / 8, rate,
                         m), plain
    if kind == "norm":
        t, w, b = (_size(x, describe[x]) for x in ("tokens", "width", "bits"))
        return _one_slot("norm", 4 * t * w, w * b / 8, 2 * t * w * b / 8, b), plain
    if kind in ("copy", "elementwise"):
        e, b = _size("elements", describe["elements"]), _size("bits", describe["bits"])
        moved = (_size("reads", describe.get("reads", 1)) + _size("writes", describe.get("writes", 1))) * e * b / 8
        return _one_slot("embedding", e * float(describe.get("flops_per_element", 1.0)), 0.0, moved, b), plain
    if kind == "grouped_gemm":
        rows, groups, n, k = (_size(x, describe[x]) for x in ("rows", "groups", "n", "k"))
        b = _size("bits", describe["bits"])
        phase = describe.get("phase", "forward")
        if phase not in ("forward", "train"):
            nets.fail("describe.phase", phase, "must be 'forward' or 'train' for a grouped_gemm")
        passes = 3.0 if phase == "train" else 1.0
        return _one_slot("moe_routed", passes * 2 * rows * n * k, passes * groups * k * n * b / 8,
                         passes * rows * (k + n) * b / 8, b, rows / groups), plain
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
    return work, {"lm_head_scale": scale, "whole_step": ops is None or "lm_head" in ops}


def is_whole_step(work: Workload) -> bool:
    """Whether `work` is a whole-model step (built by `hwcost.workload`, its LM head kept)."""
    return work.phase != "op" and work.config is not None and "lm_head" in work.ops


__all__ = ["FORMATS", "ATTENTION_OP_KINDS", "DESCRIBE_TYPES", "format_bits", "gemm_op", "norm_op", "elementwise_op",
           "attention_config", "attention_op", "moe_config", "moe_op", "op_workload", "is_whole_step"]
