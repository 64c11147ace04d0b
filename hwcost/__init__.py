"""hwcost: workloads derived from model configs and differentiable hardware cost models (Equinox).

    work = hwcost.workload(nets.zoo.get("step-3"), hwcost.Scenario(phase="decode", batch=64, context_len=8192))
    cost = hwcost.gpu("h800").cost(work)          # latency_s, energy_j, dollars, memory_bytes, area_mm2

A workload is a pure function of (config, scenario, knobs), differentiable in the knobs;
a target is an `eqx.Module` whose float fields are the hardware parameters, so the cost is
differentiable in both. `hwcost.reproduce("step3")` checks the Step-3 paper's numbers.
"""

from hwcost._scenario import PHASES, Scenario
from hwcost._smooth import smooth_max, smooth_max2
from hwcost._workload import (ATTENTION_CORE, ATTENTION_SIDE, EXCLUDED_FROM_TABLES, FFN_GEMMS, FFN_SIDE,
                              FOOTPRINT_KINDS, KINDS, OPS, PROJECTIONS, Knobs, Workload, attention_intensity,
                              cache_bytes_per_token, experts_touched, workload)
from hwcost._gpu import GPU, Cost
from hwcost._presets import PRESETS, gpu
from hwcost._afd import (AMORTISED_BATCH, AFDCost, AFDTarget, afd, cheapest_per_side, decode_cost_per_token,
                         min_moe_sparsity, paper_accounting, stage_budget_s, throughput_tgs, transfer_bytes)
from hwcost._xrnpe import XRNPE, xrnpe
from hwcost._batching import BatchSteps, ContinuousBatching, StepWork, expert_token_counts, moe_intensity, step_work
from hwcost._duplex import (PIM, Duplex, DuplexCost, DuplexKnobs, codesign_split_macs, devices_needed, duplex,
                            grid_search, pim, roofline_crossover, throughput_gains)
from hwcost._spatten import (SpAtten, SpAttenCost, SpAttenWorkload, dram_reduction, kv_sram_bytes, pruning_knobs,
                             spatten_knobs, spatten_workload)
from hwcost._cambricon import (FLASH_CONFIGS, CambriconLLM, FlexGenSSD, cambricon, exhaustive_flash_search, flash_size,
                               flexgen_ssd, gradient_flash_search, paper_scenario as cambricon_scenario)
from hwcost._ecc import ENCODINGS, dequantize, ecc_corruption, inject_bit_flips, quantize_int8
from hwcost._calibrate import (CalibratedGPU, Efficiency, KernelData, calibrate, error_table, load_data, load_preset,
                               load_target, predict, save_preset)
from hwcost._reproduce import PAPERS, Row, register, reproduce
from hwcost._report import cost_report, load_model
from hwcost import _reproduce_step3  # noqa: F401  (registers "step3")
from hwcost import _reproduce_duplex  # noqa: F401  (registers "duplex")
from hwcost import _reproduce_spatten  # noqa: F401  (registers "spatten")
from hwcost import _reproduce_cambricon  # noqa: F401  (registers "cambricon")

__all__ = [
    "PHASES", "Scenario", "smooth_max", "smooth_max2",
    "ATTENTION_CORE", "ATTENTION_SIDE", "EXCLUDED_FROM_TABLES", "FFN_GEMMS", "FFN_SIDE", "FOOTPRINT_KINDS", "KINDS",
    "OPS", "PROJECTIONS", "Knobs", "Workload", "attention_intensity", "cache_bytes_per_token", "experts_touched",
    "workload", "GPU", "Cost", "PRESETS", "gpu",
    "AMORTISED_BATCH", "AFDCost", "AFDTarget", "afd", "cheapest_per_side", "decode_cost_per_token",
    "min_moe_sparsity", "paper_accounting", "stage_budget_s", "throughput_tgs", "transfer_bytes",
    "PAPERS", "Row", "register", "reproduce", "cost_report", "load_model",
    "XRNPE", "xrnpe",
    "BatchSteps", "ContinuousBatching", "StepWork", "expert_token_counts", "moe_intensity", "step_work",
    "PIM", "Duplex", "DuplexCost", "DuplexKnobs", "codesign_split_macs", "devices_needed", "duplex", "grid_search",
    "pim", "roofline_crossover", "throughput_gains",
    "SpAtten", "SpAttenCost", "SpAttenWorkload", "dram_reduction", "kv_sram_bytes", "pruning_knobs", "spatten_knobs",
    "spatten_workload",
    "FLASH_CONFIGS", "CambriconLLM", "FlexGenSSD", "cambricon", "cambricon_scenario", "exhaustive_flash_search",
    "flash_size", "flexgen_ssd", "gradient_flash_search", "ENCODINGS", "dequantize", "ecc_corruption",
    "inject_bit_flips", "quantize_int8",
    "CalibratedGPU", "Efficiency", "KernelData", "calibrate", "error_table", "load_data", "load_preset", "load_target",
    "predict", "save_preset",
]
