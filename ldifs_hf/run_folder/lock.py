"""One writer per folder: the lock every command takes on the folder it writes.

    with FolderLock(output_dir):
        ...  # plan, train, export, write the report

The lock is `filelock`'s OS lock on `<folder>/.ldifs_hf.lock`: the OS releases it when its process
ends, however it ends, so a crashed run never blocks the next one. A clean release removes the lock
files, so a folder holds them only while it is written (or after a crash, until the next command). Beside it, `.ldifs_hf.lock.holder`
says who holds it (pid, host, command, since when), so that a second writer is refused with one line
naming the holder. A holder note whose process has ended on this host is reported as ended, never as
a live holder. Within one process the lock is re-entrant (a study holds its folder while its runs take
theirs; a command that calls another on the same folder does not lock itself out).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time

from filelock import FileLock, Timeout

logger = logging.getLogger(__name__)

LOCK_FILE = ".ldifs_hf.lock"
HOLDER_FILE = LOCK_FILE + ".holder"
# The folders this process holds: real path -> (lock, depth), for re-entry.
_HELD: dict[str, tuple[FileLock, int]] = {}


class FolderBusyError(ValueError):
    """Another process is writing the folder; the message names it."""


class FolderLock:
    """Holds `folder` for this process while in a `with` block (the folder is created if missing, and
    removed again on release if it is still empty, so a refused command leaves nothing behind).

    Args:
        folder: the folder the command writes.
        what: the folder's role in messages ("output_dir", "the report folder", ...).
    """

    def __init__(self, folder: str | os.PathLike, what: str = "output_dir"):
        self.folder = os.fspath(folder)
        self.what = what
        self._key = os.path.realpath(self.folder)
        self._created = False
        self._owner_pid = os.getpid()

    def __enter__(self) -> "FolderLock":
        self._owner_pid = os.getpid()
        if self._key in _HELD:
            lock, depth = _HELD[self._key]
            _HELD[self._key] = (lock, depth + 1)
            return self
        if os.path.exists(self.folder) and not os.path.isdir(self.folder):
            raise FileExistsError(f"{self.what} {self.folder!r} is a file, not a folder; choose another folder")
        self._created = not os.path.isdir(self.folder)
        os.makedirs(self.folder, exist_ok=True)
        lock = FileLock(os.path.join(self.folder, LOCK_FILE), blocking=False)
        try:
            lock.acquire()
        except Timeout:
            raise FolderBusyError(
                f"{self.what} {self.folder!r} is being written by {describe_holder(self.folder)}; wait for it to finish, "
                "or choose another folder"
            ) from None
        stale = read_holder(self.folder)
        if stale is not None:
            logger.info("%s: the previous writer (%s) ended without releasing it; taking it over", self.folder, _describe(stale))
        _write_holder(self.folder)
        _HELD[self._key] = (lock, 1)
        return self

    def __exit__(self, *exc) -> None:
        if os.getpid() != self._owner_pid:
            return  # a forked child leaving the block (e.g. sys.exit in it): the lock is its parent's
        lock, depth = _HELD[self._key]
        if depth > 1:
            _HELD[self._key] = (lock, depth - 1)
            return
        del _HELD[self._key]
        # Both files go while the lock is still held, so a folder is left as the command left it; a
        # process waiting on the removed file sees it unlinked and takes a fresh one (filelock checks).
        for name in (HOLDER_FILE, LOCK_FILE):
            try:
                os.remove(os.path.join(self.folder, name))
            except FileNotFoundError:
                pass
        lock.release()
        if self._created:
            try:
                os.rmdir(self.folder)  # only succeeds when nothing was written
            except OSError:
                pass


def _write_holder(folder: str) -> None:
    holder = {
        "pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:300],
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path = os.path.join(folder, HOLDER_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(holder, f)
    os.replace(path + ".tmp", path)


def read_holder(folder: str) -> dict | None:
    """The holder note of `folder`'s lock, or None when there is none (or it is unreadable)."""
    try:
        with open(os.path.join(folder, HOLDER_FILE)) as f:
            holder = json.load(f)
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # another user's process, or not a pid we can check: not known to be dead
    return True


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('command') or 'unknown command'}, since {holder.get('since')})"


def describe_holder(folder: str) -> str:
    """Who holds `folder`'s lock, in words, from its holder note.

    A note naming a process on this host that has ended is not its holder (it is a crashed writer's
    note, about to be replaced by the live holder that has just taken the lock), and says so."""
    holder = read_holder(folder)
    if holder is None:
        return "another process (it has not yet written who it is)"
    if holder.get("host") == socket.gethostname() and not _alive(holder.get("pid")):
        return f"another process that has just started (the holder note still names pid {holder.get('pid')}, which has ended)"
    return _describe(holder)
