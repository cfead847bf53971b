"""Advisory, exclusive, cross-process file locks (flock on POSIX, msvcrt on Windows).

The kernel drops the lock when the process dies, so a crashed pixsrc never leaves a stale lock.
Also the two helpers that keep pixsrc's own folders 0700 and files 0600 whatever the umask: this is
the lowest module that touches the disk, so config, state and tokens can all use them.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from types import TracebackType

_POSIX_MODES = os.name != "nt"  # Windows has ACLs, not mode bits: chmod there only sets read-only


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents as 0700 folders; folders that exist are left alone.

    ``mkdir(parents=True)`` would create the parents with the umask's 0755; and an explicit chmod
    after ``mkdir(mode=0o700)`` keeps an odd umask (0o277) from taking the owner's own bits.
    """
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # another pixsrc made it a moment ago: its mode is its business
            continue
        if _POSIX_MODES:
            os.chmod(folder, 0o700)


def tighten(path: Path) -> None:
    """Take the group and other bits off a file or folder that is pixsrc's own (the owner's bits stay).

    Only for pixsrc's own paths (the state folder, state.db, lock files): never a folder the user
    chose for something else. Best effort: a path owned by someone else cannot be chmod'ed by us,
    and refusing to run over it would help nobody.
    """
    if not _POSIX_MODES:
        return
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
    except OSError:
        pass


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int, blocking: bool) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fd: int, blocking: bool) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def is_held(path: Path) -> bool:
    """Whether a process holds the lock at ``path`` now (no file: no). The file is opened as
    ``FileLock`` opens it, but never created, so an ``OSError`` means a run could not take it either.

    There is no way to ask about a flock without taking it: a free lock is taken and released at
    once, so a run that tries it without waiting in that instant finds it busy.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        if _lock(fd, blocking=False):
            _unlock(fd)
            return False
        return True
    finally:
        os.close(fd)


class FileLock:
    """``with FileLock(path):`` waits; ``FileLock(path).acquire(blocking=False)`` tells if it got it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        make_private_dirs(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if _POSIX_MODES:  # a lock file left 0644 by a copy (cp -r) or by hand: the same as tighten()
            try:
                mode = stat.S_IMODE(os.fstat(fd).st_mode)
                if mode & 0o077:
                    os.fchmod(fd, mode & 0o700)
            except OSError:
                pass
        if not _lock(fd, blocking):
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
