"""Preset accelerators (GPUs and TPUs, priced by `hwcost.GPU`), each figure with its source.

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

Wider and narrower formats (dense Tensor Core rates, FLOP/s): H100 SXM and H200 SXM: FP32
67 T (CUDA cores), TF32 494.7 T, INT8 1979 T (H100/H200 datasheets; the sparse TF32 figure
989 T halved); H800 SXM the same (H800 datasheet, GH100 at H100 SXM clocks); H20: FP32 44 T,
TF32 74 T (H20 product brief); A800 SXM4: FP32 19.5 T, TF32 156 T, INT8 624 T (A800
datasheet; its 8-bit rate stays the BF16 rate, as in Step-3's unit costs); Ascend 910B: no
published FP32 figure (priced at BF16 by the fallback rule, `hwcost.GPU`). No chip before
Blackwell has FP4: its FP4 rate is its FP8 rate (dequantised on the FP8 path). NVLink 4 on
H100/H200 SXM: 900 GB/s bidirectional per GPU (datasheets).

NVIDIA A100 SXM4 80GB (NVIDIA A100 Tensor Core GPU datasheet, 2021, dense figures): 312 TFLOP/s
BF16/FP16 Tensor Core, 156 TFLOP/s TF32, 19.5 TFLOP/s FP32, 624 TOPS INT8, no FP8 (8-bit rate = BF16),
80 GB HBM2e at 2039 GB/s, 400 W, NVLink 3 600 GB/s bidirectional per GPU (12 links of 50 GB/s);
GA100 826 mm^2 (A100 whitepaper). Price: no paper figure, the 2.00 USD/h placeholder.

NVIDIA B200 (HGX/DGX B200, 1000 W per GPU): DGX B200 specification (NVIDIA, 2024) for 8 GPUs:
72 PFLOP/s FP4 dense (144 sparse), 72 PFLOP/s FP8 sparse, 1440 GB HBM3e, 64 TB/s, 14.4 TB/s
aggregate NVLink; per GPU: FP4 9 P, FP8 and INT8 4.5 P, BF16 2.25 P, TF32 1.125 P (the HGX
B200 datasheet's sparse 18 / 72 / 36 / 18 P for 8 GPUs, halved and divided by 8), FP32
75 T (HGX B200: 600 T for 8), 180 GB, 8 TB/s, NVLink 5 1.8 TB/s. Die area: two
reticle-limited dies; 2 x 814 mm^2 is an assumption (NVIDIA publishes no area). Price: no
published figure; the placeholder 2.00 USD/h as for H100/H200.

Google Cloud TPUs (one chip; Cloud TPU documentation pages docs.cloud.google.com/tpu/docs/
v4, /v5e, /v5p, /v6e, /tpu7x):
- v4: 275 TFLOP/s BF16 (INT8 also 275 T), 32 GiB HBM2 at 1200 GB/s, ICI 3D mesh (six
  links; the bandwidth is not on the page: six links of 50 GB/s each way, 600 GB/s
  bidirectional per chip, is our reading of Jouppi et al., ISCA 2023, an assumption), measured max power 192 W (used as TDP).
- v5e: 197 T BF16, INT8 393 T (no FP8: 8-bit rate = BF16), 16 GB HBM2 at 819 GB/s, ICI 400
  GB/s bidirectional per chip.
- v5p: 459 T BF16, FP8 459 T (the page's FP8 row), 95 GiB HBM2e at 2765 GB/s, ICI 1200 GB/s
  bidirectional per chip.
- v6e (Trillium): 918 T BF16, INT8 1836 T, FP8 918 T (tpu7x page's comparison table), 32 GB
  HBM at 1638 GB/s, ICI 800 GB/s bidirectional per chip.
- TPU7x (Ironwood): 2307 T BF16, 4614 T FP8, 192 GiB HBM3e; 7.37 TB/s HBM and 1.2 TB/s
  bidirectional ICI per chip are Google's Ironwood announcement (April 2025), not the docs
  table we could read.
A TPU is priced by the same roofline (MXU peak against HBM bandwidth). What differs and is
not modelled: the MXU's 128x128 (256x256 on v6e/Ironwood) tile padding, the vector unit
running norms and softmax at a much lower rate than the MXU, XLA's fusion (one TPU program,
no kernel launches), and the torus ICI (network bytes are the AFD/scale-out models'
concern). FP32 and TF32 on a TPU are MXU multi-pass products (XLA's Precision.HIGHEST = 6
BF16 passes, HIGH = 3; JAX `jax.lax.Precision`): priced at BF16/6 and BF16/3, a derived
figure, not a datasheet one. No TPU has FP4: its rate is the 8-bit one. TDP is unpublished
for v5e, v5p, v6e and Ironwood: 250 W, 450 W, 300 W and 1000 W are assumptions (set
static/energy fields from a measured draw). Die areas are unpublished: 400 mm^2 (TPU v4's
"< 400 mm^2", Jouppi et al. 2023) is used for every TPU, an assumption. Price: Cloud TPU
on-demand list prices per chip-hour (us-central, cloud.google.com/tpu/pricing): v4 3.22,
v5e 1.20, v5p 4.20, v6e 2.70 USD (from the pricing page as of 2025, not re-checked here);
Ironwood has no list price: the 2.00 USD/h placeholder.

Energy: HBM access costs about 3.9 pJ/bit = 31.2 pJ/byte (O'Connor et al., Fine-Grained
DRAM, MICRO 2017, for HBM2; used for every HBM generation here). Static power (STATIC_POWER_W)
is the board's draw while a process holds it between kernels, charged for the whole latency;
the rest of the board power is attributed to arithmetic at peak rate: energy_per_flop =
(TDP - static - bandwidth * energy_per_byte) / peak, so a chip running both at full rate draws
exactly its TDP. Static power is a measurement, not a datasheet figure (no vendor publishes an
idle draw), so it is set only where one is stored in this repository:
- h100-sxm: 176.0 W, the mean of the two idle draws the deployment check measured on two
  H100 80GB HBM3 (SXM) boards of the lent kind with the process holding the GPU (nvidia-smi
  power.draw every 50 ms over an idle second, right after the timed decode runs):
  179.5 W (2026-12-07 14:22 UTC, results/deploy_check/deploy_check_NVIDIA_H100_80GB_HBM3.json)
  and 172.5 W (15:57 UTC, results/deploy_check/h100_1557/); the two differ by 4%.
Every other preset has static power 0 (none measured): its energy counts work done only.
"""

