"""An optional log of what a long command is doing, for the crash-safety harness.

With `CODESIGN_PHASE_LOG=PATH` in the environment, `phase(name)` appends `start NAME T` when
its block begins and `end NAME T` when it ends (T: seconds since the epoch), flushed at once
(not fsynced: the kernel keeps it through a SIGKILL of the process). Phases: `compile` (the
first step, which compiles), `step`, `checkpoint` (a checkpoint save), `file` (writing an
output file), `fit` (`codesign calibrate`'s fit), `generate` (`codesign atts calibrate`'s
sampling and scoring). `scripts/crash_harness.py` reads the log to say which phase each kill hit and
to aim kills at writes. Without the variable `phase` costs one dictionary lookup.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator

ENV = "CODESIGN_PHASE_LOG"
_file = None


def _log(line: str) -> None:
    global _file
    if _file is None:
        _file = open(os.environ[ENV], "a", buffering=1)  # noqa: SIM115 -- kept open for the process
    _file.write(f"{line} {time.time():.6f}\n")
    _file.flush()


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    if ENV not in os.environ:
        yield
        return
    _log(f"start {name}")
    yield
    _log(f"end {name}")
