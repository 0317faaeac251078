"""Stage "decode": recording file -> mono float32 at 32 kHz.

Old path: ``librosa.load(path, sr=32000)`` (soundfile, then soxr_hq), one file at a time.
chirpid-io: ``chirpid_io.audio.load`` (soundfile + soxr HQ, the same samples). Two cases:
the bundled real recordings (short, WAV and MP3, 22.05-48 kHz) and the generated corpus
(30 s WAV at 44.1 kHz). Throughput is seconds of audio decoded per second.
"""

from __future__ import annotations

import pytest

from corpus import audio_seconds
from memory import Inputs, probe

RATE = 32_000
UNIT = "audio s/s"


def _old(paths):
    from chirpid_io.legacy import legacy_load

    return [legacy_load(p) for p in paths]


def _new(paths):
    from chirpid_io.audio import load

    return [load(p, RATE) for p in paths]


CASES = {"samples": "sample_paths", "corpus": "corpus_paths"}
SIDES = {
    "old": (_old, "librosa.load(sr=32000), one file at a time"),
    "new": (_new, "chirpid_io.audio.load (soundfile + soxr HQ)"),
}


@pytest.mark.parametrize("side", sorted(SIDES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_decode(measure, request, case, side):
    pytest.importorskip("librosa")
    paths = request.getfixturevalue(CASES[case])
    fn, label = SIDES[side]
    fn(paths[:1])  # import the libraries outside the timed rounds
    measure(lambda: fn(paths), stage="decode", side=side, items=audio_seconds(paths),
            unit=UNIT, label=label, case=case)


@probe("decode", "old", "librosa.load; every decoded recording held, as load_audio_files did")
def decode_memory_old(inputs: Inputs):
    _old(inputs.corpus[:1])
    return lambda: len(_old(inputs.files))


@probe("decode", "new", "chirpid_io.audio.load, one recording at a time")
def decode_memory_new(inputs: Inputs):
    from chirpid_io.audio import load

    load(inputs.corpus[0], RATE)
    return lambda: sum(1 for p in inputs.files if len(load(p, RATE)))
