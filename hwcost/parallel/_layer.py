"""Per-layer forward work of one micro-batch, counted as Megatron-LM counts it.

For `b` sequences of `s` tokens (T = b s tokens, hidden width d, n_h query heads), per
transformer layer, before any splitting over devices:

- GEMM FLOPs and bytes: the projections, dense FFN, shared experts and router of a forward
  pass, read from `hwcost.workload` (prefill phase = one forward); routed experts kept apart
  (`expert_flops`), since the expert axis splits them. For a GPT block this is Narayanan et
  al. (SC'21) eq. 3's 24 T d^2.
- attention core (QK^T and PV): 2 T n_h (d_score + d_value) s FLOPs with the full s x s score
  matrix as an unfused implementation computes it (Megatron's 4 b s^2 d), or half that with a
  causal flash kernel (`attention="flash"`).
- elementwise traffic [bytes], the unfused kernels' reads and writes at `act_bytes` per value
  and 1-byte dropout masks (Korthikanti et al., MLSys'23, section 4.1 counts the same tensors):
  replicated = T d (10 a + 2) for two layer norms and two dropout + residual adds (these run
  on every tensor-parallel rank unless sequence parallelism splits them);
  score = T n_h s (4 a + 1) for softmax and dropout on the score matrix (unfused only);
  ffn = T d_ff (2 a) for GeLU/ReLU, (3 a) for SwiGLU (routed experts: T top_k d_expert).
- hidden = T d a: the bytes of one hidden-state tensor (what tensor-parallel collectives and
  pipeline sends move); dispatch = T top_k d a per MoE layer (what all-to-all moves each way).
- params: weights per layer (all experts), and expert_params: the routed experts' share.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import numpy as np

import hwcost
import nets
from nets import fail

ATTENTION_KERNELS = ("unfused", "flash")
_workload = eqx.filter_jit(hwcost.workload)  # one compiled program instead of hundreds of eager ops
DENSE_GEMMS = ("q_proj", "kv_proj", "o_proj", "ffn_dense", "moe_shared", "router")


def layer_work(cfg: nets.ModelConfig, micro_batch: int, seq_len: int, act_bits: float = 16.0,
               attention: str = "flash") -> dict[str, np.ndarray]:
    """Forward work per layer ([n_layers] float64 arrays) and per model (scalars): see the module docstring."""
    if attention not in ATTENTION_KERNELS:
        fail("attention", attention, f"must be one of {', '.join(ATTENTION_KERNELS)}")
    return {k: v.copy() for k, v in _layer_work(cfg, micro_batch, seq_len, float(act_bits), attention).items()}


@functools.lru_cache(maxsize=64)
def _layer_work(cfg: nets.ModelConfig, micro_batch: int, seq_len: int, act_bits: float,
                attention: str) -> dict[str, np.ndarray]:
    scenario = hwcost.Scenario(phase="prefill", batch=micro_batch, context_len=seq_len, weight_bits=act_bits,
                               kv_bits=act_bits, act_bits=act_bits)
    with jax.ensure_compile_time_eval():  # static shapes only: concrete numbers even inside a jit
        work = _workload(cfg, scenario)
    n = cfg.n_layers

    def per_layer(table: dict, ops) -> np.ndarray:
        total = np.zeros(n)
        for op in ops:
            if op in table:
                total = total + np.asarray(table[op], np.float64)[:n]
        return total

    a, f, d = cfg.attention, cfg.ffn, float(cfg.d_model)
    tokens, ab = float(micro_batch * seq_len), act_bits / 8
    if a.kind == "mla":
        d_score, d_value = a.qk_head_dim, a.head_dim
    else:
        d_score = d_value = a.head_dim
    attended = float(seq_len) if attention == "unfused" else (seq_len + 1) / 2
    attn_flops = 2 * tokens * a.n_heads * (d_score + d_value) * attended
    moe = np.asarray([k == "moe" for k in cfg.layer_kinds], np.float64)
    n_mat = 3 if f.activation == "swiglu" else 2
    act_rw = (n_mat * ab) if f.activation == "swiglu" else 2 * ab
    top_k = f.top_k if f.kind == "moe" else 0
    shared = f.n_shared_experts if f.kind == "moe" else 0
    ffn_values = (1 - moe) * f.d_ff + moe * (top_k + shared) * (f.d_expert if f.kind == "moe" else 0)
    weights = {op: np.asarray(v, np.float64)[:n] for op, v in work.op_resident.items()}
    params = sum(weights.values()) / ab
    expert_params = weights.get("moe_routed", np.zeros(n)) / ab
    return {
        "gemm_flops": per_layer(work.op_flops, DENSE_GEMMS),
        "gemm_bytes": per_layer(work.op_bytes["weights"], DENSE_GEMMS)
                      + per_layer(work.op_bytes["activations"], DENSE_GEMMS),
        "expert_flops": per_layer(work.op_flops, ("moe_routed",)),
        "attn_flops": np.full(n, attn_flops),
        "replicated_bytes": np.full(n, tokens * d * (10 * ab + 2)),
        "score_bytes": np.full(n, tokens * a.n_heads * seq_len * (4 * ab + 1) if attention == "unfused" else 0.0),
        "ffn_bytes": tokens * ffn_values * act_rw,
        "hidden_bytes": np.full(n, tokens * d * ab),
        "dispatch_bytes": moe * tokens * top_k * d * ab,
        "moe": moe,
        "params": params,
        "expert_params": expert_params,
        "head_flops": np.float64(2 * tokens * d * cfg.vocab_size),
        "head_bytes": np.float64(2 * tokens * cfg.vocab_size * ab),
        "model_params": np.float64(nets.count_params(cfg).total),
    }
