"""ModelRegistry: trained models as numbered, immutable versions with everything needed
to serve them (train/serve parity).

Layout: ``root/<name>/v<N>/`` holds ``weights.pt`` (the state_dict, loadable with
``torch.load(weights_only=True)``) and ``model.json`` (the model's class and constructor
arguments, the SpectrogramConfig and its fingerprint, class names, the per-band
normalisation statistics, metrics, tool and torch versions, creation time). A version is
written into a temporary directory and renamed into place, so a reader never sees half
of one and two writers never share a number.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import SpectrogramConfig
from ..errors import ChirpIOError, ConfigError, FingerprintMismatchError

WEIGHTS = "weights.pt"
META = "model.json"
_VERSION_DIR = re.compile(r"^v(\d+)$")


class RegistryError(ChirpIOError, LookupError):
    """A model name or version that the registry does not hold."""


@dataclass
class ModelEntry:
    """One stored model version, loaded: ``model`` is in eval mode on ``device``."""

    name: str
    version: int
    model: object
    config: SpectrogramConfig
    fingerprint: str
    class_names: list[str]
    metrics: dict
    stats: dict | None
    path: Path
    meta: dict = field(default_factory=dict)

    def check_features(self, config) -> None:
        """Refuse features made with another recipe: ``config`` is a SpectrogramConfig or
        anything with a ``.config`` (an open cache). Raises FingerprintMismatchError."""
        config = getattr(config, "config", config)
        if config.fingerprint() != self.fingerprint:
            raise FingerprintMismatchError(f"model {self.name!r} v{self.version} ({self.path})",
                                           self.config.diff(config))


class ModelRegistry:
    """Versioned models under ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def save(self, model, name: str, *, cache=None, config: SpectrogramConfig | None = None,
             cache_fingerprint: str | None = None, class_names=None, stats: dict | None = None,
             metrics: dict | None = None, model_kwargs: dict | None = None, extra: dict | None = None) -> int:
        """Store ``model`` as the next version of ``name`` and return its number (1, 2, ...).

        ``cache`` (an open Cache) supplies ``config``, ``cache_fingerprint``,
        ``class_names`` and ``stats`` (the per-band mean/std the loader normalised with)
        unless they are given (``stats=False``: training did not normalise). ``model_kwargs``: constructor arguments, needed only for a
        model without ``init_kwargs`` (the models in ``trainers.models`` record theirs).
        """
        import torch

        _check_name(name)
        if cache is not None:
            config = config or cache.config
            cache_fingerprint = cache_fingerprint or cache.fingerprint
            class_names = class_names if class_names is not None else cache.class_names
            stats = stats if stats is not None else cache.stats
        stats = stats or None  # False: the loader did not normalise
        if config is None or class_names is None:
            raise ConfigError("ModelRegistry.save needs the SpectrogramConfig and class names "
                              "(pass cache=..., or config=... and class_names=...)")
        kwargs = model_kwargs if model_kwargs is not None else getattr(model, "init_kwargs", None)
        if kwargs is None:
            raise ConfigError(f"{type(model).__name__} does not record its constructor arguments; "
                              "pass model_kwargs={...} to ModelRegistry.save")
        from .. import __version__

        cls = type(getattr(model, "_orig_mod", model))  # unwrap torch.compile
        meta = {
            "name": name,
            "model_class": f"{cls.__module__}:{cls.__qualname__}",
            "model_kwargs": kwargs,
            "config": config.to_dict(),
            "fingerprint": config.fingerprint(),
            "cache_fingerprint": cache_fingerprint,
            "class_names": list(class_names),
            "stats": None if stats is None else {k: np.asarray(v, dtype=np.float64).tolist()
                                                 for k, v in stats.items() if k in ("mean", "std")},
            "metrics": _plain(metrics or {}),
            "tool_version": __version__,
            "torch_version": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(extra or {}),
        }
        state = {k: v.detach().cpu() for k, v in getattr(model, "_orig_mod", model).state_dict().items()}
        home = self.root / name
        home.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=home))
        try:
            torch.save(state, tmp / WEIGHTS)
            (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
            while True:  # another writer may take a number between our look and our rename
                version = max(self.versions(name), default=0) + 1
                meta["version"] = version
                (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
                try:
                    os.rename(tmp, home / f"v{version}")  # fails if that version exists
                    return version
                except OSError:
                    if not (home / f"v{version}").exists():
                        raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        home = self.root / name
        if not home.is_dir():
            return []
        found = (_VERSION_DIR.match(p.name) for p in home.iterdir())
        return sorted(int(m.group(1)) for m in found if m and (home / m.group(0) / META).is_file())

    def meta(self, name: str, version: int) -> dict:
        return json.loads((self.root / name / f"v{version}" / META).read_text())

    def resolve(self, name: str, version: str | int = "latest", metric: str = "val_macro_f1") -> int:
        """The version number ``version`` means: "latest", "best" (by ``metric``; lowest
        for a loss, else highest), or a number."""
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise RegistryError(f"{self.root}: no model named {name!r} (registered: {known})")
        if version == "latest":
            return versions[-1]
        if version == "best":
            scored = [(self.meta(name, v)["metrics"].get(metric), v) for v in versions]
            scored = [(s, v) for s, v in scored if isinstance(s, (int, float))]
            if not scored:
                raise RegistryError(f"{self.root / name}: no version records metric {metric!r}; "
                                    "choose another metric or a version number")
            sign = 1 if metric.endswith("loss") else -1
            return min(scored, key=lambda sv: (sign * sv[0], -sv[1]))[1]
        number = int(str(version).lstrip("v"))
        if number not in versions:
            raise RegistryError(f"{self.root / name}: no version {number} (have "
                                f"{', '.join(map(str, versions))})")
        return number

    def load(self, name: str, version: str | int = "latest", *, metric: str = "val_macro_f1",
             device=None) -> ModelEntry:
        """Rebuild a stored model (eval mode) with its recipe, classes and metrics."""
        import torch

        number = self.resolve(name, version, metric)
        path = self.root / name / f"v{number}"
        meta = self.meta(name, number)
        module, _, qualname = meta["model_class"].partition(":")
        cls = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        model = cls(**meta["model_kwargs"])
        model.load_state_dict(torch.load(path / WEIGHTS, map_location="cpu", weights_only=True))
        model.to(device or "cpu").eval()
        stats = meta.get("stats")
        return ModelEntry(
            name=name, version=number, model=model, config=SpectrogramConfig.from_dict(meta["config"]),
            fingerprint=meta["fingerprint"], class_names=list(meta["class_names"]), metrics=meta["metrics"],
            stats=None if stats is None else {k: np.asarray(v, dtype=np.float64) for k, v in stats.items()},
            path=path, meta=meta,
        )


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or ""):
        raise ConfigError(f"model name {name!r}: use letters, digits, '.', '_' and '-' "
                          "(it becomes a directory name)")


def _plain(values: dict) -> dict:
    """Metrics as JSON numbers (numpy scalars and 0-d tensors included)."""
    out = {}
    for key, value in values.items():
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            value = value.item()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        out[key] = value
    return out
