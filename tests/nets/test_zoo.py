"""The zoo's analytic parameter counts against the published totals (inputs to the test, not the code)."""

import pytest
from flax import nnx

from nets import TransformerLM, count_params, param_count, zoo

# (total, active) in billions as published; active None where only a total is published.
PUBLISHED = {
    "step-3": (316e9, 38e9),          # Step-3 report, arXiv 2507.19427
    "deepseek-v3": (671e9, 37e9),     # DeepSeek-V3 report, arXiv 2412.19437
    "qwen3-235b-a22b": (235e9, 22e9),  # Qwen3 report
    "mixtral-8x7b": (46.7e9, 12.9e9),  # Mixtral paper, arXiv 2401.04088
    "llama-3-70b": (70.6e9, None),     # Llama 3 model card
    "grok-1": (314e9, None),
    "glam-64e": (143e9, None),         # Duplex Table I
    "llama-2-7b": (6.74e9, None),
    "opt-6.7b": (6.7e9, None),
    "opt-66b": (66e9, None),
    "gpt2-small": (124e6, None),
    "bert-base": (110e6, None),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_counts_within_two_percent_of_published(name):
    total, active = PUBLISHED[name]
    counts = count_params(zoo.get(name))
    assert abs(counts.total / total - 1) < 0.02, (counts.total, total)
    if active is not None:
        assert abs(counts.active / active - 1) < 0.02, (counts.active, active)


def test_dense_model_active_excludes_only_lookup_tables():
    cfg = zoo.get("llama-2-7b")
    counts = count_params(cfg)
    assert counts.total - counts.active == cfg.vocab_size * cfg.d_model


def test_default_model_is_small_mfa_moe():
    cfg = zoo.default_config()
    assert cfg.attention.kind == "mfa" and cfg.ffn.kind == "moe"
    assert 1e6 <= count_params(cfg).total <= 5e6


def test_unknown_name_lists_the_zoo():
    with pytest.raises(ValueError, match="model='gpt-5': not in the zoo"):
        zoo.get("gpt-5")


def test_dense_300m_benchmark_model_is_frozen_and_counted():
    """The frozen dense benchmark model: its shape, and count_params against a count written out by hand."""
    cfg = zoo.get("codesign-dense-300m")
    a = cfg.attention
    assert (cfg.n_layers, cfg.d_model, a.n_heads, a.n_kv_heads, a.head_dim, cfg.ffn.d_ff, cfg.vocab_size) == \
        (24, 1024, 16, 16, 64, 2816, 32000)
    d, layers, vocab = 1024, 24, 32000
    per_layer = 4 * d * d + 3 * d * 2816 + 2 * d  # q, k, v, o; gate, up, down; two RMSNorm scales
    counts = count_params(cfg)
    assert counts.total == layers * per_layer + d + 2 * vocab * d  # + final norm, embedding and untied head
    assert counts.active == counts.total - vocab * d
    assert 300e6 < layers * per_layer < 320e6
    built = nnx.eval_shape(lambda: TransformerLM(cfg, rngs=nnx.Rngs(0)))  # shapes only, nothing allocated
    assert param_count(built) == counts.total