from __future__ import annotations

import jax.numpy as jnp

from hwcost.targets._gpu import GPU

HBM_ENERGY_PER_BYTE_J = 3.9e-12 * 8
DEFAULT_SHARPNESS = 20.0  # smooth max at most 5% above the sharp roofline (at a tie)

# name: (bf16 FLOP/s, fp8 FLOP/s or None, bytes/s, capacity bytes, USD/h, TDP W, die mm^2)
_SPECS: dict[str, tuple[float, float | None, float, float, float, float, float]] = {
    "h800": (9.89e14, 1.98e15, 3.35e12, 80e9, 2.00, 700.0, 814.0),
    "h20": (1.48e14, 2.96e14, 4.00e12, 96e9, 0.80, 400.0, 814.0),
    "a800": (3.12e14, None, 2.00e12, 80e9, 0.75, 400.0, 826.0),
    "ascend-910b": (2.80e14, None, 1.60e12, 64e9, 0.67, 400.0, 456.0),
    "a100-sxm": (3.12e14, None, 2.039e12, 80e9, 2.00, 400.0, 826.0),
    "h100-sxm": (9.89e14, 1.979e15, 3.35e12, 80e9, 2.00, 700.0, 814.0),
    "h200": (9.89e14, 1.979e15, 4.80e12, 141e9, 2.00, 700.0, 814.0),
    "b200": (2.25e15, 4.5e15, 8.0e12, 180e9, 2.00, 1000.0, 1628.0),
    "tpu-v4": (2.75e14, None, 1.2e12, 32 * 2**30, 3.22, 192.0, 400.0),
    "tpu-v5e": (1.97e14, None, 8.19e11, 16e9, 1.20, 250.0, 400.0),
    "tpu-v5p": (4.59e14, None, 2.765e12, 95 * 2**30, 4.20, 450.0, 400.0),
    "tpu-v6e": (9.18e14, None, 1.638e12, 32e9, 2.70, 300.0, 400.0),
    "tpu7x": (2.307e15, 4.614e15, 7.37e12, 192 * 2**30, 2.00, 1000.0, 400.0),
}
# name: (fp4 FLOP/s, tf32 FLOP/s, fp32 FLOP/s), None where there is no rate (fallback rule, hwcost.GPU)
_WIDE_NARROW: dict[str, tuple[float | None, float | None, float | None]] = {
    "h800": (None, 4.947e14, 6.7e13),
    "h20": (None, 7.4e13, 4.4e13),
    "a800": (None, 1.56e14, 1.95e13),
    "ascend-910b": (None, None, None),
    "a100-sxm": (None, 1.56e14, 1.95e13),
    "h100-sxm": (None, 4.947e14, 6.7e13),
    "h200": (None, 4.947e14, 6.7e13),
    "b200": (9.0e15, 1.125e15, 7.5e13),
    **{tpu: (None, _SPECS[tpu][0] / 3, _SPECS[tpu][0] / 6)  # MXU multi-pass: HIGH = 3, HIGHEST = 6 BF16 passes
       for tpu in ("tpu-v4", "tpu-v5e", "tpu-v5p", "tpu-v6e", "tpu7x")},
}
# Published figures the roofline does not use, kept beside the rest for the models that will:
# 8-bit integer peak [OP/s] (the 8-bit anchor is FP8; see hwcost.GPU) and chip-to-chip
# bandwidth [bytes/s, bidirectional per chip: NVLink, or TPU ICI], sources in the docstring.
INT8_PEAK_OPS: dict[str, float] = {
    "h800": 1.979e15, "h100-sxm": 1.979e15, "h200": 1.979e15, "h20": 2.96e14, "a800": 6.24e14, "a100-sxm": 6.24e14, "b200": 4.5e15,
    "tpu-v4": 2.75e14, "tpu-v5e": 3.93e14, "tpu-v6e": 1.836e15}
