"""Recipes: a SpectrogramConfig and StorageOptions as a file, a preset, or both.

A recipe file is TOML (``.toml``) or JSON (``.json``)::

    preset = "birdclef"          # optional: start from a named preset (default chirpid)

    [spectrogram]                # any SpectrogramConfig field; the rest come from the preset
    n_mels = 128
    top_db = "none"              # TOML has no null: the text "none" means None

    [storage]                    # any StorageOptions field
    level = 3

``chirpid-io inspect CACHE --recipe`` prints a cache's recipe in this form, with every
field, and building with that file reproduces the same fingerprint. Unknown keys are
refused with the list of known ones, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

from .config import PRESETS, SpectrogramConfig
from .errors import ConfigError
from .text import shown

_SECTIONS = ("spectrogram", "storage")


def load_recipe(path) -> tuple[SpectrogramConfig, "StorageOptions"]:  # noqa: F821
    """The (config, storage) a recipe file describes (see the module docstring)."""
    path = Path(path)
    data = _parse(path)
    unknown = sorted(set(data) - {"preset", *_SECTIONS})
    if unknown:
        raise ConfigError(f"{shown(path)}: unknown key(s) {', '.join(unknown)}; a recipe has 'preset', "
                          "[spectrogram] and [storage]")
    return build_recipe(data.get("preset", "chirpid"), data.get("spectrogram", {}), data.get("storage", {}),
                        where=shown(path))


def build_recipe(preset_name: str, spectrogram: dict, storage: dict, where: str = "recipe"):
    """A preset with ``spectrogram`` and ``storage`` fields changed, each field checked."""
    from .cache.format import StorageOptions

    if preset_name not in PRESETS:
        raise ConfigError(f"{where}: unknown preset {preset_name!r}; choose one of {', '.join(sorted(PRESETS))}")
    for section, values in (("spectrogram", spectrogram), ("storage", storage)):
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [{section}] must be a table of fields, not {type(values).__name__}")
    config = _changed(PRESETS[preset_name], spectrogram, where, "spectrogram")
    return config, _changed(StorageOptions(), storage, where, "storage")


def recipe_text(config: SpectrogramConfig, storage, fmt: str = "toml") -> str:
    """The recipe of ``config`` and ``storage`` with every field, as TOML or JSON."""
    spectrogram, stored = dataclasses.asdict(config), dataclasses.asdict(storage)
    if fmt == "json":
        return json.dumps({"spectrogram": spectrogram, "storage": stored}, indent=2) + "\n"
    lines = [f"# chirpid-io recipe (fingerprint {config.fingerprint()}); build with --recipe FILE", ""]
    for section, values in (("spectrogram", spectrogram), ("storage", stored)):
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def _parse(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{shown(path)}: cannot read the recipe ({exc.strerror or exc})") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        elif path.suffix.lower() == ".json":
            data = json.loads(raw.decode("utf-8"))
        else:
            raise ConfigError(f"{shown(path)}: a recipe is a .toml or .json file")
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{shown(path)}: not a readable recipe ({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{shown(path)}: a recipe is a table of sections, not {type(data).__name__}")
    return data


def _changed(base, values: dict, where: str, section: str):
    fields = {f.name: f for f in dataclasses.fields(base)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown [{section}] field(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(type(base))
    changes = {name: coerce(value, hints[name], f"{where}: [{section}] {name}") for name, value in values.items()}
    return dataclasses.replace(base, **changes)


def coerce(value, hint, where: str):
    """``value`` as the annotated type ``hint`` (int, float, bool, str, or None where the
    type allows it; the text "none" means None), or a ConfigError naming ``where``."""
    options = typing.get_args(hint) or (hint,)
    if type(None) in options and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
        return None
    for kind in options:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    want = " or ".join("none" if k is type(None) else k.__name__ for k in options)
    raise ConfigError(f"{where} = {value!r}: must be {want}")


def _toml_value(value) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)
