"""Workloads: FLOPs and bytes per operation class, derived from a `nets.ModelConfig`.

`workload(cfg, scenario, knobs)` is a pure function. The config and scenario are static
(they fix shapes); the knobs are arrays with one entry per layer (expected bits, kept
fractions), so every FLOP and byte count is differentiable in them.

Layout: one array over slots per operation class (and per tensor kind for bytes), with
dense views [op, slot] and [op, kind, slot]; slot 0..L-1 are the transformer layers and
slot L holds what belongs to the model, not a layer (embedding lookup, LM head, final
norm). Sums over slots give whole-model totals;
`Workload.select` restricts to operation classes, so tables that exclude the embedding
and LM head (Step-3's Tables 2/3/6) simply leave those classes out.

Formulas (per layer; T tokens in the step, c context tokens attended, n_q query heads,
d_h head width, 2 FLOPs per multiply-accumulate):
- attention score QK^T 2*T*n_q*d_score*c and value PV 2*T*n_q*d_value*c. MHA/GQA/MFA:
  d_score = d_value = d_h. MLA decode uses the absorbed form (DeepSeek-V2, arXiv
  2405.04434, section 2.1.2): queries are mapped into the cached latent space, so both
  products run over the cached width kv_rank + rope_dim (576 for DeepSeek-V3), which is
  the accounting of Step-3's Table 3 (4*n_q*576*ctx); the latent row is read once.
- KV bytes: cached values per token per layer (2*n_kv*d_h, or kv_rank + rope_dim for MLA)
  x kv_bits/8 x tokens attended, plus the new entries written.
- projections: every weight matrix of the attention block (low-rank query paths of MFA
  and MLA included; MLA decode adds the absorbed W_UK / W_UV products): 2*T*params FLOPs,
  params*weight_bits/8 weight bytes.
- FFN: 2*T*params (SwiGLU three matrices, GELU/ReLU two). Routed experts: each token
  visits top_k experts; the weights read are those of the distinct experts touched by T
  tokens under uniform routing, E*(1-(1-k/E)^T).
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from nets import ModelConfig
from hwcost._scenario import Scenario

OPS = ("attn_score", "attn_value", "q_proj", "kv_proj", "o_proj", "ffn_dense", "moe_routed", "moe_shared",
       "router", "norm", "comm", "embedding", "lm_head")
KINDS = ("weights", "kv", "activations", "network")
FOOTPRINT_KINDS = ("weights", "kv", "activations")

# Groups used by the tables: Step-3's "attention", "linear" and "FFN" FLOPs columns.
ATTENTION_CORE = ("attn_score", "attn_value")
PROJECTIONS = ("q_proj", "kv_proj", "o_proj")
FFN_GEMMS = ("ffn_dense", "moe_routed", "moe_shared")
# Where each class runs under attention-FFN disaggregation (Step-3, section 4).
ATTENTION_SIDE = ATTENTION_CORE + PROJECTIONS + ("norm",)
FFN_SIDE = FFN_GEMMS + ("router",)
EXCLUDED_FROM_TABLES = ("embedding", "lm_head")

_KNOB_FIELDS = ("weight_bits", "kv_bits", "act_bits", "ffn_keep", "token_keep", "head_keep")


def _concrete(x) -> np.ndarray | None:
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


class Knobs(eqx.Module):
    """Continuous per-layer design knobs (one entry per transformer layer).

    weight_bits, kv_bits, act_bits: expected storage bits (e.g. a softmax mixture over
      formats); bytes scale as bits/8 and the compute rate follows the operand precision.
    ffn_keep: kept fraction of the FFN / expert hidden width (structured pruning).
    token_keep: kept fraction of context tokens attended and read from the KV cache
      (token pruning, SpAtten-style).
    head_keep: kept fraction of query heads (head pruning).
    """

    weight_bits: Float[Array, " layer"]
    kv_bits: Float[Array, " layer"]
    act_bits: Float[Array, " layer"]
    ffn_keep: Float[Array, " layer"]
    token_keep: Float[Array, " layer"]
    head_keep: Float[Array, " layer"]

    def __check_init__(self) -> None:
        shapes = {name: jnp.shape(getattr(self, name)) for name in _KNOB_FIELDS}
        first = shapes["weight_bits"]
        for name, shape in shapes.items():
            # [layer], or [design point, layer] for a stacked batch to vmap over
            if len(shape) < 1 or shape != first:
                raise ValueError(f"knobs.{name}: shape {shape}: must be one entry per layer, like weight_bits {first}")
        for name in _KNOB_FIELDS:
            value = _concrete(getattr(self, name))
            if value is None:
                continue
            low, high = (1.0, 32.0) if name.endswith("bits") else (0.0, 1.0)
            bad = ~np.isfinite(value) | (value < low) | (value > high) | ((value <= 0) if low == 0 else False)
            if np.any(bad):
                allowed = "bits between 1 and 32" if low else "a kept fraction in (0, 1]"
                raise ValueError(f"knobs.{name}={float(value[bad][0])!r}: must be {allowed}")

    @property
    def n_layers(self) -> int:
        return int(jnp.shape(self.weight_bits)[-1])

    @classmethod
    def default(cls, n_layers: int, scenario: Scenario, dtype=jnp.float32) -> "Knobs":
        """The scenario's precisions on every layer and nothing pruned."""
        def full(value: float) -> Array:
            return jnp.full((n_layers,), value, dtype)
        return cls(weight_bits=full(scenario.weight_bits), kv_bits=full(scenario.kv_bits),
                   act_bits=full(scenario.act_bits), ffn_keep=full(1.0), token_keep=full(1.0), head_keep=full(1.0))


