"""Step-3 (StepFun, "Step-3 is Large yet Affordable", arXiv 2507.19427): every number we can compute.

Published values (the `paper` column) are transcribed from the paper's Tables 2-7 and 9 and
section 4-5 text. Everything in the `ours` column is computed from the zoo configs
(`nets.zoo`) and the GPU presets; the only inputs taken from the paper besides the configs
and chip figures are deployment settings (8-bit precisions, context lengths, the 50 ms TPOT
target, NIC speeds, the 2A2F layout and its batch sizes, the measured 47.5 ms TPOT).

Tolerances (rules in `hwcost.Row`): figures derived exactly are checked at `EXACT`
(1%); USD per 1M tokens and minimum sparsities, printed to three decimals, to one unit of
that digit (0.001); roofline time and throughput are bounds of the measured ones. Rows that
restate the paper's arithmetic on its own inputs (unit costs, the AFD budget example, the
measured TGS, the model's sparsity formula, Table 7's minimum sparsities: the paper's closed
form on its own H, L, chip and NIC figures) are identity rows, shown but not counted.
"""

from __future__ import annotations

import nets
from hwcost.targets._afd import (cheapest_per_side, decode_cost_per_token, min_moe_sparsity, stage_budget_s,
                         throughput_tgs, transfer_bytes, afd)
from hwcost.targets._presets import gpu
from hwcost.reproductions._rows import EXACT, Row, register
from hwcost._scenario import Scenario
from hwcost._workload import ATTENTION_CORE, ATTENTION_SIDE, FFN_GEMMS, PROJECTIONS, attention_intensity, workload

MODELS = {"Step-3": "step-3", "DeepSeek-V3": "deepseek-v3", "Qwen3-235B": "qwen3-235b-a22b"}
CHIPS = {"H800": "h800", "H20": "h20", "A800": "a800", "910B": "ascend-910b"}
CONTEXTS = {"8K": 8192, "32K": 32768}

# Table 2/3: KV bytes @8K/@32K, attention FLOPs @8K/@32K, linear FLOPs, FFN FLOPs (per token).
TABLE3 = {
    "DeepSeek-V3": (2.88e8, 1.15e9, 1.47e11, 5.89e11, 2.28e10, 4.84e10),
    "Qwen3-235B": (7.89e8, 3.15e9, 2.52e10, 1.01e11, 1.34e10, 2.84e10),
    "Step-3": (2.56e8, 1.02e9, 3.27e10, 1.31e11, 2.07e10, 5.33e10),
}
INTENSITY = {"Step-3": 128.0, "DeepSeek-V3": 512.0, "Qwen3-235B": 32.0}
# Table 5: USD per FLOP (FP8 where available, else BF16), USD per byte.
UNIT_COSTS = {"H800": (2.80e-19, 1.66e-16), "H20": (7.51e-19, 5.56e-17), "A800": (6.68e-19, 1.04e-16),
              "910B": (6.65e-19, 1.16e-16)}
# Table 6: USD per 1M tokens, (attention @8K, attention @32K, FFN) per chip H800/H20/A800/910B.
TABLE6 = {
    "Step-3": ((.048, .040, .040, .043), (.176, .114, .120, .133), (.015, .040, .036, .035)),
    "DeepSeek-V3": ((.054, .128, .114, .113), (.197, .460, .409, .407), (.014, .036, .032, .032)),
    "Qwen3-235B": ((.135, .054, .091, .101), (.527, .185, .338, .376), (.008, .021, .019, .019)),
}
AFD_TOTALS = {"Step-3": (0.055, 0.129), "DeepSeek-V3": (0.068, 0.211), "Qwen3-235B": (0.062, 0.193)}
TRAINING_USD_PER_M = 0.213  # Step-3 on 910B, 3x forward FLOPs at 100% MFU
# Table 7: minimum MoE sparsity for H = 7168, L = 61; NICs per node (count, Gbit/s).
TABLE7 = {"H800": 0.058, "H20": 0.007, "A800": 0.031, "910B": 0.034}
NICS = {"H800": (8, 400.0), "H20": (8, 400.0), "A800": (8, 200.0), "910B": (8, 200.0)}
TPOT_SLA_S = 0.050
# Section 4: the 2A2F budget example and the measured FP8 deployment.
BUDGET_US, LINK_GBPS, A2F_US, F2A_US = 272.0, 161.3, 91.0, 182.0
MEASURED_TPOT_S, MEASURED_BATCH, MEASURED_GPUS, MEASURED_TGS = 0.0475, 6144, 32, 4039.0
# Table 9: measured attention-layer time (us), 4 GPUs, batch 256, per chip H800/H20/A800.
TABLE9 = {
    ("MFA", "8K"): (281, 438, 531), ("MFA", "32K"): (791, 1452, 1484),
    ("MLA", "8K"): (372, 1252, None), ("MLA", "32K"): (1125, 4817, None),
    ("GQA", "8K"): (382, 812, 791), ("GQA", "32K"): (1391, 3042, 3010),
}
TABLE9_MODELS = {"MFA": "step-3", "MLA": "deepseek-v3", "GQA": "qwen3-235b-a22b"}
STEP3_PARAMS = (316e9, 38e9, 0.0816)  # total, activated, sparsity (k + shared)/(E + shared)


