"""Preset GPUs, each figure with its source.

Peak rates, bandwidths and prices of H800, H20, A800 and Ascend 910B are the Step-3 paper's
(StepFun, arXiv 2507.19427, Table 4; A800 and 910B have no FP8, so their 8-bit rate is the
BF16 rate, as in the paper's unit costs). H100 SXM and H200 SXM are from NVIDIA's datasheets
(dense, i.e. without 2:4 sparsity): H100 Tensor Core GPU datasheet (2023): 989 TFLOP/s BF16,
1979 TFLOP/s FP8, 3.35 TB/s HBM3, 80 GB, 700 W; H200 Tensor Core GPU datasheet (2024): same
compute, 4.8 TB/s HBM3e, 141 GB, 700 W. Their hourly price is not in any paper we reproduce:
both default to the paper's H800 rate (2.00 USD/h) so that costs compare chip for chip;
override it (`gpu("h200", price_per_hour=...)`) with a real quote.

Memory: H800 SXM5 80 GB HBM3 (NVIDIA H800 datasheet), H20 96 GB HBM3 (NVIDIA H20 product
brief), A800 SXM4 80 GB HBM2e (NVIDIA A800 datasheet), Ascend 910B 64 GB HBM2e (Huawei Atlas
800T A2 specification). Board power (TDP): 700 W for H800/H100/H200 SXM, 400 W for H20 and
A800 SXM (datasheets); 400 W for the 910B is an assumption (no datasheet figure). Die area:
GH100 814 mm^2 (NVIDIA H100 whitepaper), GA100 826 mm^2 (NVIDIA A100 whitepaper); the 910B's
is unpublished and 456 mm^2 is the Ascend 910 compute die (Liao et al., Hot Chips 31, 2019).

Energy: HBM access costs about 3.9 pJ/bit = 31.2 pJ/byte (O'Connor et al., Fine-Grained
DRAM, MICRO 2017, for HBM2; used for every HBM generation here). The rest of the board power
is attributed to arithmetic at peak rate: energy_per_flop = (TDP - bandwidth *
energy_per_byte) / peak, so a chip running both at full rate draws exactly its TDP. Static
power defaults to zero (energy counts work done; set it from a measured idle draw).
"""

from __future__ import annotations

import jax.numpy as jnp

from hwcost._gpu import GPU

HBM_ENERGY_PER_BYTE_J = 3.9e-12 * 8
DEFAULT_SHARPNESS = 20.0  # smooth max at most 5% above the sharp roofline (at a tie)

# name: (bf16 FLOP/s, fp8 FLOP/s or None, bytes/s, capacity bytes, USD/h, TDP W, die mm^2)
_SPECS: dict[str, tuple[float, float | None, float, float, float, float, float]] = {
    "h800": (9.89e14, 1.98e15, 3.35e12, 80e9, 2.00, 700.0, 814.0),
    "h20": (1.48e14, 2.96e14, 4.00e12, 96e9, 0.80, 400.0, 814.0),
    "a800": (3.12e14, None, 2.00e12, 80e9, 0.75, 400.0, 826.0),
    "ascend-910b": (2.80e14, None, 1.60e12, 64e9, 0.67, 400.0, 456.0),
    "h100-sxm": (9.89e14, 1.979e15, 3.35e12, 80e9, 2.00, 700.0, 814.0),
    "h200": (9.89e14, 1.979e15, 4.80e12, 141e9, 2.00, 700.0, 814.0),
}
_ALIASES = {"910b": "ascend-910b", "h100": "h100-sxm", "h200-sxm": "h200"}
PRESETS: tuple[str, ...] = tuple(_SPECS)


def gpu(name: str, dtype=jnp.float32, **overrides: float) -> GPU:
    """The preset GPU `name` (case-insensitive; see PRESETS), with any field overridden."""
    key = _ALIASES.get(name.lower(), name.lower()) if isinstance(name, str) else name
    if key not in _SPECS:
        raise ValueError(f"target={name!r}: must be one of {', '.join(PRESETS)}")
    bf16, fp8, bandwidth, capacity, price, tdp, area = _SPECS[key]
    fp8 = fp8 or bf16
    compute_power = tdp - bandwidth * HBM_ENERGY_PER_BYTE_J
    fields = dict(
        peak_flops_bf16=bf16, peak_flops_fp8=fp8, mem_bandwidth=bandwidth, mem_capacity=capacity,
        price_per_hour=price, energy_per_flop_bf16=compute_power / bf16, energy_per_flop_fp8=compute_power / fp8,
        energy_per_byte=HBM_ENERGY_PER_BYTE_J, static_power_w=0.0, area_mm2=area, compute_efficiency=1.0,
        memory_efficiency=1.0, activation_traffic=1.0, sharpness=DEFAULT_SHARPNESS)
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a GPU parameter (allowed: {', '.join(fields)})")
    fields.update(overrides)
    return GPU(name=key, **{k: jnp.asarray(v, dtype) for k, v in fields.items()})