class Workload(eqx.Module):
    """Per operation class and slot: FLOPs, bytes by tensor kind, compute precision.

    Stored sparsely, one [slot] array per (op) or (kind, op) that the config actually has
    (an MoE class on a dense model, or KV bytes of an FFN, are simply absent), so costing
    it is a handful of small fused loops. The dense views are properties:

    flops[op, slot]           floating-point operations (FLOPs) in the step.
    bytes[op, kind, slot]     bytes moved, kind in KINDS (weights, KV cache, activations read
                              or written, network = hidden states crossing to/from the FFN side).
    bits[op, slot]            operand precision of the op's arithmetic (bits).
    resident[op, slot]        weight bytes each op keeps in memory (all experts, not only those touched).
    footprint[kind]           resident bytes (FOOTPRINT_KINDS): all weights, the KV cache, the
                              activation working set (train: all stored activations; gradients
                              and optimizer state are not included).
    tokens                    tokens the step produces (decode) or processes (prefill, train);
                              divide a cost by it for a per-token figure.

    What it was built from (static, except the knobs), so that a target can read the model's
    shape (`n_experts`, `top_k`, `d_model`) or re-derive its own work at another batch:
    config (the nets.ModelConfig), scenario, knobs (per layer, as given), ops (the op
    classes kept by `select`), device_share (the share of the work one device does, from
    `scaled`). A workload built by hand may leave config, scenario and knobs None.
    """

    op_flops: dict[str, Float[Array, " slot"]]
    op_bytes: dict[str, dict[str, Float[Array, " slot"]]]
    op_bits: dict[str, Float[Array, " slot"]]
    op_resident: dict[str, Float[Array, " slot"]]
    footprint: Float[Array, " kind"]
    tokens: Float[Array, ""]
    n_layers: int = eqx.field(static=True)
    phase: str = eqx.field(static=True)
    config: ModelConfig | None = eqx.field(static=True, default=None)
    scenario: Scenario | None = eqx.field(static=True, default=None)
    knobs: Knobs | None = None
    ops: tuple[str, ...] = eqx.field(static=True, default=OPS)
    device_share: float = eqx.field(static=True, default=1.0)

    # ---- the model's shape ---------------------------------------------------------
    def _config(self, what: str) -> ModelConfig:
        if self.config is None:
            raise ValueError(f"work.config=None: {what} needs the model config (build with hwcost.workload)")
        return self.config

    @property
    def n_experts(self) -> int:
        """Routed experts per MoE layer (0 for a dense model)."""
        ffn = self._config("n_experts").ffn
        return ffn.n_experts if ffn.kind == "moe" else 0

    @property
    def top_k(self) -> int:
        """Experts each token is routed to (0 for a dense model)."""
        ffn = self._config("top_k").ffn
        return ffn.top_k if ffn.kind == "moe" else 0

    @property
    def d_model(self) -> int:
        """Hidden width of the model."""
        return self._config("d_model").d_model

    def _provenance(self) -> dict:
        return dict(n_layers=self.n_layers, phase=self.phase, config=self.config, scenario=self.scenario,
                    knobs=self.knobs, ops=self.ops, device_share=self.device_share)

    # ---- dense views -------------------------------------------------------------
    def _dense(self, entries: dict[str, Array]) -> Array:
        zeros = jnp.zeros_like(self.op_flops["lm_head"])
        return jnp.stack([entries.get(op, zeros) for op in OPS])

    @property
    def flops(self) -> Float[Array, "op slot"]:
        return self._dense(self.op_flops)

    @property
    def bytes(self) -> Float[Array, "op kind slot"]:
        return jnp.stack([self._dense(self.op_bytes.get(kind, {})) for kind in KINDS], axis=1)

    @property
    def bits(self) -> Float[Array, "op slot"]:
        return self._dense(self.op_bits)

    @property
    def resident(self) -> Float[Array, "op slot"]:
        return self._dense(self.op_resident)

    # ---- selections and totals ---------------------------------------------------------
    @staticmethod
    def _check_ops(ops: tuple[str, ...] | None) -> tuple[str, ...]:
        if ops is None:
            return OPS
        unknown = [op for op in ops if op not in OPS]
        if unknown:
            raise ValueError(f"ops={unknown[0]!r}: must be among {', '.join(OPS)}")
        return tuple(ops)

    def select(self, ops: tuple[str, ...]) -> "Workload":
        """The same workload restricted to the operation classes `ops` (footprint kept)."""
        keep = self._check_ops(ops)
        flops = {op: v for op, v in self.op_flops.items() if op in keep}
        flops.setdefault("lm_head", jnp.zeros_like(self.op_flops["lm_head"]))
        return Workload(op_flops=flops,
                        op_bytes={k: {op: v for op, v in d.items() if op in keep} for k, d in self.op_bytes.items()},
                        op_bits=self.op_bits, op_resident=self.op_resident, footprint=self.footprint,
                        tokens=self.tokens, **{**self._provenance(), "ops": tuple(o for o in self.ops if o in keep)})

    def scaled(self, share: float) -> "Workload":
        """One device's share when the work is split evenly over 1/share devices (ideal TP+EP)."""
        times = lambda d: {op: v * share for op, v in d.items()}  # noqa: E731
        return Workload(op_flops=times(self.op_flops), op_bytes={k: times(d) for k, d in self.op_bytes.items()},
                        op_bits=self.op_bits, op_resident=times(self.op_resident), footprint=self.footprint * share,
                        tokens=self.tokens, **{**self._provenance(), "device_share": self.device_share * share})

    def total_flops(self, ops: tuple[str, ...] | None = None) -> Array:
        keep = self._check_ops(ops)
        return sum((jnp.sum(v) for op, v in self.op_flops.items() if op in keep), jnp.zeros((), self.tokens.dtype))

    def total_bytes(self, kind: str, ops: tuple[str, ...] | None = None) -> Array:
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: must be one of {', '.join(KINDS)}")
        keep = self._check_ops(ops)
        return sum((jnp.sum(v) for op, v in self.op_bytes.get(kind, {}).items() if op in keep),
                   jnp.zeros((), self.tokens.dtype))


