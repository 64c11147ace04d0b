"""`CalibratedGPU`: a GPU (hardware) priced with a software profile, and its JSON preset.

`save_preset` writes one (schema PRESET_SCHEMA: the GPU's hardware fields and the software
profile, apart); `load_preset` reads it back (also the older schema PRESET_SCHEMA_V1, whose
efficiency curves are read as our program's profile), and `hwcost.get_target(path)` finds it
by path like any other target.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

import nets
from hwcost._workload import ATTENTION_CORE, OPS, Workload
from hwcost.calibration import _input_check
from hwcost.calibration._efficiency import Efficiency
from hwcost.calibration._kernels import workload_kernels
from hwcost.calibration._software import Software, as_software, kernel_seconds, software
from hwcost.targets._gpu import GPU, PRECISION_FIELDS, roofline_cost
from hwcost.targets._presets import PRESETS, gpu
from hwcost.targets._target import ALL_MODELLED, Cost, Target, check_workload

PRESET_SCHEMA = "codesign.calibrated-gpu/2"
PRESET_SCHEMA_V1 = "codesign.calibrated-gpu/1"


class CalibratedGPU(Target):
    """A GPU priced with a software profile: kernel times from `software`'s efficiency and program structure.

    Composition, not a subclass: `device` is the `GPU` (hardware only: peaks, bandwidth,
    prices, energies; its scalar efficiencies are 1: the profile replaces them), `software`
    the `hwcost.Software` (whose kernels: ours, a peer's, or the roofline). Kernel times are
    `kernel_seconds` of `workload_kernels`; energy, dollars, memory and area are the GPU's
    formulas (`roofline_cost`) applied to them. The attention core (score and value) is one
    fused kernel, its time shared back to the two classes in proportion to their compute
    plus memory times, as in `GPU`; a whole decode step's KV-cache copies (if the software
    makes any) are charged to it, and a whole step's layer-weight copies to the op classes
    owning those weights, in proportion to their weight bytes.
    """

    device: GPU
    software: Software
    name: str = eqx.field(static=True, default="gpu-calibrated")
    modelled: ClassVar[frozenset[str]] = ALL_MODELLED

    @property
    def efficiency(self) -> Efficiency | None:
        """The software's fitted efficiency curves (None for the roofline profile)."""
        return self.software.efficiency

    def _op_times(self, work: Workload):
        compute, memory, _, hbm = self.device._op_times(work)
        kernels = workload_kernels(work, self.device.activation_traffic)
        roofline = {}
        copy = kernels.pop("kv_copy", None)
        weight_copy = kernels.pop("weight_copy", None)
        seconds = lambda k: kernel_seconds(self.device, self.software, int(k["group"]), k["flops"], k["bytes"],  # noqa: E731
                                           k["bits"], k["waste"], 1.0, k["copy"], k["extra_bytes"], k["rows"],
                                           k["step"])
        for name, k in kernels.items():
            t = seconds(k)
            if name == "attention" and copy is not None:  # the cache copies are charged to the attention core
                t = t + seconds(copy)
            if name != "attention":
                roofline[name] = t
                continue
            core = [op for op in ATTENTION_CORE if op in compute]
            parts = [compute[op] + memory[op] for op in core]
            total = sum(parts)
            positive = total > 0
            for op, part in zip(core, parts):
                roofline[op] = t * jnp.where(positive, part / jnp.where(positive, total, 1.0), 1.0 / len(core))
        if weight_copy is not None:  # a layer's weight copies are charged to the op classes owning those weights
            t = seconds(weight_copy)
            weights = work.op_bytes.get("weights", {})
            owners = [op for op in roofline if op in weights and op not in ("embedding", "lm_head")]
            total = sum(weights[op] for op in owners)
            safe = jnp.where(total > 0, total, 1.0)
            for op in owners:
                roofline[op] = roofline[op] + t * jnp.where(total > 0, weights[op] / safe, 0.0)
        return compute, memory, roofline, hbm

    def cost(self, work: Workload) -> Cost:
        """Latency (calibrated kernel times), energy, dollars, memory and area of `work`."""
        check_workload(self.name, work)
        _, _, roofline, hbm = self._op_times(work)
        return roofline_cost(self.device, work, roofline, hbm, self.name)

    def op_times(self, work: Workload) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(compute, memory, calibrated kernel time) per `[op, slot]` [s]; the first two are the GPU's roofline parts."""
        zeros = jnp.zeros_like(work.op_flops["lm_head"])
        parts = self._op_times(work)[:3]
        return tuple(jnp.stack([zeros + part.get(op, 0.0) for op in OPS]) for part in parts)

    def fits(self, work: Workload) -> jax.Array:
        """Whether the workload's resident bytes fit in the device's memory (bool array)."""
        return self.device.fits(work)


