"""Paper reproductions: a registry of paper -> function returning rows (published vs ours).

Each paper module (e.g. `_step3.py` beside this one) registers a function with `@register("name")`
that computes every number of the paper this package can compute and returns `Row`s (or
several functions, one per named part: `@register("name", part="...")`, so that
`reproduce(paper, parts=...)` can run the quick parts of a slow reproduction). The
paper's values appear only there, as the `paper` column; ours come from the library.
`codesign reproduce PAPER` prints them and exits 1 if a counted row is out of tolerance.

Every row has a kind. 'counted': ours comes from the library's model (a workload, a cost
model, a search) and can disagree with the paper; only these are a reproduction and only
these gate. 'identity': ours is the paper's own arithmetic on the paper's own printed inputs
(a TGS from its batch, GPU count and TPOT; an area summed from its parts), so it can fail
only on a transcription error; shown, not counted. 'reported': the paper's number is
inconsistent with its own other numbers, or the paper prints no number for that row;
shown with the reason, not gated.

Tolerances follow one rule per kind of quantity, fixed before any comparison, never the
result (`Row.rule` names the rule a row follows; a test holds every row to one):
- `EXACT` (1% relative): a figure the paper derives exactly (sizes, counts, FLOPs, bytes,
  ratios, closed-form coefficients, unit conversions) and prints to three or more
  significant digits or as an exact integer. Three printed digits carry up to 0.5% of
  rounding, and the paper often computes them from inputs it rounded the same way.
- one unit of the last printed digit (absolute, a power of ten of which the printed number
  is a whole multiple): a figure printed to a fixed number of decimals or with fewer than
  three significant digits (trailing zeros of a whole number are not significant: "~70 GB"
  is 7 x 10 GB). Half a unit is the paper's own rounding, the other half that of the
  rounded inputs it was computed from.
- `SIMULATED` (25% relative): an end-to-end figure from the paper's measurement or
  cycle-level simulator against our analytical model.
- a bound ('at_most' / 'at_least', tolerance 0, or `ROUNDOFF` where equality is reachable):
  a roofline time or an ideal gain against a measured or simulated one.
A counted row out of its rule's tolerance is reported as failing, with its cause in the
paper module's docstring; the tolerance is not widened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

CHECKS = ("rel", "abs", "at_most", "at_least")
KINDS = ("counted", "identity", "reported")
EXACT = 0.01  # relative tolerance for a figure the paper derives exactly and prints to ~3 significant digits
SIMULATED = 0.25  # relative tolerance for a measured / cycle-simulated end-to-end figure vs our analytical model
ROUNDOFF = 1e-6  # the only slack a bound may have: float round-off where ours can equal the paper's number


@dataclass(frozen=True)
class Row:
    """One published number beside ours.

    check: 'rel' |ours/paper - 1| <= tolerance; 'abs' |ours - paper| <= tolerance;
    'at_most' ours <= paper (a lower bound, e.g. roofline time vs measured time);
    'at_least' ours >= paper (an upper bound, e.g. roofline throughput vs measured).
    kind: 'counted' (a reproduction; gates), 'identity' (the paper's arithmetic on its own
    inputs; not counted) or 'reported' (the paper's number is inconsistent or absent; not
    gated); `why` says why a row is not counted (required for those kinds). `Row.EXACT` and
    `Row.SIMULATED` are the tolerance rules of the module docstring; `rule` names the one a
    row follows.
    """

    name: str
    paper: float
    ours: float
    check: str = "rel"
    tolerance: float = 0.01
    unit: str = ""
    kind: str = "counted"
    EXACT: ClassVar[float] = EXACT
    SIMULATED: ClassVar[float] = SIMULATED
    ROUNDOFF: ClassVar[float] = ROUNDOFF
    why: str = ""

    def __post_init__(self) -> None:
        if self.check not in CHECKS:
            raise ValueError(f"check={self.check!r}: must be one of {', '.join(CHECKS)}")
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}: must be one of {', '.join(KINDS)}")
        if self.kind != "counted" and not self.why.strip():
            raise ValueError(f"why={self.why!r}: a {self.kind} row must say why it is not counted")
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

    @property
    def failed(self) -> bool:
        """A counted row out of tolerance (the only thing that fails a reproduction)."""
        return self.kind == "counted" and not self.ok

    @property
    def rule(self) -> str:
        """The tolerance rule of the module docstring this row follows, or '' if it follows none.

        'exact' and 'simulated' (relative `EXACT` / `SIMULATED`), 'printed digit' (absolute, a
        power of ten below the paper's number of which that number is a whole multiple) or
        'bound' ('at_most' / 'at_least' with tolerance 0 or `ROUNDOFF`).
        """
        t = self.tolerance
        if self.check == "rel":
            return {EXACT: "exact", SIMULATED: "simulated"}.get(t, "")
        if self.check == "abs":
            if not 0 < t < abs(self.paper):
                return ""
            power, steps = math.log10(t), self.paper / t
            whole = abs(power - round(power)) < 1e-9 and abs(steps - round(steps)) <= 1e-6 * abs(steps)
            return "printed digit" if whole else ""
        return "bound" if t in (0.0, ROUNDOFF) else ""

    def to_dict(self) -> dict:
        return {"name": self.name, "paper": self.paper, "ours": self.ours, "rel_error": self.rel_error,
                "ok": self.ok, "check": self.check, "tolerance": self.tolerance, "unit": self.unit,
                "rule": self.rule, "kind": self.kind, "why": self.why}


PAPERS: dict[str, Callable[[], list[Row]]] = {}
_PARTS: dict[str, dict[str, Callable[[], list[Row]]]] = {}  # paper -> part -> rows, for papers registered in parts


def register(paper: str, part: str | None = None) -> Callable[[Callable[[], list[Row]]], Callable[[], list[Row]]]:
    """Decorator: make `fn` the reproduction of `paper` (a lowercase key such as 'step3'), or one named part of it.

    A paper registered in parts reproduces as all its parts in the order they were registered;
    `reproduce(paper, parts=...)` runs only some of them (a quick check of a slow reproduction).
    """
    def add(fn: Callable[[], list[Row]]) -> Callable[[], list[Row]]:
        if part is None:
            _PARTS.pop(paper, None)
            PAPERS[paper] = fn
            return fn
        parts = _PARTS.setdefault(paper, {})
        parts[part] = fn
        PAPERS[paper] = lambda: [row for rows in parts.values() for row in rows()]
        return fn
    return add


def reproduce(paper: str, parts: tuple[str, ...] | None = None) -> list[Row]:
    """The rows of `paper`'s reproduction (see PAPERS for the names): all of them, or those of the named `parts`."""
    key = paper.lower() if isinstance(paper, str) else paper
    if key not in PAPERS:
        raise ValueError(f"paper={paper!r}: must be one of {', '.join(sorted(PAPERS))}")
    if parts is None:
        return PAPERS[key]()
    named = _PARTS.get(key, {})
    if isinstance(parts, str) or not parts or any(part not in named for part in parts):
        allowed = ", ".join(named) if named else f"none: {key} is reproduced as a whole"
        raise ValueError(f"parts={parts!r}: must be a non-empty tuple of {key}'s parts ({allowed})")
    return [row for part in parts for row in named[part]()]
