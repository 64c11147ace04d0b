"""Hugging Face config.json -> ModelConfig: published configs give the published parameter counts.

The configs below are the fields of each model's config.json as published on the Hugging Face
Hub (fields that neither change a shape nor are read by the mapping, such as token ids and
dropout rates, are left out). The published parameter counts are test inputs, each with its source.
"""

import json

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import nets

CONFIGS = {
    # huggingface.co/meta-llama/Llama-2-7b-hf/blob/main/config.json
    "llama-2-7b": {"architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "hidden_size": 4096,
                   "intermediate_size": 11008, "max_position_embeddings": 4096, "model_type": "llama",
                   "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
                   "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "tie_word_embeddings": False,
                   "torch_dtype": "float16", "vocab_size": 32000},
    # huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json
    "llama-3-8b": {"architectures": ["LlamaForCausalLM"], "attention_bias": False, "hidden_act": "silu",
                   "hidden_size": 4096, "intermediate_size": 14336, "max_position_embeddings": 8192,
                   "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
                   "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
                   "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
                   "vocab_size": 128256},
    # huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json
    "mistral-7b-v0.1": {"architectures": ["MistralForCausalLM"], "hidden_act": "silu", "hidden_size": 4096,
                        "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
                        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
                        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
                        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "vocab_size": 32000},
    # huggingface.co/mistralai/Mixtral-8x7B-v0.1/blob/main/config.json
    "mixtral-8x7b": {"architectures": ["MixtralForCausalLM"], "hidden_act": "silu", "hidden_size": 4096,
                     "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mixtral",
                     "num_attention_heads": 32, "num_experts_per_tok": 2, "num_hidden_layers": 32,
                     "num_key_value_heads": 8, "num_local_experts": 8, "output_router_logits": False,
                     "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02,
                     "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
                     "vocab_size": 32000},
    # huggingface.co/Qwen/Qwen2-1.5B/blob/main/config.json
    "qwen2-1.5b": {"architectures": ["Qwen2ForCausalLM"], "hidden_act": "silu", "hidden_size": 1536,
                   "intermediate_size": 8960, "max_position_embeddings": 131072, "max_window_layers": 28,
                   "model_type": "qwen2", "num_attention_heads": 12, "num_hidden_layers": 28,
                   "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
                   "sliding_window": 131072, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
                   "use_sliding_window": False, "vocab_size": 151936},
    # huggingface.co/Qwen/Qwen3-8B/blob/main/config.json
    "qwen3-8b": {"architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "head_dim": 128,
                 "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 12288,
                 "max_position_embeddings": 40960, "max_window_layers": 36, "model_type": "qwen3",
                 "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8,
                 "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None,
                 "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_sliding_window": False,
                 "vocab_size": 151936},
    # huggingface.co/Qwen/Qwen3-30B-A3B/blob/main/config.json
    "qwen3-30b-a3b": {"architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "decoder_sparse_step": 1,
                      "head_dim": 128, "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 6144,
                      "max_position_embeddings": 40960, "max_window_layers": 48, "mlp_only_layers": [],
                      "model_type": "qwen3_moe", "moe_intermediate_size": 768, "norm_topk_prob": True,
                      "num_attention_heads": 32, "num_experts": 128, "num_experts_per_tok": 8,
                      "num_hidden_layers": 48, "num_key_value_heads": 4, "output_router_logits": False,
                      "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0,
                      "router_aux_loss_coef": 0.001, "sliding_window": None, "tie_word_embeddings": False,
                      "torch_dtype": "bfloat16", "use_sliding_window": False, "vocab_size": 151936},
    # huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/config.json
    "deepseek-v3": {"architectures": ["DeepseekV3ForCausalLM"], "attention_bias": False, "aux_loss_alpha": 0.001,
                    "ep_size": 1, "first_k_dense_replace": 3, "hidden_act": "silu", "hidden_size": 7168,
                    "intermediate_size": 18432, "kv_lora_rank": 512, "max_position_embeddings": 163840,
                    "model_type": "deepseek_v3", "moe_intermediate_size": 2048, "moe_layer_freq": 1, "n_group": 8,
                    "n_routed_experts": 256, "n_shared_experts": 1, "norm_topk_prob": True,
                    "num_attention_heads": 128, "num_experts_per_tok": 8, "num_hidden_layers": 61,
                    "num_key_value_heads": 128, "num_nextn_predict_layers": 1, "pretraining_tp": 1,
                    "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
                    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                            "weight_block_size": [128, 128]},
                    "rms_norm_eps": 1e-06,
                    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                                     "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                                     "type": "yarn"},
                    "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "seq_aux": True,
                    "tie_word_embeddings": False, "topk_group": 4, "topk_method": "noaux_tc",
                    "torch_dtype": "bfloat16", "v_head_dim": 128, "vocab_size": 129280},
    # huggingface.co/openai-community/gpt2/blob/main/config.json
    "gpt2": {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
             "embd_pdrop": 0.1, "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768,
             "n_head": 12, "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1, "vocab_size": 50257},
    # huggingface.co/facebook/opt-125m/blob/main/config.json
    "opt-125m": {"activation_function": "relu", "architectures": ["OPTForCausalLM"], "do_layer_norm_before": True,
                 "ffn_dim": 3072, "hidden_size": 768, "max_position_embeddings": 2048, "model_type": "opt",
                 "num_attention_heads": 12, "num_hidden_layers": 12, "torch_dtype": "float16", "vocab_size": 50272,
                 "word_embed_proj_dim": 768},
    # huggingface.co/google-bert/bert-base-uncased/blob/main/config.json
    "bert-base-uncased": {"architectures": ["BertForMaskedLM"], "hidden_act": "gelu", "hidden_size": 768,
                          "intermediate_size": 3072, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
                          "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": 12,
                          "position_embedding_type": "absolute", "type_vocab_size": 2, "vocab_size": 30522},
}

