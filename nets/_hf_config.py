"""Hugging Face `config.json` <-> `ModelConfig`.

`map_hf` reads the config of a Hugging Face model of a supported family and returns the
`ModelConfig` with every field that changes a shape or the cost mapped: widths, layers,
heads, K/V heads, head width, FFN and expert widths, vocabulary, tied embeddings, RoPE
base, maximum positions, MoE experts / top-k / shared experts / dense layers, MLA ranks,
norm, activation and biases. A value `ModelConfig` cannot express raises `ValueError`
naming the field, the value and what is allowed. Two kinds of difference are recorded
instead of raised, because they change neither a shape nor the cost:
  `not_computed`  what the Hugging Face model computes differently with the same shapes
                  (RoPE scaling, post-norm, DeepSeek's sigmoid router, exact-erf GELU,
                  quantized storage);
                  `nets.load_hf_checkpoint` refuses a checkpoint that has any.
  `unmodelled_params`  parameters the Hugging Face model has and the mapped config does
                  not build, by name, with their count (BERT's pooler and token-type
                  table, OPT's two offset position rows, DeepSeek-V3's router score bias),
                  each well under 1% of the model.
A field that changes the cost but has no counterpart (an active sliding window) is an
error unless the caller names it in `ignore`.

`to_hf` goes the other way for configs that a Hugging Face architecture computes exactly
(Llama, Qwen2, Qwen3, Mixtral, Qwen3-MoE), so an exported network loads in transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nets._config import AttentionConfig, FFNConfig, ModelConfig
from nets._errors import fail

_ABSENT = object()

# model_type -> the Hugging Face class that `to_hf` names and `architectures` may name.
ARCHITECTURES = {
    "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "mixtral": "MixtralForCausalLM",
    "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM", "gpt2": "GPT2LMHeadModel", "opt": "OPTForCausalLM",
    "bert": "BertForMaskedLM",
}
IGNORABLE = ("sliding_window",)  # cost-changing fields a caller may knowingly drop
_LLAMA_LIKE = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe")


@dataclass(frozen=True)
class HFMapping:
    """A Hugging Face config read into ours, with what the mapping leaves out (module docstring)."""

    config: ModelConfig
    not_computed: tuple[str, ...]
    unmodelled_params: dict[str, int]


class _Reader:
    """Reads fields of one Hugging Face config dict; a null value reads as absent."""

    def __init__(self, hf: dict[str, Any], model_type: str):
        self.hf, self.model_type = hf, model_type

    def fail(self, key: str, value: Any, allowed: str) -> None:
        fail(key, value, allowed, file=f"config.json ({self.model_type})")

    def get(self, key: str, default: Any = _ABSENT) -> Any:
        value = self.hf.get(key)
        if value is None:
            if default is _ABSENT:
                self.fail(key, None, f"missing (required for model_type {self.model_type})")
            return default
        return value

    def int(self, key: str, default: Any = _ABSENT) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(key, value, "must be a non-negative integer")
        return value

    def float(self, key: str, default: Any = _ABSENT) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, value, "must be a number")
        return float(value)

    def bool(self, key: str, default: Any = _ABSENT) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, value, "must be true or false")
        return value

    def expect(self, key: str, allowed: tuple, default: Any = _ABSENT, why: str = "") -> Any:
        value = self.get(key, default)
        if value not in allowed:
            self.fail(key, value, f"must be one of {', '.join(map(repr, allowed))}{why}")
        return value


def model_type_of(hf: dict[str, Any]) -> str:
    """The supported `model_type` of a Hugging Face config (from `architectures` when absent), else ValueError."""
    if not isinstance(hf, dict):
        fail("config", type(hf).__name__, "must be a JSON object (a dict)", file="config.json")
    model_type = hf.get("model_type")
    if model_type is None:
        by_class = {cls: mt for mt, cls in ARCHITECTURES.items()}
        archs = hf.get("architectures") or []
        known = [by_class[a] for a in archs if a in by_class]
        if not known:
            fail("architectures", archs, f"names no supported class and model_type is missing (supported: "
                 f"{', '.join(ARCHITECTURES.values())})", file="config.json")
        model_type = known[0]
    if model_type not in ARCHITECTURES:
        fail("model_type", model_type, f"unsupported architecture (supported: {', '.join(ARCHITECTURES)})",
             file="config.json")
    return model_type


def _rope_theta(r: _Reader, not_computed: list[str]) -> float:
    """RoPE base from `rope_theta`, or from `rope_parameters` (newer transformers); scaling is noted."""
    params = r.get("rope_parameters", {})
    theta = r.float("rope_theta", params.get("rope_theta", 10000.0))
    scaling = r.get("rope_scaling", None) or (params if params.get("rope_type", "default") != "default" else None)
    if scaling:
        not_computed.append(f"rope_scaling={scaling!r} (RoPE frequencies are unscaled here)")
    return theta


def _moe_layout(r: _Reader, is_moe: list[bool], field: str) -> dict[str, int]:
    """moe_start / moe_end / moe_every that reproduce `is_moe`, or a ValueError naming `field`."""
    layers = [i for i, m in enumerate(is_moe) if m]
    if not layers:
        r.fail(field, r.hf.get(field), "leaves no MoE layer (a model without experts is not a MoE model type)")
    every = layers[1] - layers[0] if len(layers) > 1 else 1
    end = layers[-1] + 1
    if layers != list(range(layers[0], end, every)):
        r.fail(field, r.hf.get(field), f"gives MoE layers {layers}, not expressible as start, end and a fixed step")
    return {"moe_start": layers[0], "moe_end": 0 if end == len(is_moe) else end, "moe_every": every}


def _llama_like(r: _Reader, not_computed: list[str], ignore: tuple[str, ...]) -> ModelConfig:
    """Llama 2/3, Mistral, Mixtral, Qwen2, Qwen3, Qwen3-MoE: RMSNorm, RoPE, SwiGLU, GQA."""
    mt = r.model_type
    d, heads = r.int("hidden_size"), r.int("num_attention_heads")
    kv = r.int("num_key_value_heads", heads)
    if r.get("head_dim", None) is None and d % heads:
        r.fail("hidden_size", d, f"must be divisible by num_attention_heads={heads} when head_dim is absent")
    head_dim = r.int("head_dim", d // heads)
    r.expect("hidden_act", ("silu", "swish"), "silu", " (the SwiGLU gate)")
    attention_bias = r.bool("attention_bias", False)
    mlp_bias = r.bool("mlp_bias", False)
    if attention_bias != mlp_bias:
        r.fail("attention_bias", attention_bias, f"must equal mlp_bias={mlp_bias} (biases go on every linear "
               "layer or none; Qwen2's q/k/v-only bias comes with its model_type)")
    n_layers, max_len = r.int("num_hidden_layers"), r.int("max_position_embeddings")
    window = r.get("sliding_window", None)
    window_on = r.bool("use_sliding_window", True) if mt.startswith("qwen") else True
    if window is not None and window_on and window < max_len and "sliding_window" not in ignore:
        r.fail("sliding_window", window, f"attention here is full; a window below max_position_embeddings={max_len} "
               "changes the attention cost (allowed: null, or >= max_position_embeddings; or pass "
               "ignore=('sliding_window',) to cost it as full attention)")
    ffn: dict[str, Any] = {"kind": "dense", "activation": "swiglu", "d_ff": r.int("intermediate_size")}
    if mt == "mixtral":
        ffn.update(kind="moe", n_experts=r.int("num_local_experts"), top_k=r.int("num_experts_per_tok"),
                   d_expert=ffn["d_ff"])
    elif mt == "qwen3_moe":
        step, dense_only = r.int("decoder_sparse_step", 1), r.get("mlp_only_layers", [])
        if not isinstance(dense_only, list):
            r.fail("mlp_only_layers", dense_only, "must be a list of layer indices")
        is_moe = [i not in dense_only and step > 0 and (i + 1) % step == 0 for i in range(n_layers)]
        experts_key = "num_experts" if r.hf.get("num_experts") is not None else "num_local_experts"  # newer name
        ffn.update(kind="moe", n_experts=r.int(experts_key), top_k=r.int("num_experts_per_tok"),
                   d_expert=r.int("moe_intermediate_size"),
                   **_moe_layout(r, is_moe, "mlp_only_layers" if dense_only else "decoder_sparse_step"))
        if not r.bool("norm_topk_prob", False):
            not_computed.append("norm_topk_prob=false (gates are renormalised over the top-k here)")
    return ModelConfig(
        name=str(r.hf.get("_name_or_path") or mt), vocab_size=r.int("vocab_size"), d_model=d, n_layers=n_layers,
        max_seq_len=max_len,
        attention=AttentionConfig(kind="mha" if kv == heads else "gqa", n_heads=heads, n_kv_heads=kv,
                                  head_dim=head_dim, qk_norm=mt in ("qwen3", "qwen3_moe"), qkv_bias=mt == "qwen2"),
        ffn=FFNConfig(**ffn), norm="rmsnorm", norm_eps=r.float("rms_norm_eps"), positions="rope",
        rope_theta=_rope_theta(r, not_computed), tie_embeddings=r.bool("tie_word_embeddings", False),
        use_bias=attention_bias, source="")


def _deepseek_v3(r: _Reader, not_computed: list[str], unmodelled: dict[str, int]) -> ModelConfig:
    """DeepSeek-V3: MLA attention, the first layers dense, then routed + shared experts."""
    n_layers, d = r.int("num_hidden_layers"), r.int("hidden_size")
    heads, nope = r.int("num_attention_heads"), r.int("qk_nope_head_dim")
    v_dim = r.int("v_head_dim")
    if v_dim != nope:
        r.fail("v_head_dim", v_dim, f"must equal qk_nope_head_dim={nope} (one head width for keys and values here)")
    r.expect("hidden_act", ("silu", "swish"), "silu", " (the SwiGLU gate)")
    r.expect("attention_bias", (False,), False, " (MLA projections have no biases here)")
    first_dense, freq = r.int("first_k_dense_replace", 0), r.int("moe_layer_freq", 1)
    n_experts = r.int("n_routed_experts")
    is_moe = [i >= first_dense and freq > 0 and i % freq == 0 for i in range(n_layers)]
    layout = _moe_layout(r, is_moe, "first_k_dense_replace")
    not_computed.append(f"router scoring_func={r.get('scoring_func', 'softmax')!r}, "
                        f"topk_method={r.get('topk_method', 'greedy')!r}, "
                        f"routed_scaling_factor={r.get('routed_scaling_factor', 1.0)!r} (softmax top-k here)")
    if r.get("topk_method", "greedy") == "noaux_tc":
        unmodelled["router e_score_correction_bias"] = sum(is_moe) * n_experts
    return ModelConfig(
        name=str(r.hf.get("_name_or_path") or r.model_type), vocab_size=r.int("vocab_size"), d_model=d,
        n_layers=n_layers, max_seq_len=r.int("max_position_embeddings"),
        attention=AttentionConfig(kind="mla", n_heads=heads, n_kv_heads=heads, head_dim=nope,
                                  q_rank=r.int("q_lora_rank", 0), kv_rank=r.int("kv_lora_rank"),
                                  rope_dim=r.int("qk_rope_head_dim")),
        ffn=FFNConfig(kind="moe", activation="swiglu", d_ff=r.int("intermediate_size"), n_experts=n_experts,
                      top_k=r.int("num_experts_per_tok"), n_shared_experts=r.int("n_shared_experts", 0),
                      d_expert=r.int("moe_intermediate_size"), **layout),
        norm="rmsnorm", norm_eps=r.float("rms_norm_eps"), positions="rope", rope_theta=_rope_theta(r, not_computed),
        tie_embeddings=r.bool("tie_word_embeddings", False), source="")


def _activation(r: _Reader, key: str, not_computed: list[str]) -> str:
    """gelu_new / gelu_pytorch_tanh are our (tanh) GELU; exact-erf gelu has the same cost, other numbers."""
    value = r.expect(key, ("gelu_new", "gelu_pytorch_tanh", "gelu", "relu"))
    if value == "gelu":
        not_computed.append(f"{key}='gelu' (exact erf; the tanh approximation here)")
    return "relu" if value == "relu" else "gelu"


def _learned_positions(r: _Reader, **fields: Any) -> ModelConfig:
    """GPT-2, OPT and BERT: LayerNorm, learned positions, biases, GELU/ReLU two-matrix MLP, tied head."""
    d, heads = fields.pop("d_model"), fields.pop("n_heads")
    if d % heads:
        r.fail("num_attention_heads", heads, f"must divide the hidden size {d}")
    return ModelConfig(
        name=str(r.hf.get("_name_or_path") or r.model_type), d_model=d,
        attention=AttentionConfig(kind="mha", n_heads=heads, n_kv_heads=heads, head_dim=d // heads),
        ffn=FFNConfig(kind="dense", activation=fields.pop("activation"), d_ff=fields.pop("d_ff")),
        norm="layernorm", positions="learned", source="", **fields)


def _gpt2(r: _Reader, not_computed: list[str]) -> ModelConfig:
    if r.bool("add_cross_attention", False):
        r.fail("add_cross_attention", True, "must be false (no cross-attention here)")
    d = r.int("n_embd")
    return _learned_positions(
        r, d_model=d, n_heads=r.int("n_head"), d_ff=r.int("n_inner", 4 * d),
        activation=_activation(r, "activation_function", not_computed), vocab_size=r.int("vocab_size"),
        n_layers=r.int("n_layer"), max_seq_len=r.int("n_positions"), norm_eps=r.float("layer_norm_epsilon"),
        causal=True, tie_embeddings=r.bool("tie_word_embeddings", True), use_bias=True)


def _opt(r: _Reader, not_computed: list[str], unmodelled: dict[str, int]) -> ModelConfig:
    d = r.int("hidden_size")
    if r.int("word_embed_proj_dim", d) != d:
        r.fail("word_embed_proj_dim", r.get("word_embed_proj_dim"), f"must equal hidden_size={d} "
               "(no embedding projections here)")
    r.expect("layer_norm_elementwise_affine", (True,), True, " (LayerNorms have a scale and a bias here)")
    if r.bool("_remove_final_layer_norm", False):
        r.fail("_remove_final_layer_norm", True, "must be false (a final LayerNorm is always built here)")
    if not r.bool("do_layer_norm_before", True):
        not_computed.append("do_layer_norm_before=false (post-norm; pre-norm here)")
    unmodelled["position table offset rows"] = 2 * d  # OPT's learned positions start at row 2
    return _learned_positions(
        r, d_model=d, n_heads=r.int("num_attention_heads"), d_ff=r.int("ffn_dim"),
        activation=_activation(r, "activation_function", not_computed), vocab_size=r.int("vocab_size"),
        n_layers=r.int("num_hidden_layers"), max_seq_len=r.int("max_position_embeddings"), norm_eps=1e-5,
        causal=True, tie_embeddings=r.bool("tie_word_embeddings", True), use_bias=r.bool("enable_bias", True))


def _bert(r: _Reader, not_computed: list[str], unmodelled: dict[str, int]) -> ModelConfig:
    r.expect("position_embedding_type", ("absolute",), "absolute", " (relative position tables are not built here)")
    for key in ("is_decoder", "add_cross_attention"):
        if r.bool(key, False):
            r.fail(key, True, "must be false (an encoder without cross-attention here)")
    d = r.int("hidden_size")
    not_computed.append("post-norm residual blocks (pre-norm here)")
    unmodelled["token type embeddings"] = r.int("type_vocab_size", 2) * d
    unmodelled["pooler"] = d * d + d
    return _learned_positions(
        r, d_model=d, n_heads=r.int("num_attention_heads"), d_ff=r.int("intermediate_size"),
        activation=_activation(r, "hidden_act", not_computed), vocab_size=r.int("vocab_size"),
        n_layers=r.int("num_hidden_layers"), max_seq_len=r.int("max_position_embeddings"),
        norm_eps=r.float("layer_norm_eps"), causal=False, tie_embeddings=r.bool("tie_word_embeddings", True),
        use_bias=True)


def map_hf(config: dict[str, Any], *, ignore: tuple[str, ...] = ()) -> HFMapping:
    """Read a Hugging Face config dict (its `config.json`) into a `ModelConfig` (module docstring)."""
    model_type = model_type_of(config)
    unknown = sorted(set(ignore) - set(IGNORABLE))
    if unknown:
        fail("ignore", unknown[0], f"not a field that may be ignored (allowed: {', '.join(IGNORABLE)})")
    r = _Reader(config, model_type)
    not_computed: list[str] = []
    unmodelled: dict[str, int] = {}
    if model_type in _LLAMA_LIKE:
        cfg = _llama_like(r, not_computed, tuple(ignore))
    elif model_type == "deepseek_v3":
        cfg = _deepseek_v3(r, not_computed, unmodelled)
    elif model_type == "gpt2":
        cfg = _gpt2(r, not_computed)
    elif model_type == "opt":
        cfg = _opt(r, not_computed, unmodelled)
    else:
        cfg = _bert(r, not_computed, unmodelled)
    quantization = config.get("quantization_config")
    if quantization:
        method = quantization.get("quant_method", "?") if isinstance(quantization, dict) else quantization
        not_computed.append(f"quantization_config (weights stored as {method}; here the storage format is a "
                            "cost-model choice, not part of the config)")
    notes = "; ".join(not_computed + [f"{name} ({n} parameters) not built" for name, n in unmodelled.items()])
    source = f"Hugging Face config.json, {ARCHITECTURES[model_type]}" + (f"; differs: {notes}" if notes else "")
    return HFMapping(cfg.replace(source=source), tuple(not_computed), unmodelled)


def from_hf(config: dict[str, Any], *, ignore: tuple[str, ...] = ()) -> ModelConfig:
    """The `ModelConfig` of a Hugging Face config dict; `map_hf` also says what it leaves out.

    Families (model_type): llama (Llama 2/3), mistral, mixtral, qwen2, qwen3, qwen3_moe,
    deepseek_v3, gpt2, opt, bert. `ignore` names cost-changing fields to drop knowingly
    (only `sliding_window`).
    """
    return map_hf(config, ignore=ignore).config


def to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """The Hugging Face config dict of a network that a transformers architecture computes exactly.

    Llama (dense), Qwen2 (dense, q/k/v biases), Qwen3 (dense, q/k norms), Mixtral (MoE on
    every layer, no shared experts) and Qwen3-MoE (q/k norms, any dense layers). A config
    no architecture computes exactly (MLA, MFA, shared experts, learned positions, biases,
    LayerNorm, GELU) is a ValueError naming the field. A Mixtral config carries one
    intermediate size, so `ffn.d_ff` (unused without dense layers) comes back as d_expert.
    """
    if not isinstance(cfg, ModelConfig):
        fail("cfg", cfg, "must be a nets.ModelConfig")
    a, f = cfg.attention, cfg.ffn
    fixed = (("attention.kind", a.kind, ("mha", "gqa")), ("norm", cfg.norm, ("rmsnorm",)),
             ("positions", cfg.positions, ("rope",)), ("causal", cfg.causal, (True,)),
             ("use_bias", cfg.use_bias, (False,)), ("ffn.activation", f.activation, ("swiglu",)),
             ("ffn.n_shared_experts", f.n_shared_experts, (0,)))
    for name, value, allowed in fixed:
        if value not in allowed:
            fail(name, value, "no Hugging Face architecture computes this network exactly "
                 f"(allowed for export: {', '.join(map(repr, allowed))})")
    if a.qkv_bias and (a.qk_norm or f.kind == "moe"):
        fail("attention.qkv_bias", True, "must be false with qk_norm or experts (only Qwen2, dense and without "
             "q/k norms, has q/k/v biases)")
    hf: dict[str, Any] = {
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": a.n_heads, "num_key_value_heads": a.n_kv_heads, "head_dim": a.head_dim,
        "intermediate_size": f.d_ff, "hidden_act": "silu", "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta, "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False, "rope_scaling": None,
    }
    if f.kind == "moe" and a.qk_norm:
        model_type = "qwen3_moe"
        hf.update(num_experts=f.n_experts, num_experts_per_tok=f.top_k, moe_intermediate_size=f.d_expert,
                  decoder_sparse_step=1, norm_topk_prob=True,
                  mlp_only_layers=[i for i, k in enumerate(cfg.layer_kinds) if k == "dense"])
    elif f.kind == "moe":
        if cfg.n_moe_layers != cfg.n_layers:
            fail("ffn.moe_start", f.moe_start, "Mixtral has experts on every layer (allowed for export: moe_start 0, "
                 "moe_end 0, moe_every 1; or qk_norm for Qwen3-MoE)")
        model_type = "mixtral"
        hf.update(num_local_experts=f.n_experts, num_experts_per_tok=f.top_k, intermediate_size=f.d_expert,
                  sliding_window=None)
    else:
        model_type = "qwen3" if a.qk_norm else "qwen2" if a.qkv_bias else "llama"
    if model_type == "qwen2":
        hf.pop("attention_bias")
        hf["use_sliding_window"] = False
    return {"architectures": [ARCHITECTURES[model_type]], "model_type": model_type, **hf}
