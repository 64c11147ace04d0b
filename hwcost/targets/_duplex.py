"""Duplex target: an H100-class xPU plus a Logic-PIM on every HBM stack (Yun et al., MICRO 2024,
arXiv 2409.01141).

Hardware. The xPU is a `hwcost.GPU` (default: the Duplex simulator's 989.4 TFLOP/s FP16 and
3.352 TB/s over 5 HBM3 stacks). `PIM` is the processor next to the DRAM, per stack:

    peak    = 2 * gemm_modules * macs_per_module * clock_hz        [FLOP/s per stack]
            (Logic-PIM: 2 * 32 * 512 * 650 MHz = 21.3 TFLOP/s; 106.5 TFLOP/s over 5 stacks)
    bandwidth = bandwidth_multiple * xPU HBM bandwidth             [bytes/s, device]
            (Logic-PIM 4x through extra TSVs: 13.4 TB/s, compute:bandwidth 8 FLOP/B)
    area    = fixed_area_mm2 + area_per_mac_mm2 * modules * MACs   [mm^2 per stack]
            (TSVs 10.89 + buffers 2.26 + softmax 1.64 fixed; GEMM 3.02 mm^2 for 16384 MACs)

Presets (`pim(name)`): "logic-pim" (the paper's), "bank-pim" (one unit per bank on the DRAM
dies: 16x bandwidth, peak Op/B 1, as the note states) and "bankgroup-pim" (one unit per bank
group: 4x bandwidth; its compute is an ASSUMPTION of this module, the note gives none: the
Bank-PIM's DRAM-process compute budget pooled per bank group, i.e. peak Op/B 4).

Dispatch (paper section IV, the note's "Dispatch"), per continuous-batching step:
  - xPU: QKV / output projections, norms, router, dense FFN, LM head; prefill attention.
  - PIM: decode attention (Op/B = GQA group size, 4-8).
  - routed experts: on the PIM in decode-only steps, on the xPU in mixed steps ("dispatch");
    with expert co-processing the experts are split: the s least-loaded experts of the step
    on the PIM, the rest on the xPU, both at once: t_moe = smax(t_pim(s), t_xpu(s)).
    The paper's greedy rule (start all on the xPU, move least-loaded experts one at a time,
    keep the best) is the min over the integer s; `DuplexKnobs` instead makes s a
    continuous knob (fraction clip(s - j, 0, 1) of the j-th least-loaded expert on the PIM,
    linear between integer splits) that gradients can move.
  - attention co-processing: prefill attention (xPU) and decode attention (PIM) of a mixed
    step run at once: t_attn = smax(t_prefill, t_decode); without it, one after the other.
Every kernel is a roofline smax(FLOPs / peak, bytes / bandwidth) (the `hwcost.smooth_max2`
of sharpness p; p = inf is the sharp roofline). Step time = linear ops + attention + MoE +
tensor-parallel all-reduce (NVLink) when the model is spread over several devices; the work
of one device is 1/n of the model's (ideal tensor + expert parallelism), the same for the
H100 baseline and Duplex, so the gains do not depend on n except through communication.
Assumptions beyond the paper: xPU and PIM do not slow each other's DRAM access; one routing
draw per step serves every MoE layer; PIM energy per byte is half the HBM figure (no PHY).

As a `hwcost.Target`, `Duplex.cost(work)` costs ONE step of the workload's scenario: a
decode scenario is a decode-only step of `batch` requests attending context_len + (gen_len -
1)/2 tokens each, a prefill scenario a step that prefills `batch` prompts (a mixed step);
routed experts get tokens by one seeded multinomial draw (`expert_token_counts`, seed 0).
Dollars are not modelled (no price for the PIM). `Duplex.batching_cost(step_work(...))`
costs a whole continuous-batching run. The co-design demo (expert split and MACs per module)
is in `_duplex_codesign`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from nets import ModelConfig
from hwcost.targets._batching import LINEAR_OPS, BatchSteps, ContinuousBatching, StepWork, step_work
from hwcost.targets._gpu import GPU
from hwcost.targets._presets import HBM_ENERGY_PER_BYTE_J, gpu
from hwcost._scenario import Scenario
from hwcost._smooth import smooth_max2
from hwcost.targets._target import Cost, Target, check_phase, check_workload, whole_model_inputs
from hwcost._workload import Workload, workload

MODES = ("gpu", "dispatch", "coprocessing")
HBM_STACKS = 5
XPU_PEAK_FLOPS, XPU_BANDWIDTH = 989.4e12, 3.352e12  # the Duplex simulator's H100
NVLINK_BYTES_PER_S = 450e9  # 900 GB/s bidirectional: one direction
LOGIC_DIE_MM2 = 121.0
# Logic-PIM area parts per stack [mm^2] (paper section V): TSVs, 1 MB buffers, softmax units; GEMM modules
_TSV_MM2, _BUFFER_MM2, _SOFTMAX_MM2, _GEMM_MM2 = 10.89, 2.26, 1.64, 3.02
_LOGIC_MODULES, _LOGIC_MACS, _LOGIC_CLOCK = 32.0, 512.0, 650e6
_PIM_FIELDS = ("n_stacks", "gemm_modules", "macs_per_module", "clock_hz", "bandwidth_multiple", "hbm_bandwidth",
               "area_per_mac_mm2", "fixed_area_mm2", "energy_per_flop", "energy_per_byte", "sharpness")


def _concrete(x) -> np.ndarray | None:
    try:
        return np.asarray(x)
    except Exception:  # a tracer: nothing to check at trace time
        return None


class PIM(eqx.Module):
    """A processing-in-memory unit on every HBM stack (units in the field names; see module docstring).

    n_stacks [stacks]; gemm_modules [per stack]; macs_per_module [FP16 MACs]; clock_hz [Hz];
    bandwidth_multiple [x the xPU's HBM bandwidth]; hbm_bandwidth [bytes/s, the device's external
    HBM bandwidth]; area_per_mac_mm2, fixed_area_mm2 [mm^2, per stack]; energy_per_flop [J/FLOP];
    energy_per_byte [J/byte]; sharpness [p of the smooth roofline].
    """

    n_stacks: Float[Array, ""]
    gemm_modules: Float[Array, ""]
    macs_per_module: Float[Array, ""]
    clock_hz: Float[Array, ""]
    bandwidth_multiple: Float[Array, ""]
    hbm_bandwidth: Float[Array, ""]
    area_per_mac_mm2: Float[Array, ""]
    fixed_area_mm2: Float[Array, ""]
    energy_per_flop: Float[Array, ""]
    energy_per_byte: Float[Array, ""]
    sharpness: Float[Array, ""]
    name: str = eqx.field(static=True, default="pim")

    def __check_init__(self) -> None:
        for field in _PIM_FIELDS:
            value = _concrete(getattr(self, field))
            if value is None or np.shape(value) != ():
                continue
            non_negative = field in ("fixed_area_mm2", "energy_per_flop", "energy_per_byte")
            ok = value >= 0 if non_negative else value > 0
            if not ok or np.isnan(value) or (field != "sharpness" and not np.isfinite(value)):
                raise ValueError(f"{self.name}.{field}={float(value)!r}: must be a finite "
                                 f"{'non-negative' if non_negative else 'positive'} number"
                                 + (" (inf allowed: the sharp limit)" if field == "sharpness" else ""))

    def peak_flops_per_stack(self) -> Array:
        """2 FLOPs per MAC x modules x MACs x clock [FLOP/s] (Logic-PIM: 21.3 TFLOP/s)."""
        return 2.0 * self.gemm_modules * self.macs_per_module * self.clock_hz

    def peak_flops(self) -> Array:
        """Device total [FLOP/s] (Logic-PIM: 106.5 TFLOP/s over 5 stacks)."""
        return self.n_stacks * self.peak_flops_per_stack()

    def bandwidth(self) -> Array:
        """DRAM bandwidth the PIM sees, device total [bytes/s] (Logic-PIM: 4 x 3.352 TB/s)."""
        return self.bandwidth_multiple * self.hbm_bandwidth

    def ridge_intensity(self) -> Array:
        """Op/B where the PIM turns compute-bound [FLOP/byte] (Logic-PIM: 8)."""
        return self.peak_flops() / self.bandwidth()

    def area_per_stack_mm2(self) -> Array:
        return self.fixed_area_mm2 + self.area_per_mac_mm2 * self.gemm_modules * self.macs_per_module

    def area_mm2(self) -> Array:
        return self.n_stacks * self.area_per_stack_mm2()

    def seconds(self, flops: Array, nbytes: Array) -> Array:
        """Roofline time of one kernel on the PIM [s]."""
        return smooth_max2(flops / self.peak_flops(), nbytes / self.bandwidth(), self.sharpness)


def pim(name: str = "logic-pim", dtype=jnp.float32, **overrides: float) -> PIM:
    """The PIM preset `name` ("logic-pim", "bank-pim", "bankgroup-pim"), any field overridden."""
    presets = {"logic-pim": (4.0, None, _LOGIC_MODULES, _TSV_MM2 + _BUFFER_MM2 + _SOFTMAX_MM2),
               "bank-pim": (16.0, 1.0, 512.0, 0.0),        # one unit per bank (32 pseudo-channels x 16 banks)
               "bankgroup-pim": (4.0, 4.0, 128.0, 0.0)}    # one unit per bank group; Op/B 4 assumed
    if name not in presets:
        raise ValueError(f"pim={name!r}: must be one of {', '.join(presets)}")
    multiple, ops_per_byte, modules, fixed = presets[name]
    macs = _LOGIC_MACS if ops_per_byte is None else (
        ops_per_byte * multiple * XPU_BANDWIDTH / (2 * modules * _LOGIC_CLOCK * HBM_STACKS))
    fields = dict(n_stacks=float(HBM_STACKS), gemm_modules=modules, macs_per_module=macs, clock_hz=_LOGIC_CLOCK,
                  bandwidth_multiple=multiple, hbm_bandwidth=XPU_BANDWIDTH,
                  area_per_mac_mm2=_GEMM_MM2 / (_LOGIC_MODULES * _LOGIC_MACS), fixed_area_mm2=fixed,
                  energy_per_flop=float(duplex_xpu(jnp.float32).energy_per_flop_bf16),
                  energy_per_byte=HBM_ENERGY_PER_BYTE_J / 2, sharpness=20.0)
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a PIM parameter (allowed: {', '.join(fields)})")
    fields.update(overrides)
    return PIM(name=name, **{k: jnp.asarray(v, dtype) for k, v in fields.items()})


def duplex_xpu(dtype=jnp.float32, **overrides: float) -> GPU:
    """The Duplex simulator's H100-class xPU: the `h100` preset at 989.4 TFLOP/s FP16 (twice that in FP8) and
    3.352 TB/s over 5 HBM3 stacks, any `GPU` field overridden (e.g. sharpness=jnp.inf for the sharp roofline)."""
    fields = dict(peak_flops_bf16=XPU_PEAK_FLOPS, peak_flops_fp8=2 * XPU_PEAK_FLOPS, mem_bandwidth=XPU_BANDWIDTH)
    fields.update(overrides)
    return gpu("h100", dtype=dtype, **fields)


class DuplexKnobs(eqx.Module):
    """The expert split as continuous knobs: how many of the least-loaded experts run on the PIM.

    expert_split_decode, expert_split_mixed: in [0, n_experts], for decode-only and mixed steps
    (the plain dispatch is (n_experts, 0)).
    """

    expert_split_decode: Float[Array, ""]
    expert_split_mixed: Float[Array, ""]

    def __check_init__(self) -> None:
        for field in ("expert_split_decode", "expert_split_mixed"):
            value = _concrete(getattr(self, field))
            if value is not None and np.shape(value) == () and not (np.isfinite(value) and value >= 0):
                raise ValueError(f"knobs.{field}={float(value)!r}: must be a finite number of experts >= 0 "
                                 "(values above n_experts put every expert on the PIM)")

    @classmethod
    def dispatch(cls, n_experts: int, dtype=jnp.float32) -> "DuplexKnobs":
        return cls(jnp.asarray(float(n_experts), dtype), jnp.asarray(0.0, dtype))


class DuplexCost(eqx.Module):
    """Cost of a continuous-batching run on a Duplex (or H100-only) system.

    `step_latency_s[steps]` [s]; latency_s: sum [s]; tokens: output tokens; tokens_per_s: the
    system's throughput [tokens/s]; energy_j [J] (n devices); area_mm2 (one device's xPU die
    plus its PIM logic) [mm^2]; memory_bytes [bytes]; op_latency_s: per group ("linear",
    "attention", "moe", "comm") summed over steps [s].
    """

    step_latency_s: Float[Array, " step"]
    latency_s: Float[Array, ""]
    tokens: Float[Array, ""]
    tokens_per_s: Float[Array, ""]
    energy_j: Float[Array, ""]
    area_mm2: Float[Array, ""]
    op_latency_s: dict[str, Float[Array, ""]]


class Duplex(Target):
    """An xPU + PIM device (or n of them), costing a `StepWork` under a dispatch mode.

    mode: "gpu" (everything on the xPU: the H100 baseline), "dispatch" (the paper's dispatch
    without co-processing), "coprocessing" (expert + attention co-processing; the expert split
    is the per-step greedy optimum unless `DuplexKnobs` are given). n_devices: devices the
    model is spread over (tensor + expert parallel); nvlink_bandwidth [bytes/s per direction].
    """

    xpu: GPU
    pim: PIM
    nvlink_bandwidth: Float[Array, ""]
    mode: str = eqx.field(static=True, default="coprocessing")
    n_devices: int = eqx.field(static=True, default=1)
    modelled: ClassVar[frozenset[str]] = frozenset({"latency_s", "energy_j", "memory_bytes", "area_mm2"})

    @property
    def name(self) -> str:
        """"duplex" (co-processing), "duplex-dispatch" or "duplex-gpu" (the H100-only baseline)."""
        return "duplex" if self.mode == "coprocessing" else f"duplex-{self.mode}"

    def __check_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}: must be one of {', '.join(MODES)}")
        if isinstance(self.n_devices, bool) or not isinstance(self.n_devices, int) or self.n_devices < 1:
            raise ValueError(f"n_devices={self.n_devices!r}: must be a positive integer")
        value = _concrete(self.nvlink_bandwidth)
        if value is not None and np.shape(value) == () and not (np.isfinite(value) and value > 0):
            raise ValueError(f"nvlink_bandwidth={float(value)!r}: must be a finite positive number")

    # ---- kernel times ---------------------------------------------------------------
    def _xpu_s(self, flops, nbytes):
        x = self.xpu
        return smooth_max2(flops / (x.peak_flops_bf16 * x.compute_efficiency),
                           nbytes / (x.mem_bandwidth * x.memory_efficiency), x.sharpness)

    def _bytes(self, work: StepWork, op: str, traffic) -> Array:
        b = work.bytes
        return b["weights"].get(op, 0.0) + b["kv"].get(op, 0.0) + traffic * b["activations"].get(op, 0.0)

    def _moe_times(self, work: StepWork, traffic) -> tuple[Array, Array]:
        """Per step and expert (ascending load): time on the xPU and on the PIM [s]."""
        flops = work.expert_tokens * work.expert_flops_per_token
        nbytes = work.expert_bytes() + traffic * work.expert_tokens * work.expert_act_per_token
        return self._xpu_s(flops, nbytes), self.pim.seconds(flops, nbytes)

    def _moe_seconds(self, work: StepWork, knobs: DuplexKnobs | None, traffic) -> Array:
        on_xpu, on_pim = self._moe_times(work, traffic)
        p = self.pim.sharpness
        if self.mode == "gpu":
            return jnp.sum(on_xpu, -1)
        n = work.n_experts
        if self.mode == "dispatch" and knobs is None:
            knobs = DuplexKnobs.dispatch(n, on_xpu.dtype)
        if knobs is not None:
            split = jnp.where(work.mixed > 0, knobs.expert_split_mixed, knobs.expert_split_decode)
            share = jnp.clip(split[:, None] - jnp.arange(n, dtype=on_xpu.dtype), 0.0, 1.0)
            return smooth_max2(jnp.sum(share * on_pim, -1), jnp.sum((1 - share) * on_xpu, -1), p)
        # the paper's greedy expert co-processing: best prefix split of the least-loaded experts
        zero = jnp.zeros_like(on_pim[:, :1])
        pim_prefix = jnp.concatenate([zero, jnp.cumsum(on_pim, -1)], -1)
        xpu_rest = jnp.sum(on_xpu, -1, keepdims=True) - jnp.concatenate([zero, jnp.cumsum(on_xpu, -1)], -1)
        return jnp.min(smooth_max2(pim_prefix, jnp.maximum(xpu_rest, 0.0), p), -1)

    def step_seconds(self, work: StepWork, knobs: DuplexKnobs | None = None) -> dict[str, Array]:
        """Per-step time of each group on ONE device [s]: linear, attention, moe, comm."""
        if not isinstance(work, StepWork):
            raise ValueError(f"work={type(work).__name__}: must be a hwcost StepWork (see step_work)")
        if knobs is not None and not isinstance(knobs, DuplexKnobs):
            raise ValueError(f"knobs={type(knobs).__name__}: must be DuplexKnobs or None")
        share = 1.0 / self.n_devices
        traffic = self.xpu.activation_traffic
        linear = sum(self._xpu_s(work.flops[op], self._bytes(work, op, traffic))
                     for op in LINEAR_OPS if op in work.flops)
        decode = (work.flops["attn_decode"], self._bytes(work, "attn_decode", traffic))
        prefill_s = self._xpu_s(work.flops["attn_prefill"], self._bytes(work, "attn_prefill", traffic))
        if self.mode == "gpu":
            attention = self._xpu_s(*decode) + prefill_s
        elif self.mode == "dispatch":
            attention = self.pim.seconds(*decode) + prefill_s
        else:
            attention = smooth_max2(self.pim.seconds(*decode), prefill_s, self.pim.sharpness)
        moe = self._moe_seconds(work, knobs, traffic) if work.has_moe else 0.0 * linear
        n = self.n_devices
        comm = 2.0 * (n - 1) / n * share * work.comm_bytes / self.nvlink_bandwidth
        return {"linear": share * linear, "attention": share * attention, "moe": share * moe, "comm": comm}

    def cost(self, work: Workload) -> Cost:
        """One step of `work`'s scenario on this system (module docstring); decode or prefill."""
        check_workload(self.name, work)
        check_phase(self.name, work, ("decode", "prefill"))
        cfg, scenario, knobs = whole_model_inputs(self.name, work)
        steps, batching = one_step(scenario, cfg.causal)
        run = self.batching_cost(step_work(cfg, steps, batching, knobs))
        parts = {f"{group}_latency_s": value for group, value in run.op_latency_s.items()}
        return Cost.of(self.name, self.modelled, {**parts, "tokens_per_s": run.tokens_per_s},
                       latency_s=run.latency_s, energy_j=run.energy_j, memory_bytes=jnp.sum(work.footprint),
                       area_mm2=run.area_mm2)

    def batching_cost(self, work: StepWork, knobs: DuplexKnobs | None = None) -> DuplexCost:
        """Throughput, energy and area of the run `work` (see `DuplexCost`)."""
        parts = self.step_seconds(work, knobs)
        step = sum(parts.values())
        latency = jnp.sum(step)
        tokens = jnp.sum(work.generated)
        energy = self._energy(work, knobs) + self.xpu.static_power_w * latency * self.n_devices
        area = self.xpu.area_mm2 + (0.0 if self.mode == "gpu" else self.pim.area_mm2())
        return DuplexCost(step_latency_s=step, latency_s=latency, tokens=tokens, tokens_per_s=tokens / latency,
                          energy_j=energy, area_mm2=area + 0.0 * latency,
                          op_latency_s={k: jnp.sum(v) for k, v in parts.items()})

    def _energy(self, work: StepWork, knobs: DuplexKnobs | None) -> Array:
        """Dynamic energy [J]: FLOPs x J/FLOP + DRAM bytes x J/byte on the processor that runs them.

        The expert split charges the PIM its fraction of the experts (the continuous knob, or
        the dispatch's all-or-nothing; the greedy optimum's split is charged as the dispatch's).
        """
        x, p = self.xpu, self.pim
        traffic = x.activation_traffic
        linear = sum(jnp.sum(work.flops[op]) * x.energy_per_flop_bf16
                     + jnp.sum(self._bytes(work, op, traffic)) * x.energy_per_byte
                     for op in LINEAR_OPS if op in work.flops)
        on_pim = self.mode != "gpu"
        dec_f, dec_b = jnp.sum(work.flops["attn_decode"]), jnp.sum(self._bytes(work, "attn_decode", traffic))
        pre = (jnp.sum(work.flops["attn_prefill"]) * x.energy_per_flop_bf16
               + jnp.sum(self._bytes(work, "attn_prefill", traffic)) * x.energy_per_byte)
        e_flop, e_byte = (p.energy_per_flop, p.energy_per_byte) if on_pim else (x.energy_per_flop_bf16,
                                                                                  x.energy_per_byte)
        attention = dec_f * e_flop + dec_b * e_byte + pre
        moe = 0.0
        if work.has_moe:
            flops = work.expert_tokens * work.expert_flops_per_token
            nbytes = work.expert_bytes() + traffic * work.expert_tokens * work.expert_act_per_token
            if self.mode == "gpu":
                frac = jnp.zeros_like(flops)
            else:
                k = knobs or DuplexKnobs.dispatch(work.n_experts, flops.dtype)
                split = jnp.where(work.mixed > 0, k.expert_split_mixed, k.expert_split_decode)
                frac = jnp.clip(split[:, None] - jnp.arange(work.n_experts, dtype=flops.dtype), 0.0, 1.0)
            moe = jnp.sum(frac * (flops * p.energy_per_flop + nbytes * p.energy_per_byte)
                          + (1 - frac) * (flops * x.energy_per_flop_bf16 + nbytes * x.energy_per_byte))
        return linear + attention + moe


