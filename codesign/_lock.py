"""One writer per output folder: a lock file holding the owner's pid.

Every command that writes a run folder (`codesign train`, `run`, `sweep`, `calibrate`,
`atts calibrate`) holds `output_lock(folder)` while it works. The lock is the file
`folder/.codesign.lock`, created with O_CREAT|O_EXCL (atomic: of two commands starting
together exactly one creates it) and holding `pid host command`. A second command finding
it refuses with an `InputError` (exit 2) naming the folder and the owner, before writing
anything. A lock whose owner is gone (the pid no longer runs on this host: the first
command was killed) is stale and taken over, so a killed run can always be rerun to resume.
The lock is removed when the command ends, however it ends short of SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path
from typing import Iterator

import nets

LOCK_NAME = ".codesign.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _owner(path: Path) -> tuple[int | None, str]:
    """(pid, host) recorded in a lock file; (None, '') if it cannot be read (being written or removed)."""
    try:
        fields = path.read_text().split()
        return int(fields[0]), fields[1] if len(fields) > 1 else ""
    except (OSError, ValueError, IndexError):
        return None, ""


def _stale(path: Path) -> bool:
    pid, host = _owner(path)
    if pid is None:
        return False  # unreadable or half-written: a live command is creating it; never take it over
    return host == socket.gethostname() and not _alive(pid)


def acquire(folder: str | Path, lock_name: str = LOCK_NAME) -> Path:
    """Create the lock in `folder` (made if missing) or refuse; returns the lock's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / lock_name
    text = f"{os.getpid()} {socket.gethostname()} {' '.join(sys.argv[:1] + sys.argv[1:4])}\n"
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _stale(path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # the owner died; the next try creates it (or loses to another taker)
                continue
            pid, host = _owner(path)
            nets.fail("out", str(folder), f"is in use by another codesign command (pid {pid} on {host or '?'}, "
                                          f"lock file {path}); wait for it to end or choose another --out")
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return path
    nets.fail("out", str(folder), f"its lock file {path} keeps changing; another command is starting there")


def release(path: Path) -> None:
    """Remove the lock if this process still owns it."""
    if _owner(path)[0] == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def output_lock(folder: str | Path, lock_name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold the output lock of `folder` for the body (module docstring)."""
    path = acquire(folder, lock_name)
    try:
        yield path
    finally:
        release(path)