def _fp8(**changes) -> Scenario:
    return Scenario(phase="decode", weight_bits=8, kv_bits=8, act_bits=8, dispatch_bits=8, combine_bits=16,
                    **changes)


def _table3_rows() -> list[Row]:
    rows = []
    for label, key in MODELS.items():
        cfg = nets.zoo.get(key)
        kv8, kv32, att8, att32, linear, ffn = TABLE3[label]
        per_context = {}
        for ctx_label, ctx in CONTEXTS.items():
            w = workload(cfg, _fp8(batch=1, context_len=ctx))
            per_context[ctx_label] = w
        w8, w32 = per_context["8K"], per_context["32K"]
        kv_read = lambda w: float(w.total_bytes("kv", ATTENTION_CORE))  # noqa: E731 - the cached context read
        rows += [
            Row(f"{label} KV bytes/token @8K", kv8, kv_read(w8), "rel", 0.01, "bytes"),
            Row(f"{label} KV bytes/token @32K", kv32, kv_read(w32), "rel", 0.01, "bytes"),
            Row(f"{label} attention FLOPs/token @8K", att8, float(w8.total_flops(ATTENTION_CORE)), "rel", 0.01, "FLOPs"),
            Row(f"{label} attention FLOPs/token @32K", att32, float(w32.total_flops(ATTENTION_CORE)), "rel", 0.01,
                "FLOPs"),
            Row(f"{label} linear FLOPs/token", linear, float(w8.total_flops(PROJECTIONS)), "rel", EXACT, "FLOPs"),
            Row(f"{label} FFN FLOPs/token", ffn, float(w8.total_flops(FFN_GEMMS)), "rel", EXACT, "FLOPs"),
            Row(f"{label} attention intensity", INTENSITY[label], attention_intensity(cfg), "rel", 0.01, "FLOPs/byte"),
        ]
    return rows


def _cost_rows() -> list[Row]:
    chips = {label: gpu(key) for label, key in CHIPS.items()}
    rows = []
    for label, chip in chips.items():
        usd_flop, usd_byte = UNIT_COSTS[label]
        why = "price / (3600 x peak) with the same price and peak the paper divides"
        rows.append(Row(f"{label} unit cost per FLOP", usd_flop, float(chip.usd_per_flop(8.0)), "rel", 0.01, "USD/FLOP",
                        kind="identity", why=why))
        rows.append(Row(f"{label} unit cost per byte", usd_byte, float(chip.usd_per_byte()), "rel", 0.01, "USD/byte",
                        kind="identity", why=why.replace("peak", "bandwidth")))
    for label, key in MODELS.items():
        cfg = nets.zoo.get(key)
        att8, att32, ffn = TABLE6[label]
        for i, (chip_label, chip) in enumerate(chips.items()):
            c8 = decode_cost_per_token(cfg, chip, CONTEXTS["8K"])
            c32 = decode_cost_per_token(cfg, chip, CONTEXTS["32K"])
            rows += [
                Row(f"{label} attention @8K on {chip_label}", att8[i], 1e6 * float(c8["attention"]), "abs", 0.001,
                    "USD/1M tokens"),
                Row(f"{label} attention @32K on {chip_label}", att32[i], 1e6 * float(c32["attention"]), "abs", 0.001,
                    "USD/1M tokens"),
                Row(f"{label} FFN on {chip_label}", ffn[i], 1e6 * float(c8["ffn"]), "abs", 0.001, "USD/1M tokens"),
            ]
        for (ctx_label, ctx), paper in zip(CONTEXTS.items(), AFD_TOTALS[label]):
            best = cheapest_per_side(cfg, chips, ctx)
            rows.append(Row(f"{label} AFD total @{ctx_label} (attention {best['attention_target']}, "
                            f"FFN {best['ffn_target']})", paper, 1e6 * float(best["total_usd"]), "abs", 0.001,
                            "USD/1M tokens"))
    step3 = nets.zoo.get("step-3")
    w = workload(step3, _fp8(batch=1, context_len=CONTEXTS["8K"]))
    forward = float(w.total_flops(ATTENTION_CORE + PROJECTIONS + FFN_GEMMS))
    rows.append(Row("Step-3 training cost on 910B (3x forward FLOPs @8K, 100% MFU)", TRAINING_USD_PER_M,
                    1e6 * 3 * forward * float(chips["910B"].usd_per_flop(16.0)), "abs", 0.001, "USD/1M tokens"))
    return rows


