"""`Scenario`: what the hardware is asked to do (phase, batch, lengths, precisions).

A scenario is the static half of a workload: together with a `nets.ModelConfig` it fixes
the shapes of every operation. The continuous half (per-layer bits and kept fractions)
are the knobs (`hwcost.Knobs`), which stay differentiable.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from nets import fail

PHASES = ("prefill", "decode", "train")


def _positive_int(field_name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        fail(field_name, value, "must be a positive integer")


def _bits(field_name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 1 <= value <= 32:
        fail(field_name, value, "must be a number of bits between 1 and 32")


@dataclass(frozen=True)
class Scenario:
    """One step of work on one device (or one AFD deployment, see `hwcost.AFDTarget`).

    phase:
      decode   `batch` sequences each generate one token, attending to `context_len` cached
               tokens (averaged over `gen_len` generated tokens: context_len + (gen_len-1)/2).
      prefill  `batch` prompts of `context_len` tokens are encoded and their KV cache written;
               logits only for the last position.
      train    forward + backward over `batch` sequences of `context_len` tokens (3x the
               forward FLOPs and bytes, the usual convention of Kaplan et al. 2020).
    batch: sequences in the step (decode: concurrent requests). context_len, gen_len: tokens.
    weight_bits, kv_bits, act_bits: storage precision of weights, KV cache and activations
      (per-layer knobs override the first three). dispatch_bits / combine_bits: precision of
      the hidden state sent to / returned from the FFN side (Step-3's AFD: FP8 out, BF16 back).
    """

    phase: str = "decode"
    batch: int = 1
    context_len: int = 4096
    gen_len: int = 1
    weight_bits: float = 16.0
    kv_bits: float = 16.0
    act_bits: float = 16.0
    dispatch_bits: float = 16.0
    combine_bits: float = 16.0

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            fail("phase", self.phase, f"must be one of {', '.join(PHASES)}")
        for name in ("batch", "context_len", "gen_len"):
            _positive_int(name, getattr(self, name))
        for name in ("weight_bits", "kv_bits", "act_bits", "dispatch_bits", "combine_bits"):
            _bits(name, getattr(self, name))

    @property
    def tokens(self) -> int:
        """Tokens the step processes: decode `batch`, prefill/train `batch * context_len`."""
        return self.batch if self.phase == "decode" else self.batch * self.context_len

    def replace(self, **changes: Any) -> "Scenario":
        return dataclasses.replace(self, **changes)
