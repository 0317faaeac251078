"""Search spaces for ``tune``: which settings a study varies, and over what range.

A space is a TOML or JSON file (or a dict) with four sections, each naming fields of
one part of a training run:

    [train]      fields of TrainConfig (lr, weight_decay, optimizer, epochs, ...)
    [model]      ``name`` (a key of trainers.models.MODELS) and the model's constructor
                 arguments (birdcnn: width, dropout; birdcnn_v5c: dropout)
    [augment]    fields of loaders.Augment (freq_mask, time_mask, p, gain_db, mixup_alpha, ...)
    [loader]     batch_size

Each entry is either a plain value, fixed for every trial (``epochs = 20``), or a table
that is searched:

    lr = {low = 1e-4, high = 1e-2, log = true}     # float, log-uniform
    width = {low = 8, high = 32, step = 8}          # int (the field is an int)
    optimizer = {choices = ["adam", "adamw"]}       # categorical

The names are checked against the dataclasses' fields and the models' signatures (an
unknown name is refused with the list of known ones), every bound and choice is checked
by building the dataclass with it, and ``"none"`` stands for None where a field takes
None (TOML has no null). Optuna names each parameter ``section.field`` ("train.lr").
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

SECTIONS = ("train", "model", "augment", "loader")
#: TrainConfig fields that ``tune`` sets itself, per trial or from its own options
NOT_SEARCHABLE = ("device", "checkpoint_dir", "resume", "seed")
LOADER_FIELDS = {"batch_size": int}
#: model constructor arguments that come from the data, not from the space
MODEL_DATA_ARGS = ("n_classes", "in_channels")

DEFAULT_SPACE_TOML = """\
# chirpid-io tune: the default search space. Copy it (chirpid-io tune --print-space > space.toml),
# edit, and pass it with --space space.toml. A plain value is fixed for every trial; a table
# with low/high (and log, step) or choices is searched.

[train]                      # TrainConfig fields
epochs = 20                  # most epochs per trial (pruning stops weak trials sooner)
patience = 6                 # early stopping on the study's metric
lr = {low = 1e-4, high = 1e-2, log = true}
weight_decay = {low = 1e-6, high = 1e-2, log = true}
label_smoothing = {low = 0.0, high = 0.2}
class_weights = {choices = ["balanced", "none"]}

[model]                      # a model from trainers.models.MODELS and its arguments
name = "birdcnn"
width = {low = 8, high = 32, step = 8}
dropout = {low = 0.0, high = 0.5}

[augment]                    # loaders.Augment fields
freq_mask = {low = 0, high = 28}
time_mask = {low = 0, high = 78}
p = {low = 0.0, high = 1.0}
gain_db = {low = 0.0, high = 6.0}
mixup_alpha = {low = 0.0, high = 0.4}

