"""Stage "build": recordings -> a stored training set, end to end.

Old path: ``legacy_preprocess`` (librosa load, per-window melspectrogram, one PNG per
window with Pillow, the metadata CSVs), one window after another on one core.
chirpid-io: ``build_cache`` (decoding in worker processes, batched torch kernel, sharded
Zarr writes, Parquet tables). Same ChirpID recording table and audio, no class cap on
either side. Throughput is seconds of input audio per second; the windows each side
stored are in ``extra_info``.
"""

from __future__ import annotations

import itertools

import pytest

from corpus import audio_seconds
from inputs import chirpid_table
from memory import Inputs, probe

UNIT = "audio s/s"


def _old(table, classes, audio_root, out):
    from chirpid_io.legacy import legacy_preprocess

    return legacy_preprocess(table, out, audio_root=audio_root, class_map=classes, cap_per_class=None)


def _new(table, classes, audio_root, out, workers=None):
    from chirpid_io.cache import build_cache

    return build_cache(table, out, audio_root=audio_root, class_map=classes, workers=workers,
                       progress=False)


SIDES = {
    "old": (_old, "legacy_preprocess: librosa + one PNG per window"),
    "new": (_new, "build_cache: worker decode + batched torch kernel + Zarr shards"),
}


@pytest.fixture(scope="module")
def table(corpus_paths, tmp_path_factory):
    return chirpid_table(corpus_paths, tmp_path_factory.mktemp("build-table"))


@pytest.mark.parametrize("side", sorted(SIDES))
def test_build(measure, table, corpus_paths, tmp_path, side):
    pytest.importorskip("librosa")
    fn, label = SIDES[side]
    outs = (tmp_path / f"out{i}" for i in itertools.count())
    fn(*table, corpus_paths[0].parent, next(outs))  # imports and kernel set-up, untimed
    measure(lambda: fn(*table, corpus_paths[0].parent, next(outs)), stage="build", side=side,
            items=audio_seconds(corpus_paths), unit=UNIT, label=label, case="corpus")


@probe("build", "old", "legacy_preprocess (decodes every recording first, as load_audio_files did)")
def build_memory_old(inputs: Inputs):
    import tempfile
    from pathlib import Path

    work = Path(tempfile.mkdtemp())
    table, classes, root = _inputs_table(inputs, work)
    return lambda: _old(table, classes, root, work / "png").written


@probe("build", "new", "build_cache, decoding inline (workers=0) so all memory is in one process")
def build_memory_new(inputs: Inputs):
    import tempfile
    from pathlib import Path

    work = Path(tempfile.mkdtemp())
    table, classes, root = _inputs_table(inputs, work)
    _new(*chirpid_table(inputs.corpus[:1], work / "warm"), inputs.corpus[0].parent, work / "warm-cache", 0)
    return lambda: _new(table, classes, root, work / "cache", 0).windows_added


def _inputs_table(inputs: Inputs, work):
    """(table, class map, audio root) listing the corpus ``scale`` times; repeats are
    copies under new names, since a table refuses duplicate paths and links out of its root."""
    if inputs.scale == 1:
        return (*chirpid_table(inputs.corpus, work / "table"), inputs.corpus[0].parent)
    root = work / "audio"
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, path in enumerate(inputs.files):
        copy = root / f"{i:05d}_{path.name}"
        copy.write_bytes(path.read_bytes())
        paths.append(copy)
    return (*chirpid_table(paths, work / "table"), root)
