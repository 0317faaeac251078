"""SIGKILL this process right after the Nth durable commit of a build or a predict run.

A crash test that polls a journal from outside races the work: on a fast machine it can
finish between two polls. Killing from inside, just after a commit returns, makes the crash
point exact on every machine. From a script: ``kill_after_commits(3)``; from the shell:
``python killpoint.py N chirpid-io-ARGS...``.
"""

import os
import signal
import sys


def kill_after(owner, method: str, n: int, counts=lambda self, call: True) -> None:
    """Replace ``owner.method`` so that the process dies after ``n`` calls that ``counts``."""
    original = getattr(owner, method)
    seen = 0

    def call_then_maybe_die(self, *args, **kwargs):
        nonlocal seen
        before = self.__dict__.copy()
        result = original(self, *args, **kwargs)
        if counts(self, before):
            seen += 1
            if seen >= n:
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, method, call_then_maybe_die)


def kill_after_commits(n: int) -> None:
    """A cache build (or merge) dies after its Nth journal line past the first."""
    from chirpid_io.cache.writer import CacheWriter

    kill_after(CacheWriter, "_commit", n, counts=lambda self, before: self.n_committed != before["n_committed"])


def kill_after_predict_parts(n: int) -> None:
    """A predict run dies after its Nth committed part."""
    from chirpid_io.predict.engine import _Journal

    kill_after(_Journal, "commit", n)


if __name__ == "__main__":
    kill_after_commits(int(sys.argv[1]))
    from chirpid_io.cli import main

    sys.exit(main(sys.argv[2:]))
