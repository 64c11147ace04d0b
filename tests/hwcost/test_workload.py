"""Workloads from configs: Step-3's Tables 2/3, MoE expert touching, knobs, validation."""

import numpy as np
import pytest

import hwcost
import nets
from hwcost import ATTENTION_CORE, FFN_GEMMS, PROJECTIONS, Knobs, Scenario, workload

# Step-3 (arXiv 2507.19427) Tables 2/3, per decoded token, 8-bit, embedding and LM head excluded:
# KV bytes @8K, @32K, attention FLOPs @8K, @32K, linear FLOPs, FFN FLOPs, attention intensity.
PAPER = {
    "step-3": (2.56e8, 1.02e9, 3.27e10, 1.31e11, 2.07e10, 5.33e10, 128),
    "deepseek-v3": (2.88e8, 1.15e9, 1.47e11, 5.89e11, 2.28e10, 4.84e10, 512),
    "qwen3-235b-a22b": (7.89e8, 3.15e9, 2.52e10, 1.01e11, 1.34e10, 2.84e10, 32),
}


def _rel(ours, paper):
    return abs(float(ours) / paper - 1)


def _decode(**kw):
    return Scenario(phase="decode", weight_bits=8, kv_bits=8, act_bits=8, **kw)


@pytest.mark.parametrize("name", list(PAPER))
def test_tables_2_3_per_token_decode(name):
    cfg = nets.zoo.get(name)
    kv8, kv32, att8, att32, linear, ffn, intensity = PAPER[name]
    w8 = workload(cfg, _decode(batch=1, context_len=8192))
    w32 = workload(cfg, _decode(batch=1, context_len=32768))
    assert _rel(w8.total_bytes("kv", ATTENTION_CORE), kv8) < 0.01
    assert _rel(w32.total_bytes("kv", ATTENTION_CORE), kv32) < 0.01
    assert _rel(w8.total_flops(ATTENTION_CORE), att8) < 0.01
    assert _rel(w32.total_flops(ATTENTION_CORE), att32) < 0.01
    assert _rel(w8.total_flops(PROJECTIONS), linear) < 0.02
    assert _rel(w8.total_flops(FFN_GEMMS), ffn) < 0.02
    assert hwcost.attention_intensity(cfg) == pytest.approx(intensity, rel=1e-6)


def test_embedding_and_lm_head_are_separate_classes():
    cfg = nets.zoo.get("step-3")
    w = workload(cfg, _decode(batch=1, context_len=8192))
    head = float(w.total_flops(("lm_head",)))
    assert head == pytest.approx(2 * cfg.d_model * cfg.vocab_size, rel=1e-6)
    tables = ATTENTION_CORE + PROJECTIONS + FFN_GEMMS
    assert float(w.total_flops(tables)) + head < float(w.total_flops())
    assert float(w.total_bytes("weights", ("embedding",))) == pytest.approx(cfg.d_model, rel=1e-6)  # one 8-bit row
    assert float(np.asarray(w.flops)[hwcost.OPS.index("lm_head"), : cfg.n_layers].sum()) == 0.0


@pytest.mark.parametrize("tokens", [1, 4, 64, 4096])
def test_moe_weights_read_are_the_distinct_experts_touched(tokens):
    cfg = nets.zoo.get("step-3")
    f = cfg.ffn
    w = workload(cfg, _decode(batch=tokens, context_len=128))
    expert_bytes = 3 * cfg.d_model * f.d_expert * 1.0  # SwiGLU, 8-bit
    expected = f.n_experts * (1 - (1 - f.top_k / f.n_experts) ** tokens) * expert_bytes * cfg.n_moe_layers
    assert float(w.total_bytes("weights", ("moe_routed",))) == pytest.approx(expected, rel=1e-5)
    if tokens == 1:
        assert expected == pytest.approx(f.top_k * expert_bytes * cfg.n_moe_layers)


