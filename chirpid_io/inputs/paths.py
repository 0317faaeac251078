"""Paths as inputs name them: resolved under a root, links followed, escapes refused.

Data sets are often folders of links (a Kaggle input, a shared data set, ``data ->
/mnt/...``), so files and folders reached through symbolic links are read wherever the
links point. What a *table* writes is another matter: a path that climbs out of the audio
root (``..``, or absolute elsewhere) is refused unless the user opts in with
``allow_outside_root`` (``--allow-outside-root``), so a table cannot make a build read
arbitrary files by accident. A link that leads nowhere, or in a circle, is not an error
for the whole input: that recording is skipped with the reason.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator

from ..errors import ManifestError
from ..text import shown


class Root:
    """A folder that the entries of an input are relative to."""

    def __init__(self, root, what: str, allow_outside: bool = False):
        self.abs = os.path.abspath(root)
        if not os.path.isdir(self.abs):
            state = "is a file" if os.path.exists(self.abs) else "does not exist"
            raise ManifestError(f"{shown(self.abs)}: the {what} {state}. Fix: pass an existing folder")
        self.real = os.path.realpath(self.abs)
        self.what = what
        self.allow_outside = allow_outside
        self._seen: dict[tuple[int, int], str] = {}  # (device, inode) of each file -> its relpath

    def entry(self, entry: str, where: str) -> tuple[str, str]:
        """A listed path as (absolute path to read, relpath); refused when it lies outside
        the root, unless ``allow_outside``. ``..`` is collapsed before links are followed,
        so ``a/../b.wav`` means ``root/b.wav`` whatever ``a`` is."""
        if "\x00" in entry:
            raise ManifestError(f"{where}: {shown(entry)!s} holds a NUL byte; it is not a usable path")
        joined = entry if os.path.isabs(entry) else os.path.join(self.abs, entry)
        lexical = os.path.normpath(joined)
        rel = relative(lexical, self.abs)
        if rel is None:
            rel = relative(lexical, self.real)  # absolute entries may name the real root
        if rel is None:
            if not self.allow_outside:
                raise ManifestError(
                    f"{where}: '{shown(entry)}' lies outside the {self.what} {shown(self.abs)}. Fix: move the file "
                    "under the root, pass a root that contains it, or allow it with --allow-outside-root "
                    "(allow_outside_root=True)")
            rel = lexical.replace(os.sep, "/")
        if rel == ".":
            raise ManifestError(f"{where}: '{shown(entry)}' names the {self.what} itself, not a file")
        return lexical, rel

    def problem(self, path: str, rel: str) -> str:
        """Why ``path`` cannot be a recording, found without opening it ("" when none
        is): a dangling link, a link loop, or the same file as an earlier entry."""
        try:
            info = os.stat(path)  # follows links
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "is a symbolic link loop"
            if os.path.islink(path):
                return f"is a symbolic link to {shown(os.readlink(path))}, which does not exist"
            return ""  # a missing file: the builder reports it as it reads
        if not stat.S_ISREG(info.st_mode):
            return ""  # a folder or a device: the builder says what it is
        first = self._seen.setdefault((info.st_dev, info.st_ino), rel)
        if first != rel:
            return f"is the same file as {shown(first)} (through a symbolic link); listed once"
        return ""


def relative(path: str, base: str) -> str | None:
    """``path`` relative to ``base`` as POSIX text ("." for base itself), None if outside."""
    if path == base:
        return "."
    prefix = base if base.endswith(os.sep) else base + os.sep
    if not path.startswith(prefix):
        return None
    return path[len(prefix):].replace(os.sep, "/")


def walk_files(top: str) -> Iterator[str]:
    """Every non-hidden file below ``top``, in sorted order, following links to folders
    (each real folder once, so a link back to an ancestor is no loop) and listing links
    that lead nowhere as files (their recordings are skipped with the reason)."""
    seen: set[tuple[int, int]] = set()
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            info = os.stat(folder)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        folders = []
        for entry in entries:
            if hidden(entry.name):
                continue
            try:
                is_dir = entry.is_dir()  # follows links; False for a dangling one
            except OSError:
                is_dir = False
            if is_dir:
                folders.append(entry.path)
            else:
                yield entry.path
        stack.extend(reversed(folders))


def hidden(name: str) -> bool:
    return name.startswith(".")  # also macOS "._x.wav" resource forks
