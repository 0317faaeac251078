"""SpectrogramConfig: defaults are the old recipe, validation names the field, fingerprints are stable."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import chirpid_io
from chirpid_io.config import SpectrogramConfig, preset
from chirpid_io.errors import ConfigError


def test_defaults_are_the_chirpid_recipe():
    c = SpectrogramConfig()
    assert (c.sample_rate, c.n_fft, c.win_length, c.hop_length, c.n_mels) == (32_000, 2048, 2048, 512, 224)
    assert (c.fmin, c.fmax, c.mel_scale, c.mel_norm, c.power) == (0.0, 16_000.0, "slaney", "slaney", 2.0)
    assert (c.center, c.pad_mode, c.amin, c.top_db, c.scaling) == (True, "constant", 1e-10, 80.0, "minmax")
    assert (c.n_samples, c.frames, c.shape, c.energy_threshold) == (160_000, 313, (224, 313), 0.75)
    assert preset("chirpid") == c


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"fmax": 20_000.0}, "fmax"),
        ({"win_length": 4096}, "win_length"),
        ({"n_mels": 0}, "n_mels"),
        ({"hop_length": -1}, "hop_length"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"window_seconds": 0.0}, "window_seconds"),
        ({"mel_scale": "bark"}, "mel_scale"),
        ({"top_db": -3.0}, "top_db"),
        ({"storage_dtype": "int16"}, "storage_dtype"),
    ],
)
def test_impossible_values_are_refused_naming_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        SpectrogramConfig(**changes)


def test_fingerprint_is_stable_and_sees_every_field():
    c = SpectrogramConfig()
    assert c.fingerprint() == "49c9d74f0fa393b6"  # a change here orphans every existing cache
    assert SpectrogramConfig(window_seconds=5).fingerprint() == c.fingerprint()  # 5 == 5.0
    changed = {
        "sample_rate": 44_100, "window_seconds": 3.0, "hop_seconds": 2.5, "n_fft": 4096,
        "win_length": 1024, "hop_length": 256, "n_mels": 128, "fmin": 50.0, "fmax": 12_000.0,
        "mel_scale": "htk", "mel_norm": None, "power": 1.0, "center": False, "pad_mode": "reflect",
        "amin": 1e-5, "top_db": 60.0, "scaling": "db", "energy_threshold": None, "pad_short": True,
        "storage_dtype": "float16",
    }
    assert set(changed) == {f.name for f in dataclasses.fields(c)}
    seen = {c.fingerprint()} | {c.replace(**{k: v}).fingerprint() for k, v in changed.items()}
    assert len(seen) == len(changed) + 1  # every change gave a new fingerprint


def test_round_trip_and_diff():
    c = SpectrogramConfig(n_mels=128)
    assert SpectrogramConfig.from_dict(c.to_dict()) == c
    assert c.diff(SpectrogramConfig()) == {"n_mels": (128, 224)}
    with pytest.raises(ConfigError, match="bogus"):
        SpectrogramConfig.from_dict({"bogus": 1})


def test_import_is_lazy():
    code = ("import sys, chirpid_io; chirpid_io.SpectrogramConfig; "
            "print(','.join(m for m in ('torch','torchaudio','zarr','pyarrow','nvidia.dali') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    assert "SpectrogramConfig" in dir(chirpid_io)
