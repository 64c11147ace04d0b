"""SpAtten: the attention accelerator with cascade pruning and progressive quantization (arXiv 2012.09852).

SpAtten (Wang, Zhang & Han, HPCA 2021) runs the attention core (QK^T, softmax, PV) of
every layer; its DRAM traffic is the Q, K and V it fetches, and it fetches only what
pruning leaves: the tokens alive (cascade token pruning), the heads alive (cascade head
pruning), the V rows of the largest probabilities (local value pruning) and, for Q and
K, the MSBs plus the LSBs of the rows that need them (progressive quantization).

`spatten_workload(cfg, scenario, knobs, ...)` derives that per-layer work from the same
`hwcost.Knobs` the joint loop uses: `token_keep` (fraction of context tokens each layer
attends), `head_keep` (fraction of query heads), `kv_bits` (stored bits per value =
MSB + LSB bits); plus the local value-pruning fraction and the fraction of rows that
re-fetch LSBs. Per layer, with c = attended context, h = kept heads, d = head width:
  decode   QK MACs = B*h*d*c*(1 + f_lsb)   (a recomputed row redoes its scores)
           PV MACs = B*h*d*c*value_keep
           K bytes = B*c*n_k*d*(msb + f_lsb*lsb)/8,  V bytes = B*c*value_keep*n_k*d*bits/8,
           Q bytes = B*h*d*(msb + f_lsb*lsb)/8
  prefill  the same with B*rows queries, rows = context*token_keep (pruned tokens are not
           queries either), each K and V row fetched once per layer (the K/V SRAM holds
           a sequence of up to 1024 tokens), causal rows attend (keys+1)/2 on average.
n_k = K/V heads fetched: n_heads*head_keep for MHA (a pruned head's K and V are not
fetched), all n_kv_heads for GQA/MFA (shared by the kept query heads), the latent
(kv_rank + rope_dim values, one "head") for MLA. The top-k engine sees c importance
scores per layer (token pruning), H (heads) and, with value pruning, h*c per query row.

`SpAtten` turns that into latency, energy and DRAM bytes. Its float fields are the
hardware parameters (differentiable): multipliers 512 for QK and 512 for PV, 16 HBM2
channels, 12 bits per value, the K/V SRAM of 2*1024*64*12 bits per buffer (section V),
chip power 8.30 W and area 18.71 mm^2 (TSMC 40 nm, section VI). The paper leaves the
clock and HBM bandwidth open here; we choose 1 GHz and 32 GB/s per HBM2 channel
(512 GB/s for 16 channels: one HBM2 pseudo-stack's per-channel rate, 128 bit x 2 Gbit/s),
a top-k engine that retires 16 elements per cycle (quick-select with 16 comparators),
and 3.9 pJ/bit HBM2 access energy (O'Connor et al., MICRO 2017). Per layer the engines
are pipelined: time = smooth max(QK, PV, top-k, DRAM) (`hwcost.smooth_max`).

As a `hwcost.Target`, `SpAtten.cost(work)` costs the attention core of the workload's
model and scenario with the workload's own knobs (no local value pruning, no LSB
re-fetch): latency and energy of the attention engine only (the rest of the model does
not run on SpAtten), memory_bytes the resident KV cache, area the chip's; dollars are not
modelled. `SpAtten.attention_cost(spatten_workload(...))` is the full engine model.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from nets import ModelConfig
from hwcost._scenario import Scenario
from hwcost._smooth import smooth_max
from hwcost.targets._target import Cost, Target, check_phase, check_workload, whole_model_inputs
from hwcost._workload import Knobs, Workload, _concrete


def kv_sram_bytes(max_tokens: int = 1024, head_dim: int = 64, bits: int = 12, buffers: int = 2) -> int:
    """Bytes of one K (or V) SRAM: buffers * max_tokens * head_dim * bits / 8 (SpAtten section V: 196,608 B)."""
    for name, v in (("max_tokens", max_tokens), ("head_dim", head_dim), ("bits", bits), ("buffers", buffers)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}={v!r}: must be a positive integer")
    return buffers * max_tokens * head_dim * bits // 8


class SpAttenWorkload(eqx.Module):
    """Per-layer attention work on SpAtten: MACs [multiply-accumulates], DRAM bytes [B], top-k elements."""

    qk_macs: Float[Array, " layer"]
    pv_macs: Float[Array, " layer"]
    q_bytes: Float[Array, " layer"]
    k_bytes: Float[Array, " layer"]
    v_bytes: Float[Array, " layer"]
    topk_elements: Float[Array, " layer"]

    @property
    def dram_bytes(self) -> Float[Array, " layer"]:
        return self.q_bytes + self.k_bytes + self.v_bytes


def _per_layer(name: str, value, n_layers: int, low: float, high: float) -> Array:
    arr = jnp.broadcast_to(jnp.asarray(value, jnp.float32), (n_layers,))
    concrete = _concrete(arr)
    if concrete is not None and (np.any(~np.isfinite(concrete)) or np.any(concrete < low) or np.any(concrete > high)):
        raise ValueError(f"{name}={value!r}: must be in [{low}, {high}] (one value or one per layer)")
    return arr


def spatten_workload(cfg: ModelConfig, scenario: Scenario, knobs: Knobs | None = None, *, value_keep=1.0,
                     lsb_fraction=0.0, lsb_bits: int = 4) -> SpAttenWorkload:
    """The attention work of `scenario` on `cfg` under the pruning knobs (formulas: module docstring).

    knobs.token_keep / head_keep: kept fraction of the context tokens each layer attends
    and of its query heads; knobs.kv_bits: stored bits per value (MSB + LSB). value_keep:
    local value pruning (fraction of V rows fetched, decode only). lsb_fraction: fraction
    of query rows that re-fetch the LSBs of Q and K. All may be traced (differentiable).
    """
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"cfg={type(cfg).__name__}: must be a nets.ModelConfig")
    if not isinstance(scenario, Scenario):
        raise ValueError(f"scenario={type(scenario).__name__}: must be a hwcost.Scenario")
    if scenario.phase == "train":
        raise ValueError("scenario.phase='train': SpAtten is an inference accelerator; use decode or prefill")
    if isinstance(lsb_bits, bool) or not isinstance(lsb_bits, int) or not 0 <= lsb_bits < scenario.kv_bits:
        raise ValueError(f"lsb_bits={lsb_bits!r}: must be an integer in [0, kv_bits={scenario.kv_bits})")
    n = cfg.n_layers
    knobs = Knobs.default(n, scenario) if knobs is None else knobs
    if knobs.n_layers != n:
        raise ValueError(f"knobs.token_keep: {knobs.n_layers} entries: must have one per layer (n_layers={n})")
    value_keep = _per_layer("value_keep", value_keep, n, 1e-6, 1.0)
    f_lsb = _per_layer("lsb_fraction", lsb_fraction, n, 0.0, 1.0)
    a = cfg.attention
    bits = knobs.kv_bits
    qk_bits = bits - lsb_bits + f_lsb * lsb_bits
    heads = a.n_heads * knobs.head_keep
    if a.kind == "mla":
        d_score, d_value = a.kv_rank + a.rope_dim, a.kv_rank
        k_width, v_width = a.kv_rank + a.rope_dim, 0.0  # one latent row serves K and V
    elif a.kind == "mha":
        d_score = d_value = a.head_dim
        k_width = v_width = heads * a.head_dim
    else:
        d_score = d_value = a.head_dim
        k_width = v_width = a.n_kv_heads * a.head_dim + 0.0 * heads
    B, context = float(scenario.batch), float(scenario.context_len)
    if scenario.phase == "decode":
        keys = (context + (scenario.gen_len - 1) / 2) * knobs.token_keep
        rows = B
        keys_per_row = keys
        fetched_keys = B * keys
    else:
        keys = context * knobs.token_keep
        rows = B * keys
        keys_per_row = (keys + 1) / 2 if cfg.causal else keys
        fetched_keys = B * keys
    decode = scenario.phase == "decode"
    v_keep = value_keep if decode else jnp.ones_like(value_keep)
    qk_macs = rows * heads * d_score * keys_per_row * (1 + f_lsb)
    pv_macs = rows * heads * d_value * keys_per_row * v_keep
    q_bytes = rows * heads * a.qk_head_dim * qk_bits / 8
    k_bytes = fetched_keys * k_width * qk_bits / 8
    v_bytes = fetched_keys * v_keep * v_width * bits / 8
    value_topk = jnp.where(value_keep < 1, rows * heads * keys_per_row, 0.0)
    topk = B * keys + B * a.n_heads + value_topk
    return SpAttenWorkload(qk_macs=qk_macs, pv_macs=pv_macs, q_bytes=q_bytes, k_bytes=k_bytes, v_bytes=v_bytes,
                           topk_elements=topk)


class SpAttenCost(eqx.Module):
    """latency_s [s], energy_j [J], dram_bytes [B], area_mm2 [mm^2]; layer_latency_s [s] per layer."""

    latency_s: Float[Array, ""]
    energy_j: Float[Array, ""]
    dram_bytes: Float[Array, ""]
    area_mm2: Float[Array, ""]
    layer_latency_s: Float[Array, " layer"]


class SpAtten(Target):
    """The SpAtten accelerator (module docstring for the sources and the chosen open parameters)."""

    modelled: ClassVar[frozenset[str]] = frozenset({"latency_s", "energy_j", "memory_bytes", "area_mm2"})

    qk_multipliers: Float[Array, ""] = eqx.field(converter=jnp.asarray, default=512.0)
    pv_multipliers: Float[Array, ""] = eqx.field(converter=jnp.asarray, default=512.0)
    clock_hz: Float[Array, ""] = eqx.field(converter=jnp.asarray, default=1.0e9)
    hbm_channels: Float[Array, ""] = eqx.field(converter=jnp.asarray, default=16.0)
    hbm_bytes_per_s_per_channel: Float[Array, ""] = eqx.field(converter=jnp.asarray, default=32.0e9)
    topk_elements_per_cycle: Float[Array, ""] = eqx.field(converter=jnp.asarray, default=16.0)
    bits_per_value: Float[Array, ""] = eqx.field(converter=jnp.asarray, default=12.0)
    kv_sram_bytes: Float[Array, ""] = eqx.field(converter=jnp.asarray, default=float(kv_sram_bytes()))
    head_dim: Float[Array, ""] = eqx.field(converter=jnp.asarray, default=64.0)
    chip_power_w: Float[Array, ""] = eqx.field(converter=jnp.asarray, default=8.30)
    dram_pj_per_byte: Float[Array, ""] = eqx.field(converter=jnp.asarray, default=8 * 3.9)
    area_mm2: Float[Array, ""] = eqx.field(converter=jnp.asarray, default=18.71)
    sharpness: Float[Array, ""] = eqx.field(converter=jnp.asarray, default=1.0e4)

    def __check_init__(self) -> None:
        for name in ("qk_multipliers", "pv_multipliers", "clock_hz", "hbm_channels", "hbm_bytes_per_s_per_channel",
                     "topk_elements_per_cycle", "bits_per_value", "kv_sram_bytes", "head_dim", "chip_power_w",
                     "dram_pj_per_byte", "area_mm2", "sharpness"):
            value = _concrete(getattr(self, name))
            if value is not None and (np.any(~np.isfinite(value)) or np.any(value <= 0)):
                raise ValueError(f"{name}={float(np.ravel(value)[0])!r}: must be a finite positive number")
        sram, dim, bits = (_concrete(self.kv_sram_bytes), _concrete(self.head_dim), _concrete(self.bits_per_value))
        if sram is not None and dim is not None and bits is not None and np.any(sram < 2 * dim * bits / 8):
            raise ValueError(f"kv_sram_bytes={float(np.ravel(sram)[0])!r}: must hold at least one token's K "
                             f"(head_dim*bits/8) double-buffered")

    @property
    def name(self) -> str:
        return "spatten"

    @property
    def max_tokens(self) -> Array:
        """Tokens the double-buffered K (or V) SRAM holds: kv_sram_bytes / (2 * head_dim * bits/8)."""
        return self.kv_sram_bytes / (2 * self.head_dim * self.bits_per_value / 8)

    @property
    def hbm_bytes_per_s(self) -> Array:
        return self.hbm_channels * self.hbm_bytes_per_s_per_channel

    def cost(self, work: Workload) -> Cost:
        """The attention core of `work`'s model on SpAtten (module docstring); decode or prefill."""
        check_workload(self.name, work)
        check_phase(self.name, work, ("decode", "prefill"))
        cfg, scenario, knobs = whole_model_inputs(self.name, work)
        engine = self.attention_cost(spatten_workload(cfg, scenario, knobs))
        return Cost.of(self.name, self.modelled,
                       {"layer_latency_s": engine.layer_latency_s, "dram_bytes": engine.dram_bytes},
                       latency_s=engine.latency_s, energy_j=engine.energy_j, memory_bytes=work.footprint[1],
                       area_mm2=engine.area_mm2)

    def attention_cost(self, work: SpAttenWorkload) -> SpAttenCost:
        """Latency, energy and DRAM bytes of `work` (one step of the scenario it was derived from)."""
        if not isinstance(work, SpAttenWorkload):
            raise ValueError(f"work={type(work).__name__}: must be a SpAttenWorkload (hwcost spatten_workload)")
        qk_s = work.qk_macs / (self.qk_multipliers * self.clock_hz)
        pv_s = work.pv_macs / (self.pv_multipliers * self.clock_hz)
        topk_s = work.topk_elements / (self.topk_elements_per_cycle * self.clock_hz)
        dram_s = work.dram_bytes / self.hbm_bytes_per_s
        layer_s = smooth_max(jnp.stack([qk_s, pv_s, topk_s, dram_s]), self.sharpness)
        latency = jnp.sum(layer_s)
        dram = jnp.sum(work.dram_bytes)
        energy = self.chip_power_w * latency + dram * self.dram_pj_per_byte * 1e-12
        return SpAttenCost(latency_s=latency, energy_j=energy, dram_bytes=dram, area_mm2=self.area_mm2,
                           layer_latency_s=layer_s)


