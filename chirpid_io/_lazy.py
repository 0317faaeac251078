"""PEP 562 lazy exports, shared by the packages whose names pull in torch or zarr."""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, names: dict[str, str]):
    """``(__getattr__, __dir__)`` for ``package``: each name in ``names`` is imported from
    its module on first access and then stored in the package, so later lookups are plain."""

    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(names)

    return __getattr__, __dir__
