"""The shared vocabulary of scripts/bench/peers.py: the hardware specs, the cases and the table's rows and columns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import hwcost

MODEL = "llama-2-7b"
GIB = 2.0**30
NA = None

GROUPS: dict[str, tuple[str, ...]] = {
    "attn_core": hwcost.ATTENTION_CORE,
    "attn_proj": hwcost.PROJECTIONS,
    "attention": hwcost.ATTENTION_CORE + hwcost.PROJECTIONS,
    "ffn": hwcost.FFN_GEMMS + ("router",),
    "norm": ("norm",),
    "embed_head": ("embedding", "lm_head"),
}
ROWS = tuple(GROUPS) + ("total",)
COLUMNS = ("genz", "llm_analysis", "ours", "ours_calibrated", "measured")


@dataclass(frozen=True)
class Spec:
    """The hardware numbers every tool is given (SI units): FLOP/s dense BF16, bytes/s, bytes."""

    name: str
    peak_flops_bf16: float
    mem_bandwidth: float
    mem_capacity: float
    base_preset: str
    source: str

    def __post_init__(self) -> None:
        for field in ("peak_flops_bf16", "mem_bandwidth", "mem_capacity"):
            value = getattr(self, field)
            if not (isinstance(value, float) and np.isfinite(value) and value > 0):
                raise ValueError(f"{field}={value!r}: must be a finite positive float (SI units)")


A100_80GB = Spec(
    name="a100-sxm4-80gb", peak_flops_bf16=312e12, mem_bandwidth=2.039e12, mem_capacity=80 * GIB, base_preset="a800",
    source="NVIDIA A100 Tensor Core GPU datasheet (2021), SXM4 80GB: 312 TFLOP/s BF16 dense, 2,039 GB/s HBM2e, "
           "80 GB; our other fields (power, area) from the a800 preset, the same GA100 silicon")


def _h200_spec() -> Spec:
    preset = hwcost.gpu("h200")
    return Spec(name="h200-sxm", peak_flops_bf16=float(preset.peak_flops_bf16),
                mem_bandwidth=float(preset.mem_bandwidth), mem_capacity=float(preset.mem_capacity),
                base_preset="h200", source="our h200 preset: NVIDIA H200 Tensor Core GPU datasheet (2024)")


H200 = _h200_spec()


@dataclass(frozen=True)
class Case:
    """One step of Llama-2-7B on one spec: phase, batch, prompt (prefill) or cache (decode) tokens."""

    spec: Spec
    phase: str
    batch: int
    context_len: int

    def __post_init__(self) -> None:
        if self.phase not in ("prefill", "decode"):
            raise ValueError(f"phase={self.phase!r}: must be prefill or decode")
        for field in ("batch", "context_len"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{field}={value!r}: must be a positive integer")

    @property
    def label(self) -> str:
        return f"{self.spec.name} {self.phase} b={self.batch} ctx={self.context_len}"

    @property
    def scenario(self) -> hwcost.Scenario:
        return hwcost.Scenario(phase=self.phase, batch=self.batch, context_len=self.context_len)


def parse_case(text: str, spec: Spec) -> Case:
    """`PHASE:BATCH:CONTEXT`, e.g. `decode:20:2048`, on `spec`."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"case={text!r}: must be PHASE:BATCH:CONTEXT, e.g. decode:20:2048")
    return Case(spec, parts[0], int(parts[1]), int(parts[2]))


def default_cases(h200_case: str = "decode:20:2048") -> list[Case]:
    return [Case(A100_80GB, "prefill", 1, 2048), Case(A100_80GB, "decode", 1, 2048),
            Case(A100_80GB, "decode", 20, 2048), parse_case(h200_case, H200)]