def spatten_knobs(n_layers: int, scenario: Scenario, token_keep=1.0, head_keep=1.0, kv_bits=None) -> Knobs:
    """`hwcost.Knobs` with the given attended-token and head fractions (scalars or per layer)."""
    base = Knobs.default(n_layers, scenario)
    full = lambda v, like: jnp.broadcast_to(jnp.asarray(v, jnp.float32), like.shape)  # noqa: E731
    return Knobs(weight_bits=base.weight_bits, kv_bits=base.kv_bits if kv_bits is None else full(kv_bits, base.kv_bits),
                 act_bits=base.act_bits, ffn_keep=base.ffn_keep, token_keep=full(token_keep, base.token_keep),
                 head_keep=full(head_keep, base.head_keep))


def dram_reduction(cfg: ModelConfig, scenario: Scenario, knobs: Knobs, *, baseline_bits: float = 32.0,
                   value_keep=1.0, lsb_fraction=0.0, lsb_bits: int = 4) -> Array:
    """DRAM bytes of the unpruned attention at `baseline_bits` per value over those under `knobs`."""
    base = spatten_workload(cfg, scenario.replace(kv_bits=baseline_bits), None, lsb_bits=0)
    pruned = spatten_workload(cfg, scenario, knobs, value_keep=value_keep, lsb_fraction=lsb_fraction,
                              lsb_bits=lsb_bits)
    return jnp.sum(base.dram_bytes) / jnp.sum(pruned.dram_bytes)


def pruning_knobs(base: Knobs, token_keep_after: Array, head_keep_after: Array) -> Knobs:
    """`base` with the network's per-layer keep ratios turned into what a workload reads.

    The network's knob keep_after[l] (`nets` PrunedLM.soft: kept fraction after layer l's
    attention, cumulative) becomes the fraction of tokens (heads) layer l attends with:
    keep_after[l-1], and 1 for layer 0. Differentiable; shapes (n_layers,) or
    (design point, n_layers).
    """
    def shift(keep):
        keep = jnp.broadcast_to(jnp.asarray(keep, base.token_keep.dtype), base.token_keep.shape)
        return jnp.concatenate([jnp.ones(keep.shape[:-1] + (1,), keep.dtype), keep[..., :-1]], axis=-1)

    return Knobs(weight_bits=base.weight_bits, kv_bits=base.kv_bits, act_bits=base.act_bits, ffn_keep=base.ffn_keep,
                 token_keep=shift(token_keep_after), head_keep=shift(head_keep_after))
