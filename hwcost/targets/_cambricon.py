"""Cambricon-LLM target: an NPU plus NAND flash with in-flash compute (Yu et al., MICRO 2024,
arXiv 2409.15654).

Decode only, weights in flash, KV cache in LPDDR. Every weight matrix-vector product is
split between two concurrent paths (paper section on hardware-aware tiling):

- read-compute: the NPU broadcasts the input slice, every die reads a page (tR), its compute
  core multiplies it, and each channel returns partial sums. A tile is H x W bytes with
  H * W = ch * c * P (ch channels, c compute cores = dies per channel, P page bytes); the
  channel traffic Trans = W + ch * H is smallest at

      H* = sqrt(c * P),   W* = ch * H*                                   (tiling, eq. for Trans)

- plain read: raw pages stream over the channel buses to the NPU, which computes on them.

Per request (channel bus rate bw bytes/s, page read tR seconds; `tokens` vectors per step):

      t_rc    = smax(tR, tokens * 2P / core_ops) + tokens * W / (ch * bw)                 [s]
      rate_rc = tokens * (H + W / ch) / (tR * bw)        bus share taken by read-compute
      t_r     = P / ((1 - rate_rc) * bw)                  one page over the rest of the bus [s]
      alpha   = t_r / (t_r + t_rc)                        share of requests done in flash

(alpha is about 0.355 / 0.356 / 0.357 for S / M / L.) The two paths run at once, so the flash
serves weights at

      R_flash = ch * c * P / t_rc  +  smin(ch * (1 - rate_rc) * bw, dies * (planes - 1) * P / tR)

bytes/s: read-compute moves a tile of ch*c pages per t_rc; plain reads fill the rest of the
buses, their array reads served by the die's other planes (our reading of the two planes
per die; it does not bind at the paper's configurations). Per op class and layer:

      t_op = smax(weight bytes / R_flash, plain-read share of FLOPs / npu_ops)          [s]
      t_attention = smax(KV bytes / lpddr_bandwidth, FLOPs / npu_ops)                   [s]

and the decode step takes the sum (layers run one after another). smax is
`hwcost.smooth_max2` with the module's sharpness (inf = the sharp maximum).

`FlexGenSSD` is the flash-offloading baseline: all weights stream from an SSD each token.
Energy, dollars and area are not modelled (the paper gives no figures): Cost marks them so
(NaN, absent from `modelled`), and choosing one as a metric is an error.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from nets import ModelConfig
from hwcost.targets._descent import minimize
from hwcost.targets._target import Cost, Target, check_phase, check_workload
from hwcost._scenario import Scenario
from hwcost._smooth import smooth_max2
from hwcost._workload import ATTENTION_CORE, OPS, Workload, workload

FLASH_CONFIGS = {  # the paper's configurations: channels, chips per channel (2 dies per chip)
    "S": (8.0, 2.0), "M": (16.0, 4.0), "L": (32.0, 8.0),
}
_FIELDS = ("npu_ops_per_s", "lpddr_bandwidth", "channels", "chips_per_channel", "dies_per_chip",
           "planes_per_die", "page_bytes", "read_latency_s", "channel_bandwidth", "core_ops_per_s", "sharpness")
_ON_NPU = ("norm",)  # norm scales stay in NPU SRAM; every other weight byte lives in flash


def _concrete(x) -> np.ndarray | None:
    try:
        return np.asarray(x)
    except Exception:  # a tracer under jit / grad: nothing to check at trace time
        return None


def _smin(a: Array, b: Array, sharpness: Array) -> Array:
    """Smooth minimum of positive a, b: 1 / smax(1/a, 1/b) (exact min at sharpness inf)."""
    return 1.0 / smooth_max2(1.0 / a, 1.0 / b, sharpness)


class CambriconLLM(Target):
    """NPU + LPDDR + in-flash-compute NAND (see the module docstring). All fields are float
    hardware parameters, counts included (relaxed, so an optimiser can move them):

    npu_ops_per_s [ops/s, 2 per MAC]; lpddr_bandwidth [bytes/s]; channels; chips_per_channel;
    dies_per_chip; planes_per_die; page_bytes [bytes]; read_latency_s (tR) [s];
    channel_bandwidth [bytes/s per channel]; core_ops_per_s [ops/s of one die's compute core];
    sharpness [p of the smooth maxima; inf = sharp].
    """

    npu_ops_per_s: Float[Array, ""]
    lpddr_bandwidth: Float[Array, ""]
    channels: Float[Array, ""]
    chips_per_channel: Float[Array, ""]
    dies_per_chip: Float[Array, ""]
    planes_per_die: Float[Array, ""]
    page_bytes: Float[Array, ""]
    read_latency_s: Float[Array, ""]
    channel_bandwidth: Float[Array, ""]
    core_ops_per_s: Float[Array, ""]
    sharpness: Float[Array, ""]
    name: str = eqx.field(static=True, default="cambricon-llm")
    modelled: ClassVar[frozenset[str]] = frozenset({"latency_s", "memory_bytes"})

    def __check_init__(self) -> None:
        for field in _FIELDS:
            value = _concrete(getattr(self, field))
            if value is None or np.shape(value) != ():
                continue
            finite_needed = field != "sharpness"
            if np.isnan(value) or not value > 0 or (finite_needed and not np.isfinite(value)):
                raise ValueError(f"{self.name}.{field}={float(value)!r}: must be a finite positive number"
                                 + (" (inf allowed: the sharp limit)" if field == "sharpness" else ""))
        planes = _concrete(self.planes_per_die)
        if planes is not None and np.shape(planes) == () and planes < 1:
            raise ValueError(f"{self.name}.planes_per_die={float(planes)!r}: must be at least 1")
        values = [_concrete(getattr(self, f)) for f in ("page_bytes", "read_latency_s", "channel_bandwidth",
                                                          "chips_per_channel", "dies_per_chip")]
        if all(v is not None and np.shape(v) == () for v in values):
            page, t_read, bw, chips, per_chip = (float(v) for v in values)
            # read-compute traffic of one optimal tile must fit in the bus time of one page read
            if 2 * np.sqrt(chips * per_chip * page) >= t_read * bw:
                raise ValueError(f"{self.name}.chips_per_channel={chips!r}: read-compute traffic "
                                 f"2*sqrt(c*P) = {2 * np.sqrt(chips * per_chip * page):.0f} bytes must be below "
                                 f"tR*bw = {t_read * bw:.0f} bytes per page read: fewer dies per channel, a "
                                 "faster channel or a longer tR")

    # ---- flash organisation ------------------------------------------------------------
    @property
    def cores_per_channel(self) -> Array:
        """c: in-flash compute cores (one per die) on one channel."""
        return self.chips_per_channel * self.dies_per_chip

    @property
    def dies(self) -> Array:
        """Total flash dies (S 32, M 128, L 512)."""
        return self.channels * self.cores_per_channel

    def tile(self) -> tuple[Array, Array]:
        """Hardware-aware tile (H*, W*) [bytes of 8-bit weights]: H* = sqrt(c*P), W* = ch*H*."""
        height = jnp.sqrt(self.cores_per_channel * self.page_bytes)
        return height, self.channels * height

    def requests(self, tokens: Array | float = 1.0) -> dict[str, Array]:
        """t_rc [s], rate_rc [bus fraction], t_r [s] and alpha for `tokens` vectors per step."""
        height, width = self.tile()
        core_s = tokens * 2.0 * self.page_bytes / self.core_ops_per_s
        t_rc = smooth_max2(self.read_latency_s, core_s, self.sharpness) + tokens * width / (
            self.channels * self.channel_bandwidth)
        rate_rc = tokens * (height + width / self.channels) / (self.read_latency_s * self.channel_bandwidth)
        t_r = self.page_bytes / ((1.0 - rate_rc) * self.channel_bandwidth)
        return {"t_rc": t_rc, "rate_rc": rate_rc, "t_r": t_r, "alpha": t_r / (t_r + t_rc)}

    def alpha(self) -> Array:
        """Share of flash requests done as read-compute at batch 1 (~0.355 for S)."""
        return self.requests()["alpha"]

    def flash_rates(self, tokens: Array | float = 1.0) -> tuple[Array, Array]:
        """(read-compute, plain-read) weight bytes served per second [bytes/s]."""
        r = self.requests(tokens)
        read_compute = self.dies * self.page_bytes / r["t_rc"]
        bus = self.channels * (1.0 - r["rate_rc"]) * self.channel_bandwidth
        spare_planes = self.dies * (self.planes_per_die - 1.0) * self.page_bytes / self.read_latency_s
        plain = jnp.where(self.planes_per_die > 1.0, _smin(bus, jnp.maximum(spare_planes, 1e-30), self.sharpness),
                          0.0 * bus)
        return read_compute, plain

    # ---- cost ----------------------------------------------------------------------------
    def cost(self, work: Workload) -> Cost:
        """Latency of one decode step of `work` (see the module docstring); per op class and layer."""
        check_workload(self.name, work)
        check_phase(self.name, work, ("decode",))  # weights in flash, one token per request per step
        zeros = jnp.zeros_like(work.op_flops["lm_head"])
        read_compute, plain = self.flash_rates(work.tokens)
        flash_rate = read_compute + plain
        plain_share = plain / flash_rate
        latency = []
        for op in OPS:
            flops = work.op_flops.get(op, zeros)
            if op in ATTENTION_CORE:
                kv = work.op_bytes.get("kv", {}).get(op, zeros)
                t = smooth_max2(kv / self.lpddr_bandwidth, flops / self.npu_ops_per_s, self.sharpness)
            elif op in _ON_NPU:
                t = flops / self.npu_ops_per_s
            else:
                weights = work.op_bytes.get("weights", {}).get(op, zeros)
                kv = work.op_bytes.get("kv", {}).get(op, zeros)  # new KV entries written to LPDDR
                flash_s = weights / flash_rate + kv / self.lpddr_bandwidth
                t = smooth_max2(flash_s, plain_share * flops / self.npu_ops_per_s, self.sharpness)
            latency.append(zeros + t)
        op_latency = jnp.stack(latency)
        total = jnp.sum(op_latency)
        return Cost.of(self.name, self.modelled, {"op_latency_s": op_latency}, latency_s=total,
                       memory_bytes=jnp.sum(work.footprint))

    def decode_tokens_per_s(self, cfg: ModelConfig, scenario: Scenario | None = None) -> Array:
        """Decode throughput [tokens/s] of `cfg` (default scenario: `paper_scenario()`)."""
        scenario = paper_scenario() if scenario is None else scenario
        work = workload(cfg, scenario)
        return work.tokens / self.cost(work).latency_s


def paper_scenario(context_len: int = 2048) -> Scenario:
    """Batch-1 W8A8 decode with an 8-bit KV cache. The paper does not state its sequence
    length; 2048 tokens (OPT's whole window) is our assumption."""
    return Scenario(phase="decode", batch=1, context_len=context_len, weight_bits=8, kv_bits=8, act_bits=8)


def cambricon(config: str = "S", dtype=jnp.float32, **overrides: float) -> CambriconLLM:
    """Preset: flash configuration S, M or L (channels, chips per channel from the paper's table),
    2 dies per chip, 2 planes per die, 16 KB pages, tR 30 us, 1 GB/s channels, a 1.64 GOPS core per
    die (a 16 KB page in 20 us), NPU 2 TOPS, LPDDR5X 40 GB/s; sharpness inf (the paper's numbers)."""
    key = config.upper() if isinstance(config, str) else config
    if key not in FLASH_CONFIGS:
        raise ValueError(f"config={config!r}: must be one of {', '.join(FLASH_CONFIGS)}")
    channels, chips = FLASH_CONFIGS[key]
    params = dict(npu_ops_per_s=2e12, lpddr_bandwidth=40e9, channels=channels, chips_per_channel=chips,
                  dies_per_chip=2.0, planes_per_die=2.0, page_bytes=16384.0, read_latency_s=30e-6,
                  channel_bandwidth=1e9, core_ops_per_s=2 * 16384 / 20e-6, sharpness=float("inf"))
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"overrides={sorted(unknown)}: unknown; allowed {sorted(params)}")
    params.update(overrides)
    return CambriconLLM(**{k: jnp.asarray(v, dtype) for k, v in params.items()}, name=f"cambricon-llm-{key}")


class FlexGenSSD(eqx.Module):
    """Flash-offloading baseline (FlexGen with weights on an SSD): every decode step streams
    all flash-resident weight bytes over the SSD link, ssd_bandwidth [bytes/s]. Default 7 GB/s
    (a PCIe 4.0 x4 NVMe drive; our assumption, the note gives no figure); 4 GB/s is UFS 4.0."""

    ssd_bandwidth: Float[Array, ""]

    def __check_init__(self) -> None:
        value = _concrete(self.ssd_bandwidth)
        if value is not None and np.shape(value) == () and not (np.isfinite(value) and value > 0):
            raise ValueError(f"ssd_bandwidth={float(value)!r}: must be a finite positive number of bytes/s")

    def decode_tokens_per_s(self, cfg: ModelConfig, scenario: Scenario | None = None) -> Array:
        """[tokens/s] = tokens / (weight bytes / ssd_bandwidth)."""
        scenario = paper_scenario() if scenario is None else scenario
        work = workload(cfg, scenario)
        weights = work.total_bytes("weights", tuple(op for op in OPS if op not in _ON_NPU))
        return work.tokens * self.ssd_bandwidth / weights


def flexgen_ssd(ssd_bandwidth: float = 7e9, dtype=jnp.float32) -> FlexGenSSD:
    return FlexGenSSD(ssd_bandwidth=jnp.asarray(ssd_bandwidth, dtype))


# ---- co-design: the smallest flash configuration that meets a decode rate -----------------
CHANNEL_COST_DIES = 4.0  # a channel (controller, PHY, pins) counted as this many dies: our assumption


def flash_size(channels: Array, chips_per_channel: Array, dies_per_chip: Array | float = 2.0,
               channel_cost_dies: float = CHANNEL_COST_DIES) -> Array:
    """Size of a flash configuration in die-equivalents: dies + channel_cost_dies * channels."""
    return channels * chips_per_channel * dies_per_chip + channel_cost_dies * channels


def _with_counts(base: CambriconLLM, channels: Array, chips_per_channel: Array) -> CambriconLLM:
    return eqx.tree_at(lambda t: (t.channels, t.chips_per_channel), base, (channels, chips_per_channel))


def _check_search(min_tokens_per_s: float, max_channels: int, max_chips: int) -> None:
    if not isinstance(min_tokens_per_s, (int, float)) or not 0 < min_tokens_per_s < float("inf"):
        raise ValueError(f"min_tokens_per_s={min_tokens_per_s!r}: must be a finite positive rate")
    for name, value in (("max_channels", max_channels), ("max_chips", max_chips)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: must be a positive integer")


def exhaustive_flash_search(cfg: ModelConfig, min_tokens_per_s: float, *, max_channels: int = 32,
                            max_chips: int = 8, base: CambriconLLM | None = None,
                            scenario: Scenario | None = None) -> dict:
    """Every integer (channels, chips per channel) in [1, max]^2 costed at once (vmapped);
    returns the feasible one of smallest `flash_size` (ties: fewer channels) and the grid."""
    _check_search(min_tokens_per_s, max_channels, max_chips)
    base = cambricon("S") if base is None else base
    work = workload(cfg, paper_scenario() if scenario is None else scenario)
    ch, chips = np.meshgrid(np.arange(1, max_channels + 1), np.arange(1, max_chips + 1), indexing="ij")
    ch, chips = ch.ravel().astype(np.float32), chips.ravel().astype(np.float32)

    def rate(c, k):
        return work.tokens / _with_counts(base, c, k).cost(work).latency_s
    tps = np.asarray(jax.jit(jax.vmap(rate))(jnp.asarray(ch), jnp.asarray(chips)))
    size = np.asarray(flash_size(ch, chips, float(base.dies_per_chip)))
    feasible = tps >= min_tokens_per_s
    if not feasible.any():
        return {"feasible": False, "grid_points": int(ch.size)}
    order = np.lexsort((ch, np.where(feasible, size, np.inf)))
    best = int(order[0])
    return {"feasible": True, "channels": int(ch[best]), "chips_per_channel": int(chips[best]),
            "dies": int(ch[best] * chips[best] * float(base.dies_per_chip)), "size": float(size[best]),
            "tokens_per_s": float(tps[best]), "grid_points": int(ch.size)}


def gradient_flash_search(cfg: ModelConfig, min_tokens_per_s: float, *, max_channels: int = 32, max_chips: int = 8,
                          steps: int = 1500, learning_rate: float = 0.1, penalty: float = 200.0,
                          init: tuple[float, float] = (8.0, 2.0), base: CambriconLLM | None = None,
                          scenario: Scenario | None = None) -> dict:
    """Relaxed (continuous) channels and chips per channel moved by Adam (optax) on

        flash_size / size(init) + penalty * relu(log(min_tokens_per_s) - log(tokens/s))^2

    within [1, max] (a sigmoid box), then rounded: channels to floor-1 .. ceil+1 of the relaxed
    value, chips per channel up from its floor to the first feasible integer; the smallest. Returns the relaxed
    optimum, the rounded answer and the loss history."""

    _check_search(min_tokens_per_s, max_channels, max_chips)
    for name, value, high in (("init[0]", init[0], max_channels), ("init[1]", init[1], max_chips)):
        if not 1 < value < high:
            raise ValueError(f"{name}={value!r}: must lie strictly inside (1, {high})")
    base = cambricon("S") if base is None else base
    work = workload(cfg, paper_scenario() if scenario is None else scenario)
    highs = jnp.asarray([max_channels, max_chips], jnp.float32)
    per_chip = float(base.dies_per_chip)

    def counts(z):
        return 1.0 + (highs - 1.0) * jax.nn.sigmoid(z)

    def tokens_per_s(c):
        return work.tokens / _with_counts(base, c[0], c[1]).cost(work).latency_s

    size0 = float(flash_size(init[0], init[1], per_chip))
    log_target = float(np.log(min_tokens_per_s))

    def loss(z):
        c = counts(z)
        shortfall = jax.nn.relu(log_target - jnp.log(tokens_per_s(c)))
        return flash_size(c[0], c[1], per_chip) / size0 + penalty * shortfall**2

    u = (jnp.asarray(init, jnp.float32) - 1.0) / (highs - 1.0)
    z = jnp.log(u / (1.0 - u))
    z, history = minimize(loss, z, learning_rate=learning_rate, steps=steps)
    relaxed = np.asarray(counts(z), np.float64)
    rate = jax.jit(tokens_per_s)
    scored = []
    for c in range(max(1, int(np.floor(relaxed[0])) - 1), min(max_channels, int(np.ceil(relaxed[0])) + 1) + 1):
        for k in range(max(1, int(np.floor(relaxed[1]))), max_chips + 1):  # the first feasible chip count
            if float(rate(jnp.asarray([c, k], jnp.float32))) >= min_tokens_per_s:
                scored.append((float(flash_size(c, k, per_chip)), c, k))
                break
    scored.sort()
    result = {"relaxed_channels": float(relaxed[0]), "relaxed_chips_per_channel": float(relaxed[1]),
              "relaxed_tokens_per_s": float(rate(jnp.asarray(relaxed, jnp.float32))), "loss_history": history,
              "feasible": bool(scored)}
    if scored:
        size, c, k = scored[0]
        result.update(channels=c, chips_per_channel=k, dies=int(c * k * per_chip), size=size,
                      tokens_per_s=float(rate(jnp.asarray([c, k], jnp.float32))))
    return result
