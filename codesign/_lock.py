"""One writer per output folder: a lock file holding the owner's pid.

Every command that writes a run folder (`codesign train`, `run`, `sweep`, `calibrate`,
`atts calibrate`) holds `output_lock(folder)` while it works. The lock is the file
`folder/.codesign.lock`, created by hard-linking a fully written private file to that name
(atomic: of two commands starting together exactly one creates it, and it is never seen half
written) and holding `pid host command`. A second command finding
it refuses with an `InputError` (exit 2) naming the folder and the owner, before writing
anything. A lock whose owner is gone (the pid no longer runs on this host: the first
command was killed) is stale and taken over, so a killed run can always be rerun to resume.
The lock is removed when the command ends, however it ends short of SIGKILL.

Taking over is serialised: a command that found the lock stale removes it only while it holds
an exclusive `flock` on the file `folder/<lock name>.takeover` (never deleted, so there is no
race on its inode; the kernel releases the flock if its holder dies), and only after reading
the lock again under it. So of two commands taking over the same dead lock at the same instant,
the second sees the first one's fresh lock (its owner alive) and refuses, instead of deleting it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import uuid
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


def _take_over(path: Path) -> None:
    """Remove the lock `path` if it is still stale, holding the takeover flock (module docstring)."""
    with open(path.with_name(path.name + ".takeover"), "a") as guard:
        fcntl.flock(guard.fileno(), fcntl.LOCK_EX)  # released when `guard` closes, or when this process dies
        if _stale(path):  # read again under the flock: another taker may have replaced it by a live lock
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def acquire(folder: str | Path, lock_name: str = LOCK_NAME) -> Path:
    """Create the lock in `folder` (made if missing) or refuse; returns the lock's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / lock_name
    text = f"{os.getpid()} {socket.gethostname()} {' '.join(sys.argv[:1] + sys.argv[1:4])}\n"
    # the lock appears whole: written to a private file first, then hard-linked to its name (atomic, and it
    # fails if the name exists), so a kill can never leave an empty lock that would look alive forever
    draft = folder / f"{lock_name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    fd = os.open(draft, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        for _ in range(3):
            try:
                os.link(draft, path)
            except FileExistsError:
                if _stale(path):
                    _take_over(path)  # the owner died; the next try creates it (or loses to another taker)
                    continue
                pid, host = _owner(path)
                nets.fail("out", str(folder), f"is in use by another codesign command (pid {pid} on "
                                              f"{host or '?'}, lock file {path}); wait for it to end or choose "
                                              "another --out")
            return path
    finally:
        draft.unlink(missing_ok=True)
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