# Published totals (all parameters of the Hugging Face model, in the model's own accounting).
PUBLISHED_TOTAL = {
    "llama-2-7b": 6.74e9,        # Hugging Face Hub page of meta-llama/Llama-2-7b-hf: "Model size 6.74B params"
    "llama-3-8b": 8.03e9,        # Hugging Face Hub page of meta-llama/Meta-Llama-3-8B: "Model size 8.03B params"
    "mistral-7b-v0.1": 7.24e9,   # Hugging Face Hub page of mistralai/Mistral-7B-v0.1: "Model size 7.24B params"
    "mixtral-8x7b": 46.7e9,      # Mistral AI, "Mixtral of experts" (2023): 46.7B total parameters
    "qwen2-1.5b": 1.54e9,        # Qwen team, "Hello Qwen2" (qwenlm.github.io/blog/qwen2), model table: 1.54B
    "qwen3-8b": 8.2e9,           # Qwen/Qwen3-8B model card: "Number of Parameters: 8.2B"
    "qwen3-30b-a3b": 30.5e9,     # Qwen/Qwen3-30B-A3B model card: "30.5B in total"
    "deepseek-v3": 671e9,        # DeepSeek-V3 report, arXiv 2412.19437, abstract: 671B total (main model, no MTP)
    "gpt2": 124e6,               # openai-community/gpt2 model card: "the smallest version of GPT-2, with 124M parameters"
    "opt-125m": 125e6,           # Zhang et al., OPT, arXiv 2205.01068, Table 1: 125M
    "bert-base-uncased": 110e6,  # Devlin et al., BERT, arXiv 1810.04805, section 3: BERT-BASE 110M
}
# Published counts without the embedding table and LM head.
PUBLISHED_NON_EMBEDDING = {
    "qwen2-1.5b": 1.31e9,        # "Hello Qwen2" model table: non-embedding 1.31B
    "qwen3-8b": 6.95e9,          # Qwen/Qwen3-8B model card: "Number of Paramaters (Non-Embedding): 6.95B"
    "qwen3-30b-a3b": 29.9e9,     # Qwen/Qwen3-30B-A3B model card: non-embedding 29.9B
}
# Published activated counts as printed (their precision is the printed digits). `nets.ParamCounts.active`
# leaves out the input-embedding lookup; Mixtral's figure counts it (with it 12.88B, without 12.75B, which
# does not print as 12.9B), DeepSeek-V3's does not (36.6B without it prints as 37B; 37.6B with it would not).
# Qwen3-30B-A3B's "3.3B activated" is left out: 3.04B without the table and 3.35B with it both miss it.
PUBLISHED_ACTIVE = {
    "mixtral-8x7b": ("12.9", 1e9, True),   # Mistral AI, "Mixtral of experts": 12.9B parameters per token
    "deepseek-v3": ("37", 1e9, False),     # DeepSeek-V3 report, arXiv 2412.19437, abstract: 37B activated
}
IGNORE = {"mistral-7b-v0.1": ("sliding_window",)}  # Mistral v0.1's 4096-token window, costed as full attention