def one_step(scenario: Scenario, causal: bool = True) -> tuple[BatchSteps, ContinuousBatching]:
    """The scenario as one continuous-batching step (module docstring) and its batching settings."""
    batch, context = float(scenario.batch), float(scenario.context_len)
    zero = np.zeros(1)
    if scenario.phase == "decode":
        attended = context + (scenario.gen_len - 1) / 2
        steps = BatchSteps(decode_tokens=np.full(1, batch), decode_context=np.full(1, batch * attended),
                           prefill_requests=zero, prefill_tokens=zero, prefill_pairs=zero)
    else:
        pairs = context * (context + 1) / 2 if causal else context * context
        steps = BatchSteps(decode_tokens=zero, decode_context=zero, prefill_requests=np.full(1, batch),
                           prefill_tokens=np.full(1, batch * context), prefill_pairs=np.full(1, batch * pairs))
    batching = ContinuousBatching(batch=scenario.batch, prompt_len=scenario.context_len, gen_len=scenario.gen_len,
                                  weight_bits=scenario.weight_bits, kv_bits=scenario.kv_bits,
                                  act_bits=scenario.act_bits)
    return steps, batching


def duplex(mode: str = "coprocessing", pim_preset: str = "logic-pim", n_devices: int = 1, dtype=jnp.float32,
           xpu: GPU | None = None, **pim_overrides: float) -> Duplex:
    """A Duplex system: the simulator's H100 xPU (unless `xpu` is given) plus `pim_preset` per stack."""
    return Duplex(xpu=duplex_xpu(dtype) if xpu is None else xpu, pim=pim(pim_preset, dtype, **pim_overrides),
                  nvlink_bandwidth=jnp.asarray(NVLINK_BYTES_PER_S, dtype), mode=mode, n_devices=n_devices)


