"""nets: model configurations, layers and networks (Flax NNX)."""

from nets._config import ACTIVATIONS, ATTENTION_KINDS, FFN_KINDS, NORMS, POSITIONS, AttentionConfig, FFNConfig, ModelConfig
from nets._params import ParamCounts, attention_params, count_params, mlp_params, norm_params
from nets import zoo
from nets._errors import InputError, fail
from nets._io import atomic_write, atomic_write_json, is_config_path, load_config
from nets._safe_read import MAX_JSON_BYTES, read_json_file
from nets._attention import Attention, cache_bytes_per_token_per_layer, cache_shapes, cache_slots
from nets._attention import init_cache as init_layer_cache  # one attention layer's cache (init_cache: the model's)
from nets._layer_quant import LayerQuant, one_hot_quant
from nets._layers import MLP, activation_fn, apply_rope, embed_lookup, make_norm
from nets import grouped, moe
from nets.grouped import grouped_matmul
from nets.moe import MoE, moe_reference
from nets._pruning import (ProgressiveQuant, attended_keep, gather_rows, kept_count, local_value_prune, paper_schedule,
                           progressive_probs, quantize_split, select_tokens, soft_keep_mask, softmax_l1_bound,
                           temperature_schedule, token_importance)
from nets._pruned_model import PrunedLM, PrunePlan, monotone_keep
from nets._model import REMAT_POLICIES, TransformerLM, generate, init_cache, layer_segments, param_count
from nets._sdpa import ATTENTION_IMPLEMENTATIONS, attention_implementation
from nets._decode import DECODE_IMPLEMENTATIONS, decode_implementation, grouped_decode, latent_decode, pallas_split
from nets._mla_decode import MLATiles, mla_decode, mla_tiles
from nets._sharding import (ShardingRules, active_rules, constrain, logical_axes, logical_spec, sharding_rules,
                            tree_logical_axes)
from nets._hf_config import HFMapping, from_hf, map_hf, to_hf
from nets._hf_weights import load_hf_checkpoint, load_safetensors, save_safetensors

__all__ = [
    "ACTIVATIONS", "ATTENTION_KINDS", "FFN_KINDS", "NORMS", "POSITIONS",
    "AttentionConfig", "FFNConfig", "ModelConfig", "ParamCounts", "count_params", "zoo",
    "Attention", "LayerQuant", "MoE", "one_hot_quant", "TransformerLM", "cache_bytes_per_token_per_layer", "generate", "init_cache",
    "layer_segments", "param_count", "REMAT_POLICIES",
    "ProgressiveQuant", "attended_keep", "kept_count", "paper_schedule", "soft_keep_mask", "PrunedLM", "PrunePlan",
    "monotone_keep",
    "InputError", "fail", "atomic_write", "atomic_write_json", "is_config_path", "load_config",
    "read_json_file", "MAX_JSON_BYTES",
    "MLP", "activation_fn", "apply_rope", "make_norm", "embed_lookup", "cache_shapes", "cache_slots", "moe_reference",
    "attention_params", "mlp_params", "norm_params",
    "gather_rows", "local_value_prune", "progressive_probs", "quantize_split", "select_tokens", "softmax_l1_bound",
    "temperature_schedule", "token_importance",
    "HFMapping", "from_hf", "map_hf", "to_hf", "load_hf_checkpoint", "load_safetensors", "save_safetensors",
    "attention_implementation", "ATTENTION_IMPLEMENTATIONS", "decode_implementation", "DECODE_IMPLEMENTATIONS",
    "grouped_decode", "latent_decode", "pallas_split", "MLATiles", "mla_decode", "mla_tiles",
    "init_layer_cache", "grouped", "grouped_matmul", "moe",
    "ShardingRules", "active_rules", "constrain", "logical_axes", "logical_spec", "sharding_rules", "tree_logical_axes",
]
