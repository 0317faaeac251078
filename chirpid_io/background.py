"""Run a generator in a thread of its own, ahead of its consumer, through a bounded queue."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

_END = object()


class Background:
    """Iterate ``items`` in a daemon thread, at most ``depth`` items ahead.

    An exception in the producer is raised in the consumer, where the item would have
    come; ``close()`` (or leaving a ``with``) stops the producer at its next item.
    """

    def __init__(self, items: Iterator, depth: int = 1, name: str = "chirpid-io-background"):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Failed(exc))
            return
        self._put(_END)

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)  # later calls end too
            raise StopIteration
        if isinstance(item, _Failed):
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error
