"""hwcost.calibration: fit a GPU's efficiency curves to measured kernel times.

    target, report = hwcost.calibrate("results/kernels_h200.json", "h200")   # a CalibratedGPU
    hwcost.save_preset(target, "h200-calibrated.json", report)               # get_target(path) reads it

The modules, one concern each: `_efficiency` (the efficiency curves), `_software` (the
software-efficiency layer: a profile of whose kernels, and the calibrated time of one
kernel), `_kernels` (the kernels a workload or a measured item launches), `_data` (kernel
data files and the held-out split), `_fit` (the fit, its error tables, `calibrate` and
`transfer`), `_preset` (the `CalibratedGPU` target and its JSON preset), `_energy` (a
busy power, energy per FLOP and per byte fitted to measured board power: `fit_energy`). hwcost re-exports
every name here.
"""

from hwcost.calibration._efficiency import KERNEL_GROUPS, Efficiency
from hwcost.calibration._software import SCAN_CACHE_COPIES, STEP_PHASES, Software, software
from hwcost.calibration._kernels import item_kernels, roofline_seconds, workload_kernels
from hwcost.calibration._data import (CEILING_KIND, DATA_SCHEMA, KernelData, item_family, load_data, merge_data,
                                     program_of, split_heldout)
from hwcost.calibration._preset import PRESET_SCHEMA, CalibratedGPU, calibrated, load_preset, save_preset
from hwcost.calibration._fit import calibrate, error_table, format_errors, predict, transfer, transfer_errors
from hwcost.calibration._energy import ENERGY_TERMS, EnergyFit, fit_energy

__all__ = [
    # the model
    "Efficiency", "KERNEL_GROUPS", "CalibratedGPU", "calibrated", "Software", "software", "STEP_PHASES",
    # kernels of a workload or a measured item
    "workload_kernels", "item_kernels", "roofline_seconds", "SCAN_CACHE_COPIES",
    # data, fit and report
    "KernelData", "load_data", "merge_data", "program_of", "split_heldout", "item_family", "DATA_SCHEMA",
    "CEILING_KIND", "calibrate", "predict",
    "error_table", "format_errors", "transfer", "transfer_errors",
    # energy above idle from measured board power
    "fit_energy", "EnergyFit", "ENERGY_TERMS",
    # presets
    "save_preset", "load_preset", "PRESET_SCHEMA",
]
