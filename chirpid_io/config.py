"""SpectrogramConfig: every parameter that changes the numbers, and its fingerprint.

The defaults are the old ChirpID recipe exactly (see ``shared/reference``): 32 kHz mono,
non-overlapping 5 s windows, a 2048-point Hann STFT with hop 512, 224 Slaney mel bands up
to 16 kHz, power 2, ``power_to_db(ref=max, amin=1e-10, top_db=80)`` per clip, then a
per-clip min-max to [0, 1].
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from .errors import ConfigError

#: Bumped when the meaning of a field changes, so old fingerprints stop matching.
_FINGERPRINT_VERSION = 1

MEL_SCALES = ("slaney", "htk")
MEL_NORMS = ("slaney", None)
PAD_MODES = ("constant", "reflect")
SCALINGS = ("minmax", "db")
STORAGE_DTYPES = ("uint8", "float16")


@dataclass(frozen=True)
class SpectrogramConfig:
    """How a recording becomes a (n_mels, frames) log-mel image.

    Times are in seconds, rates and frequencies in Hz, sizes in samples, levels in dB.
    ``scaling="minmax"`` maps each clip's dB image to [0, 1] (the old recipe);
    ``scaling="db"`` stops at the clamped dB values (in [-top_db, 0]).
    The energy filter uses frames of ``n_fft`` samples with hop ``hop_length``, as the
    old code's ``librosa.feature.rms`` defaults did; ``energy_threshold=None`` keeps
    every window.
    """

    sample_rate: int = field(default=32_000, metadata={"help": "sample rate recordings are resampled to (Hz)"})
    window_seconds: float = field(default=5.0, metadata={"help": "window length (s)"})
    hop_seconds: float = field(default=5.0, metadata={"help": "seconds between window starts (less than the "
                                                      "window: overlap)"})
    n_fft: int = field(default=2048, metadata={"help": "FFT size (samples)"})
    win_length: int = field(default=2048, metadata={"help": "Hann window length (samples, <= n_fft)"})
    hop_length: int = field(default=512, metadata={"help": "STFT hop (samples)"})
    n_mels: int = field(default=224, metadata={"help": "mel bands"})
    fmin: float = field(default=0.0, metadata={"help": "lowest mel frequency (Hz)"})
    fmax: float = field(default=16_000.0, metadata={"help": "highest mel frequency (Hz, <= sample_rate / 2)"})
    mel_scale: str = field(default="slaney", metadata={"help": "mel scale", "choices": MEL_SCALES})
    mel_norm: str | None = field(default="slaney", metadata={"help": "mel filter normalisation ('none': peak 1)",
                                                             "choices": MEL_NORMS})
    power: float = field(default=2.0, metadata={"help": "exponent of the magnitude (2: power)"})
    center: bool = field(default=True, metadata={"help": "centre frames (pad n_fft // 2 at both ends)"})
    pad_mode: str = field(default="constant", metadata={"help": "padding when centring", "choices": PAD_MODES})
    amin: float = field(default=1e-10, metadata={"help": "floor of the power before the log"})
    top_db: float | None = field(default=80.0, metadata={"help": "dB below each clip's peak where values are "
                                                          "floored ('none': no floor)"})
    scaling: str = field(default="minmax", metadata={"help": "minmax: each clip's dB image to [0, 1]; db: the "
                                                     "floored dB values", "choices": SCALINGS})
    energy_threshold: float | None = field(default=0.75, metadata={
        "help": "keep windows whose RMS exceeds this times the recording's mean frame RMS ('none' keeps all)"})
    pad_short: bool = field(default=False, metadata={"help": "zero-pad recordings shorter than one window to one "
                                                      "instead of skipping them"})
    storage_dtype: str = field(default="uint8", metadata={"help": "stored values: uint8 (rounded) or float16",
                                                          "choices": STORAGE_DTYPES})

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("window_seconds", "hop_seconds", "power", "amin"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.win_length > self.n_fft:
            raise ConfigError(
                f"win_length ({self.win_length}) must not exceed n_fft ({self.n_fft}): "
                "the window is zero-padded up to n_fft, never cropped"
            )
        nyquist = self.sample_rate / 2
        if not 0 <= self.fmin < self.fmax:
            raise ConfigError(f"need 0 <= fmin < fmax, got fmin={self.fmin}, fmax={self.fmax}")
        if self.fmax > nyquist:
            raise ConfigError(
                f"fmax ({self.fmax} Hz) is above the Nyquist frequency ({nyquist} Hz) of "
                f"sample_rate {self.sample_rate}: lower fmax or raise sample_rate"
            )
        if self.n_samples < self.n_fft // 2 + 1:
            raise ConfigError(
                f"window_seconds={self.window_seconds} gives {self.n_samples} samples, "
                f"too few for n_fft={self.n_fft}"
            )
        if self.hop_samples <= 0:
            raise ConfigError(f"hop_seconds={self.hop_seconds} is shorter than one sample")
        _check_choice("mel_scale", self.mel_scale, MEL_SCALES)
        _check_choice("mel_norm", self.mel_norm, MEL_NORMS)
        _check_choice("pad_mode", self.pad_mode, PAD_MODES)
        _check_choice("scaling", self.scaling, SCALINGS)
        _check_choice("storage_dtype", self.storage_dtype, STORAGE_DTYPES)
        if self.top_db is not None and not self.top_db > 0:
            raise ConfigError(f"top_db must be positive or None, got {self.top_db!r}")
        if self.energy_threshold is not None and self.energy_threshold < 0:
            raise ConfigError(
                f"energy_threshold must be >= 0 or None, got {self.energy_threshold!r}"
            )

    @property
    def n_samples(self) -> int:
        """Samples in one window (160 000 by default)."""
        return round(self.window_seconds * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        """Samples between the starts of consecutive windows."""
        return round(self.hop_seconds * self.sample_rate)

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def frames(self) -> int:
        """STFT frames in one window (313 by default)."""
        if self.center:
            return 1 + self.n_samples // self.hop_length
        return 1 + (self.n_samples - self.n_fft) // self.hop_length

    @property
    def shape(self) -> tuple[int, int]:
        """(n_mels, frames) of one window's image."""
        return (self.n_mels, self.frames)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SpectrogramConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown SpectrogramConfig fields: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes) -> "SpectrogramConfig":
        return dataclasses.replace(self, **changes)

    def fingerprint(self) -> str:
        """A stable 16-hex-digit hash of every field; equal configs give equal numbers."""
        payload = {"v": _FINGERPRINT_VERSION, **_canonical(self.to_dict())}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def diff(self, other: "SpectrogramConfig") -> dict[str, tuple]:
        """Fields whose values differ, as {name: (self's value, other's value)}."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}


def _canonical(values: dict) -> dict:
    # 5 and 5.0 must hash alike: floats are written in repr form, ints as floats.
    out = {}
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = repr(float(value))
        out[key] = value
    return out


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")


#: Named recipes. ``chirpid`` is the old ChirpID recipe (the default). ``birdclef`` is the
#: front end of PANNs' Cnn14 at 32 kHz (Kong et al. 2020, "PANNs: Large-Scale Pretrained
#: Audio Neural Networks", github.com/qiuqiangkong/audioset_tagging_cnn: a 1024-point Hann
#: window, hop 320, 50 Hz to 14 kHz, reflect padding) with 128 mel bands, as the PANNs-based
#: sound-event-detection models of BirdCLEF 2021-2023 solutions used it; with 5 s windows
#: and no energy filter (every window of a soundscape stays). Unlike PANNs, whose dB are
#: relative to 1.0, chirpid-io refers each clip to its own peak and floors at -80 dB.
PRESETS: dict[str, SpectrogramConfig] = {
    "chirpid": SpectrogramConfig(),
    "birdclef": SpectrogramConfig(n_fft=1024, win_length=1024, hop_length=320, n_mels=128, fmin=50.0,
                                  fmax=14_000.0, pad_mode="reflect", energy_threshold=None),
}


def preset(name: str) -> SpectrogramConfig:
    """A named configuration: ``"chirpid"`` (the old recipe) or ``"birdclef"``."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}") from None