LINK_BYTES_PER_S: dict[str, float] = {
    "a100-sxm": 6.0e11, "h100-sxm": 9.0e11, "h200": 9.0e11, "b200": 1.8e12, "tpu-v4": 6.0e11, "tpu-v5e": 4.0e11,
    "tpu-v5p": 1.2e12, "tpu-v6e": 8.0e11, "tpu7x": 1.2e12}
_ALIASES = {"910b": "ascend-910b", "a100": "a100-sxm", "a100-80gb": "a100-sxm", "h100": "h100-sxm", "h200-sxm": "h200", "b200-sxm": "b200", "v4": "tpu-v4",
            "v5e": "tpu-v5e", "v5p": "tpu-v5p", "v6e": "tpu-v6e", "trillium": "tpu-v6e", "ironwood": "tpu7x",
            "tpu-ironwood": "tpu7x", "tpu-v7x": "tpu7x"}
PRESETS: tuple[str, ...] = tuple(_SPECS)
# name: static (idle) board power [W] and where it was measured (module docstring); absent = 0 (none measured)
STATIC_POWER_W: dict[str, tuple[float, str]] = {
    "h100-sxm": (176.0, "mean idle power.draw of results/deploy_check/deploy_check_NVIDIA_H100_80GB_HBM3.json "
                        "(179.5 W) and results/deploy_check/h100_1557/ (172.5 W), two H100 80GB HBM3 boards"),
}


def gpu(name: str, dtype=jnp.float32, **overrides: float) -> GPU:
    """The preset GPU `name` (case-insensitive; see PRESETS), with any field overridden.

    Overriding `static_power_w` alone keeps the preset's energy per FLOP (its compute power is
    TDP minus the preset's static power and the HBM's power); override both to rebalance.
    """
    key = _ALIASES.get(name.lower(), name.lower()) if isinstance(name, str) else name
    if key not in _SPECS:
        raise ValueError(f"target={name!r}: must be one of {', '.join(PRESETS)}")
    bf16, fp8, bandwidth, capacity, price, tdp, area = _SPECS[key]
    fp8 = fp8 or bf16
    fp4, tf32, fp32 = _WIDE_NARROW[key]
    fp4, tf32, fp32 = fp4 or fp8, tf32 or bf16, fp32 or bf16
    static = STATIC_POWER_W.get(key, (0.0, ""))[0]
    compute_power = tdp - static - bandwidth * HBM_ENERGY_PER_BYTE_J
    fields = dict(
        peak_flops_bf16=bf16, peak_flops_fp8=fp8, mem_bandwidth=bandwidth, mem_capacity=capacity,
        price_per_hour=price, energy_per_flop_bf16=compute_power / bf16, energy_per_flop_fp8=compute_power / fp8,
        energy_per_byte=HBM_ENERGY_PER_BYTE_J, static_power_w=static, area_mm2=area, compute_efficiency=1.0,
        memory_efficiency=1.0, activation_traffic=1.0, sharpness=DEFAULT_SHARPNESS,
        peak_flops_fp4=fp4, peak_flops_tf32=tf32, peak_flops_fp32=fp32, energy_per_flop_fp4=compute_power / fp4,
        energy_per_flop_tf32=compute_power / tf32, energy_per_flop_fp32=compute_power / fp32)
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a GPU parameter (allowed: {', '.join(fields)})")
    fields.update(overrides)
    return GPU(name=key, **{k: jnp.asarray(v, dtype) for k, v in fields.items()})