def _afd_rows() -> list[Row]:
    step3 = nets.zoo.get("step-3")
    rows = []
    for label, key in CHIPS.items():
        count, gbps = NICS[label]
        ours = float(min_moe_sparsity(gpu(key), step3.d_model, step3.n_layers, count * gbps * 1e9 / 8, TPOT_SLA_S))
        rows.append(Row(f"minimum MoE sparsity on {label} (H=7168, L=61)", TABLE7[label], ours, "abs", 0.001, "",
                        kind="identity", why="the paper's closed form H x FLOPs x L / (Net x Bandwidth x 11.1 ms) on "
                                             "its own H, L, chip peak, bandwidth and NIC figures"))
    budget = stage_budget_s(TPOT_SLA_S, step3.n_layers)
    a2f, f2a = transfer_bytes(step3, micro_batch=128, ffn_instances=2, dispatch_bits=8, combine_bits=16)
    link = (a2f + f2a) / budget
    identity = dict(kind="identity")
    rows += [
        Row("AFD per-layer stage budget (50 ms TPOT, 3 stages, 61 layers)", BUDGET_US, budget * 1e6, "rel", 0.01, "us",
            **identity, why="50 ms / 3 stages / 61 layers: the paper's division of its own numbers"),
        Row("AFD link bandwidth for the 2A2F example (batch 128/GPU)", LINK_GBPS, link * 8 / 1e9, "rel", 0.01, "Gbit/s",
            **identity, why="the paper's example bytes (2 x 128 x 7168 x (1 + 2)) over its own stage budget"),
        Row("AFD A->F transfer (2*128*7168 B, FP8)", A2F_US, a2f / link * 1e6, "rel", 0.01, "us",
            **identity, why="a2f / ((a2f + f2a) / budget) = budget / 3: fixed by the budget and bit widths"),
        Row("AFD F->A transfer (2*128*7168*2 B, BF16)", F2A_US, f2a / link * 1e6, "rel", 0.01, "us",
            **identity, why="f2a / ((a2f + f2a) / budget) = 2 x budget / 3: fixed by the budget and bit widths"),
        Row("Step-3 FP8 2A2F TGS at measured TPOT 47.5 ms (6144 tokens, 32 GPUs)", MEASURED_TGS,
            throughput_tgs(MEASURED_BATCH, MEASURED_GPUS, MEASURED_TPOT_S), "rel", 0.01, "tokens/GPU/s",
            **identity, why="batch / (GPUs x TPOT) from the paper's own batch, GPU count and measured TPOT"),
    ]
    h800 = gpu("h800")
    deployment = afd(h800, h800, link_gbps=NICS["H800"][1], tpot_sla_s=TPOT_SLA_S, attention_gpus=16, ffn_gpus=16,
                     ffn_instances=2, micro_batches=3)
    cost = deployment.deployment_cost(step3, _fp8(batch=MEASURED_BATCH, context_len=4096))
    rows += [
        Row("Step-3 FP8 2A2F roofline TPOT <= measured (4K ctx)", MEASURED_TPOT_S * 1e3, float(cost.tpot_s) * 1e3,
            "at_most", 0.0, "ms"),
        Row("Step-3 FP8 2A2F roofline TGS >= measured", MEASURED_TGS, float(cost.tokens_per_gpu_s), "at_least", 0.0,
            "tokens/GPU/s"),
    ]
    return rows


def _table9_rows() -> list[Row]:
    """Roofline time of one attention layer (4 GPUs, batch 256: data-parallel, 64 per GPU) <= measured."""
    rows = []
    for (family, ctx_label), measured in TABLE9.items():
        cfg = nets.zoo.get(TABLE9_MODELS[family])
        work = workload(cfg, _fp8(batch=256 // 4, context_len=CONTEXTS[ctx_label]))
        for chip_label, value in zip(("H800", "H20", "A800"), measured):
            if value is None:
                continue
            cost = gpu(CHIPS[chip_label]).cost(work)
            layer_us = float(cost.of_ops(ATTENTION_SIDE, "op_latency_s")) / cfg.n_layers * 1e6
            rows.append(Row(f"{family} attention layer @{ctx_label} on {chip_label}: roofline <= measured",
                            float(value), layer_us, "at_most", 0.0, "us"))
    return rows


def _model_rows() -> list[Row]:
    cfg = nets.zoo.get("step-3")
    counts = nets.count_params(cfg)
    f = cfg.ffn
    sparsity = (f.top_k + f.n_shared_experts) / (f.n_experts + f.n_shared_experts)
    total, active, paper_sparsity = STEP3_PARAMS
    return [Row("Step-3 total parameters", total, float(counts.total), "rel", 0.01, "params"),
            Row("Step-3 activated parameters", active, float(counts.active), "rel", EXACT, "params"),
            Row("Step-3 MoE sparsity (k+shared)/(E+shared)", paper_sparsity, sparsity, "abs", 0.0001, "",
                kind="identity", why="the paper's formula on the paper's own expert counts (k, shared, E)")]


@register("step3")
def reproduce_step3() -> list[Row]:
    """Step-3's Tables 2/3, 5, 6, 7, 9, the AFD totals and budgets, and the model's sizes."""
    return _model_rows() + _table3_rows() + _cost_rows() + _afd_rows() + _table9_rows()
