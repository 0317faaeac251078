"""A cache's files, read and written through one gate: ``LocalStore``.

Why a gate: a cache handed over by someone else is data, and data may lie. Every file a
cache reads must be a regular file inside the cache's own folder: no component of its path
may be a symbolic link (a shard replaced by a link to a system file would otherwise be
read), and nothing that is not a regular file is ever opened for reading in a way that can
block (a FIFO in place of a shard would otherwise hang ``verify`` forever). Paths are walked
one component at a time with ``O_NOFOLLOW`` relative to the folder above, so a link
anywhere below the cache root is refused; the root itself may be reached through a link
(that is the user's own choice of path).

Writes are whole files: a temporary name, ``fsync``, a rename over the old file, then an
``fsync`` of the folder, so a file is either its old or its new version, never torn, even
after a power cut. The disk filling up becomes a :class:`~chirpid_io.errors.CacheError`
that names the file and the fix, and leaves no temporary file behind.

Keys are POSIX paths relative to the cache root ("specs/c/0/0/0"). An object store stands
behind the same methods (``objects.ObjectStore``: whole objects, range reads), which is why
nothing else in ``chirpid_io.cache`` touches the file system directly; :func:`open_store`
picks one for a location (a path, or an ``s3://``, ``gs://`` or ``az://`` URL).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..errors import CacheError
from ..text import shown

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


#: URL schemes of the object stores a cache can live on (through obstore, ``objects.py``)
URL_SCHEMES = ("s3", "gs", "az")


class ObjectURL(str):
    """A cache location on an object store, ``s3://bucket/prefix`` without a trailing "/".

    A ``str`` (it prints, compares and pickles as the URL) that joins keys with ``/`` like a
    Path, so messages that name ``location / key`` read the same for both kinds of store.
    """

    def __truediv__(self, key) -> "ObjectURL":
        return ObjectURL(f"{self}/{str(key).strip('/')}")

    @property
    def name(self) -> str:
        return self.rsplit("/", 1)[-1]

    @property
    def scheme(self) -> str:
        return self.split("://", 1)[0]


def is_url(location) -> bool:
    """True for an object-store URL (``s3://``, ``gs://``, ``az://``)."""
    return isinstance(location, str) and location.split("://", 1)[0] in URL_SCHEMES and "://" in location


def cache_location(location) -> "Path | ObjectURL":
    """A cache's location as given: an :class:`ObjectURL` for an object-store URL (never
    through ``Path``, which would turn ``s3://b/c`` into ``s3:/b/c``), else a Path."""
    if isinstance(location, ObjectURL):
        return location
    if is_url(location):
        return ObjectURL(location.rstrip("/"))
    text = os.fspath(location)
    scheme = text.split(":/", 1)[0] if isinstance(text, str) and ":/" in text else None
    if scheme in URL_SCHEMES:  # "s3:/b/c": a URL mangled by Path() or mistyped
        raise CacheError(f"{shown(text)}: looks like an object-store URL with one slash; write "
                         f"{scheme}://{shown(text.split(':/', 1)[1].lstrip('/'))} (and pass URLs as strings, not Path objects)")
    return Path(location)


def open_store(location):
    """The store of a cache at ``location``: :class:`LocalStore` for a path,
    ``objects.ObjectStore`` for an ``s3://``, ``gs://`` or ``az://`` URL (credentials and
    endpoint from the standard environment variables, see ``objects.py``)."""
    where = cache_location(location)
    if isinstance(where, ObjectURL):
        from .objects import ObjectStore

        return ObjectStore(where)
    return LocalStore(where)


class CacheFileError(CacheError):
    """A file of a cache is missing, is not a regular file, or could not be read or written.

    ``key`` is the file's path inside the cache and ``reason`` what is wrong with it, kept
    apart so that ``verify`` can list findings without parsing messages.
    """

    def __init__(self, root, key: str, reason: str, fix: str = ""):
        self.root, self.key, self.reason = cache_location(root), key, reason
        message = f"{shown(self.root / key)}: {reason}"
        super().__init__(f"{message}; {fix}" if fix else message)


class ObjectChanged(CacheFileError):
    """An object was replaced between two reads of it (a writer rewrote it): read it again.
    Only an object store raises it (``objects.py``); a local file stays what was opened."""


class LocalStore:
    """The files of the cache folder ``root``, as keys relative to it."""

    kind = "local"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._prefix = os.fspath(self.root) + os.sep
        # folders already walked without meeting a link: later opens below them need only
        # O_NOFOLLOW on the last component (the threat is a cache's content, and a folder
        # that was no link stays none unless someone with write access swaps it)
        self._clean_folders: set[str] = set()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    @property
    def location(self) -> str:
        return str(self.root)

    # -- reading ---------------------------------------------------------------------------
    def open(self, key: str) -> "RegularFile":
        """Open ``key`` for reading; it must be a regular file reached without links."""
        fd = self._open_regular(key)
        return RegularFile(self, key, fd, os.fstat(fd).st_size)

    def read(self, key: str, limit: int | None = None) -> bytes:
        """The whole content of ``key`` (refused when larger than ``limit`` bytes)."""
        with self.open(key) as f:
            size = f.size
            if limit is not None and size > limit:
                raise CacheFileError(self.root, key, f"is {size} bytes, more than the {limit} such a file can hold",
                                     "the file is damaged or not part of a chirpid-io cache")
            return f.pread(0, size)

    def exists(self, key: str) -> bool:
        """True when ``key`` is a regular file reached without links (never blocks)."""
        try:
            os.close(self._open_regular(key))
            return True
        except CacheFileError:
            return False

    def check(self, key: str) -> str | None:
        """What is wrong with ``key`` as a file of this cache, or None when it is fine."""
        try:
            os.close(self._open_regular(key))
            return None
        except CacheFileError as exc:
            return exc.reason

    def check_many(self, keys: list[str]) -> list[str | None]:
        """:meth:`check` of each key (an object store answers them from one listing)."""
        return [self.check(key) for key in keys]

    def describe(self, key: str) -> str:
        """Where ``key`` is, for a message (an object store keeps some keys otherwise)."""
        return str(self.root / key)

    def listdir(self, key: str = "") -> list[str]:
        """Names in the folder ``key`` ([] when it does not exist); links are listed too
        (so that ``verify`` can report them), never followed."""
        try:
            fd = self._open_dir(key)
        except CacheFileError as exc:
            if exc.reason == "is missing":
                return []
            raise
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def walk(self):
        """``(key, kind)`` of everything below the root, without following links; kind is
        "file", "dir", "symlink" or "special" (FIFO, socket, device)."""
        stack = [""]
        while stack:
            folder = stack.pop()
            for name in self.listdir(folder):
                key = f"{folder}/{name}" if folder else name
                mode = os.lstat(self.root / key).st_mode
                if stat.S_ISLNK(mode):
                    yield key, "symlink"
                elif stat.S_ISDIR(mode):
                    yield key, "dir"
                    stack.append(key)
                elif stat.S_ISREG(mode):
                    yield key, "file"
                else:
                    yield key, "special"

    def total_bytes(self) -> int:
        """Bytes of all regular files below the root (links not followed)."""
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file() and not p.is_symlink())

    # -- the build lock (``lock.py``) --------------------------------------------------------
    def take_lock(self):
        """Hold this cache's build lock (one writer at a time) until ``close()``."""
        from .lock import BuildLock

        return BuildLock(self.root)

    def build_status(self) -> str:
        """Whether a build is writing the cache now, for a cache that never finished."""
        from .lock import build_status

        return build_status(self.root)

    # -- writing ---------------------------------------------------------------------------
    def write(self, key: str, data: bytes) -> None:
        """Replace ``key`` with ``data`` atomically and durably (creating folders)."""
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise write_error(self.root, key, exc) from None

    def append(self, key: str, data: bytes) -> None:
        """Append ``data`` to ``key`` and fsync (the build journal: one line per commit)."""
        path = self.root / key
        try:
            with open(path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise write_error(self.root, key, exc) from None

    def truncate(self, key: str, size: int) -> None:
        try:
            with open(self.root / key, "r+b") as f:
                f.truncate(size)
                os.fsync(f.fileno())
        except OSError as exc:
            raise write_error(self.root, key, exc) from None

    def remove(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def stale_temporaries(self, folder: str) -> list[str]:
        """Temporary files left in ``folder`` by a writer that was killed mid-write."""
        return [f"{folder}/{n}" for n in self.listdir(folder) if n.startswith(".") and ".tmp-" in n]

    # -- the walk ----------------------------------------------------------------------------
    def _open_dir(self, key: str) -> int:
        parts = [p for p in key.split("/") if p]
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise CacheFileError(self.root, "", _reason(exc, folder=True)) from None
        for i, part in enumerate(parts):
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                os.close(fd)
                key = "/".join(parts[: i + 1])
                link = exc.errno == errno.ENOTDIR and (self.root / key).is_symlink()  # a link to a folder
                raise CacheFileError(self.root, key, _reason(exc, folder=True) if not link else _LINK) from None
            os.close(fd)
            fd = child
        return fd

    def _open_regular(self, key: str) -> int:
        folder, _, name = key.rpartition("/")
        if folder in self._clean_folders:
            try:
                fd = os.open(self._prefix + key, _FILE_FLAGS)
            except OSError as exc:
                raise CacheFileError(self.root, key, _reason(exc)) from None
        else:
            fd_dir = self._open_dir(folder)
            try:
                fd = os.open(name, _FILE_FLAGS, dir_fd=fd_dir)
            except OSError as exc:
                raise CacheFileError(self.root, key, _reason(exc)) from None
            finally:
                os.close(fd_dir)
            self._clean_folders.add(folder)
        mode = os.fstat(fd).st_mode  # a regular file opened without blocking: the common case
        if not stat.S_ISREG(mode):
            os.close(fd)
            what = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
            raise CacheFileError(self.root, key, f"is {what}, not a regular file")
        return fd


class RegularFile:
    """An open regular file of a store: size and positioned reads."""

    def __init__(self, store: LocalStore, key: str, fd: int, size: int):
        self.store, self.key, self.fd, self.size = store, key, fd, size

    def pread(self, offset: int, length: int) -> bytes:
        try:
            return os.pread(self.fd, length, offset)
        except OSError as exc:
            raise CacheFileError(self.store.root, self.key, f"cannot be read ({exc.strerror or exc})") from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_error(root: Path, key: str, exc: OSError) -> CacheFileError:
    """An OSError from writing ``key`` as one line that says what to do."""
    if exc.errno == errno.ENOSPC:
        return CacheFileError(root, key, "the disk is full",
                              "free some space and run the same command again: the build resumes where it stopped")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CacheFileError(root, key, f"cannot be written ({exc.strerror})",
                              "check the folder's permissions, or write the cache elsewhere")
    return CacheFileError(root, key, f"cannot be written ({exc.strerror or exc})")


_LINK = "is a symbolic link (a cache reads only regular files inside its own folder)"


def _reason(exc: OSError, folder: bool = False) -> str:
    if exc.errno == errno.ENOENT:
        return "is missing"
    if exc.errno == errno.ELOOP:
        return _LINK
    if exc.errno == errno.ENOTDIR:
        return "is not a folder" if folder else "lies below something that is not a folder"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot be read ({exc.strerror})"
    return f"cannot be opened ({exc.strerror or exc})"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
