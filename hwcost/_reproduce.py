"""Paper reproductions: a registry of paper -> function returning rows (published vs ours).

Each paper module (e.g. `_reproduce_step3.py`) registers a function with `@register("name")`
that computes every number of the paper this package can compute and returns `Row`s. The
paper's values appear only there, as the `paper` column; ours come from the library.
`codesign reproduce PAPER` prints them and exits 1 if any row is out of tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

CHECKS = ("rel", "abs", "at_most", "at_least")


@dataclass(frozen=True)
class Row:
    """One published number beside ours.

    check: 'rel' |ours/paper - 1| <= tolerance; 'abs' |ours - paper| <= tolerance;
    'at_most' ours <= paper (a lower bound, e.g. roofline time vs measured time);
    'at_least' ours >= paper (an upper bound, e.g. roofline throughput vs measured).
    """

    name: str
    paper: float
    ours: float
    check: str = "rel"
    tolerance: float = 0.01
    unit: str = ""

    def __post_init__(self) -> None:
        if self.check not in CHECKS:
            raise ValueError(f"check={self.check!r}: must be one of {', '.join(CHECKS)}")
        if not math.isfinite(self.tolerance) or self.tolerance < 0:
            raise ValueError(f"tolerance={self.tolerance!r}: must be a finite non-negative number")

    @property
    def rel_error(self) -> float:
        return abs(self.ours - self.paper) / abs(self.paper) if self.paper else abs(self.ours)

    @property
    def ok(self) -> bool:
        if not math.isfinite(self.ours):
            return False
        if self.check == "rel":
            return self.rel_error <= self.tolerance
        if self.check == "abs":
            return abs(self.ours - self.paper) <= self.tolerance
        if self.check == "at_most":
            return self.ours <= self.paper * (1 + self.tolerance)
        return self.ours >= self.paper * (1 - self.tolerance)

    def to_dict(self) -> dict:
        return {"name": self.name, "paper": self.paper, "ours": self.ours, "rel_error": self.rel_error,
                "ok": self.ok, "check": self.check, "tolerance": self.tolerance, "unit": self.unit}


PAPERS: dict[str, Callable[[], list[Row]]] = {}


def register(paper: str) -> Callable[[Callable[[], list[Row]]], Callable[[], list[Row]]]:
    """Decorator: make `fn` the reproduction of `paper` (a lowercase key such as 'step3')."""
    def add(fn: Callable[[], list[Row]]) -> Callable[[], list[Row]]:
        PAPERS[paper] = fn
        return fn
    return add


def reproduce(paper: str) -> list[Row]:
    """All rows of `paper`'s reproduction (see PAPERS for the names)."""
    key = paper.lower() if isinstance(paper, str) else paper
    if key not in PAPERS:
        raise ValueError(f"paper={paper!r}: must be one of {', '.join(sorted(PAPERS))}")
    return PAPERS[key]()
