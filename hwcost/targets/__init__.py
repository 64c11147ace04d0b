"""hwcost.targets: the `Target` protocol and every hardware target that implements it.

    target = hwcost.targets.gpu("h200")          # also hwcost.gpu: hwcost re-exports every name here
    cost = target.cost(hwcost.workload(cfg, scenario))

Each target is an `eqx.Module` whose float fields are hardware parameters, with one method
`cost(workload) -> Cost` (`Target`). The modules, one concern each:
- `_target`: the protocol (`Target`, `Cost`) and the input checks every target shares;
- `_gpu`, `_presets`: the roofline GPU and the accelerator presets (`gpu(name)`);
- `_afd`: Step-3's attention-FFN disaggregation and its cost accounting;
- `_batching`, `_duplex`, `_duplex_codesign`: continuous batching, the Duplex xPU + Logic-PIM
  system, and its co-design demo;
- `_cambricon`, `_ecc`: Cambricon-LLM (NPU + in-flash compute), its flash searches and the
  on-die ECC bit-error study;
- `_spatten`: the SpAtten pruning accelerator and its per-engine workload;
- `_xrnpe`: the XR-NPE mixed-precision MAC engine;
- `_descent`: the small optax loop the co-design demos share.
A calibrated GPU lives in `hwcost.calibration` (it needs the fitted efficiency model), and
the one lookup by name, `hwcost.get_target`, at the top of the package (it joins both).
"""

from hwcost.targets._target import Cost, Target
from hwcost.targets._gpu import GPU
from hwcost.targets._presets import PRESETS, STATIC_POWER_W, gpu
from hwcost.targets._afd import (AFDCost, AFDTarget, afd, cheapest_per_side, decode_cost_per_token, min_moe_sparsity,
                                 paper_accounting, stage_budget_s, throughput_tgs, transfer_bytes)
from hwcost.targets._xrnpe import XRNPE, xrnpe
from hwcost.targets._batching import (BatchSteps, ContinuousBatching, StepWork, expert_token_counts, moe_intensity,
                                      step_work)
from hwcost.targets._duplex import (PIM, Duplex, DuplexCost, DuplexKnobs, duplex, duplex_xpu, pim, roofline_crossover,
                                    throughput_gains)
from hwcost.targets._duplex_codesign import codesign_split_macs, grid_search, objective_at
from hwcost.targets._spatten import (SpAtten, SpAttenCost, SpAttenWorkload, dram_reduction, kv_sram_bytes,
                                     pruning_knobs, spatten_knobs, spatten_workload)
from hwcost.targets._cambricon import (FLASH_CONFIGS, CambriconLLM, FlexGenSSD, cambricon, exhaustive_flash_search,
                                       flash_size, flexgen_ssd, gradient_flash_search)
from hwcost.targets._ecc import ENCODINGS, dequantize, ecc_corruption, inject_bit_flips, quantize_int8, stored_bytes

__all__ = [
    # the protocol
    "Target", "Cost",
    # GPUs and accelerator presets
    "GPU", "gpu", "PRESETS", "STATIC_POWER_W",
    # Step-3's attention-FFN disaggregation
    "AFDTarget", "AFDCost", "afd", "cheapest_per_side", "decode_cost_per_token", "min_moe_sparsity",
    "paper_accounting", "stage_budget_s", "throughput_tgs", "transfer_bytes",
    # Duplex and continuous batching
    "Duplex", "DuplexCost", "DuplexKnobs", "duplex", "duplex_xpu", "PIM", "pim", "roofline_crossover",
    "throughput_gains", "BatchSteps", "ContinuousBatching", "StepWork", "step_work", "expert_token_counts",
    "moe_intensity", "codesign_split_macs", "grid_search", "objective_at",
    # Cambricon-LLM, its flash-offloading baseline and its on-die ECC
    "CambriconLLM", "cambricon", "FLASH_CONFIGS", "exhaustive_flash_search", "flash_size", "gradient_flash_search",
    "FlexGenSSD", "flexgen_ssd", "dequantize", "ecc_corruption", "inject_bit_flips", "quantize_int8", "stored_bytes",
    "ENCODINGS",
    # SpAtten
    "SpAtten", "SpAttenCost", "SpAttenWorkload", "spatten_workload", "spatten_knobs", "pruning_knobs",
    "kv_sram_bytes", "dram_reduction",
    # XR-NPE
    "XRNPE", "xrnpe",
]
