"""Checkpoints through orbax: save a pytree of arrays at a step, restore the latest exactly.

Saves are made synchronous (waited on) so that a process killed right after `save`
returns still leaves a complete checkpoint; orbax writes to a temporary folder and
renames it when complete, so a half-written checkpoint is never taken for a finished one.

Old checkpoints (beyond `max_to_keep`) are not deleted in place: orbax deletes a folder file
by file, so a kill in the middle left a step folder with its name but without its metadata, a
checkpoint that is listed and cannot be restored. They are renamed (atomic) into the hidden
folder `.deleted/`, which is emptied after every save and when the next run opens the folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

TRASH = ".deleted"  # old checkpoints renamed here, then removed (module docstring)


class Checkpointer:
    """A folder of step-numbered checkpoints, keeping the newest `max_to_keep`."""

    def __init__(self, directory: str | Path, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        self._empty_trash()  # what a killed run had set aside and not yet removed
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                                 todelete_subdir=TRASH))

    def _empty_trash(self) -> None:
        if jax.process_index() == 0:
            shutil.rmtree(self.directory / TRASH, ignore_errors=True)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()
        self._empty_trash()

    def restore(self, step: int, like: Any) -> Any:
        """Restore `step` into the structure, dtypes and shardings of `like`."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self._manager.close()
        self._empty_trash()
