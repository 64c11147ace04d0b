"""Reading a compiled program's HLO text in tests: the instructions that produce an array of given shapes."""

from __future__ import annotations

import re
from typing import NamedTuple

_RESULT = re.compile(r"= f32\[([\d,]+)\]\S* (\S+)\(")


class Op(NamedTuple):
    computation: str   # "ENTRY" for the entry computation, else the called computation's name
    opcode: str
    line: str


def ops_of_shapes(hlo_text: str, shapes: set[tuple[int, ...]]) -> list[Op]:
    """Every float32 instruction of `hlo_text` whose result has one of `shapes` (e.g. a whole KV cache array)."""
    found, computation = [], None
    for line in hlo_text.splitlines():
        if line and not line.startswith(" ") and "{" in line:
            computation = "ENTRY" if line.startswith("ENTRY") else line.split(" ")[0]
        match = _RESULT.search(line)
        if match and tuple(int(d) for d in match.group(1).split(",")) in shapes:
            found.append(Op(computation, match.group(2), line.strip()[:160]))
    return found
