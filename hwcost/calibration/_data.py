"""Kernel data files (`scripts/bench/kernels.py`, schema DATA_SCHEMA): loading and the held-out split.

The split is fixed by rule before any fit (`split_heldout`): items are grouped into shape
families (`item_family`: a GEMM's (n, k) over every m, an attention kind and phase at one
batch over contexts, an MoE's (experts, top-k) over token counts, a grouped GEMM's (groups,
n, k) over rows, a norm's width over token counts, an elementwise op over sizes, and every
step of one zoo model), and whole families are held out by a hash of the family's name, so the held-out
error is measured on shapes and models the fit never saw. The data file's two ceiling
measurements (a 512 MiB copy, an 8192^3 bf16 matmul) are training items too (kind
CEILING_KIND).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

import nets
from hwcost.calibration import _input_check
from hwcost.calibration._kernels import _RECORD, item_kernels

DATA_SCHEMA = "codesign.kernels/1"
MODEL_KINDS = ("decode_step", "prefill_step", "train_step")
CEILING_KIND = "ceiling"
"""The kind of the data file's copy and matmul ceiling items: always trained on, never held out."""


@dataclasses.dataclass(frozen=True)
class KernelData:
    """A kernel data file, flattened for fitting.

    ids, kinds [item]: item id and kind ('gemm', 'gemm_fp8', 'attention', 'moe', 'norm',
    'decode_step', 'prefill_step'); measured_s [item]: median time [s]; heldout [item]: in
    the held-out split; kernels: columns over all kernel rows (see `item_kernels`);
    item_of_row [row]: the item each row belongs to; device: where it was measured.
    """

    ids: tuple[str, ...]
    kinds: tuple[str, ...]
    measured_s: np.ndarray
    heldout: np.ndarray
    kernels: dict[str, np.ndarray]
    item_of_row: np.ndarray
    device: dict
    source: str
    program: dict = dataclasses.field(default_factory=dict)

    def subset(self, mask: np.ndarray) -> "KernelData":
        keep = np.flatnonzero(mask)
        rows = np.isin(self.item_of_row, keep)
        remap = np.full(len(self.ids), -1)
        remap[keep] = np.arange(len(keep))
        return KernelData(ids=tuple(self.ids[i] for i in keep), kinds=tuple(self.kinds[i] for i in keep),
                          measured_s=self.measured_s[keep], heldout=self.heldout[keep],
                          kernels={k: v[rows] for k, v in self.kernels.items()},
                          item_of_row=remap[self.item_of_row[rows]], device=self.device, source=self.source,
                          program=self.program)


def _bucket(item_id: str) -> int:
    """A stable pseudo-random bucket 0..99 from the item's id (its kind, dtype and shape)."""
    return int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) % 100


def item_kind(item: dict) -> str:
    """The kind errors are reported by: the item's kind, a GEMM's format appended unless bf16 (gemm_fp8, gemm_fp32)."""
    dtype = item.get("dtype")
    if item.get("kind") == "gemm" and dtype not in (None, "bf16"):
        return f"gemm_{dtype}"
    return str(item.get("kind")) + ("_fp8" if dtype == "fp8" and item.get("kind") != "gemm" else "")


def item_family(item: dict) -> str:
    """The shape family an item belongs to (module docstring); whole families are held out together."""
    kind, shape = item.get("kind", ""), item.get("shape") or {}
    if kind in MODEL_KINDS or kind == "train_step":
        return "model/" + str(shape.get("model", item.get("id")))
    if kind == "gemm" and {"n", "k"} <= set(shape):
        return f"gemm/{item.get('dtype')}/n{shape['n']}_k{shape['k']}"
    if kind == "attention" and {"attention", "batch"} <= set(shape):
        return f"attention/{item.get('phase')}/{shape['attention']}/b{shape['batch']}"
    if kind == "moe" and {"experts", "top_k"} <= set(shape):
        return f"moe/e{shape['experts']}_k{shape['top_k']}"
    if kind == "grouped_gemm" and {"groups", "n", "k"} <= set(shape):
        return f"grouped_gemm/g{shape['groups']}_n{shape['n']}_k{shape['k']}"
    if kind == "norm" and "width" in shape:
        return f"norm/w{shape['width']}"
    if kind == "elementwise" and "op" in shape:
        return f"elementwise/{shape['op']}"
    return str(item.get("id"))


