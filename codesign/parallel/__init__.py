"""Sharded training over a device mesh: `ParallelConfig`, the mesh, the logical-axis rules, multi-process start-up.

- `ParallelConfig`, `parse_mesh`, `AXES`: the data / fsdp / tensor / expert axis sizes (`--mesh data=2,fsdp=4`).
- `make_mesh`, `RULES`, `mesh_rules`: the mesh and the one logical-name -> mesh-axes table.
- `bytes_per_device`, `expected_bytes_per_device`: the state bytes a device holds, measured and implied.
- `initialize_distributed`: `jax.distributed.initialize` from the environment when several processes run.
"""

from codesign.parallel._config import AXES, ParallelConfig, parse_mesh
from codesign.parallel._mesh import (RULES, bytes_per_device, expected_bytes_per_device, initialize_distributed,
                                     make_mesh, mesh_rules)

__all__ = ["AXES", "ParallelConfig", "parse_mesh", "RULES", "make_mesh", "mesh_rules", "bytes_per_device",
           "expected_bytes_per_device", "initialize_distributed"]
