"""ObjectStore: a cache on S3, Google Cloud Storage or Azure Blob Storage, through obstore.

The same methods as ``files.LocalStore``, over objects under the URL's prefix (the key
``specs/c/0/0/0`` of ``s3://bucket/cache`` is the object ``cache/specs/c/0/0/0``). Why
obstore (not fsspec/s3fs): fetching random batches of 42 windows from a local S3 server it
read 2.3x as many windows per second with a seventh of the client CPU per window
(``benchmarks/objstore_reads.py``, README), and it has the conditional puts the lock needs.

How the guarantees of a cache on disk carry over:

- **Atomic writes.** Every write is one whole ``put`` (no multipart upload), which an
  object store makes visible all at once or not at all; there are no temporary names.
- **The journal** (``journal.py``) cannot be appended to in place: each appended line is
  its own object, ``build-journal/00000001.jsonl``, ``00000002.jsonl``..., created only if
  absent and read back in order; the writer appends one only after the shard objects it
  describes exist, so a SIGKILLed build resumes exactly as on disk.
- **The commit marker** is the group ``zarr.json`` with state ``complete``, written last
  by ``CacheWriter.finish`` as on disk; until then readers see the last finished state.
- **One writer at a time**: no ``flock`` on an object store, so the lock is an object,
  ``build.lock``, created with a conditional put (create only if absent) and refreshed by a
  heartbeat every :data:`LOCK_HEARTBEAT_SECONDS` (a conditional put on its own version). A
  later build takes a lock over when its holder is provably dead (same machine, its
  process gone: at once) or its heartbeat is older than :data:`LOCK_STALE_SECONDS`
  (another machine), with a conditional put on the version it saw, so two takers cannot
  both win. A writer that finds its lock taken stops before its next write.
- **Consistent reads.** A read opens an object with one request for its tail (size,
  version tag, and for a shard its index); every later range of it is fetched only if the
  object is still that version (``If-Match``), and a shard that changed between the two is
  read again (``shards.py``), so a reader during an append never mixes two versions.
- **Links, FIFOs, reads outside the cache**: an object store has none; every key is built
  by chirpid-io below the prefix, never taken from data.

What does not carry over: ``build-cache --overwrite`` (no atomic rename of a prefix; it is
refused with the fix), and fork: obstore's I/O runtime does not survive ``fork()``, so
DataLoader workers over such a cache start with ``spawn`` (``loaders/loader.py``) and a
forked process that touches a store fails with that explanation instead of hanging.

Credentials and endpoint come only from the standard environment variables, read by
obstore (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_REGION``, ``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP`` for a plain-HTTP endpoint;
``GOOGLE_SERVICE_ACCOUNT``, ``GOOGLE_APPLICATION_CREDENTIALS``...; ``AZURE_STORAGE_ACCOUNT_NAME``,
``AZURE_STORAGE_ACCOUNT_KEY``...),
never from a file of chirpid-io's.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from bisect import bisect_right
from collections import OrderedDict
from datetime import timedelta

from ..errors import CacheError
from ..text import shown
from . import format as fmt
from .files import CacheFileError, ObjectChanged, ObjectURL, cache_location

#: Keys written with ``append`` (one object per appended record, see the module docstring).
LOG_KEYS = (fmt.JOURNAL,)
#: Bytes fetched from the end of an object when it is opened: a shard's index (4 KiB for
#: 256 chunks) and every small object whole, in one request.
TAIL_BYTES = 64 << 10
#: Of a shard opened for a batch, the last bytes kept after the batch (its index: 4 KiB for
#: 256 chunks), for this many shards, so the next batch's reads of it need one request, not
#: two; a kept tail is used only with If-Match on the version it came from (see ``open_many``).
TAIL_KEPT_BYTES = 16 << 10
TAILS_KEPT = 1024
#: Ranges of one object less than this far apart are fetched as one request.
COALESCE_BYTES = 128 << 10
#: Requests in flight at once for one batch.
PARALLEL_REQUESTS = 16
LOCK_HEARTBEAT_SECONDS = 30.0
LOCK_STALE_SECONDS = 300.0

_CREDENTIALS = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials)",
    "gs": "GOOGLE_SERVICE_ACCOUNT (a service-account key file), GOOGLE_SERVICE_ACCOUNT_KEY or GOOGLE_APPLICATION_CREDENTIALS",
    "az": "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or a SAS token, AZURE_STORAGE_SAS_KEY)",
}
_ENDPOINT = {"s3": "AWS_ENDPOINT_URL", "gs": "GOOGLE_BASE_URL", "az": "AZURE_STORAGE_ENDPOINT"}
_BUCKET_WORD = {"s3": "bucket", "gs": "bucket", "az": "container"}
_PART = re.compile(r"^(\d{8})\.jsonl$")
#: the process whose obstore runtime is running (see ``ObjectStore._store``)
_runtime_pid: int | None = None


class ObjectStore:
    """The objects of the cache at ``url`` (``s3://bucket/prefix``, ``gs://...``, ``az://...``)."""

    kind = "object"
    #: obstore's runtime does not survive fork(): worker processes must be spawned
    fork_safe = False

    def __init__(self, url):
        self.root: ObjectURL = cache_location(url)
        if not isinstance(self.root, ObjectURL):
            raise CacheError(f"{shown(url)}: not an object-store URL (s3://, gs:// or az://)")
        self.scheme = self.root.scheme
        rest = self.root.split("://", 1)[1]
        self.bucket, _, self.prefix = rest.partition("/")
        parts = self.prefix.split("/") if self.prefix else []
        if not self.bucket or any(p in ("", ".", "..") for p in parts):
            raise CacheError(f"{shown(url)}: not a usable cache URL; write it as "
                             f"{self.scheme}://{_BUCKET_WORD.get(self.scheme, 'bucket')}/prefix (no empty, '.' or '..' parts)")
        self._pid = None
        self._client = None
        self._pool = None
        self._next_part: dict[str, int] = {}
        self._fence = None  #: set by the held lock: raises once the lock is lost
        self._bucket_seen = False
        self._tails: OrderedDict = OrderedDict()  # key -> (size, e_tag, tail_start, tail), most recent last
        self._tails_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ObjectStore({str(self.root)!r})"

    def __getstate__(self):
        return {"root": str(self.root)}  # the receiving process opens its own connection

    def __setstate__(self, state):
        self.__init__(state["root"])

    @property
    def location(self) -> str:
        return str(self.root)

    # -- the connection ----------------------------------------------------------------------
    def _store(self):
        global _runtime_pid
        pid = os.getpid()
        if _runtime_pid is not None and _runtime_pid != pid:
            raise CacheError(
                f"{shown(self.root)}: this process was forked from one that had used an object store; obstore's "
                "I/O runtime does not survive fork(). Fix: start worker processes with the 'spawn' (or "
                "'forkserver') method (make_loader does so for caches on object storage)")
        if self._client is None or self._pid != pid:
            try:
                from obstore.store import from_url
            except ImportError:
                raise CacheError(f"{shown(self.root)}: caches on object storage need obstore; "
                                 "pip install 'chirpid-io[s3]'") from None
            retry = {"max_retries": 5, "retry_timeout": timedelta(seconds=30)}
            try:
                self._client = from_url(str(self.root), retry_config=retry)
            except Exception as exc:  # noqa: BLE001 - obstore's configuration errors
                raise CacheError(f"{shown(self.root)}: cannot configure the object store ({_first_line(exc)}); "
                                 f"check the URL and {_ENDPOINT.get(self.scheme, 'the endpoint')}") from None
            self._pid = pid
            self._pool = None
            _runtime_pid = pid
        return self._client

    def _map(self, function, items):
        """``function`` over ``items`` with up to PARALLEL_REQUESTS in flight, in order."""
        items = list(items)
        if len(items) <= 1:
            return [function(item) for item in items]
        self._store()
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(PARALLEL_REQUESTS, thread_name_prefix="chirpid-objects")
        return list(self._pool.map(function, items))

    def _failure(self, exc: Exception, key: str) -> Exception:
        """An obstore error as the CacheError a user can act on."""
        import obstore.exceptions as oe

        text = str(exc)
        code = _s3_code(text)
        bucket = _BUCKET_WORD.get(self.scheme, "bucket")
        if _no_bucket(text):
            return self._no_bucket()
        if isinstance(exc, FileNotFoundError) or isinstance(exc, oe.NotFoundError):
            # a HEAD has no body to say whether the object or the bucket is missing: ask once
            return self._bucket_failure() or CacheFileError(self.root, key, "is missing")
        if isinstance(exc, (oe.PermissionDeniedError, oe.UnauthenticatedError)) or code in (
                "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken"):
            status = re.search(r"\b(40[13] [A-Z][a-z]+)", text)
            why = code or (status.group(1) if status else type(exc).__name__)
            return CacheError(f"{shown(self.root)}: access denied ({why}); set "
                              f"{_CREDENTIALS.get(self.scheme, 'the credentials')} for an identity that may read "
                              f"and write this {bucket}")
        if isinstance(exc, oe.PreconditionError):
            return ObjectChanged(self.root, key, "changed while it was being read (a build rewrote it)")
        if isinstance(exc, oe.GenericError) and any(w in text for w in ("onnect", "dns error", "timed out")):
            endpoint = os.environ.get(_ENDPOINT.get(self.scheme, ""), "the default endpoint")
            return CacheError(f"{shown(self.root)}: cannot reach the object store at {shown(endpoint)} "
                              f"({_first_line(exc)}); check {_ENDPOINT.get(self.scheme, 'the endpoint')} and the network")
        return CacheFileError(self.root, key, f"cannot be accessed ({_first_line(exc)})")

    def _bucket_failure(self) -> CacheError | None:
        """The error for a missing bucket, or None when it exists; asked once per store."""
        import obstore

        if self._bucket_seen:
            return None
        try:
            obstore.list_with_delimiter(self._store(), None)
        except Exception as exc:  # noqa: BLE001
            return self._no_bucket() if _no_bucket(str(exc)) else None
        self._bucket_seen = True
        return None

    def _no_bucket(self) -> CacheError:
        return CacheError(f"{shown(self.root)}: the {_BUCKET_WORD.get(self.scheme, 'bucket')} {shown(self.bucket)!r} "
                          f"does not exist at this endpoint; create it, or fix the URL or "
                          f"{_ENDPOINT.get(self.scheme, 'the endpoint')}")

    def _call(self, key: str, function, *args, **kwargs):
        try:
            return function(self._store(), *args, **kwargs)
        except CacheError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated into one line with the fix
            raise self._failure(exc, key) from None

    # -- reading ------------------------------------------------------------------------------
    def open(self, key: str) -> "ObjectFile":
        """Open ``key``: one request for its tail gives its size, its version and, for a
        shard, its index."""
        import obstore

        try:
            result = obstore.get(self._store(), key, options={"range": {"suffix": TAIL_BYTES}})
            tail = bytes(result.bytes())
        except CacheError:
            raise
        except Exception as exc:  # noqa: BLE001
            failure = self._failure(exc, key)
            if not isinstance(failure, CacheFileError) or "is missing" in failure.reason:
                raise failure from None
            # an empty object has no suffix range: take it whole
            result = self._call(key, obstore.get, key)
            tail = bytes(result.bytes())
        meta = result.meta
        size = int(meta["size"])
        return ObjectFile(self, key, size, meta.get("e_tag"), size - len(tail), tail)

    def open_many(self, keys: list[str]) -> dict[str, "ObjectFile"]:
        """:meth:`open` of each key in parallel, for the shards of a batch; keys that cannot
        be opened are left out (opening them alone gives the error).

        The tails of shards opened before are kept (:data:`TAILS_KEPT`) and reused without
        a request: every range read through such a handle asks for the version the tail
        came from, so a shard rewritten since (an append) raises :class:`ObjectChanged`,
        which drops the kept tail and makes ``shards.py`` open the shard afresh. (A shard
        small enough to be kept whole is served as kept: an append leaves the windows a
        reader pinned unchanged.) Only shard reads use this; :meth:`open` and :meth:`read`
        always ask the store."""
        out, todo = {}, []
        with self._tails_lock:
            for key in keys:
                kept = self._tails.get(key)
                if kept is None:
                    todo.append(key)
                else:
                    self._tails.move_to_end(key)
                    out[key] = ObjectFile(self, key, *kept)

        def attempt(key):
            try:
                return self.open(key)
            except CacheFileError:
                return None

        for key, handle in zip(todo, self._map(attempt, todo)):
            if handle is None:
                continue
            out[key] = handle
            tail = handle.tail[-TAIL_KEPT_BYTES:]
            with self._tails_lock:
                self._tails[key] = (handle.size, handle.e_tag, handle.size - len(tail), tail)
                while len(self._tails) > TAILS_KEPT:
                    self._tails.popitem(last=False)
        return out

    def _forget(self, key: str) -> None:
        with self._tails_lock:
            self._tails.pop(key, None)

    def prefetch(self, wanted: dict) -> None:
        """Fetch ``{handle: [(offset, length), ...]}`` in parallel (nearby ranges of one
        object coalesced), so that the handles' ``pread`` of them need no request. Best
        effort: a range that fails is simply read again by ``pread``, which reports it."""
        jobs = []
        for handle, ranges in wanted.items():
            spans = sorted((o, o + n) for o, n in ranges if n > 0 and o < handle.tail_start and o + n <= handle.size)
            merged: list[list[int]] = []
            for start, end in spans:
                if merged and start - merged[-1][1] <= COALESCE_BYTES:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            jobs += [(handle, start, end) for start, end in merged]

        def fetch(job):
            handle, start, end = job
            try:
                return handle._fetch(start, end)
            except CacheError:
                return None

        for (handle, start, _), data in zip(jobs, self._map(fetch, jobs)):  # kept here, in one thread
            if data is not None:
                handle._keep(start, data)

    def read(self, key: str, limit: int | None = None) -> bytes:
        """The whole content of ``key`` (refused when larger than ``limit`` bytes)."""
        if key in LOG_KEYS:
            return self._read_log(key)
        for attempt in range(3):
            with self.open(key) as f:
                if limit is not None and f.size > limit:
                    raise CacheFileError(self.root, key, f"is {f.size} bytes, more than the {limit} such a file can hold",
                                         "the object is damaged or not part of a chirpid-io cache")
                try:
                    return f.pread(0, f.size)
                except ObjectChanged:
                    if attempt == 2:
                        raise

    def exists(self, key: str) -> bool:
        return self.check(key) is None

    def check(self, key: str) -> str | None:
        """What is wrong with ``key`` as an object of this cache ("is missing"), or None."""
        import obstore

        if key in LOG_KEYS:
            return None if self._log_parts(key) else "is missing"
        try:
            self._call(key, obstore.head, key)
            return None
        except CacheFileError as exc:
            return exc.reason

    def check_many(self, keys: list[str]) -> list[str | None]:
        """:meth:`check` of each key, from one listing of the folder that holds them all."""
        if len(keys) <= 2:
            return [self.check(key) for key in keys]
        folder = os.path.commonprefix([k.rsplit("/", 1)[0] + "/" for k in keys]).rpartition("/")[0]
        present = {meta["path"] for meta in self._list(folder)}
        return [None if key in present else "is missing" for key in keys]

    def describe(self, key: str) -> str:
        """Where ``key`` is, for a message: a log is a folder of objects, line N in the Nth."""
        if key in LOG_KEYS:
            return f"{self.root / _log_folder(key)}/ (the journal: its line N is the object N.jsonl, N in 8 digits)"
        return str(self.root / key)

    def listdir(self, key: str = "") -> list[str]:
        """Names directly below ``key`` (objects and "folders"; [] when there are none)."""
        import obstore

        key = key.strip("/")
        listing = self._call(key, obstore.list_with_delimiter, key or None)
        names = {p["path"].rsplit("/", 1)[-1] for p in listing["objects"]}
        names |= {p.rstrip("/").rsplit("/", 1)[-1] for p in listing["common_prefixes"]}
        return sorted(names)

    def walk(self):
        """``(key, kind)`` of every object ("file") and the folders above them ("dir")."""
        folders = set()
        for meta in self._list(""):
            key = meta["path"]
            parts = key.split("/")
            for i in range(1, len(parts)):
                folder = "/".join(parts[:i])
                if folder not in folders:
                    folders.add(folder)
                    yield folder, "dir"
            yield key, "file"

    def total_bytes(self) -> int:
        return sum(int(meta["size"]) for meta in self._list(""))

    def _list(self, folder: str) -> list[dict]:
        import obstore

        folder = folder.strip("/")

        def every():
            return [meta for chunk in obstore.list(self._store(), folder or None) for meta in chunk]

        return self._call(folder, lambda _store: every())

    # -- writing ------------------------------------------------------------------------------
    def write(self, key: str, data: bytes) -> None:
        """Replace ``key`` with ``data``: one put, visible whole or not at all."""
        import obstore

        self._check_fence()
        if key in LOG_KEYS:
            self._remove_log(key)
            self._next_part[key] = 1
            if data:
                self.append(key, data)
            return
        self._forget(key)
        self._call(key, obstore.put, key, bytes(data), use_multipart=False)

    def append(self, key: str, data: bytes) -> None:
        """Add ``data`` to the log ``key`` as its next part (an object created only if absent)."""
        import obstore
        import obstore.exceptions as oe

        if key not in LOG_KEYS:
            raise CacheError(f"{shown(self.root / key)}: internal error, only {LOG_KEYS} can be appended to")
        self._check_fence()
        if key not in self._next_part:
            parts = self._log_parts(key)
            self._next_part[key] = parts[-1][0] + 1 if parts else 1
        part = _part_key(key, self._next_part[key])
        try:
            obstore.put(self._store(), part, bytes(data), mode="create", use_multipart=False)
        except oe.AlreadyExistsError:
            raise CacheError(f"{shown(self.root / part)}: already exists: another build is writing this cache at "
                             "the same time. Fix: stop one of them, then run the command again") from None
        except Exception as exc:  # noqa: BLE001
            raise self._failure(exc, part) from None
        self._next_part[key] += 1

    def truncate(self, key: str, size: int) -> None:
        import obstore

        if key not in LOG_KEYS:
            self.write(key, self.read(key)[:size])
            return
        parts, end = self._log_parts(key), 0
        data = dict(zip((p[1] for p in parts), self._map(lambda p: self.read(p[1]), parts)))
        for number, part, _ in parts:
            length = len(data[part])
            if end + length > size:
                for later in reversed([p for p in parts if p[0] > number]):
                    self.remove(later[1])
                if size > end:
                    self._call(part, obstore.put, part, data[part][: size - end], use_multipart=False)
                else:
                    self.remove(part)
                self._next_part.pop(key, None)
                return
            end += length

    def remove(self, key: str) -> None:
        import obstore

        self._check_fence()
        if key in LOG_KEYS:
            self._remove_log(key)
            return
        self._forget(key)
        self._call(key, obstore.delete, key)

    def stale_temporaries(self, folder: str) -> list[str]:
        return []  # puts are atomic: an object store keeps no temporary names

    # -- the log (the build journal) ------------------------------------------------------
    def _log_parts(self, key: str) -> list[tuple[int, str, int]]:
        """(number, key, size) of each part of the log ``key``, in order."""
        folder = _log_folder(key)
        parts = []
        for meta in self._list(folder):
            match = _PART.match(meta["path"][len(folder) + 1:])
            if match:
                parts.append((int(match.group(1)), meta["path"], int(meta["size"])))
        return sorted(parts)

    def _read_log(self, key: str) -> bytes:
        parts = self._log_parts(key)
        return b"".join(self._map(lambda p: self.read(p[1]), parts))

    def _remove_log(self, key: str) -> None:
        import obstore

        for _, part, _ in reversed(self._log_parts(key)):  # the last first: what is left is a prefix
            self._call(part, obstore.delete, part)
        self._next_part.pop(key, None)

    # -- the build lock -------------------------------------------------------------------
    def take_lock(self) -> "ObjectLock":
        return ObjectLock(self)

    def build_status(self) -> str:
        holder = _read_lock(self)
        if holder is None:
            return "no build is running: the last one was interrupted before it finished"
        owner, _, _, age, dead = holder
        if dead or age > LOCK_STALE_SECONDS:
            return "no build is running: the last one was interrupted (its lock is stale)"
        return f"a build ({owner}) is writing it now; wait for it to finish"

    def _check_fence(self) -> None:
        if self._fence is not None:
            self._fence()

    # -- interoperability -------------------------------------------------------------------
    def zarr_store(self, key: str):
        """A read-only zarr-python store over the objects below ``key``."""
        from obstore.store import from_url
        from zarr.storage import ObjectStore as ZarrObjectStore

        self._store()
        return ZarrObjectStore(from_url(str(self.root / key)), read_only=True)


class ObjectFile:
    """An opened object: its size, its version, its tail, and ranges fetched ahead."""

    def __init__(self, store: ObjectStore, key: str, size: int, e_tag: str | None, tail_start: int, tail: bytes):
        self.store, self.key, self.size, self.e_tag = store, key, size, e_tag
        self.tail_start, self.tail = tail_start, tail
        self._starts: list[int] = []  # fetched spans, sorted by start
        self._spans: list[tuple[int, bytes]] = []

    def pread(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        if offset >= self.tail_start:
            return self.tail[offset - self.tail_start : end - self.tail_start]
        i = bisect_right(self._starts, offset) - 1
        if i >= 0:
            start, data = self._spans[i]
            if start <= offset and end <= start + len(data):
                return data[offset - start : end - start]
        data = self._fetch(offset, min(end, self.tail_start))
        if end > self.tail_start:
            data += self.tail[: end - self.tail_start]
        return data

    def _fetch(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of this version of the object (ObjectChanged if replaced)."""
        import obstore

        options = {"range": (start, end)}
        if self.e_tag:
            options["if_match"] = self.e_tag
        try:
            result = self.store._call(self.key, obstore.get, self.key, options=options)
        except ObjectChanged:
            self.store._forget(self.key)
            raise
        return bytes(result.bytes())

    def _keep(self, start: int, data: bytes) -> None:
        i = bisect_right(self._starts, start)
        self._starts.insert(i, start)
        self._spans.insert(i, (start, data))

    def close(self) -> None:
        self._spans, self._starts = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ObjectLock:
    """The held build lock of a cache on an object store (see the module docstring)."""

    def __init__(self, store: ObjectStore):
        import obstore
        import obstore.exceptions as oe

        self.store, self.lost = store, None
        self._stop = threading.Event()
        body = _lock_body()
        try:
            result = obstore.put(store._store(), fmt.LOCK, body, mode="create", use_multipart=False)
        except oe.AlreadyExistsError:
            result = self._take_over(body)
        except Exception as exc:  # noqa: BLE001
            raise store._failure(exc, fmt.LOCK) from None
        self.e_tag = result["e_tag"]
        self._thread = threading.Thread(target=self._beat, name="chirpid-lock-heartbeat", daemon=True)
        self._thread.start()
        store._fence = self.check

    def _take_over(self, body: bytes) -> dict:
        import obstore
        import obstore.exceptions as oe

        store = self.store
        holder = _read_lock(store)
        if holder is not None:
            owner, e_tag, _, age, dead = holder
            if not dead and age <= LOCK_STALE_SECONDS:
                raise CacheError(
                    f"{shown(store.root)}: another build ({owner}, last heartbeat {age:.0f} s ago) is writing this "
                    "cache; wait for it to finish or stop it, then run the command again. A lock whose build died is "
                    f"taken over at once on its own machine, or once its heartbeat is {LOCK_STALE_SECONDS:.0f} s old; "
                    f"remove {shown(store.root / fmt.LOCK)} by hand only if you know that build is dead")
            mode = {"e_tag": e_tag}
        else:
            mode = "create"  # released in the meantime
        try:
            return obstore.put(store._store(), fmt.LOCK, body, mode=mode, use_multipart=False)
        except (oe.PreconditionError, oe.AlreadyExistsError):
            raise CacheError(f"{shown(store.root)}: another build took this cache's lock at the same moment; "
                             "run the command again once it has finished") from None
        except Exception as exc:  # noqa: BLE001
            raise store._failure(exc, fmt.LOCK) from None

    def _beat(self) -> None:
        import obstore
        import obstore.exceptions as oe

        while not self._stop.wait(LOCK_HEARTBEAT_SECONDS):
            try:
                result = obstore.put(self.store._store(), fmt.LOCK, _lock_body(), mode={"e_tag": self.e_tag},
                                     use_multipart=False)
                self.e_tag = result["e_tag"]
            except (oe.PreconditionError, FileNotFoundError, oe.NotFoundError):
                self.lost = "its lock object was replaced or removed by another build"
                return
            except Exception:  # noqa: BLE001 - a network hiccup: the next beat tries again
                continue

    def check(self) -> None:
        """Raise if another build has taken this lock over (called before every write)."""
        if self.lost:
            raise CacheError(f"{shown(self.store.root)}: this build lost its lock ({self.lost}); it stops so that "
                             "only one build writes the cache. Run the command again once the other has finished")

    def close(self) -> None:
        import obstore

        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self.store._fence = None
        if self.lost:
            return
        holder = _read_lock(self.store)
        if holder is not None and holder[1] == self.e_tag:  # still ours
            try:
                obstore.delete(self.store._store(), fmt.LOCK)
            except Exception:  # noqa: BLE001 - a stale lock is taken over by the next build
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _lock_body() -> bytes:
    now = time.time()
    record = {"pid": os.getpid(), "host": socket.gethostname(), **_machine(),
              "since": time.strftime("%Y-%m-%d %H:%M:%S"), "heartbeat": now}
    return json.dumps(record).encode()


def _machine() -> dict:
    """What tells this machine and process namespace apart from others (Linux)."""
    out = {}
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            out["boot_id"] = f.read().strip()
        out["pid_namespace"] = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pass
    return out


def _read_lock(store: ObjectStore):
    """(owner text, version tag, record, age in seconds, holder known dead) of the lock, or None."""
    import obstore

    try:
        result = store._call(fmt.LOCK, obstore.get, fmt.LOCK)
    except CacheFileError as exc:
        if "is missing" in exc.reason:
            return None
        raise
    try:
        record = json.loads(bytes(result.bytes()))
        if not isinstance(record, dict):
            raise ValueError
    except ValueError:
        record = {}
    modified = result.meta.get("last_modified")
    age = time.time() - modified.timestamp() if modified is not None else float("inf")
    owner = f"pid {record.get('pid')} on {shown(record.get('host'))} since {shown(record.get('since'))}"
    return owner, result.meta.get("e_tag"), record, age, _holder_dead(record)


def _holder_dead(record: dict) -> bool:
    """True only when the holder ran on this machine, in this pid namespace, and its process is gone."""
    here = _machine()
    if (not here or record.get("host") != socket.gethostname() or record.get("boot_id") != here.get("boot_id")
            or record.get("pid_namespace") != here.get("pid_namespace")):
        return False
    pid = record.get("pid")
    if type(pid) is not int or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed process its parent has not reaped yet is a zombie: dead all the same
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _log_folder(key: str) -> str:
    return key.rsplit(".", 1)[0]


def _part_key(key: str, number: int) -> str:
    return f"{_log_folder(key)}/{number:08d}.jsonl"


def _no_bucket(text: str) -> bool:
    return _s3_code(text) in ("NoSuchBucket", "ContainerNotFound") or "bucket does not exist" in text.lower()


def _s3_code(text: str) -> str | None:
    match = re.search(r"<Code>([A-Za-z]+)</Code>", text)
    return match.group(1) if match else None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return shown(text[0][:200]) if text else type(exc).__name__
