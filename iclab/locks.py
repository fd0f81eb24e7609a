"""One writer per run or sweep directory: an advisory lock that a crashed process cannot leave stuck.

`hold(directory)` takes an exclusive `flock` on ``directory/.lock`` (creating the directory if needed) and keeps it
until the process exits: the kernel drops an flock when its holder dies, whatever the way (SIGKILL included), so
there is no stale lock to clean up. A second process asking for the same directory gets
:class:`~iclab.errors.LockedError` naming the directory and the holder's pid. Whoever replaces a locked
directory's contents (``--force``) deletes everything in it but the lock file (`clear_except_lock`), so the lock
holds throughout. Within one process the lock is re-entrant (a run created, then reopened with ``--resume`` by
the same program, keeps its one lock). Locks are advisory and local to one machine's kernel (on a network
filesystem, flock may not reach other hosts).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from iclab.errors import LockedError

__all__ = ["LOCK_NAME", "clear_except_lock", "hold", "lock_path", "release"]

LOCK_NAME = ".lock"

_HELD: dict[Path, int] = {}  # lock file → open descriptor, for every lock this process holds


def lock_path(directory: str | os.PathLike[str]) -> Path:
    """The lock file of `directory`: directory/.lock, by the directory's real path (symlinks and .. resolved, so one
    directory has one lock however it is named)."""
    return Path(directory).resolve() / LOCK_NAME


def clear_except_lock(directory: str | os.PathLike[str]) -> None:
    """Delete everything in `directory` but its lock file (what --force does, under the lock)."""
    import shutil

    for child in Path(directory).iterdir():
        if child.name == LOCK_NAME:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def hold(directory: str | os.PathLike[str], what: str = "run") -> None:
    """Take (or keep) the exclusive lock of `directory` for this process; LockedError if another process has it."""
    path = lock_path(directory)
    if path in _HELD:
        try:
            if os.fstat(_HELD[path]).st_ino == os.stat(path).st_ino:
                return
        except FileNotFoundError:
            pass
        os.close(_HELD.pop(path))  # the lock file was deleted under us (not by iclab): lock the new one
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise LockedError(
            f"{what}: {Path(directory)} is being written by another process (pid {holder}); wait for it to finish "
            "or stop it"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _HELD[path] = fd


def release(directory: str | os.PathLike[str]) -> None:
    """Give the lock of `directory` back (no-op if this process does not hold it)."""
    fd = _HELD.pop(lock_path(directory), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


def _forget_after_fork() -> None:
    """A forked child shares its parent's lock descriptors (and so their flocks): it closes its copies, so that the
    lock goes when the parent goes, and holds no lock of its own."""
    for fd in _HELD.values():
        os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