def split_heldout(ids: tuple[str, ...], kinds: tuple[str, ...], fraction: float = 0.25,
                  families: tuple[str, ...] | None = None) -> np.ndarray:
    """Held-out mask: a `fraction` of the shape families of each kind, chosen by a hash of the family name.

    Deterministic (a hash, no RNG), fixed before fitting. `families[i]` is item i's family
    (`item_family`; default: each item its own). Each kind with at least two families keeps
    at least one whole family on each side; ceiling items are never held out. A whole-model
    step's family is its model, shared by its decode, prefill and train steps: a model is
    held out whole (a family name is hashed without its kind).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction={fraction!r}: must be in (0, 1)")
    families = tuple(ids) if families is None else tuple(families)
    if len(families) != len(ids):
        raise ValueError(f"families: {len(families)} entries: must be one per item ({len(ids)})")
    held = np.asarray([k != CEILING_KIND and _bucket(f) < 100 * fraction for f, k in zip(families, kinds)], bool)
    groups: dict[str, list[int]] = {}
    for n, k in enumerate(kinds):
        if k != CEILING_KIND:
            groups.setdefault("model" if k in MODEL_KINDS else k, []).append(n)
    for members in groups.values():
        names = sorted({families[n] for n in members}, key=_bucket)
        if len(names) < 2:
            continue
        held_names = {families[n] for n in members if held[n]}
        if not held_names:
            held_names = {names[0]}
        if held_names == set(names):
            held_names.discard(names[-1])
        for n in members:
            held[n] = families[n] in held_names
    return held


def _ceiling_items(ceilings: dict | None) -> list[dict]:
    """The suite's two ceiling measurements (`scripts/bench/kernels.py`: `ceilings`) as training items.

    A 512 MiB bf16 elementwise copy (x * 2: `copy_bytes` read plus written) and a square bf16
    matmul of side `matmul_n`: the largest elementwise and GEMM launches measured, they pin
    the saturated bandwidth and compute efficiency of those groups. Kind CEILING_KIND: always
    trained on, never held out (they are not part of the held-out split's kinds).
    """
    if not isinstance(ceilings, dict):
        return []
    out = []
    if ceilings.get("copy_bytes_per_s", 0) > 0 and ceilings.get("copy_bytes", 0) > 0:
        elements = ceilings["copy_bytes"] / 4  # bf16: 2 bytes read + 2 written per element
        out.append({"id": f"ceiling/copy/bf16/n{int(elements)}", "kind": CEILING_KIND, "dtype": "bf16",
                    "describe": {"type": "copy", "elements": elements, "bits": 16},
                    "timing": {"median_s": ceilings["copy_bytes"] / ceilings["copy_bytes_per_s"]}})
    if ceilings.get("matmul_bf16_flops_per_s", 0) > 0 and ceilings.get("matmul_n", 0) > 0:
        n = int(ceilings["matmul_n"])
        out.append({"id": f"ceiling/gemm/bf16/m{n}_n{n}_k{n}", "kind": CEILING_KIND, "dtype": "bf16",
                    "describe": {"type": "gemm", "m": n, "n": n, "k": n, "bits_in": 16, "bits_out": 16},
                    "timing": {"median_s": 2.0 * n ** 3 / ceilings["matmul_bf16_flops_per_s"]}})
    return out


GROUPED_MATMUL_DENSE = "reference"
"""`nets.grouped_matmul`'s implementation that lowers routed experts to dense matmuls over every expert."""


def program_of(data: dict) -> dict:
    """The program structure a data file's measurements ran with, as `hwcost.software` overrides.

    {"dense_experts": bool}: whether the routed experts of its MoE layers ran as dense
    matmuls over every expert. A file records the grouped kernel its MoE layers took
    (`suite.grouped_matmul`, a `nets.grouped_matmul` implementation); a file that does not is
    read by its suite version: the cost suite (`scripts/bench/cost_suite.py`, "cost-suite/1")
    ran `nets.MoE` through `nets.grouped_matmul` ("mosaic_gpu" on the Hopper GPUs it ran on),
    the older kernel suite (`scripts/bench/kernels.py`, no version) through XLA's dense
    `ragged_dot` lowering.
    """
    suite = data.get("suite") if isinstance(data.get("suite"), dict) else {}
    kernel = suite.get("grouped_matmul")
    if not isinstance(kernel, str):
        kernel = "mosaic_gpu" if str(suite.get("version", "")).startswith("cost-suite/") else GROUPED_MATMUL_DENSE
    return {"dense_experts": kernel == GROUPED_MATMUL_DENSE}


def _parse_part(part) -> tuple[str, tuple[str, ...] | None]:
    """(path, kinds or None) of one `merge_data` part: a path, "PATH:KIND,KIND" or a (path, kinds) pair."""
    if isinstance(part, (tuple, list)) and len(part) == 2:
        path, kinds = part
        return str(path), None if kinds is None else tuple(kinds)
    text = str(part)
    path, sep, kinds = text.rpartition(":")
    if sep and kinds and "/" not in kinds and not Path(text).is_file():
        return path, tuple(k for k in kinds.split(",") if k)
    return text, None


def merge_data(parts) -> dict:
    """One kernel data file (a dict, DATA_SCHEMA) from several of one GPU, each restricted to some kinds.

    `parts`: paths, "PATH:KIND,KIND" strings or (path, kinds) pairs; kinds are the error
    table's (`gemm`, `gemm_fp8`, `attention`, ...; None: every kind). An item id in two parts
    is taken from the first. Device, suite (with `merged_from`, and `program_of`'s
    `grouped_matmul` of the first part) and ceilings are the first part's; every part must
    come from the same GPU kind. The program structure is the first part's: take a kind whose
    kernels depend on the program (MoE layers, whole steps) from one program only.
    """
    parts = [_parse_part(p) for p in parts]
    if not parts:
        raise nets.InputError("data", "[]", "need at least one kernel data file")
    merged, seen, kind0 = None, set(), None
    for path, kinds in parts:
        file = Path(path)
        if not file.is_file():
            raise nets.InputError("data", path, "must be a kernel data file (run scripts/bench/cost_suite.py)")
        data = nets.read_json_file(file, "data", what=f"a kernel data file ({DATA_SCHEMA})")
        if not isinstance(data, dict) or data.get("schema") != DATA_SCHEMA:
            got = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise nets.InputError("data.schema", got, f"must be {DATA_SCHEMA!r}", file=path)
        items = _input_check.measured_items(data, path)
        kind = (data.get("device") or {}).get("kind")
        if merged is None:
            kind0 = kind
            suite = dict(data.get("suite") or {})
            suite.setdefault("grouped_matmul", GROUPED_MATMUL_DENSE if program_of(data)["dense_experts"]
                             else "mosaic_gpu")
            merged = {"schema": DATA_SCHEMA, "created": data.get("created"), "device": data.get("device", {}),
                      "suite": {**suite, "merged_from": []}, "ceilings": data.get("ceilings"), "items": [],
                      "skipped": []}
        elif kind != kind0:
            raise nets.InputError("data", f"{path} ({kind})", f"must be measured on the same GPU kind as the "
                                  f"first part ({kind0})")
        if kinds is not None:
            unknown = sorted(set(kinds) - {item_kind(i) for i in items})
            if unknown:
                raise nets.InputError("data kinds", ",".join(unknown), f"must be kinds of {path}'s items "
                                      f"({', '.join(sorted({item_kind(i) for i in items}))})")
        taken = [i for i in items if (kinds is None or item_kind(i) in kinds) and i["id"] not in seen]
        seen.update(i["id"] for i in taken)
        merged["items"] += taken
        merged["suite"]["merged_from"].append(f"{file.name} ({len(taken)} items"
                                              + (f": {', '.join(kinds)})" if kinds else ")"))
        if not merged.get("ceilings") and data.get("ceilings"):
            merged["ceilings"] = data["ceilings"]
    return merged


def read_data(source) -> tuple[dict, str]:
    """(the data dict, its name) of a path, a data dict, or a list of parts merged by `merge_data`."""
    if isinstance(source, (list, tuple)):
        data = merge_data(source)
        name = " + ".join(str(p if isinstance(p, str) else p[0]) for p in source)
    elif isinstance(source, dict):
        data, name = source, "<dict>"
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"data={str(source)!r}: no such file (run scripts/bench/kernels.py to make one)")
        data = nets.read_json_file(path, "data", what=f"a kernel data file ({DATA_SCHEMA})")
        name = str(path)
    if not isinstance(data, dict) or data.get("schema") != DATA_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise nets.InputError("data.schema", got, f"must be {DATA_SCHEMA!r}", file=None if name == "<dict>" else name)
    return data, name