[loader]
batch_size = {choices = [32, 64]}
"""


@dataclass(frozen=True)
class Param:
    """One searched setting: ``kind`` "float", "int" or "categorical"."""

    section: str
    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()
    #: the string "none" in choices stands for None (the field is not a string field)
    none_is_null: bool = False

    @property
    def key(self) -> str:
        """The Optuna parameter name, ``section.field``."""
        return f"{self.section}.{self.name}"

    def suggest(self, trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def to_dict(self) -> dict:
        if self.kind == "categorical":
            return {"choices": list(self.choices)}
        out = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass
class TrialSetup:
    """What one trial trains: the TrainConfig, the model and its arguments, the
    augmentation (None: none) and the batch size."""

    train: Any  # TrainConfig
    model: str
    model_kwargs: dict
    augment: Any  # Augment | None
    batch_size: int
    params: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """The run's full settings, as the experiment log's start record holds them."""
        return {**self.train.to_dict(), "model": self.model, "model_kwargs": dict(self.model_kwargs),
                "batch_size": self.batch_size,
                "augment": None if self.augment is None else dataclasses.asdict(self.augment)}


@dataclass
class SearchSpace:
    """Fixed values and searched parameters per section (see the module docstring)."""

    fixed: dict[str, dict]
    params: list[Param]
    source: str = "<dict>"

    # -- reading ------------------------------------------------------------------------
    @classmethod
    def default(cls) -> "SearchSpace":
        return cls.from_dict(tomllib.loads(DEFAULT_SPACE_TOML), source="the default space")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SearchSpace":
        """A space from a ``.toml`` or ``.json`` file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the search space ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file; give a TOML or JSON search space") from None
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            elif path.suffix.lower() == ".toml":
                data = tomllib.loads(text)
            else:
                raise ConfigError(f"{path}: a search space is a .toml or .json file")
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "SearchSpace":
        """Validate and read a space; errors name ``source`` and the ``section.field``."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a search space is a table of sections ({', '.join(SECTIONS)})")
        unknown = [k for k in data if k not in SECTIONS]
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {', '.join(map(repr, unknown))}; "
                              f"the sections are {', '.join(SECTIONS)}")
        for section, entries in data.items():
            if not isinstance(entries, dict):
                raise ConfigError(f"{source}: [{section}] must be a table of field = value or field = {{...}}")
        fixed: dict[str, dict] = {s: {} for s in SECTIONS}
        params: list[Param] = []
        models = _model_choices(data.get("model", {}), source)
        for section in SECTIONS:
            known = _known_fields(section, models)
            for name, spec in data.get(section, {}).items():
                where = f"{source}: {section}.{name}"
                if section == "model" and name == "name":
                    continue  # read by _model_choices
                if section == "train" and name in NOT_SEARCHABLE:
                    raise ConfigError(f"{where}: set by tune itself (its --{name.replace('_', '-')} "
                                      "option or per trial); remove it from the space")
                if name not in known:
                    names = sorted(k for k in known if section != "train" or k not in NOT_SEARCHABLE)
                    raise ConfigError(f"{where}: unknown field; [{section}] knows "
                                      f"{', '.join(names) or 'nothing for this model'}")
                kind = known[name]
                if isinstance(spec, dict):
                    param = _param(section, name, kind, spec, where)
                    for value in _probe_values(param):
                        _check_value(section, name, _none(value, kind), models, where)
                    params.append(param)
                else:
                    value = _none(spec, kind)
                    _check_value(section, name, value, models, where)
                    fixed[section][name] = value
        if models[1] is not None:
            params.insert(0, Param("model", "name", "categorical", choices=tuple(models[1])))
        else:
            fixed["model"]["name"] = models[0]
        return cls(fixed=fixed, params=params, source=source)

    # -- using ----------------------------------------------------------------------------
    def sample(self, trial, *, base: dict | None = None) -> TrialSetup:
        """Suggest every parameter through ``trial`` (an ``optuna.Trial``, or anything with
        ``suggest_float/int/categorical``) and build the trial's settings. ``base``: TrainConfig
        values that tune sets itself (device, seed, early_stopping, ...). A model argument
        is suggested only when the chosen model takes it."""
        values: dict[str, dict] = {s: dict(v) for s, v in self.fixed.items()}
        by_key = {p.key: p for p in self.params}
        if "model.name" in by_key:
            values["model"]["name"] = by_key["model.name"].suggest(trial)
        model = values["model"]["name"]
        accepted = _model_args(model)
        for p in self.params:
            if p.key == "model.name" or (p.section == "model" and p.name not in accepted):
                continue
            value = p.suggest(trial)
            values[p.section][p.name] = None if p.none_is_null and value == "none" else value
        return _setup(values, base or {}, dict(getattr(trial, "params", {})))

    def with_fixed(self, section: str, name: str, value) -> "SearchSpace":
        """A copy with ``section.name`` fixed to ``value`` (validated like a file's entry)."""
        data = self.to_dict()
        data.setdefault(section, {})[name] = value
        return SearchSpace.from_dict(data, source=f"{self.source} with {section}.{name} = {value!r}")

    def to_dict(self) -> dict:
        out: dict[str, dict] = {}
        for section in SECTIONS:
            entries = {k: ("none" if v is None else v) for k, v in self.fixed.get(section, {}).items()}
            entries.update({p.name: p.to_dict() for p in self.params if p.section == section})
            if entries:
                out[section] = entries
        return out


# -- helpers ------------------------------------------------------------------------------
def _model_choices(model: dict, source: str) -> tuple[str | None, list[str] | None]:
    """(fixed model name, or None; searched model names, or None)."""
    from .models import MODELS

    spec = model.get("name", "birdcnn")
    names = spec.get("choices") if isinstance(spec, dict) else [spec]
    if isinstance(spec, dict) and set(spec) != {"choices"}:
        raise ConfigError(f"{source}: model.name is a model name or {{choices = [...]}}, got {spec!r}")
    if not isinstance(names, list) or not names:
        raise ConfigError(f"{source}: model.name choices must be a non-empty list")
    for name in names:
        if not isinstance(name, str) or name.lower() not in MODELS:
            raise ConfigError(f"{source}: model.name {name!r} is not a known model; "
                              f"choose from {', '.join(MODELS)}")
    names = [n.lower() for n in names]
    return (None, names) if isinstance(spec, dict) else (names[0], None)


def _model_args(name: str) -> dict[str, type]:
    """Constructor arguments of MODELS[name] a space may set, with their types."""
    from .models import MODELS

    cls = MODELS[name]
    hints = typing.get_type_hints(cls.__init__)
    out = {}
    for arg in inspect.signature(cls.__init__).parameters.values():
        if arg.name == "self" or arg.name in MODEL_DATA_ARGS or arg.kind in (arg.VAR_POSITIONAL, arg.VAR_KEYWORD):
            continue
        out[arg.name] = _scalar_type(hints.get(arg.name), arg.default)
    return out


def _known_fields(section: str, models: tuple) -> dict[str, type]:
    if section == "train":
        from .loop import TrainConfig

        return _dataclass_fields(TrainConfig)
    if section == "augment":
        from ..loaders.augment import Augment

        return _dataclass_fields(Augment)
    if section == "loader":
        return dict(LOADER_FIELDS)
    known: dict[str, type] = {}
    for name in models[1] or [models[0]]:
        known.update(_model_args(name))
    return known


def _dataclass_fields(cls) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: _scalar_type(hints.get(f.name), f.default) for f in dataclasses.fields(cls)}


