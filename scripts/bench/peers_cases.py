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


def _preset_spec(name: str, preset: str, source: str) -> Spec:
    g = hwcost.gpu(preset)
    return Spec(name=name, peak_flops_bf16=float(g.peak_flops_bf16), mem_bandwidth=float(g.mem_bandwidth),
                mem_capacity=float(g.mem_capacity), base_preset=preset, source=source)


H200 = _preset_spec("h200-sxm", "h200", "our h200 preset: NVIDIA H200 Tensor Core GPU datasheet (2024)")
H100 = _preset_spec("h100-sxm", "h100-sxm", "our h100-sxm preset: NVIDIA H100 Tensor Core GPU datasheet, SXM5 80GB "
                    "HBM3: 989 TFLOP/s BF16 dense, 3.35 TB/s, 80 GB")
# the GPU a measurement ran on (jax's device_kind) -> the spec its cases use
DEVICE_SPECS = {"H100": H100, "H200": H200, "A100": A100_80GB}


def spec_of_device(device_kind: str) -> Spec | None:
    """The spec of a measured device, e.g. 'NVIDIA H100 80GB HBM3' -> H100; None for any other device."""
    hits = [spec for key, spec in DEVICE_SPECS.items() if key in str(device_kind).upper()]
    return hits[0] if len(hits) == 1 else None


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


PEER_CASES = ("prefill:1:2048", "decode:1:2048", "decode:20:2048")  # the peers' Llama-2-7B workload
SPECS = {"a100": A100_80GB, "h100": H100, "h200": H200}


def default_cases(h200_case: str = "decode:20:2048", gpu: str = "a100") -> list[Case]:
    """The peer cases on `gpu`'s spec; on the A100 (the first side by side) plus one H200 case."""
    if gpu not in SPECS:
        raise ValueError(f"gpu={gpu!r}: must be one of {sorted(SPECS)}")
    cases = [parse_case(text, SPECS[gpu]) for text in PEER_CASES]
    return cases + [parse_case(h200_case, H200)] if gpu == "a100" else cases
