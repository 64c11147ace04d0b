"""hwcost.reproductions: published tables recomputed by the library, row by row.

    rows = hwcost.reproduce("step3")   # Row(name, paper, ours, check, tolerance, unit, kind, why)

`_rows` holds `Row`, the registry (`PAPERS`, `register`) and `reproduce`; each paper has its
own module (`_step3`, `_duplex`, `_cambricon`, `_spatten`) that registers itself when this
package is imported. hwcost re-exports every name here. (The package is called
`reproductions`, not `reproduce`, so that `hwcost.reproduce` stays the function.)
"""

from hwcost.reproductions._rows import PAPERS, Row, register, reproduce
from hwcost.reproductions import _step3  # noqa: F401  (registers "step3")
from hwcost.reproductions import _duplex  # noqa: F401  (registers "duplex")
from hwcost.reproductions import _spatten  # noqa: F401  (registers "spatten")
from hwcost.reproductions import _cambricon  # noqa: F401  (registers "cambricon")

__all__ = ["PAPERS", "Row", "register", "reproduce"]
