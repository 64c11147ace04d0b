"""One writer per output folder: a live owner's lock refuses a second command; a dead owner's is taken over."""

import os
import socket
import subprocess
import threading
import time

import pytest

import codesign
import nets


def _lock(folder, pid):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".codesign.lock").write_text(f"{pid} {socket.gethostname()} codesign train\n")


def test_second_command_on_a_busy_folder_refuses_and_writes_nothing(tmp_path, codesign_main, tiny_json):
    out = tmp_path / "run"
    owner = subprocess.Popen(["sleep", "60"])
    try:
        _lock(out, owner.pid)
        before = sorted(p.name for p in out.iterdir())
        result = codesign_main("train", "--model", tiny_json, "--steps", "2", "--batch", "4", "--seq-len", "16",
                               "--quiet", "--out", str(out))
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "in use by another codesign command" in lines[0] and str(owner.pid) in lines[0]
        assert sorted(p.name for p in out.iterdir()) == before  # nothing written, the owner's lock kept
        assert (out / ".codesign.lock").read_text().split()[0] == str(owner.pid)
    finally:
        owner.kill()
        owner.wait()


def test_a_held_lock_refuses_in_the_same_process_too(tmp_path):
    with codesign.output_lock(tmp_path / "run"):
        with pytest.raises(nets.InputError, match="in use by another codesign command"):
            with codesign.output_lock(tmp_path / "run"):
                pass
    assert not (tmp_path / "run" / ".codesign.lock").exists()  # released at the end


def test_a_dead_owners_lock_is_taken_over(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    _lock(tmp_path / "run", dead.pid)
    with codesign.output_lock(tmp_path / "run") as path:
        assert path.read_text().split()[0] == str(os.getpid())
    assert not path.exists()


def test_two_takeovers_of_one_dead_lock_leave_one_owner(tmp_path):
    """Command B reads the dead owner's lock; before B acts on it, command A takes the lock over.
    B must then refuse, not delete A's live lock. The interleaving is made exact with a named pipe
    standing in for the dead lock: B's read of it blocks until this test, as A, has taken over."""
    folder = tmp_path / "run"
    folder.mkdir()
    lock = folder / ".codesign.lock"
    os.mkfifo(lock)
    dead = subprocess.Popen(["true"])
    dead.wait()
    outcome = {}

    def taker_b():
        try:
            outcome["b"] = codesign.output_lock(folder).__enter__()
        except nets.InputError as err:
            outcome["b"] = err

    b = threading.Thread(target=taker_b, daemon=True)
    b.start()
    deadline = time.monotonic() + 10
    while True:  # wait until B has the pipe open for reading (opening the writing end fails before)
        try:
            writer = os.open(lock, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            assert time.monotonic() < deadline, "B never read the lock"
            time.sleep(0.001)
    lock.unlink()  # A: the dead owner's lock goes, A's own appears (A holds it from here on)
    with codesign.output_lock(folder) as mine:
        a_text = mine.read_text()
        os.write(writer, f"{dead.pid} {socket.gethostname()} codesign train\n".encode())  # what B reads: dead
        os.close(writer)
        b.join(10)
        assert not b.is_alive()
        assert isinstance(outcome["b"], nets.InputError), outcome  # B refuses ...
        assert "in use by another codesign command" in str(outcome["b"])
        assert mine.read_text() == a_text  # ... and A's lock is untouched
    assert not lock.exists()
