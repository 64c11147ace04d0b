"""AFD: Table 7 minimum sparsity, the 2A2F budget figures, the measured deployment, validation."""

import jax.numpy as jnp
import pytest

import hwcost
import nets
from hwcost import Scenario, gpu

# Step-3 Table 7 (H = 7168, L = 61; NICs 8 x 400 Gbit/s on H800/H20, 8 x 200 on A800/910B)
TABLE7 = {"h800": (0.058, 400.0), "h20": (0.007, 400.0), "a800": (0.031, 200.0), "ascend-910b": (0.034, 200.0)}


@pytest.mark.parametrize("chip", list(TABLE7))
def test_table7_minimum_sparsity(chip):
    paper, nic_gbps = TABLE7[chip]
    ours = float(hwcost.min_moe_sparsity(gpu(chip), 7168, 61, 8 * nic_gbps * 1e9 / 8, 0.050))
    assert abs(ours - paper) <= 0.002


def test_budget_figures_of_the_2a2f_example():
    step3 = nets.zoo.get("step-3")
    budget = hwcost.stage_budget_s(0.050, step3.n_layers)
    assert budget * 1e6 == pytest.approx(272, rel=0.01)  # paper: 16.6 ms / 61 layers
    a2f, f2a = hwcost.transfer_bytes(step3, micro_batch=128, ffn_instances=2)
    assert (a2f, f2a) == (2 * 128 * 7168, 2 * 128 * 7168 * 2)
    link = (a2f + f2a) / budget  # bytes/s that fit one layer's exchange into the stage budget
    assert link * 8 / 1e9 == pytest.approx(161.3, rel=0.01)
    assert a2f / link * 1e6 == pytest.approx(91, rel=0.01)
    assert f2a / link * 1e6 == pytest.approx(182, rel=0.01)
    assert hwcost.throughput_tgs(6144, 32, 0.0475) == pytest.approx(4039, rel=0.01)


def _deployment(**kw):
    h800 = gpu("h800")
    return hwcost.afd(h800, h800, link_gbps=400.0, attention_gpus=16, ffn_gpus=16, ffn_instances=2, **kw)


def test_measured_fp8_deployment_is_above_the_roofline():
    """Step-3 FP8, 2A2F on 32 H800s, 6144 sequences (3 micro-batches of 2048), 4K context:
    measured TPOT 47.5 ms / 4039 TGS. The roofline must not be slower, and must meet the SLA."""
    scenario = Scenario(batch=6144, context_len=4096, weight_bits=8, kv_bits=8, act_bits=8, dispatch_bits=8,
                        combine_bits=16)
    cost = _deployment().deployment_cost(nets.zoo.get("step-3"), scenario)
    assert 0 < float(cost.tpot_s) <= 0.0475
    assert float(cost.tokens_per_gpu_s) >= 4039
    assert float(cost.sla_slack_s) > 0
    assert float(cost.tokens_per_gpu_s) == pytest.approx(6144 / (32 * float(cost.tpot_s)), rel=1e-6)
    assert cost.stage_s.shape == (3, 61)
    # the attention side holds the KV cache of 6144/16 = 384 sequences of 4K tokens at 512 B/token/layer
    kv = 384 * (4096 + 1) * 512 * 61
    assert float(cost.attention_memory_bytes) > kv
    assert float(cost.attention_memory_bytes) < 80e9 and float(cost.ffn_memory_bytes) < 80e9


def test_longer_context_and_slower_link_cost_more():
    cfg = nets.zoo.get("step-3")
    base = Scenario(batch=6144, context_len=4096, weight_bits=8, kv_bits=8, act_bits=8, dispatch_bits=8)
    t0 = float(_deployment().deployment_cost(cfg, base).tpot_s)
    assert float(_deployment().deployment_cost(cfg, base.replace(context_len=8192)).tpot_s) > t0
    assert float(hwcost.afd(gpu("h800"), gpu("h800"), link_gbps=25.0).deployment_cost(cfg, base).tpot_s) > t0


def test_afd_validation():
    cfg = nets.zoo.get("step-3")
    with pytest.raises(ValueError, match=r"^batch=100: must be a multiple of attention_gpus \* micro_batches = 48"):
        _deployment().deployment_cost(cfg, Scenario(batch=100))
    with pytest.raises(ValueError, match=r"^phase='prefill'"):
        _deployment().deployment_cost(cfg, Scenario(phase="prefill", batch=48))
    with pytest.raises(ValueError, match=r"^afd\.ffn_instances=3"):
        hwcost.afd(gpu("h800"), gpu("h20"), 100.0, ffn_gpus=16, ffn_instances=3)
    with pytest.raises(ValueError, match=r"^link_gbps=0"):
        hwcost.afd(gpu("h800"), gpu("h20"), 0)
    with pytest.raises(ValueError, match=r"^targets=\{\}"):
        hwcost.cheapest_per_side(cfg, {}, 8192)
    assert jnp.isfinite(_deployment().deployment_cost(cfg, Scenario(batch=48)).tpot_s)
