"""hwcost: workloads derived from model configs and differentiable hardware cost models (Equinox).

    work = hwcost.workload(nets.zoo.get("step-3"), hwcost.Scenario(phase="decode", batch=48, context_len=8192))
    cost = hwcost.get_target("h800").cost(work)   # latency_s, energy_j, dollars, memory_bytes, area_mm2
    cost = hwcost.get_target("afd").cost(work)    # the same protocol on every target

A workload is a pure function of (config, scenario, knobs), differentiable in the knobs;
a target is an `eqx.Module` (a `hwcost.Target`) whose float fields are the hardware
parameters, so the cost is differentiable in both. `hwcost.get_target(name or preset file)`
is the one lookup (`hwcost.target_names()` lists the names); a Cost field a target does not
model is NaN and raises when asked for (`Cost.value`). `hwcost.reproduce("step3")` checks a
paper's numbers.

Layout: the workload (`Scenario`, `Knobs`, `Workload`, `workload`), the smooth maximum, the
one target lookup (`get_target`) and the cost report sit at the top; the parts are
subpackages, each with its own small `__all__`: `hwcost.targets` (the `Target` protocol and
every target), `hwcost.calibration` (fitting a GPU's efficiency curves to measured kernels,
the `CalibratedGPU`), `hwcost.reproductions` (published tables recomputed row by row), and
`hwcost.parallel` (a step split over many GPUs; used through its own namespace).
Dependencies: targets use the workload; calibration uses targets; the reproductions and the
lookup use targets and calibration; parallel uses the public names of this module.

The public API is this module's `__all__` (the names of targets, calibration and
reproductions are re-exported here),
in groups: workloads; the target protocol and lookup; the targets with their own richer
APIs; calibration; reproductions. The last group's paper-specific helpers (Step-3's cost
accounting, the Duplex and Cambricon co-design demos, the flash bit-error study) serve the
reproductions and demo scripts, not the joint loop.
"""

from hwcost._scenario import PHASES, Scenario
from hwcost._smooth import smooth_max, smooth_max2
from hwcost._workload import (ATTENTION_CORE, ATTENTION_SIDE, FFN_GEMMS, FFN_SIDE, FOOTPRINT_KINDS, KINDS, OPS,
                              PROJECTIONS, Knobs, Workload, attention_intensity, cache_bytes_per_token, workload)
from hwcost.targets import (ENCODINGS, FLASH_CONFIGS, GPU, PIM, PRESETS, STATIC_POWER_W, XRNPE, AFDCost, AFDTarget,
                            BatchSteps, CambriconLLM, ContinuousBatching, Cost, Duplex, DuplexCost, DuplexKnobs,
                            FlexGenSSD, SpAtten, SpAttenCost, SpAttenWorkload, StepWork, Target, afd, cambricon,
                            cheapest_per_side, codesign_split_macs, decode_cost_per_token, dequantize, dram_reduction, duplex, duplex_xpu,
                            ecc_corruption, exhaustive_flash_search, expert_token_counts, flash_size, flexgen_ssd, gpu,
                            gradient_flash_search, grid_search, inject_bit_flips, kv_sram_bytes, min_moe_sparsity,
                            moe_intensity, objective_at, paper_accounting, pim, pruning_knobs, quantize_int8,
                            roofline_crossover, spatten_knobs, spatten_workload, stage_budget_s, step_work,
                            stored_bytes, throughput_gains, throughput_tgs, transfer_bytes, xrnpe)
from hwcost._ops import (ATTENTION_OP_KINDS, FORMATS, attention_config, attention_op, elementwise_op, format_bits,
                         gemm_op, is_whole_step, moe_config, moe_op, norm_op, op_workload)
from hwcost.calibration import (CEILING_KIND, DATA_SCHEMA, ENERGY_TERMS, KERNEL_GROUPS, PRESET_SCHEMA,
                                SCAN_CACHE_COPIES, STEP_PHASES, CalibratedGPU, Efficiency, EnergyFit, KernelData,
                                Software, calibrate, calibrated, error_table, fit_energy, format_errors, item_family,
                                item_kernels, load_data, load_preset, merge_data, predict, program_of, roofline_seconds,
                                save_preset, software, split_heldout, transfer, transfer_errors, workload_kernels)
from hwcost._registry import get_target, target_names
from hwcost.reproductions import PAPERS, Row, register, reproduce
from hwcost._report import cost_report, load_model

TARGETS: tuple[str, ...] = target_names()

__all__ = [
    # workloads
    "PHASES", "Scenario", "Knobs", "Workload", "workload", "OPS", "KINDS", "FOOTPRINT_KINDS", "ATTENTION_CORE",
    "PROJECTIONS", "FFN_GEMMS", "ATTENTION_SIDE", "FFN_SIDE", "attention_intensity", "cache_bytes_per_token",
    "smooth_max", "smooth_max2",
    # single ops (a Workload of one kernel; a layer or a step is `workload`)
    "gemm_op", "attention_op", "moe_op", "norm_op", "elementwise_op", "op_workload", "attention_config", "moe_config",
    "FORMATS", "ATTENTION_OP_KINDS", "format_bits", "is_whole_step",
    # the target protocol and the one lookup
    "Target", "Cost", "get_target", "target_names", "TARGETS",
    # targets (each also keeps its own richer API)
    "GPU", "gpu", "PRESETS", "STATIC_POWER_W", "CalibratedGPU", "AFDTarget", "AFDCost", "afd", "Duplex", "DuplexCost",
    "DuplexKnobs",
    "duplex", "duplex_xpu", "PIM", "pim", "BatchSteps", "ContinuousBatching", "StepWork", "step_work", "CambriconLLM",
    "cambricon", "FLASH_CONFIGS", "FlexGenSSD", "flexgen_ssd", "SpAtten", "SpAttenCost", "SpAttenWorkload",
    "spatten_workload", "spatten_knobs", "pruning_knobs", "kv_sram_bytes", "dram_reduction", "XRNPE", "xrnpe",
    # calibration
    "Efficiency", "KernelData", "calibrate", "calibrated", "error_table", "format_errors", "load_data", "load_preset",
    "predict", "save_preset", "item_kernels", "workload_kernels", "roofline_seconds", "split_heldout", "KERNEL_GROUPS",
    "SCAN_CACHE_COPIES", "CEILING_KIND", "DATA_SCHEMA", "PRESET_SCHEMA", "Software", "software", "STEP_PHASES",
    "item_family", "transfer", "transfer_errors", "merge_data", "program_of", "fit_energy", "EnergyFit", "ENERGY_TERMS",
    # reports and reproductions
    "cost_report", "load_model", "PAPERS", "Row", "register", "reproduce",
    # paper-specific helpers (reproductions and demo scripts)
    "cheapest_per_side", "decode_cost_per_token", "min_moe_sparsity", "paper_accounting", "stage_budget_s",
    "throughput_tgs", "transfer_bytes", "codesign_split_macs", "grid_search", "objective_at", "throughput_gains",
    "roofline_crossover", "expert_token_counts", "moe_intensity", "exhaustive_flash_search", "flash_size",
    "gradient_flash_search", "dequantize", "ecc_corruption", "inject_bit_flips", "quantize_int8", "stored_bytes",
    "ENCODINGS",
]

from hwcost import parallel  # noqa: E402  (after the names it uses; the parallel cost model)
