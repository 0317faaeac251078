"""Command-line options made from the API's dataclasses: one source of truth.

Each field of a dataclass becomes ``--field-name``, its help the field's ``help``
metadata, its choices the field's ``choices`` metadata (or a registry passed in), its type
the annotation (``X | None`` also takes ``none``; booleans get ``--flag/--no-flag``), and
its stated default the dataclass's own. An option not given is absent from
:func:`given`, so presets, recipe files and flags can be layered: a flag overrides the
recipe, which overrides the preset.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from .errors import ConfigError

_NONE = object()  # "none" on the command line, for a field that takes None


def add_no_progress(parser, where: str = "") -> None:
    """``--no-progress``, the same flag and words for every command (``where``: e.g. " within epochs")."""
    parser.add_argument("--no-progress", action="store_true",
                        help=f"no progress bar{where} (default: a bar on a terminal, none otherwise)")


def add_fields(parser, cls, *, defaults=None, skip=(), choices=None, prefix: str = "", default_note: str = "",
               helps=None, flags=None) -> None:
    """Add one option per field of dataclass ``cls`` (except ``skip``) to ``parser``.

    ``defaults``: an instance whose values are the stated defaults (default: ``cls()``);
    ``choices``: {field: allowed values} overriding the metadata; ``default_note``: how the
    default is described (e.g. "the preset's"); ``helps``: {field: help} overriding it;
    ``flags``: {field: option name} where the field's own name reads badly on its own.
    """
    defaults = defaults if defaults is not None else cls()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        options = typing.get_args(hints[f.name]) or (hints[f.name],)
        optional = type(None) in options
        base = next((k for k in options if k is not type(None)), str)
        allowed = (choices or {}).get(f.name) or f.metadata.get("choices")
        allowed = [c for c in allowed if c is not None] if allowed else None
        value = getattr(defaults, f.name)
        text = (helps or {}).get(f.name) or f.metadata.get("help", "")
        stated = ("none" if value is None else "on" if value is True else "off" if value is False else
                  ",".join(map(str, value)) if isinstance(value, (tuple, list)) else value)
        help_text = f"{text} (default{' ' + default_note if default_note else ''}: {stated})".replace("%", "%%")
        flag = "--" + (prefix + (flags or {}).get(f.name, f.name)).replace("_", "-")
        dest = prefix + f.name
        if base is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        metavar = "|".join(map(str, allowed)) if allowed else base.__name__.upper()
        metavar += "|none" if optional else ""
        parser.add_argument(flag, dest=dest, default=None, metavar=metavar,
                            type=_parser(base, optional, allowed, flag), help=help_text)


def given(args: argparse.Namespace, cls, prefix: str = "") -> dict:
    """The fields of ``cls`` set on the command line, as {field: value}."""
    out = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, prefix + f.name, None)
        if value is not None:
            out[f.name] = None if value is _NONE else value
    return out


def _parser(base, optional: bool, allowed, flag: str):
    def parse(text: str):
        if optional and text.lower() == "none":
            return _NONE
        if allowed and text not in map(str, allowed):
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(map(str, allowed))}"
                                             + (", none" if optional else ""))
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {base.__name__}"
                                             + (" (or none)" if optional else "")) from None

    parse.__name__ = base.__name__
    return parse


def parse_key_values(items, where: str) -> dict:
    """``["width=16", "dropout=0.3"]`` -> {"width": 16, "dropout": 0.3} (numbers, true/false
    and none are read as such; anything else stays text)."""
    out = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{where}: {item!r} is not KEY=VALUE")
        out[key.strip().replace("-", "_")] = _value(text.strip())
    return out


def _value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
