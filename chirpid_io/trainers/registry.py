"""ModelRegistry: trained models as numbered, immutable versions with everything needed
to serve them (train/serve parity).

Layout: ``root/<name>/v<N>/`` holds ``weights.pt`` (the state_dict, loaded with
``torch.load(weights_only=True)``) and ``model.json`` (the architecture's registered name
and its constructor arguments, the SpectrogramConfig and its fingerprint, class names, the
per-band normalisation statistics, metrics, tool and torch versions, creation time). A
version is written into a temporary directory and renamed into place, so a reader never
sees half of one and two writers never share a number.

A model folder is data: loading one never imports or calls anything it names. The
architecture must be one of ``trainers.models.MODELS`` (the package's own, plus those
registered in code with ``register_model``) and its arguments are checked against that
constructor's signature, so an edited ``model.json`` can at worst be refused.
"""

from __future__ import annotations

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
from ..text import shown

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

    @property
    def task(self) -> str:
        """"single" (softmax over classes) or "multilabel" (a sigmoid per class)."""
        return self.meta.get("task", "single")

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
        from .models import MODELS, architecture_of, check_model_kwargs

        architecture = architecture_of(model)
        kwargs = check_model_kwargs(architecture, MODELS[architecture], dict(kwargs))
        meta = {
            "name": name,
            "architecture": architecture,
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
        path = self.root / name / f"v{version}" / META
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise RegistryError(f"{shown(path)}: unreadable ({str(exc).splitlines()[0][:120]}); the model "
                                "folder is damaged. Fix: remove that version, or register the model again") from None
        if not isinstance(meta, dict):
            raise RegistryError(f"{shown(path)}: not a JSON object; the model folder is damaged")
        return meta

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
        model = _build_from_meta(meta, path)
        weights = path / WEIGHTS
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - whatever torch raises, one line for the user
            why = "missing" if not weights.exists() else "not loadable as plain tensors, or not this model's weights"
            raise RegistryError(f"{shown(weights)}: {why} ({type(exc).__name__}). Fix: remove version {number} "
                                "or register the model again") from None
        model.to(device or "cpu").eval()
        try:
            stats = meta.get("stats")
            return ModelEntry(
                name=name, version=number, model=model, config=SpectrogramConfig.from_dict(meta["config"]),
                fingerprint=meta["fingerprint"], class_names=list(meta["class_names"]), metrics=meta.get("metrics", {}),
                stats=None if stats is None else {k: np.asarray(v, dtype=np.float64) for k, v in stats.items()},
                path=path, meta=meta,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"{shown(path / META)}: incomplete or invalid ({type(exc).__name__}: {exc}); the "
                                "model folder is damaged") from None


def _build_from_meta(meta: dict, path: Path):
    """The model ``model.json`` describes, built only from a registered architecture."""
    from .models import MODELS, check_model_kwargs

    architecture = meta.get("architecture")
    if architecture is None and isinstance(meta.get("model_class"), str):  # folders written before names
        by_path = {f"{c.__module__}:{c.__qualname__}": n for n, c in MODELS.items()}
        architecture = by_path.get(meta["model_class"])
        if architecture is None:
            raise RegistryError(
                f"{shown(path / META)}: names model_class {shown(meta['model_class'])!s}, which is not a known "
                f"architecture ({', '.join(MODELS)}); nothing was imported. Fix: register your architecture in "
                "code with chirpid_io.trainers.register_model(name, cls) and name it in model.json as "
                "\"architecture\"")
    if architecture not in MODELS:
        raise RegistryError(f"{shown(path / META)}: architecture {shown(architecture)} is not known (known: "
                            f"{', '.join(MODELS)}); register it in code with chirpid_io.trainers.register_model")
    try:
        kwargs = check_model_kwargs(architecture, MODELS[architecture], meta.get("model_kwargs", {}))
        n_classes = len(meta["class_names"])
        if kwargs.get("n_classes", n_classes) != n_classes:
            raise ConfigError(f"n_classes={kwargs['n_classes']} but {n_classes} class names")
        return MODELS[architecture](**kwargs)
    except (ConfigError, KeyError, TypeError) as exc:
        raise RegistryError(f"{shown(path / META)}: {exc}; the model folder is damaged or edited") from None


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