def calibrated(base: GPU, sw: Software | Efficiency | None, name: str | None = None) -> CalibratedGPU:
    """`base` (hardware) priced with the software profile `sw` (an `Efficiency` is our program's; None the roofline).

    `base`'s scalar efficiencies must be 1 (the profile replaces them). Transfer to another
    GPU is this with that GPU's preset: `calibrated(gpu("h100"), load_preset(h200_file).software)`.
    """
    if isinstance(base, CalibratedGPU):
        base = base.device
    if not isinstance(base, GPU):
        raise ValueError(f"base={type(base).__name__}: must be a hwcost.GPU")
    return CalibratedGPU(device=base, software=as_software(sw), name=base.name if name is None else name)


def save_preset(target: CalibratedGPU, path: str | Path, report: dict | None = None) -> Path:
    """Write a calibrated GPU as JSON (schema PRESET_SCHEMA); `load_preset(path)` (or `hwcost.get_target(path)`) reads it back."""
    if not isinstance(target, CalibratedGPU):
        raise ValueError(f"target={type(target).__name__}: must be a CalibratedGPU (see hwcost.calibrate)")
    fields = {f.name: float(getattr(target.device, f.name)) for f in dataclasses.fields(GPU) if f.name != "name"}
    body = {"schema": PRESET_SCHEMA, "name": target.name, "gpu": fields, "software": target.software.to_dict()}
    if report is not None:
        body["fit"] = {k: v for k, v in report.items() if k not in ("calibrated", "roofline")}
        body["errors"] = {split: {k: v for k, v in report[split].items() if k != "predicted_s"}
                          for split in ("calibrated", "roofline")}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nets.atomic_write(path, json.dumps(body, indent=1))  # a kill mid-write never leaves half a preset
    return path


def load_preset(path: str | Path) -> CalibratedGPU:
    """Read a calibrated GPU written by `save_preset`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"target={str(path)!r}: no such calibrated preset file")
    body = nets.read_json_file(path, "target", what=f"a calibrated preset ({PRESET_SCHEMA})")
    if not isinstance(body, dict) or body.get("schema") not in (PRESET_SCHEMA, PRESET_SCHEMA_V1):
        got = body.get("schema") if isinstance(body, dict) else type(body).__name__
        raise nets.InputError("target.schema", got, f"must be {PRESET_SCHEMA!r} (or {PRESET_SCHEMA_V1!r})",
                              file=str(path))
    with _input_check.as_input_error(str(path), "target", f"must be a calibrated preset written by "
                                     f"hwcost.save_preset ({PRESET_SCHEMA}: name, gpu, software)"):
        return _preset_of(body)


def _preset_of(body: dict) -> CalibratedGPU:
    if not isinstance(body.get("gpu"), dict) or not isinstance(body.get("name"), str):
        raise ValueError("gpu must be an object of numbers and name a string")
    bad = sorted(k for k, v in body["gpu"].items() if not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                           and math.isfinite(v) and v >= 0))
    if bad:
        raise ValueError(f"gpu.{bad[0]}={body['gpu'][bad[0]]!r} must be a finite number >= 0")
    names = {f.name for f in dataclasses.fields(GPU)} - {"name"}
    # a preset written before the per-precision rates existed lacks them: GPU's fallback rule fills them;
    # one without static power prices none (0 W: energy counts work done only)
    optional = set(PRECISION_FIELDS) | {"static_power_w"}
    if not set(body["gpu"]) <= names or not names - set(body["gpu"]) <= optional:
        raise ValueError(f"target.gpu={sorted(body['gpu'])}: must have exactly the GPU fields {sorted(names)} "
                         f"({', '.join(sorted(optional))} optional)")
    given = {"static_power_w": 0.0, **body["gpu"]}
    base = (body.get("fit") or {}).get("base") if isinstance(body.get("fit"), dict) else None
    if isinstance(base, str) and base.lower() in PRESETS and set(PRECISION_FIELDS) - set(given):
        # the per-precision rates of the datasheet preset it was fitted on (hardware, not fitted)
        sheet = gpu(base)
        given.update({k: float(getattr(sheet, k)) for k in PRECISION_FIELDS if k not in given})
    fields = {k: jnp.asarray(v, jnp.float32) for k, v in given.items()}
    if body.get("schema") == PRESET_SCHEMA_V1:  # the curves of our program, with its structure
        sw = software("ours", Efficiency.from_dict(body["efficiency"]))
    else:
        sw = Software.from_dict(body["software"])
    return CalibratedGPU(device=GPU(name=str(body["name"]), **fields), software=sw, name=str(body["name"]))
