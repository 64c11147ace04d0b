"""Reading a calibration bank file (.npz) with every size checked before anything is allocated.

A bank is an uncompressed or deflated npz with `scores` (float, Q x m x T) and optionally
`settings` (a JSON string). `read_bank_file` opens the zip, reads only the .npy headers,
and checks the member sizes (uncompressed, so a small file cannot inflate into gigabytes),
the dtype (a float array; object arrays, which would need pickle, are refused), the rank
and the element count, then loads the arrays with `allow_pickle=False`. Every failure is one
`InputError` naming the file, the entry and what is allowed.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from nets import fail

MAX_BANK_BYTES = 1 << 30        # uncompressed scores: 2**28 float32 numbers at most
MAX_SETTINGS_BYTES = 1 << 20
ALLOWED = "must be an .npz written by codesign atts calibrate ('scores': float array (questions, m, turns))"


def _header(z: zipfile.ZipFile, member: str, path: str) -> tuple[tuple[int, ...], np.dtype]:
    with z.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            fail(member.removesuffix(".npy"), f"npy format {version}", "must be npy format 1.0 or 2.0", file=path)
    return tuple(shape), np.dtype(dtype)


def read_bank_file(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """(scores Q x m x T, the settings the file recorded or {}) of a bank file; InputError if it is not one."""
    path = Path(path)
    name = str(path)
    if not path.is_file():
        fail("bank", name, f"no such file ({ALLOWED})")
    try:
        with zipfile.ZipFile(path) as z:
            infos = {i.filename: i for i in z.infolist()}
            if "scores.npy" not in infos:
                fail("bank.scores", "missing", ALLOWED, file=name)
            if infos["scores.npy"].file_size > MAX_BANK_BYTES:
                fail("bank.scores", f"{infos['scores.npy'].file_size} bytes", f"at most {MAX_BANK_BYTES} bytes",
                     file=name)
            shape, dtype = _header(z, "scores.npy", name)
            if dtype.kind != "f" or len(shape) != 3:
                fail("bank.scores", f"{dtype} array of shape {shape}", ALLOWED, file=name)
            claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize  # the header's size, before allocating
            if claimed > MAX_BANK_BYTES or claimed > infos["scores.npy"].file_size:
                fail("bank.scores", f"shape {shape}", f"its {claimed} bytes must be at most {MAX_BANK_BYTES} and "
                     f"present in the file ({infos['scores.npy'].file_size} bytes)", file=name)
            if "settings.npy" in infos:
                if infos["settings.npy"].file_size > MAX_SETTINGS_BYTES:
                    fail("bank.settings", f"{infos['settings.npy'].file_size} bytes",
                         f"at most {MAX_SETTINGS_BYTES} bytes", file=name)
                s_shape, s_dtype = _header(z, "settings.npy", name)
                if s_dtype.kind != "U" or s_shape != ():
                    fail("bank.settings", f"{s_dtype} array of shape {s_shape}", "must be one JSON string", file=name)
        with np.load(path, allow_pickle=False) as data:
            scores = np.asarray(data["scores"])
            settings_text = str(data["settings"]) if "settings" in data.files else "{}"
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, RuntimeError, NotImplementedError) as err:
        if getattr(err, "field", None):  # already an InputError
            raise
        fail("bank", name, f"{ALLOWED}; cannot read it: {' '.join(str(err).split())[:160]}", file=name)
    if scores.shape != shape:
        fail("bank.scores", f"shape {scores.shape}", f"must match its header's shape {shape}", file=name)
    try:
        settings = json.loads(settings_text)
    except (json.JSONDecodeError, RecursionError):
        fail("bank.settings", settings_text[:80], "must be a JSON object", file=name)
    if not isinstance(settings, dict):
        fail("bank.settings", type(settings).__name__, "must be a JSON object", file=name)
    return scores, settings
