"""Published model configurations, each citing where its numbers come from.

The cost models need only these configs: a 671B model is costed (and its
parameters counted, see `nets.count_params`) without being allocated. The
`codesign-*` entries are this project's own models (the embedded default, the
~100M MoE benchmark model and the dense ~300M benchmark model).

The benchmark models are frozen (a change would break the comparison of measurements over
time): codesign-100m (12 layers, d_model 768, MFA with 12 query heads and one K/V head of 64,
8 routed experts of 384 top-2 plus one shared, byte vocabulary) is benchmarked at batch 16 and
32 x 1024 tokens; codesign-dense-300m (24 layers, d_model 1024, 16 MHA heads of 64, SwiGLU
d_ff 2816, vocab 32000, untied; 308.3M parameters in the blocks, 373.9M in all) at batch
16 x 2048 tokens.
"""

from __future__ import annotations

from nets._config import AttentionConfig, FFNConfig, ModelConfig


def _llama(name: str, d: int, layers: int, heads: int, kv: int, ffn: int, vocab: int, max_len: int,
           theta: float, source: str) -> ModelConfig:
    return ModelConfig(
        name=name, vocab_size=vocab, d_model=d, n_layers=layers, max_seq_len=max_len,
        attention=AttentionConfig(kind="mha" if kv == heads else "gqa", n_heads=heads, n_kv_heads=kv,
                                  head_dim=d // heads),
        ffn=FFNConfig(kind="dense", activation="swiglu", d_ff=ffn),
        norm_eps=1e-5, rope_theta=theta, source=source)


def _gpt(name: str, d: int, layers: int, heads: int, ffn: int, vocab: int, max_len: int, activation: str,
         causal: bool, source: str) -> ModelConfig:
    return ModelConfig(
        name=name, vocab_size=vocab, d_model=d, n_layers=layers, max_seq_len=max_len,
        attention=AttentionConfig(kind="mha", n_heads=heads, n_kv_heads=heads, head_dim=d // heads),
        ffn=FFNConfig(kind="dense", activation=activation, d_ff=ffn),
        norm="layernorm", norm_eps=1e-5, positions="learned", causal=causal, tie_embeddings=True,
        use_bias=True, source=source)


_OPT = "Zhang et al., OPT: Open Pre-trained Transformer Language Models, arXiv 2205.01068, Table 1"
_LLAMA2 = "Touvron et al., Llama 2, arXiv 2307.09288, Table 1; meta-llama/Llama-2-*-hf config.json"
_GPT2 = "Radford et al., Language Models are Unsupervised Multitask Learners (2019), Table 2; openai-community/gpt2* config.json"
_BERT = "Devlin et al., BERT, arXiv 1810.04805, section 3; google-bert/bert-*-uncased config.json"

_ENTRIES: tuple[ModelConfig, ...] = (
    ModelConfig(
        name="deepseek-v3", vocab_size=129280, d_model=7168, n_layers=61, max_seq_len=163840,
        attention=AttentionConfig(kind="mla", n_heads=128, n_kv_heads=128, head_dim=128, q_rank=1536,
                                  kv_rank=512, rope_dim=64),
        ffn=FFNConfig(kind="moe", d_ff=18432, n_experts=256, top_k=8, n_shared_experts=1, d_expert=2048,
                      moe_start=3),
        source="DeepSeek-AI, DeepSeek-V3 Technical Report, arXiv 2412.19437, section 4.2; "
               "deepseek-ai/DeepSeek-V3 config.json (671B total, 37B activated; MTP module excluded)"),
    ModelConfig(
        name="qwen3-235b-a22b", vocab_size=151936, d_model=4096, n_layers=94, max_seq_len=40960,
        attention=AttentionConfig(kind="gqa", n_heads=64, n_kv_heads=4, head_dim=128, qk_norm=True),
        ffn=FFNConfig(kind="moe", d_ff=12288, n_experts=128, top_k=8, d_expert=1536),
        rope_theta=1e6,
        source="Qwen Team, Qwen3 Technical Report, arXiv 2505.09388, Table 2; Qwen/Qwen3-235B-A22B config.json"),
    ModelConfig(
        name="step-3", vocab_size=128815, d_model=7168, n_layers=61, max_seq_len=65536,
        attention=AttentionConfig(kind="mfa", n_heads=64, n_kv_heads=1, head_dim=256, q_rank=2048),
        ffn=FFNConfig(kind="moe", d_ff=18432, n_experts=48, top_k=3, n_shared_experts=1, d_expert=5120,
                      moe_start=4, moe_end=60),
        source="StepFun, Step-3 is Large yet Affordable, arXiv 2507.19427, section 2 and Table 1 "
               "(316B total, 38B activated; MoE on layers 4..59)"),
    ModelConfig(
        name="mixtral-8x7b", vocab_size=32000, d_model=4096, n_layers=32, max_seq_len=32768,
        attention=AttentionConfig(kind="gqa", n_heads=32, n_kv_heads=8, head_dim=128),
        ffn=FFNConfig(kind="moe", d_ff=14336, n_experts=8, top_k=2, d_expert=14336),
        norm_eps=1e-5, rope_theta=1e6,
        source="Jiang et al., Mixtral of Experts, arXiv 2401.04088, Table 1 (46.7B total, 12.9B active); "
               "Duplex (MICRO 2024) Table I"),
    ModelConfig(
        name="grok-1", vocab_size=131072, d_model=6144, n_layers=64, max_seq_len=8192,
        attention=AttentionConfig(kind="gqa", n_heads=48, n_kv_heads=8, head_dim=128),
        ffn=FFNConfig(kind="moe", d_ff=32768, n_experts=8, top_k=2, d_expert=32768),
        source="xAI, grok-1 open release (github.com/xai-org/grok-1, model.py/run.py; 314B); "
               "Duplex (MICRO 2024) Table I"),
    ModelConfig(
        name="glam-64e", vocab_size=256000, d_model=4096, n_layers=32, max_seq_len=1024,
        attention=AttentionConfig(kind="mha", n_heads=32, n_kv_heads=32, head_dim=128),
        ffn=FFNConfig(kind="moe", activation="gelu", d_ff=16384, n_experts=64, top_k=2, d_expert=16384,
                      moe_start=1, moe_every=2),
        source="Du et al., GLaM, arXiv 2112.06905, Table 4 (GLaM 8B/64E: 143B total); Duplex (MICRO 2024) "
               "Table I. GLaM's relative position bias is modelled as RoPE (no parameters either way)"),
    _llama("llama-3-70b", 8192, 80, 64, 8, 28672, 128256, 8192, 500000.0,
           "Llama Team, The Llama 3 Herd of Models, arXiv 2407.21783, Table 3; meta-llama/Meta-Llama-3-70B config.json"),
    _llama("llama-2-7b", 4096, 32, 32, 32, 11008, 32000, 4096, 10000.0, _LLAMA2),
    _llama("llama-2-13b", 5120, 40, 40, 40, 13824, 32000, 4096, 10000.0, _LLAMA2),
    _llama("llama-2-70b", 8192, 80, 64, 8, 28672, 32000, 4096, 10000.0, _LLAMA2),
    _gpt("opt-6.7b", 4096, 32, 32, 16384, 50272, 2048, "relu", True, _OPT),
    _gpt("opt-13b", 5120, 40, 40, 20480, 50272, 2048, "relu", True, _OPT),
    _gpt("opt-30b", 7168, 48, 56, 28672, 50272, 2048, "relu", True, _OPT),
    _gpt("opt-66b", 9216, 64, 72, 36864, 50272, 2048, "relu", True, _OPT),
    _gpt("gpt2-small", 768, 12, 12, 3072, 50257, 1024, "gelu", True, _GPT2),
    _gpt("gpt2-medium", 1024, 24, 16, 4096, 50257, 1024, "gelu", True, _GPT2),
    _gpt("bert-base", 768, 12, 12, 3072, 30522, 512, "gelu", False, _BERT),
    _gpt("bert-large", 1024, 24, 16, 4096, 30522, 512, "gelu", False, _BERT),
    ModelConfig(
        name="codesign-default", vocab_size=256, d_model=256, n_layers=4, max_seq_len=256,
        attention=AttentionConfig(kind="mfa", n_heads=4, n_kv_heads=1, head_dim=64, q_rank=128),
        ffn=FFNConfig(kind="moe", d_ff=512, n_experts=8, top_k=2, n_shared_experts=1, d_expert=128,
                      moe_start=1),
        source="this project: the embedded default, a byte-level MFA + MoE decoder in Step-3's shape "
               "(first layer dense, low-rank query, one shared K/V head, routed + shared experts)"),
    ModelConfig(
        name="codesign-100m", vocab_size=256, d_model=768, n_layers=12, max_seq_len=1024,
        attention=AttentionConfig(kind="mfa", n_heads=12, n_kv_heads=1, head_dim=64, q_rank=384),
        ffn=FFNConfig(kind="moe", d_ff=2048, n_experts=8, top_k=2, n_shared_experts=1, d_expert=384,
                      moe_start=1),
        source="this project: a ~100M-parameter byte-level MFA + MoE decoder for throughput benchmarks"),
    ModelConfig(
        name="codesign-dense-300m", vocab_size=32000, d_model=1024, n_layers=24, max_seq_len=2048,
        attention=AttentionConfig(kind="mha", n_heads=16, n_kv_heads=16, head_dim=64),
        ffn=FFNConfig(kind="dense", activation="swiglu", d_ff=2816),
        source="this project: a dense Llama-shaped decoder for throughput benchmarks, frozen: 24 layers, "
               "d_model 1024, 16 MHA heads of 64, SwiGLU d_ff 2816, vocab 32000, untied embeddings "
               "(308.3M parameters in the blocks, 373.9M total); benchmarked at batch 16 x 2048 tokens"),
)

ZOO: dict[str, ModelConfig] = {c.name: c for c in _ENTRIES}


def names() -> list[str]:
    return list(ZOO)


def get(name: str) -> ModelConfig:
    """The zoo config called `name` (case-insensitive); ValueError lists the names."""
    key = name.lower()
    if key not in ZOO:
        raise ValueError(f"model={name!r}: not in the zoo (known: {', '.join(ZOO)})")
    return ZOO[key]


def default_config() -> ModelConfig:
    """The embedded default model (a small MFA + MoE byte-level decoder)."""
    return ZOO["codesign-default"]
