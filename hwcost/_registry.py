"""`get_target`: the one lookup from a name (or a calibrated preset file) to a `hwcost.Target`.

Names (case-insensitive; `target_names()` lists every fixed one):
- accelerator presets: h800, h20, a800, ascend-910b, a100-sxm, h100-sxm, h200, b200, tpu-v4, tpu-v5e,
  tpu-v5p, tpu-v6e, tpu7x (aliases 910b, a100, a100-80gb, h100, h200-sxm, b200-sxm, v4, v5e, v5p, v6e,
  trillium, ironwood, tpu-ironwood, tpu-v7x): `hwcost.gpu(name)` (a TPU is the same roofline
  of matrix-unit peak and HBM bandwidth; see hwcost.targets._presets).
- a path to a calibrated preset (a .json file written by `codesign calibrate` /
  `hwcost.save_preset`): the `CalibratedGPU` it holds.
- afd: Step-3's 2A2F attention-FFN disaggregation on H800s (16 attention + 16 FFN GPUs,
  2 FFN instances, 3 micro-batches, 50 ms TPOT target, 400 Gbit/s of network per attention
  GPU: one 400G NIC per GPU, Step-3's H800 node). afd-<gpu>: the same deployment with both
  sides on one preset (afd-h20); afd-<attention gpu>+<ffn gpu>: a side each (afd-h20+h800).
  The scenario's batch must be a multiple of 48 (attention GPUs x micro-batches).
- duplex: H100-class xPU + Logic-PIM with expert and attention co-processing;
  duplex-dispatch (the paper's dispatch without co-processing); duplex-gpu (the xPU alone).
- cambricon: Cambricon-LLM with flash configuration S; cambricon-s, cambricon-m, cambricon-l.
- spatten: the SpAtten attention accelerator (attention core only).
- xrnpe: the XR-NPE mixed-precision MAC engine.
Anything else is a ValueError that lists the allowed names.
"""

from __future__ import annotations

from pathlib import Path

from hwcost.targets._afd import afd
from hwcost.calibration._preset import load_preset
from hwcost.targets._cambricon import FLASH_CONFIGS, cambricon
from hwcost.targets._duplex import duplex
from hwcost.targets._presets import _ALIASES, PRESETS, gpu
from hwcost.targets._spatten import SpAtten
from hwcost.targets._target import Target
from hwcost.targets._xrnpe import xrnpe

AFD_LINK_GBPS = 400.0  # network per attention GPU [Gbit/s]: one 400G NIC per GPU (Step-3's H800 nodes)
_DUPLEX = {"duplex": "coprocessing", "duplex-dispatch": "dispatch", "duplex-gpu": "gpu"}
_CAMBRICON = {"cambricon": "S", **{f"cambricon-{c.lower()}": c for c in FLASH_CONFIGS}}


def target_names() -> tuple[str, ...]:
    """Every fixed target name `get_target` accepts (besides preset files and afd-<a>+<f> pairs)."""
    return (PRESETS + ("afd",) + tuple(f"afd-{g}" for g in PRESETS) + tuple(_DUPLEX) + tuple(_CAMBRICON)
            + ("spatten", "xrnpe"))


def _allowed() -> str:
    return (", ".join(target_names()) + ", afd-<attention gpu>+<ffn gpu>, or the path of a calibrated preset "
            ".json file")


def _gpu_name(name: str) -> str | None:
    key = _ALIASES.get(name, name)
    return key if key in PRESETS else None


def _afd(spec: str, full_name: str) -> Target:
    sides = spec.split("+") if spec else ["h800"]
    if len(sides) == 1:
        sides = sides * 2
    keys = [_gpu_name(side) for side in sides]
    if len(keys) != 2 or None in keys:
        raise ValueError(f"target={full_name!r}: AFD sides must be GPU presets ({', '.join(PRESETS)}); "
                         f"allowed: {_allowed()}")
    return afd(gpu(keys[0]), gpu(keys[1]), link_gbps=AFD_LINK_GBPS, name=full_name)


def get_target(name_or_path: str | Path) -> Target:
    """The target called `name_or_path` (module docstring), ready to `cost(workload)`."""
    if isinstance(name_or_path, Path) or (isinstance(name_or_path, str) and (
            name_or_path.endswith(".json") or Path(name_or_path).is_file())):
        return load_preset(name_or_path)
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError(f"target={name_or_path!r}: must be one of {_allowed()}")
    name = name_or_path.lower()
    if _gpu_name(name) is not None:
        return gpu(name)
    if name == "afd" or name.startswith("afd-"):
        return _afd(name[4:], name)
    if name in _DUPLEX:
        return duplex(_DUPLEX[name])
    if name in _CAMBRICON:
        return cambricon(_CAMBRICON[name])
    if name == "spatten":
        return SpAtten()
    if name == "xrnpe":
        return xrnpe()
    raise ValueError(f"target={name_or_path!r}: must be one of {_allowed()}")
