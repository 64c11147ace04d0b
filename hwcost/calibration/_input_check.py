"""Checks of the two calibration input files, so that a bad one is one line and never a traceback.

`measured_items(data, file)` checks a kernel data file's structure (`scripts/bench/kernels.py`,
schema `codesign.kernels/1`) and returns its measured items; `as_input_error(file, field)`
is a context manager that turns what a malformed entry raises deep inside the loader
(KeyError, TypeError, IndexError, OverflowError, a bare ValueError) into an
`InputError` naming the file and the entry. Both loaders (`load_data`, `load_preset`) use them.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import nets

MAX_ITEMS = 100_000   # a kernel suite has hundreds; a file claiming more is not one
_NUMBER = (int, float)


def _is_number(x: Any) -> bool:
    return isinstance(x, _NUMBER) and not isinstance(x, bool) and math.isfinite(x)


def measured_items(data: dict, file: str) -> list[dict]:
    """The items with a positive measured median time; structural errors are InputErrors naming the entry."""
    items = data.get("items", [])
    if not isinstance(items, list):
        nets.fail("items", type(items).__name__, "must be a list of measured items", file=file)
    if len(items) > MAX_ITEMS:
        nets.fail("items", len(items), f"must hold at most {MAX_ITEMS} items", file=file)
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            nets.fail(f"items[{n}]", type(item).__name__, "must be an object with id, kind, describe, timing",
                      file=file)
        for key, kind in (("id", str), ("kind", str), ("describe", dict), ("timing", dict)):
            if not isinstance(item.get(key), kind):
                nets.fail(f"items[{n}].{key}", item.get(key), f"must be a {'string' if kind is str else 'object'}",
                          file=file)
        median = item["timing"].get("median_s", 0)
        if not (_is_number(median) and median >= 0):
            nets.fail(f"items[{n}].timing.median_s", median, "must be a finite number >= 0 (seconds)", file=file)
        if "dtype" in item and not isinstance(item["dtype"], str):
            nets.fail(f"items[{n}].dtype", item["dtype"], "must be a string", file=file)
    ceilings = data.get("ceilings")
    if ceilings is not None:
        if not isinstance(ceilings, dict):
            nets.fail("ceilings", type(ceilings).__name__, "must be an object of numbers", file=file)
        for key, value in ceilings.items():
            if key in ("copy_bytes_per_s", "copy_bytes", "matmul_bf16_flops_per_s", "matmul_n") and not (
                    _is_number(value) and 0 <= value < 1e30):
                nets.fail(f"ceilings.{key}", value, "must be a finite number in [0, 1e30)", file=file)
    if not isinstance(data.get("device", {}), dict):
        nets.fail("device", data.get("device"), "must be an object", file=file)
    return [i for i in items if i["timing"].get("median_s", 0) > 0]


@contextlib.contextmanager
def as_input_error(file: str, field: str, allowed: str) -> Iterator[None]:
    """Re-raise a malformed entry's low-level error as one InputError naming `file` and `field`."""
    try:
        yield
    except nets.InputError as err:
        if err.file:
            raise
        raise nets.InputError(f"{field}.{err.field}", err.value, err.allowed, file=file) from None
    except (KeyError, TypeError, IndexError, AttributeError, OverflowError, ValueError) as err:
        what = f"missing key {err.args[0]!r}" if isinstance(err, KeyError) else " ".join(str(err).split())[:200]
        raise nets.InputError(field, what, allowed, file=file) from None