def _check_inputs(cfg: ModelConfig, scenario: Scenario, knobs: Knobs | None) -> None:
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"cfg={type(cfg).__name__}: must be a nets.ModelConfig")
    if not isinstance(scenario, Scenario):
        raise ValueError(f"scenario={type(scenario).__name__}: must be a hwcost.Scenario")
    if knobs is not None and knobs.n_layers != cfg.n_layers:
        raise ValueError(f"knobs.weight_bits: {knobs.n_layers} entries: must have one per layer (n_layers={cfg.n_layers})")


def experts_touched(n_experts: int, top_k: int, tokens: float) -> float:
    """Expected distinct experts hit by `tokens` tokens, each routed uniformly to top_k of E."""
    return n_experts * (1.0 - (1.0 - top_k / n_experts) ** tokens)


def workload(cfg: ModelConfig, scenario: Scenario, knobs: Knobs | None = None) -> Workload:
    """FLOPs and bytes of one step of `scenario` on `cfg` (see the module docstring)."""
    _check_inputs(cfg, scenario, knobs)
    if knobs is None:
        knobs = Knobs.default(cfg.n_layers, scenario)
    given_knobs = knobs
    # Every per-layer expression is evaluated on L+1 slots (the knobs padded with the scenario's
    # values for the model slot) and masked, so the whole workload is a few fused elementwise
    # loops rather than many small concatenations (this is what makes vmapped cost fast).
    layer = np.r_[np.ones(cfg.n_layers), 0.0]
    model_slot = 1.0 - layer

    def pad(values: Array, model_value: float) -> Array:
        return jnp.concatenate([values, jnp.full((1,), model_value, values.dtype)])

    knobs = Knobs(weight_bits=pad(knobs.weight_bits, scenario.weight_bits), kv_bits=pad(knobs.kv_bits, scenario.kv_bits),
                  act_bits=pad(knobs.act_bits, scenario.act_bits), ffn_keep=pad(knobs.ffn_keep, 1.0),
                  token_keep=pad(knobs.token_keep, 1.0), head_keep=pad(knobs.head_keep, 1.0))
    a, f, d = cfg.attention, cfg.ffn, cfg.d_model
    # Python floats: products of int sizes overflow int32 when handed to jax.
    batch, context = float(scenario.batch), float(scenario.context_len)
    decode = scenario.phase == "decode"
    tokens = float(scenario.tokens)
    if decode:
        attended = context + (scenario.gen_len - 1) / 2
    else:
        attended = (context + 1) / 2 if cfg.causal else float(context)
    weight_b, kv_b, act_b = knobs.weight_bits / 8, knobs.kv_bits / 8, knobs.act_bits / 8
    heads = a.n_heads * knobs.head_keep
    attended_kept = attended * knobs.token_keep
    kv_tokens_read = batch * attended_kept if decode else batch * context * knobs.token_keep

    absorbed = a.kind == "mla" and decode
    if a.kind == "mla":
        cache_width = a.kv_rank + a.rope_dim
        d_score, d_value, d_out = ((cache_width, cache_width, a.kv_rank) if absorbed
                                   else (a.qk_head_dim, a.head_dim, a.head_dim))
    else:
        cache_width = 2 * a.n_kv_heads * a.head_dim
        d_score = d_value = d_out = a.head_dim

    score_flops = 2 * tokens * heads * d_score * attended_kept
    value_flops = 2 * tokens * heads * d_value * attended_kept
    if absorbed:
        # the latent row read for the scores serves the values too
        score_kv, value_kv = kv_tokens_read * cache_width * kv_b, None
    elif a.kind == "mla":
        score_kv = kv_tokens_read * heads * a.qk_head_dim * kv_b
        value_kv = kv_tokens_read * heads * a.head_dim * kv_b
    else:
        score_kv = value_kv = kv_tokens_read * a.n_kv_heads * a.head_dim * kv_b
    score_act = tokens * heads * d_score * act_b
    value_act = tokens * heads * d_out * act_b

    q_width = heads * a.qk_head_dim
    if a.q_rank:
        q_params = d * a.q_rank + a.q_rank * q_width
        q_act = tokens * (d + 2 * a.q_rank + q_width) * act_b
    else:
        q_params = d * q_width
        q_act = tokens * (d + q_width) * act_b
    kv_params = d * cache_width + 0.0 * heads
    kv_act = tokens * (d + cache_width) * act_b
    o_params = heads * a.head_dim * d
    o_act = tokens * (heads * a.head_dim + d) * act_b
    if absorbed:
        q_params = q_params + heads * a.head_dim * a.kv_rank
        q_act = q_act + tokens * heads * a.kv_rank * act_b
        o_params = o_params + heads * a.kv_rank * a.head_dim
        o_act = o_act + tokens * heads * a.kv_rank * act_b
    elif a.kind == "mla":
        kv_params = kv_params + a.kv_rank * 2 * heads * a.head_dim
        kv_act = kv_act + tokens * 2 * heads * a.head_dim * act_b
    kv_write = tokens * cache_width * kv_b
    # Biases (GPT-2, OPT, BERT): stored and read with the weights; their adds are not counted as FLOPs.
    bias = 1.0 if cfg.use_bias else 0.0
    q_bias = bias * ((a.q_rank + q_width) if a.q_rank else q_width)
    kv_bias = bias * (cache_width + (2 * heads * a.head_dim if a.kind == "mla" else 0.0 * heads))
    o_bias = bias * d

    n_mat = 3 if f.activation == "swiglu" else 2
    moe_mask = np.asarray([k == "moe" for k in cfg.layer_kinds] + [False], dtype=np.float32)
    dense_mask = 1.0 - moe_mask
    dense_params = n_mat * d * f.d_ff * knobs.ffn_keep * dense_mask
    dense_bias = bias * ((n_mat - 1) * f.d_ff * knobs.ffn_keep + d) * dense_mask
    dense_act = tokens * (2 * d + n_mat * f.d_ff * knobs.ffn_keep) * act_b * dense_mask
    if f.kind == "moe":
        expert_params = n_mat * d * f.d_expert * knobs.ffn_keep * moe_mask
        touched = experts_touched(f.n_experts, f.top_k, tokens)
        expert_act = (2 * d + n_mat * f.d_expert * knobs.ffn_keep) * act_b * moe_mask
        routed_flops = 2 * tokens * f.top_k * expert_params
        routed_weights, routed_act = touched * expert_params * weight_b, tokens * f.top_k * expert_act
        shared_params = f.n_shared_experts * expert_params
        shared_act = tokens * f.n_shared_experts * expert_act
        router_params = d * f.n_experts * moe_mask
        router_act = tokens * (d + f.n_experts) * act_b * moe_mask
    else:
        zero = 0.0 * moe_mask
        routed_flops = routed_weights = routed_act = shared_params = shared_act = zero
        router_params = router_act = expert_params = zero

    norm_width = 2 * d + a.q_rank + (a.kv_rank if a.kind == "mla" else 0)
    norm_width = norm_width + ((heads + a.n_kv_heads) * a.qk_head_dim if a.qk_norm else 0.0 * heads)
    norm_flops_per_value = 4 if cfg.norm == "rmsnorm" else 8
    norm_param_scale = 2 if cfg.norm == "layernorm" else 1
    network = tokens * d * (scenario.dispatch_bits + scenario.combine_bits) / 8 + 0.0 * heads

    # Model-level slot: embedding lookup, final norm, LM head (only the last position outside training).
    model_weight_b, model_act_b = scenario.weight_bits / 8, scenario.act_bits / 8
    head_tokens = tokens if scenario.phase == "train" else batch
    lookups = tokens * d * (2 if cfg.positions == "learned" else 1)
    embed_params = float(cfg.vocab_size * d) + (cfg.max_seq_len * d if cfg.positions == "learned" else 0)
    head_params = 0.0 if cfg.tie_embeddings else float(cfg.vocab_size * d)
    head_flops = 2 * head_tokens * d * cfg.vocab_size

    zeros = 0.0 * weight_b
    repeat = 3.0 if scenario.phase == "train" else 1.0
    has_moe = f.kind == "moe"
    has_dense = cfg.n_moe_layers < cfg.n_layers

    def row(layer_values, model_value=0.0):
        if isinstance(layer_values, jax.Array) and not (isinstance(model_value, jax.Array) or model_value):
            return layer_values * layer
        return zeros + layer_values * layer + model_value * model_slot

    def present(entries: dict) -> dict:
        skip = set()
        if not has_moe:
            skip |= {"moe_routed", "moe_shared", "router"}
        if not (has_moe and f.n_shared_experts):
            skip.add("moe_shared")
        if not has_dense:
            skip.add("ffn_dense")
        return {op: v for op, v in entries.items() if op not in skip}

    def repeated(entries: dict) -> dict:
        return {op: repeat * v if repeat != 1 else v for op, v in present(entries).items()}

    norm_flops = row(tokens * norm_width * norm_flops_per_value, head_tokens * d * norm_flops_per_value)
    flops = {
        "attn_score": row(score_flops), "attn_value": row(value_flops), "q_proj": row(2 * tokens * q_params),
        "kv_proj": row(2 * tokens * kv_params), "o_proj": row(2 * tokens * o_params),
        "ffn_dense": row(2 * tokens * dense_params), "moe_routed": row(routed_flops),
        "moe_shared": row(2 * tokens * shared_params), "router": row(2 * tokens * router_params), "norm": norm_flops,
        "lm_head": row(0.0, head_flops)}
    weights = {
        "q_proj": row((q_params + q_bias) * weight_b), "kv_proj": row((kv_params + kv_bias) * weight_b),
        "o_proj": row((o_params + o_bias) * weight_b), "ffn_dense": row((dense_params + dense_bias) * weight_b),
        "moe_routed": row(routed_weights), "moe_shared": row(shared_params * weight_b),
        "router": row(router_params * weight_b),
        "norm": row(norm_width * norm_param_scale * act_b, d * norm_param_scale * model_act_b),
        "embedding": row(0.0, lookups * model_weight_b), "lm_head": row(0.0, cfg.vocab_size * d * model_weight_b)}
    kv = {"attn_score": row(score_kv), "kv_proj": row(kv_write)}
    if value_kv is not None:
        kv["attn_value"] = row(value_kv)
    activations = {
        "attn_score": row(score_act), "attn_value": row(value_act), "q_proj": row(q_act), "kv_proj": row(kv_act),
        "o_proj": row(o_act), "ffn_dense": row(dense_act), "moe_routed": row(routed_act),
        "moe_shared": row(shared_act), "router": row(router_act),
        "norm": row(2 * tokens * norm_width * act_b, 2 * head_tokens * d * model_act_b),
        "embedding": row(0.0, tokens * d * model_act_b),
        "lm_head": row(0.0, head_tokens * (d + cfg.vocab_size) * model_act_b)}
    network = {"comm": row(network)}

    gemm_bits = row(jnp.maximum(knobs.weight_bits, knobs.act_bits), max(scenario.weight_bits, scenario.act_bits))
    attn_bits = row(jnp.maximum(knobs.kv_bits, knobs.act_bits))
    act_bits = row(knobs.act_bits, scenario.act_bits)
    bits = {op: gemm_bits for op in ("q_proj", "kv_proj", "o_proj", "ffn_dense", "moe_routed", "moe_shared", "router",
                                      "lm_head")}
    bits.update(attn_score=attn_bits, attn_value=attn_bits, norm=act_bits)

    resident = {
        "q_proj": weights["q_proj"], "kv_proj": weights["kv_proj"], "o_proj": weights["o_proj"],
        "ffn_dense": weights["ffn_dense"], "moe_routed": row(f.n_experts * expert_params * weight_b) if has_moe else zeros,
        "moe_shared": weights["moe_shared"], "router": weights["router"], "norm": weights["norm"],
        "embedding": row(0.0, embed_params * model_weight_b), "lm_head": row(0.0, head_params * model_weight_b)}
    resident = present(resident)
    # elementwise across classes first, then one reduction (fewer passes under vmap)
    weights_resident = jnp.sum(sum(resident.values()))
    if decode:
        kv_resident = jnp.sum(batch * (context + scenario.gen_len) * knobs.token_keep * cache_width * kv_b * layer)
    elif scenario.phase == "prefill":
        kv_resident = jnp.sum(batch * context * cache_width * kv_b * layer)
    else:
        kv_resident = jnp.sum(zeros)
    act_present = present(activations)
    if scenario.phase == "train":
        act_resident = jnp.sum(sum(act_present.values()))
    else:
        act_resident = jnp.max(functools.reduce(jnp.maximum, act_present.values()))
    footprint = jnp.stack([weights_resident, kv_resident, act_resident])
    op_bytes = {"weights": repeated(weights), "kv": repeated(kv), "activations": repeated(activations),
                "network": repeated(network)}
    return Workload(op_flops=repeated(flops), op_bytes=op_bytes, op_bits=present(bits), op_resident=resident,
                    footprint=footprint, tokens=jnp.asarray(tokens, zeros.dtype), n_layers=cfg.n_layers,
                    phase=scenario.phase, config=cfg, scenario=scenario, knobs=given_knobs)


def cache_bytes_per_token(cfg: ModelConfig, kv_bits: float = 8.0) -> float:
    """KV-cache bytes per token per layer (Step-3 section 3: MFA 512, MLA 576, Qwen3 GQA 1024 at 8 bits)."""
    return cfg.attention.cache_values_per_token() * kv_bits / 8


def attention_intensity(cfg: ModelConfig, kv_bits: float = 8.0) -> float:
    """Decode attention FLOPs per KV-cache byte (Step-3 Table 2: MFA 128, MLA 512, Qwen3 GQA 32).

    Derived from a one-token, one-layer workload so it uses exactly the counted FLOPs.
    """
    scenario = Scenario(phase="decode", batch=1, context_len=1024, kv_bits=kv_bits, weight_bits=kv_bits,
                        act_bits=kv_bits)
    w = workload(cfg, scenario)
    return float(w.total_flops(ATTENTION_CORE) / w.total_bytes("kv", ATTENTION_CORE))
