"""Model configuration: frozen, validated on construction, exact JSON round trip.

A `ModelConfig` describes a network completely enough to (a) build it as a Flax NNX
module and (b) derive its hardware workload without allocating it. Every bad value
raises `ValueError` naming the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from nets._errors import fail as _fail

ATTENTION_KINDS = ("mha", "gqa", "mla", "mfa")
FFN_KINDS = ("dense", "moe")
ACTIVATIONS = ("swiglu", "gelu", "relu")
NORMS = ("rmsnorm", "layernorm")
POSITIONS = ("rope", "learned", "none")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(field_name: str, value: Any) -> None:
    if not _is_int(value) or value <= 0:
        _fail(field_name, value, "must be a positive integer")


def _nonneg_int(field_name: str, value: Any) -> None:
    if not _is_int(value) or value < 0:
        _fail(field_name, value, "must be a non-negative integer")


def _choice(field_name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(field_name, value, f"must be one of {', '.join(allowed)}")


def _boolean(field_name: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(field_name, value, "must be true or false")


def _positive_float(field_name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        _fail(field_name, value, "must be a finite positive number")


@dataclass(frozen=True)
class AttentionConfig:
    """Attention block.

    kind:
      mha  multi-head: n_kv_heads == n_heads.
      gqa  grouped-query: n_heads divisible by n_kv_heads (n_kv_heads == 1 is MQA).
      mla  multi-head latent attention (DeepSeek-V2/V3): K and V are rebuilt from a
           cached latent of `kv_rank` values plus a shared RoPE key of `rope_dim`;
           `head_dim` is the no-RoPE query/key width and the value width; `q_rank`
           (0 = full rank) factors the query.
      mfa  multi-matrix factorization attention (Step-3): a low-rank query
           (d_model -> q_rank -> RMSNorm -> n_heads*head_dim) and `n_kv_heads`
           shared K/V heads (Step-3 uses one), projected straight from the hidden state.

    qkv_bias adds a bias to the query, key and value projections only (Qwen2); `ModelConfig.use_bias`
    puts one on every linear layer. Only for kinds mha and gqa.
    """

    kind: str = "mha"
    n_heads: int = 4
    n_kv_heads: int = 4
    head_dim: int = 16
    q_rank: int = 0
    kv_rank: int = 0
    rope_dim: int = 0
    qk_norm: bool = False
    qkv_bias: bool = False

    def __post_init__(self) -> None:
        p = "attention."
        _choice(p + "kind", self.kind, ATTENTION_KINDS)
        _positive_int(p + "n_heads", self.n_heads)
        _positive_int(p + "n_kv_heads", self.n_kv_heads)
        _positive_int(p + "head_dim", self.head_dim)
        _nonneg_int(p + "q_rank", self.q_rank)
        _nonneg_int(p + "kv_rank", self.kv_rank)
        _nonneg_int(p + "rope_dim", self.rope_dim)
        _boolean(p + "qk_norm", self.qk_norm)
        _boolean(p + "qkv_bias", self.qkv_bias)
        if self.qkv_bias and self.kind not in ("mha", "gqa"):
            _fail(p + "qkv_bias", self.qkv_bias, f"must be false for kind {self.kind} (only mha and gqa)")
        if self.n_heads % self.n_kv_heads:
            _fail(p + "n_kv_heads", self.n_kv_heads, f"must divide n_heads={self.n_heads}")
        if self.kind in ("mha", "mla") and self.n_kv_heads != self.n_heads:
            _fail(p + "n_kv_heads", self.n_kv_heads, f"must equal n_heads={self.n_heads} for kind {self.kind}")
        if self.kind == "mfa" and self.q_rank == 0:
            _fail(p + "q_rank", self.q_rank, "must be positive for kind mfa (the query is low-rank)")
        if self.kind == "mla":
            if self.kv_rank == 0:
                _fail(p + "kv_rank", self.kv_rank, "must be positive for kind mla (the cached latent)")
            if self.rope_dim == 0 or self.rope_dim % 2:
                _fail(p + "rope_dim", self.rope_dim, "must be a positive even number for kind mla")
        else:
            if self.kv_rank:
                _fail(p + "kv_rank", self.kv_rank, f"must be 0 unless kind is mla (kind is {self.kind})")
            if self.rope_dim:
                _fail(p + "rope_dim", self.rope_dim, f"must be 0 unless kind is mla (kind is {self.kind})")
        if self.kind in ("mha", "gqa") and self.q_rank:
            _fail(p + "q_rank", self.q_rank, f"must be 0 for kind {self.kind} (use mfa or mla for a low-rank query)")

    @property
    def group_size(self) -> int:
        """Query heads per K/V head (GQA 'deg_grp'); for MLA after up-projection, 1."""
        return self.n_heads // self.n_kv_heads

    @property
    def qk_head_dim(self) -> int:
        """Width of one query/key head in the score product."""
        return self.head_dim + self.rope_dim

    def cache_values_per_token(self) -> int:
        """Values cached per token per layer: 2*n_kv*d_h (MHA/GQA/MFA), kv_rank+rope_dim (MLA)."""
        if self.kind == "mla":
            return self.kv_rank + self.rope_dim
        return 2 * self.n_kv_heads * self.head_dim


@dataclass(frozen=True)
class FFNConfig:
    """Feed-forward block: a dense MLP, or a mixture of experts on selected layers.

    activation 'swiglu' is the gated three-matrix FFN (Llama, Mixtral, DeepSeek);
    'gelu' and 'relu' the two-matrix MLP (GPT-2, BERT and GLaM use GELU, OPT ReLU).
    kind 'moe' puts a routed MoE on layers moe_start, moe_start+moe_every, ... below
    moe_end (0 = up to the last layer); the other layers use a dense FFN of width d_ff.
    """

    kind: str = "dense"
    activation: str = "swiglu"
    d_ff: int = 128
    n_experts: int = 0
    top_k: int = 0
    n_shared_experts: int = 0
    d_expert: int = 0
    moe_start: int = 0
    moe_end: int = 0
    moe_every: int = 1

    def __post_init__(self) -> None:
        p = "ffn."
        _choice(p + "kind", self.kind, FFN_KINDS)
        _choice(p + "activation", self.activation, ACTIVATIONS)
        _positive_int(p + "d_ff", self.d_ff)
        _nonneg_int(p + "n_experts", self.n_experts)
        _nonneg_int(p + "top_k", self.top_k)
        _nonneg_int(p + "n_shared_experts", self.n_shared_experts)
        _nonneg_int(p + "d_expert", self.d_expert)
        _nonneg_int(p + "moe_start", self.moe_start)
        _nonneg_int(p + "moe_end", self.moe_end)
        _positive_int(p + "moe_every", self.moe_every)
        if self.kind == "moe":
            if self.n_experts < 1:
                _fail(p + "n_experts", self.n_experts, "must be a positive integer for kind moe")
            if not 1 <= self.top_k <= self.n_experts:
                _fail(p + "top_k", self.top_k, f"must be between 1 and n_experts={self.n_experts}")
            if self.d_expert < 1:
                _fail(p + "d_expert", self.d_expert, "must be a positive integer for kind moe")
            if self.moe_end and self.moe_end <= self.moe_start:
                _fail(p + "moe_end", self.moe_end, f"must be 0 (last layer) or greater than moe_start={self.moe_start}")
        else:
            for name in ("n_experts", "top_k", "n_shared_experts", "d_expert"):
                if getattr(self, name):
                    _fail(p + name, getattr(self, name), "must be 0 for kind dense")


@dataclass(frozen=True)
class ModelConfig:
    """A transformer LM or encoder, complete enough to build it and to cost it."""

    name: str = "custom"
    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 2
    max_seq_len: int = 256
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    ffn: FFNConfig = field(default_factory=FFNConfig)
    norm: str = "rmsnorm"
    norm_eps: float = 1e-6
    positions: str = "rope"
    rope_theta: float = 10000.0
    causal: bool = True
    tie_embeddings: bool = False
    use_bias: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            _fail("name", self.name, "must be a non-empty string")
        if not isinstance(self.source, str):
            _fail("source", self.source, "must be a string")
        for name in ("vocab_size", "d_model", "n_layers", "max_seq_len"):
            _positive_int(name, getattr(self, name))
        if not isinstance(self.attention, AttentionConfig):
            _fail("attention", self.attention, "must be an AttentionConfig")
        if not isinstance(self.ffn, FFNConfig):
            _fail("ffn", self.ffn, "must be an FFNConfig")
        _choice("norm", self.norm, NORMS)
        _positive_float("norm_eps", self.norm_eps)
        _choice("positions", self.positions, POSITIONS)
        _positive_float("rope_theta", self.rope_theta)
        _boolean("causal", self.causal)
        _boolean("tie_embeddings", self.tie_embeddings)
        _boolean("use_bias", self.use_bias)
        a, f = self.attention, self.ffn
        q_width = a.n_heads * a.qk_head_dim
        if a.q_rank and a.q_rank > min(self.d_model, q_width):
            _fail("attention.q_rank", a.q_rank, f"must be at most min(d_model, n_heads*qk_head_dim) = {min(self.d_model, q_width)}")
        if a.kv_rank and a.kv_rank > min(self.d_model, 2 * a.n_heads * a.head_dim):
            _fail("attention.kv_rank", a.kv_rank,
                  f"must be at most min(d_model, 2*n_heads*head_dim) = {min(self.d_model, 2 * a.n_heads * a.head_dim)}")
        if self.positions == "rope" and a.kind != "mla" and a.head_dim % 2:
            _fail("attention.head_dim", a.head_dim, "must be even with rope positions")
        if f.kind == "moe":
            if f.moe_start >= self.n_layers:
                _fail("ffn.moe_start", f.moe_start, f"must be below n_layers={self.n_layers}")
            if f.moe_end > self.n_layers:
                _fail("ffn.moe_end", f.moe_end, f"must be at most n_layers={self.n_layers}")

    # ---- structure -------------------------------------------------------------
    def is_moe_layer(self, layer: int) -> bool:
        f = self.ffn
        if f.kind != "moe":
            return False
        end = f.moe_end or self.n_layers
        return f.moe_start <= layer < end and (layer - f.moe_start) % f.moe_every == 0

    @property
    def layer_kinds(self) -> tuple[str, ...]:
        """'moe' or 'dense' for each layer, in order."""
        return tuple("moe" if self.is_moe_layer(i) else "dense" for i in range(self.n_layers))

    @property
    def n_moe_layers(self) -> int:
        return sum(k == "moe" for k in self.layer_kinds)

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with fields changed; `attention=`/`ffn=` accept dicts of sub-fields."""
        for key in ("attention", "ffn"):
            if isinstance(changes.get(key), dict):
                changes[key] = dataclasses.replace(getattr(self, key), **changes[key])
        return dataclasses.replace(self, **changes)

    # ---- JSON --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Strict: every key must be present and known (a typo is an error, not a default)."""
        if not isinstance(data, dict):
            raise ValueError(f"config: expected a JSON object, got {type(data).__name__}")
        top = _strict_fields(cls, data, "")
        attention = data["attention"]
        if isinstance(attention, dict):
            attention = {**_ADDED_LATER, **attention}
        top["attention"] = AttentionConfig(**_strict_fields(AttentionConfig, attention, "attention."))
        top["ffn"] = FFNConfig(**_strict_fields(FFNConfig, data["ffn"], "ffn."))
        return cls(**top)

    @classmethod
    def from_hf(cls, config: dict[str, Any], *, ignore: tuple[str, ...] = ()) -> "ModelConfig":
        """The config of a Hugging Face `config.json` (a dict); see `nets.from_hf` for the families and rules."""
        from nets._hf_config import from_hf  # the mapping lives beside the other Hugging Face code

        return from_hf(config, ignore=ignore)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"config: not valid JSON ({err})") from None
        return cls.from_dict(data)


# Keys added after configs were first written to JSON, with the value that leaves an older
# file's model unchanged: absent means that value; an unknown key is still an error.
_ADDED_LATER = {"qkv_bias": False}


def _strict_fields(cls: type, data: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: expected a JSON object, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    missing = [n for n in names if n not in data]
    if unknown:
        raise ValueError(f"{prefix}{unknown[0]}: unknown key (allowed: {', '.join(names)})")
    if missing:
        raise ValueError(f"{prefix}{missing[0]}: missing key (required: {', '.join(names)})")
    return dict(data)
