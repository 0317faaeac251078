"""The exceptions users see. Every message names the file or field and the fix."""

from __future__ import annotations


class ChirpIOError(Exception):
    """Base class of every error chirpid-io raises on purpose."""


class ConfigError(ChirpIOError, ValueError):
    """A SpectrogramConfig (or another option) holds an impossible value."""


class AudioDecodeError(ChirpIOError):
    """A recording could not be turned into samples.

    ``path`` and ``reason`` are kept apart so that a build can record the reason in
    ``recordings.parquet`` without parsing the message.
    """

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class BackendUnavailableError(ChirpIOError, RuntimeError):
    """A mel backend or device was asked for that this machine cannot provide."""
