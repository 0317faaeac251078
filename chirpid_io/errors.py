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


class ManifestError(ChirpIOError, ValueError):
    """An input folder or table cannot become a list of recordings.

    Raised before any audio is decoded; the message names the file, the column or the
    data row (1-based), and the fix.
    """


class CacheError(ChirpIOError):
    """A cache is missing, incomplete, damaged, locked, or does not match what was asked."""


class FingerprintMismatchError(CacheError, ValueError):
    """Features were asked for with a SpectrogramConfig other than the one they were made with."""

    def __init__(self, what: str, differences: dict[str, tuple], fix: str | None = None):
        self.differences = differences
        fields = "; ".join(f"{k}: {a!r} there, {b!r} asked" for k, (a, b) in differences.items())
        fix = fix or "Use the config stored with it (cache.config), or rebuild it with yours."
        super().__init__(f"{what} was built with another SpectrogramConfig ({fields}). {fix}")


class BuildError(ChirpIOError):
    """A build that cannot give a usable cache (every recording skipped, say).

    ``report`` is the build's :class:`~chirpid_io.cache.BuildReport`, so a caller can show
    what was skipped and why.
    """

    def __init__(self, message: str, report=None):
        self.report = report
        super().__init__(message)
