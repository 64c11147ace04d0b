"""nets: model configurations, layers and networks (Flax NNX)."""

from nets._config import ACTIVATIONS, ATTENTION_KINDS, FFN_KINDS, NORMS, POSITIONS, AttentionConfig, FFNConfig, ModelConfig
from nets._params import ParamCounts, count_params
from nets import zoo

__all__ = [
    "ACTIVATIONS", "ATTENTION_KINDS", "FFN_KINDS", "NORMS", "POSITIONS",
    "AttentionConfig", "FFNConfig", "ModelConfig", "ParamCounts", "count_params", "zoo",
]