def test_per_layer_knobs_change_only_their_layer():
    cfg = nets.zoo.get("codesign-default")
    scenario = Scenario(batch=4, context_len=256)
    base = Knobs.default(cfg.n_layers, scenario)
    half = Knobs(weight_bits=base.weight_bits.at[2].set(8.0), kv_bits=base.kv_bits, act_bits=base.act_bits,
                 ffn_keep=base.ffn_keep.at[2].set(0.5), token_keep=base.token_keep, head_keep=base.head_keep)
    w0, w1 = workload(cfg, scenario, base), workload(cfg, scenario, half)
    diff = np.abs(np.asarray(w1.flops) - np.asarray(w0.flops)).sum(axis=0)
    assert diff[2] > 0 and np.all(np.delete(diff, 2) == 0)
    routed = hwcost.OPS.index("moe_routed")
    assert float(w1.flops[routed, 2]) == pytest.approx(0.5 * float(w0.flops[routed, 2]))
    weights = hwcost.KINDS.index("weights")
    assert float(w1.bytes[routed, weights, 2]) == pytest.approx(0.25 * float(w0.bytes[routed, weights, 2]))


def test_token_and_head_keep_scale_attention():
    cfg = nets.zoo.get("qwen3-235b-a22b")
    scenario = _decode(batch=2, context_len=1024)
    base = Knobs.default(cfg.n_layers, scenario)
    pruned = Knobs(weight_bits=base.weight_bits, kv_bits=base.kv_bits, act_bits=base.act_bits, ffn_keep=base.ffn_keep,
                   token_keep=base.token_keep * 0.25, head_keep=base.head_keep * 0.5)
    w0, w1 = workload(cfg, scenario, base), workload(cfg, scenario, pruned)
    assert float(w1.total_flops(ATTENTION_CORE)) == pytest.approx(0.125 * float(w0.total_flops(ATTENTION_CORE)), rel=1e-5)
    assert float(w1.total_bytes("kv", ATTENTION_CORE)) == pytest.approx(0.25 * float(w0.total_bytes("kv", ATTENTION_CORE)),
                                                                         rel=1e-5)


def test_phases():
    cfg = nets.zoo.get("llama-2-7b")
    prefill = workload(cfg, Scenario(phase="prefill", batch=2, context_len=512))
    train = workload(cfg, Scenario(phase="train", batch=2, context_len=512))
    layer_ops = PROJECTIONS + ("ffn_dense",)
    assert float(train.total_flops(layer_ops)) == pytest.approx(3 * float(prefill.total_flops(layer_ops)), rel=1e-6)
    # prefill computes logits for the last position of each sequence only, training for every token
    assert float(prefill.total_flops(("lm_head",))) == pytest.approx(2 * 2 * cfg.d_model * cfg.vocab_size, rel=1e-6)
    assert float(train.total_flops(("lm_head",))) == pytest.approx(3 * 2 * 512 * 2 * cfg.d_model * cfg.vocab_size, rel=1e-6)
    # parameters: 2 FLOPs per weight per token in the linear layers
    counts = nets.count_params(cfg)
    linear_params = counts.attention + counts.ffn_dense
    assert float(prefill.total_flops(layer_ops)) == pytest.approx(2 * 2 * 512 * linear_params, rel=1e-6)


def test_footprint_counts_every_parameter():
    for name in ("step-3", "deepseek-v3", "mixtral-8x7b", "gpt2-small"):
        cfg = nets.zoo.get(name)
        w = workload(cfg, Scenario(batch=1, context_len=16, weight_bits=8, act_bits=8))
        assert float(w.footprint[0]) == pytest.approx(nets.count_params(cfg).total, rel=1e-4), name


@pytest.mark.parametrize("changes, field", [
    ({"phase": "serve"}, "phase"), ({"batch": 0}, "batch"), ({"batch": -3}, "batch"),
    ({"context_len": 1.5}, "context_len"), ({"kv_bits": 0.5}, "kv_bits"), ({"weight_bits": 64}, "weight_bits"),
])
def test_bad_scenario_names_field(changes, field):
    with pytest.raises(ValueError) as err:
        Scenario(**changes)
    assert str(err.value).startswith(field + "=")


def test_bad_knobs_name_field():
    cfg = nets.zoo.get("codesign-default")
    base = Knobs.default(cfg.n_layers, Scenario())
    with pytest.raises(ValueError, match=r"^knobs\.ffn_keep=1\.5"):
        Knobs(weight_bits=base.weight_bits, kv_bits=base.kv_bits, act_bits=base.act_bits,
              ffn_keep=base.ffn_keep.at[0].set(1.5), token_keep=base.token_keep, head_keep=base.head_keep)
    with pytest.raises(ValueError, match=r"^knobs\.weight_bits: 3 entries"):
        workload(cfg, Scenario(), Knobs.default(3, Scenario()))
