"""Where outputs go by default: a fresh folder under `runs/` in the working directory.

Every command and library entry point that writes outputs (`codesign train`, `run`,
`sweep`, `atts bench`, the scripts) takes an explicit output folder and, without one, uses
`runs/<kind>-<UTC date>-<time>`, so results never land in the source tree and two runs never
share a folder. Writing a single file atomically is `nets.atomic_write` / `nets.atomic_write_json`.
"""

from __future__ import annotations

import time
from pathlib import Path

RUNS_DIR = Path("runs")


def fresh_run_dir(kind: str, root: str | Path = RUNS_DIR) -> Path:
    """`root/<kind>-YYYYmmdd-HHMMSS` (UTC), with a numeric suffix if that folder already exists. Not created."""
    stem = f"{kind}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    path, n = Path(root) / stem, 1
    while path.exists():
        n += 1
        path = Path(root) / f"{stem}-{n}"
    return path