def devices_needed(cfg: ModelConfig, batching: ContinuousBatching, capacity_bytes: float = 80e9) -> int:
    """Smallest power of two of 80 GB devices holding the weights and the full KV cache [devices]."""
    full = Scenario(phase="decode", batch=batching.batch, context_len=batching.prompt_len, gen_len=batching.gen_len,
                    weight_bits=batching.weight_bits, kv_bits=batching.kv_bits, act_bits=batching.act_bits)
    resident = float(jnp.sum(workload(cfg, full).footprint[:2]))
    return 2 ** max(0, math.ceil(math.log2(resident / capacity_bytes)))


def throughput_gains(cfg: ModelConfig, batching: ContinuousBatching,
                     modes: tuple[str, ...] = ("dispatch", "coprocessing"), pim_preset: str = "logic-pim", sharpness: float = math.inf) -> dict[str, float]:
    """Tokens/s of Duplex in each of `modes` over the H100-only system's, same run and device count.

    Returns {mode: gain} plus "devices" and "gpu_tokens_per_s". Sharp rooflines by default
    (the paper's simulator has no smoothing).
    """
    unknown = [m for m in modes if m not in MODES or m == "gpu"]
    if unknown:
        raise ValueError(f"modes={unknown[0]!r}: must be among dispatch, coprocessing")
    work = step_work(cfg, batching.simulate(causal=cfg.causal), batching)
    n = devices_needed(cfg, batching)
    xpu = duplex_xpu(sharpness=sharpness)
    base = duplex("gpu", n_devices=n, xpu=xpu, sharpness=sharpness).batching_cost(work).tokens_per_s
    out: dict[str, float] = {"devices": n, "gpu_tokens_per_s": float(base)}
    for mode in modes:
        out[mode] = float(duplex(mode, pim_preset, n_devices=n, xpu=xpu, sharpness=sharpness).batching_cost(work).tokens_per_s
                          / base)
    return out


def roofline_crossover(xpu: GPU, device_pim: PIM) -> float:
    """Op/B below which the PIM runs a kernel faster than the xPU (sharp rooflines) [FLOP/byte].

    Per byte the xPU needs max(x / P_xpu, 1 / B_xpu), the PIM max(x / P_pim, 1 / B_pim); with
    B_pim > B_xpu and P_pim < P_xpu they tie where x / P_pim = 1 / B_xpu (if the PIM is then
    compute-bound): x = P_pim / B_xpu. Found by bisection on the two models so it holds for
    any parameters.
    """
    def gap(x):
        t_xpu = max(x / float(xpu.peak_flops_bf16 * xpu.compute_efficiency),
                    1 / float(xpu.mem_bandwidth * xpu.memory_efficiency))
        t_pim = max(x / float(device_pim.peak_flops()), 1 / float(device_pim.bandwidth()))
        return t_pim - t_xpu
    low, high = 1e-3, 1e6
    if gap(low) >= 0 or gap(high) <= 0:
        raise ValueError("pim: never faster than the xPU at any Op/B (or always): no crossover")
    for _ in range(200):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if gap(mid) < 0 else (low, mid)
    return math.sqrt(low * high)
