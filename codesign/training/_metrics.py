"""Metrics as JSON lines: one object per line, flushed as written, so nothing is lost on a kill.

On resume from a checkpoint at step S the lines after S (and a partial last line left by a
kill) are dropped first (the
resumed run recomputes them bit for bit), so the file never holds a step twice; that
rewrite is atomic (`nets.atomic_write`), so a kill during it loses no earlier line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import nets
from codesign._phase import phase


class MetricsWriter:
    """`enabled=False` writes nothing (the processes other than the first of a multi-process run)."""

    def __init__(self, path: str | Path, resume_step: int | None = None, *, enabled: bool = True):
        self.path = Path(path)
        self._file = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if _parses(line) and json.loads(line).get("step", 0) <= resume_step]
            with phase("file"):
                nets.atomic_write(self.path, "".join(line + "\n" for line in kept))
        self._file = self.path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        clean = {k: (float(v) if isinstance(v, float) or hasattr(v, "dtype") else v) for k, v in record.items()}
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in clean.items()}
        with phase("file"):
            self._file.write(json.dumps(clean, sort_keys=True) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _parses(line: str) -> bool:
    """A complete record: a kill mid-write can leave a partial last line, which a resume drops."""
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record (a partial last line left by a kill is skipped)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if _parses(line)]