def _scalar_type(hint, default) -> type:
    """float, int, bool, str or object (anything else: lists, unions of several kinds)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    options = [o for o in options if o is not type(None)]
    if len(options) == 1 and options[0] in (bool, int, float, str):
        return options[0]
    if default is not dataclasses.MISSING and default is not inspect.Parameter.empty and default is not None:
        return type(default) if type(default) in (bool, int, float, str) else object
    return object


def _param(section: str, name: str, kind: type, spec: dict, where: str) -> Param:
    allowed = {"low", "high", "log", "step", "choices"}
    extra = set(spec) - allowed
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}; use low/high (log, step) or choices")
    if "choices" in spec:
        if set(spec) != {"choices"}:
            raise ConfigError(f"{where}: give either choices or low/high, not both")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        for c in choices:
            if not (c is None or isinstance(c, (bool, int, float, str))):
                raise ConfigError(f"{where}: choice {c!r} is not a number, string or boolean")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{where}: choices repeat a value")
        return Param(section, name, "categorical", choices=tuple(choices), none_is_null=kind is not str)
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: a searched range needs low and high (or give choices)")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if kind not in (int, float):
        raise ConfigError(f"{where}: not a numeric field; search it with choices = [...]")
    for label, value in (("low", low), ("high", high), ("step", step)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise ConfigError(f"{where}: {label} must be a finite number, got {value!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if kind is int and not all(isinstance(v, int) for v in (low, high, step) if v is not None):
        raise ConfigError(f"{where}: an integer field needs integer low/high/step, got {low!r}..{high!r}")
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    if step is not None and (step <= 0 or log):
        raise ConfigError(f"{where}: step must be > 0 and cannot be combined with log")
    return Param(section, name, "int" if kind is int else "float", low=low, high=high, log=log, step=step)


def _probe_values(param: Param) -> list:
    return list(param.choices) if param.kind == "categorical" else [param.low, param.high]


def _none(value, kind):
    return None if isinstance(value, str) and value.lower() == "none" and kind is not str else value


def _check_value(section: str, name: str, value, models: tuple, where: str) -> None:
    """Build the section's dataclass with ``value``: its own checks run on every bound."""
    try:
        if section == "train":
            from .loop import TrainConfig

            TrainConfig(**{name: value})
        elif section == "augment":
            from ..loaders.augment import Augment

            Augment(**{name: value})
        elif section == "loader":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"batch_size must be a positive integer, got {value!r}")
        else:
            candidates = [m for m in (models[1] or [models[0]]) if name in _model_args(m)]
            _check_model_value(candidates[0], name, value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {value!r} is not accepted ({exc})") from None


def _check_model_value(model: str, name: str, value) -> None:
    kind = _model_args(model)[name]
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"expects a number, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise ConfigError(f"expects an integer, got {value!r}")
    if kind in (int, float) and value < 0:
        raise ConfigError(f"expects a value >= 0, got {value!r}")
    if name == "dropout" and not 0 <= value < 1:
        raise ConfigError(f"dropout must lie in [0, 1), got {value!r}")
    if name == "width" and value < 1:
        raise ConfigError(f"width must be >= 1, got {value!r}")


def _setup(values: dict[str, dict], base: dict, params: dict) -> TrialSetup:
    from ..loaders.augment import Augment
    from .loop import TrainConfig

    train = TrainConfig(**{**values["train"], **base})
    model = dict(values["model"])
    name = model.pop("name")
    batch_size = int(values["loader"].get("batch_size", 64))
    return TrialSetup(train=train, model=name, model_kwargs=model, augment=Augment(**values["augment"]),
                      batch_size=batch_size, params=params)