def mapped(name):
    return nets.map_hf(CONFIGS[name], ignore=IGNORE.get(name, ()))


@pytest.mark.parametrize("name", sorted(PUBLISHED_TOTAL))
def test_total_within_half_percent_of_published(name):
    mapping = mapped(name)
    total = nets.count_params(mapping.config).total + sum(mapping.unmodelled_params.values())
    assert abs(total / PUBLISHED_TOTAL[name] - 1) < 0.005, (total, PUBLISHED_TOTAL[name])


@pytest.mark.parametrize("name", sorted(PUBLISHED_NON_EMBEDDING))
def test_non_embedding_within_half_percent_of_published(name):
    counts = nets.count_params(mapped(name).config)
    non_embedding = counts.total - counts.embedding - counts.lm_head
    assert abs(non_embedding / PUBLISHED_NON_EMBEDDING[name] - 1) < 0.005, non_embedding


@pytest.mark.parametrize("name", sorted(PUBLISHED_ACTIVE))
def test_active_prints_as_published(name):
    printed, unit, with_input_embedding = PUBLISHED_ACTIVE[name]
    counts = nets.count_params(mapped(name).config)
    active = counts.active + (counts.embedding if with_input_embedding else 0)
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    assert f"{active / unit:.{decimals}f}" == printed, active


def test_unmodelled_parameters_are_small_and_named():
    for name in CONFIGS:
        mapping = mapped(name)
        total = nets.count_params(mapping.config).total
        assert all(0 < n < 0.01 * total for n in mapping.unmodelled_params.values()), (name, mapping.unmodelled_params)
        for part in mapping.unmodelled_params:
            assert part in mapping.config.source
    assert set(mapped("bert-base-uncased").unmodelled_params) == {"token type embeddings", "pooler"}
    assert mapped("bert-base-uncased").unmodelled_params["pooler"] == 768 * 768 + 768


@pytest.mark.parametrize("hf_name,zoo_name", [("llama-2-7b", "llama-2-7b"), ("mixtral-8x7b", "mixtral-8x7b"),
                                              ("deepseek-v3", "deepseek-v3"), ("gpt2", "gpt2-small")])
def test_mapping_equals_the_zoo_entry(hf_name, zoo_name):
    zoo_cfg = nets.zoo.get(zoo_name)
    assert mapped(hf_name).config.replace(name=zoo_cfg.name, source=zoo_cfg.source) == zoo_cfg


def test_fields_that_differ_from_the_defaults():
    qwen3_moe = mapped("qwen3-30b-a3b").config
    assert qwen3_moe.attention.head_dim == 128 != qwen3_moe.d_model // qwen3_moe.attention.n_heads
    assert qwen3_moe.attention.qk_norm and qwen3_moe.layer_kinds == ("moe",) * 48
    assert (qwen3_moe.ffn.n_experts, qwen3_moe.ffn.top_k, qwen3_moe.ffn.d_expert) == (128, 8, 768)
    qwen2 = mapped("qwen2-1.5b").config
    assert qwen2.attention.qkv_bias and not qwen2.use_bias and qwen2.tie_embeddings
    assert mapped("llama-3-8b").config.rope_theta == 500000.0
    bert = mapped("bert-base-uncased").config
    assert not bert.causal and bert.norm == "layernorm" and bert.positions == "learned" and bert.norm_eps == 1e-12


