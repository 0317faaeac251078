"""One writer per cache: an exclusive ``flock`` on ``build.lock``, which names its holder.

The kernel drops the lock when the process dies, however it dies, so a killed build never
leaves a cache locked. A reader never takes the lock; it only probes it (a shared lock,
released at once) to tell a user whether a build is running now or was interrupted. A
writer that meets a probe in that instant retries for a second rather than give up.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import time
from pathlib import Path

from ..errors import CacheError
from ..text import shown
from .format import LOCK

_RETRY_SECONDS = 1.0


class BuildLock:
    """The held lock of a cache folder; ``close()`` (or leaving the ``with``) releases it."""

    def __init__(self, root: Path):
        self.path = Path(root) / LOCK
        fd = _open_lock(self.path, create=True)
        deadline = time.monotonic() + _RETRY_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                owner = _owner(fd)
                os.close(fd)
                raise CacheError(
                    f"{shown(root)}: another build ({owner}) is writing this cache; wait for it to finish or "
                    "stop it, then run the command again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def build_status(root: Path) -> str:
    """A phrase for a cache that has not finished: a build is running (and whose), or the
    last one was interrupted."""
    try:
        fd = _open_lock(Path(root) / LOCK, create=False)
    except OSError:
        return "no build is running: the last one was interrupted before it finished"
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f"a build ({_owner(fd)}) is writing it now; wait for it to finish"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return "no build is running: the last one was interrupted (or kept no window)"
    finally:
        os.close(fd)


def _open_lock(path: Path, create: bool) -> int:
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if not create:
            raise
        raise CacheError(f"{shown(path)}: cannot open the build lock ({exc.strerror or exc}); it must be a "
                         "regular file the build can write") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CacheError(f"{shown(path)}: the build lock is not a regular file; remove it")
    return fd


def _owner(fd: int) -> str:
    text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    return shown(text) if text else "another process"
