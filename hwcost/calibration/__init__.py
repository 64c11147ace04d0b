"""hwcost.calibration: fit a GPU's efficiency curves to measured kernel times.

    target, report = hwcost.calibrate("results/kernels_h200.json", "h200")   # a CalibratedGPU
    hwcost.save_preset(target, "h200-calibrated.json", report)               # get_target(path) reads it

hwcost re-exports every name here.
"""

from hwcost.calibration._calibrate import (DATA_SCHEMA, PRESET_SCHEMA, CalibratedGPU, Efficiency, KernelData,
                                           calibrate, calibrated, error_table, format_errors, item_kernels, load_data,
                                           load_preset, predict, save_preset)

__all__ = [
    "Efficiency", "KernelData", "CalibratedGPU", "calibrate", "calibrated", "error_table", "format_errors",
    "load_data", "load_preset", "predict", "save_preset", "item_kernels", "DATA_SCHEMA", "PRESET_SCHEMA",
]