def test_differences_in_computation_are_recorded():
    deepseek = mapped("deepseek-v3").not_computed
    assert any(n.startswith("rope_scaling=") for n in deepseek) and any("sigmoid" in n for n in deepseek)
    assert any("quantization_config" in n for n in deepseek)
    assert any("erf" in n for n in mapped("bert-base-uncased").not_computed)
    assert mapped("llama-3-8b").not_computed == () and mapped("qwen3-30b-a3b").not_computed == ()
    flipped = nets.map_hf({**CONFIGS["qwen3-30b-a3b"], "norm_topk_prob": False})
    assert any("norm_topk_prob" in n for n in flipped.not_computed)


def test_newer_transformers_spellings():
    """transformers 5 writes rope_parameters and (Qwen3-MoE) num_local_experts; both are read."""
    old = CONFIGS["qwen3-30b-a3b"]
    new = {k: v for k, v in old.items() if k not in ("rope_theta", "num_experts")}
    new.update(rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"}, num_local_experts=128)
    assert nets.from_hf(new) == nets.from_hf(old)


def test_classmethod_and_loader_agree(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIGS["qwen3-8b"]))
    assert nets.ModelConfig.from_hf(CONFIGS["qwen3-8b"]) == nets.from_hf(CONFIGS["qwen3-8b"])
    assert nets.load_config(str(path)) == nets.from_hf(CONFIGS["qwen3-8b"])
    assert nets.load_config(str(tmp_path)) == nets.from_hf(CONFIGS["qwen3-8b"])


ERRORS = [
    ("llama-3-8b", {"model_type": "t5"}, r"model_type='t5': unsupported architecture \(supported: llama"),
    ("llama-3-8b", {"model_type": None, "architectures": ["T5Model"]}, r"architectures=\['T5Model'\]: names no"),
    ("llama-3-8b", {"hidden_size": None}, r"hidden_size=None: missing"),
    ("llama-3-8b", {"num_hidden_layers": -1}, r"num_hidden_layers=-1: must be a non-negative integer"),
    ("llama-3-8b", {"hidden_act": "gelu"}, r"hidden_act='gelu': must be one of 'silu', 'swish'"),
    ("llama-3-8b", {"attention_bias": True}, r"attention_bias=True: must equal mlp_bias=False"),
    ("mistral-7b-v0.1", {}, r"sliding_window=4096: .*ignore=\('sliding_window',\)"),
    ("mixtral-8x7b", {"num_local_experts": None}, r"num_local_experts=None: missing"),
    ("qwen3-30b-a3b", {"mlp_only_layers": [0, 5]}, r"mlp_only_layers=\[0, 5\]: gives MoE layers"),
    ("deepseek-v3", {"v_head_dim": 64}, r"v_head_dim=64: must equal qk_nope_head_dim=128"),
    ("deepseek-v3", {"attention_bias": True}, r"attention_bias=True: must be one of False"),
    ("gpt2", {"add_cross_attention": True}, r"add_cross_attention=True: must be false"),
    ("gpt2", {"activation_function": "silu"}, r"activation_function='silu': must be one of"),
    ("opt-125m", {"word_embed_proj_dim": 512}, r"word_embed_proj_dim=512: must equal hidden_size=768"),
    ("opt-125m", {"_remove_final_layer_norm": True}, r"_remove_final_layer_norm=True: must be false"),
    ("bert-base-uncased", {"position_embedding_type": "relative_key"}, r"position_embedding_type='relative_key'"),
]


@pytest.mark.parametrize("name,changes,message", ERRORS)
def test_unsupported_field_or_architecture_is_an_error(name, changes, message):
    with pytest.raises(ValueError, match=message):
        nets.from_hf({**CONFIGS[name], **changes})


def test_ignore_names_only_known_fields():
    assert nets.from_hf(CONFIGS["mistral-7b-v0.1"], ignore=("sliding_window",)).max_seq_len == 32768
    with pytest.raises(ValueError, match=r"ignore='rope_scaling': not a field that may be ignored"):
        nets.from_hf(CONFIGS["llama-3-8b"], ignore=("rope_scaling",))