def load_data(source, fraction: float = 0.25) -> KernelData:
    """Read a kernel data file (`scripts/bench/kernels.py`, schema DATA_SCHEMA) and split it.

    `source`: a path, a data dict, or a list of parts merged by `merge_data`. The result's
    `program` is `program_of` the data (the structure its measurements ran with).
    """
    data, name = read_data(source)
    items = _input_check.measured_items(data, name)
    if len(items) < 2:
        raise nets.InputError("data.items", len(items), "need at least 2 measured items", file=name)
    items = items + _ceiling_items(data.get("ceilings"))
    ids = tuple(i["id"] for i in items)
    families = tuple(item_family(i) for i in items)
    kinds = tuple(item_kind(i) for i in items)
    tables, owners = [], []
    for n, item in enumerate(items):
        with _input_check.as_input_error(name, f"items[{n}].describe", "must describe a gemm, grouped_gemm, "
                                         "norm, copy, elementwise or workload with finite sizes (see hwcost.item_kernels)"):
            k = item_kernels(item["describe"])
        tables.append(k)
        owners.append(np.full(len(k["flops"]), n))
    kernels = {c: np.concatenate([t[c] for t in tables]) for c in _RECORD}
    return KernelData(ids=ids, kinds=kinds, measured_s=np.asarray([i["timing"]["median_s"] for i in items]),
                      heldout=split_heldout(ids, kinds, fraction, families), kernels=kernels,
                      item_of_row=np.concatenate(owners), device=data.get("device", {}), source=name,
                      program=program_of(data))