def _small(**changes):
    base = dict(vocab_size=96, d_model=32, n_layers=3, max_seq_len=64,
                attention=nets.AttentionConfig(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=12),
                ffn=nets.FFNConfig(d_ff=48), norm_eps=1e-5, rope_theta=5e5)
    return nets.ModelConfig(**{**base, **changes})


ROUND_TRIPS = {
    "llama": _small(),
    "llama-tied-mha": _small(attention=nets.AttentionConfig(kind="mha", n_heads=4, n_kv_heads=4, head_dim=8),
                             tie_embeddings=True),
    "qwen2": _small(attention=nets.AttentionConfig(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=8, qkv_bias=True)),
    "qwen3": _small(attention=nets.AttentionConfig(kind="gqa", n_heads=4, n_kv_heads=1, head_dim=16, qk_norm=True)),
    "mixtral": _small(ffn=nets.FFNConfig(kind="moe", d_ff=24, n_experts=4, top_k=2, d_expert=24)),
    "qwen3_moe": _small(attention=nets.AttentionConfig(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=8, qk_norm=True),
                        ffn=nets.FFNConfig(kind="moe", d_ff=48, n_experts=4, top_k=2, d_expert=16, moe_start=1)),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_to_hf_round_trip(name):
    cfg = ROUND_TRIPS[name]
    hf = nets.to_hf(cfg)
    assert hf["model_type"] == name.split("-")[0]
    back = nets.from_hf(json.loads(json.dumps(hf)))
    assert back.replace(name=cfg.name, source=cfg.source) == cfg


@pytest.mark.parametrize("cfg,message", [
    (nets.zoo.default_config(), r"attention.kind='mfa': no Hugging Face architecture"),
    (nets.zoo.get("deepseek-v3"), r"attention.kind='mla'"),
    (nets.zoo.get("gpt2-small"), r"norm='layernorm'"),
    (_small(ffn=nets.FFNConfig(kind="moe", d_ff=24, n_experts=4, top_k=2, d_expert=24, n_shared_experts=1)),
     r"ffn.n_shared_experts=1"),
    (_small(ffn=nets.FFNConfig(kind="moe", d_ff=24, n_experts=4, top_k=2, d_expert=24, moe_start=1)),
     r"ffn.moe_start=1: Mixtral has experts on every layer"),
    (_small(attention=nets.AttentionConfig(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=8, qkv_bias=True,
                                           qk_norm=True)), r"attention.qkv_bias=True"),
])
def test_to_hf_refuses_what_no_architecture_computes(cfg, message):
    with pytest.raises(ValueError, match=message):
        nets.to_hf(cfg)


def test_qkv_bias_is_built_and_counted():
    cfg = ROUND_TRIPS["qwen2"]
    model = nnx.eval_shape(lambda: nets.TransformerLM(cfg, rngs=nnx.Rngs(0)))
    assert nets.param_count(model) == nets.count_params(cfg).total
    without = cfg.replace(attention={"qkv_bias": False})
    a = cfg.attention
    assert nets.count_params(cfg).total - nets.count_params(without).total == cfg.n_layers * (
        a.n_heads + 2 * a.n_kv_heads) * a.head_dim
    logits, _ = nets.TransformerLM(cfg, rngs=nnx.Rngs(0))(jnp.zeros((1, 4), jnp.int32))
    assert jax.numpy.isfinite(logits).all()


def test_qkv_bias_only_for_grouped_attention_and_optional_in_older_json():
    with pytest.raises(ValueError, match=r"attention.qkv_bias=True: must be false for kind mla"):
        nets.AttentionConfig(kind="mla", n_heads=4, n_kv_heads=4, head_dim=8, kv_rank=16, rope_dim=4, qkv_bias=True)
    data = nets.zoo.get("llama-2-7b").to_dict()
    del data["attention"]["qkv_bias"]  # a config written before the field existed
    assert nets.ModelConfig.from_dict(data) == nets.zoo.get("llama-2-7b")
    data["attention"]["qkv_biass"] = True
    with pytest.raises(ValueError, match="attention.qkv_biass: unknown key"):
        nets.ModelConfig.from_dict(data)
