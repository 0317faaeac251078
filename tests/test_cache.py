"""build_cache / open_cache / verify_cache on small synthetic and bad recordings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from chirpid_io import audio
from chirpid_io.cache import StorageOptions, build_cache, open_cache, verify_cache
from chirpid_io.cache.writer import CacheWriter
from chirpid_io.config import SpectrogramConfig
from chirpid_io.errors import CacheError, FingerprintMismatchError
from chirpid_io.kernels import mel_spectrogram, to_storage

SR = 16_000
CONFIG = SpectrogramConfig(sample_rate=SR, window_seconds=1.0, hop_seconds=1.0, n_fft=512,
                           win_length=512, hop_length=128, n_mels=32, fmax=8_000.0)
STORAGE = StorageOptions(chunk_windows=2, shard_windows=4)
CLASSES = {"alpha": (600, 3), "beta": (2_000, 3), "gamma": (5_000, 2)}  # tone Hz, recordings


def write_recording(path: Path, freq: float, seconds: float, seed: int, rate: int = SR) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    # a tone that comes and goes, in noise: some windows pass the energy filter, some not
    envelope = (np.sin(2 * np.pi * 0.35 * t + seed) > -0.3).astype(np.float32)
    wave = 0.3 * envelope * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), rate)


def make_corpus(root: Path, extra: int = 0) -> Path:
    seed = 0
    for name, (freq, count) in CLASSES.items():
        for i in range(count + extra):
            write_recording(root / name / f"{name}_{i}.wav", freq, 3.0 + (seed % 4), seed)
            seed += 1
    return root


def build(source, out, **kw):
    kw.setdefault("workers", 0)
    return build_cache(source, out, CONFIG, storage=STORAGE, progress=False, **kw)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def clean(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "cache"
    build(corpus, out)
    return out


def snapshot(path) -> dict:
    cache = open_cache(path)
    return {
        "specs": cache.specs[:],
        "labels": cache.labels,
        "windows": cache.windows.to_pylist(),
        "recordings": cache.recordings.to_pylist(),
        "class_names": cache.class_names,
        "stats": cache.stats,
    }


def assert_same(a: dict, b: dict) -> None:
    np.testing.assert_array_equal(a["specs"], b["specs"])
    np.testing.assert_array_equal(a["labels"], b["labels"])
    assert a["windows"] == b["windows"]
    assert a["recordings"] == b["recordings"]
    assert a["class_names"] == b["class_names"]
    for key in ("mean", "std"):
        np.testing.assert_allclose(a["stats"][key], b["stats"][key], rtol=1e-12)


def test_content_equals_the_kernel_on_the_same_windows(corpus, clean):
    cache = open_cache(clean)
    rows = cache.windows.to_pylist()
    assert len(cache) == len(rows) > STORAGE.shard_windows  # several shards
    for path in sorted({r["path"] for r in rows}):
        mine = [r for r in rows if r["path"] == path]
        cut = audio.windows(audio.load(corpus / path, SR), CONFIG)
        np.testing.assert_array_equal([r["start_seconds"] for r in mine], cut.start_seconds)
        expected = to_storage(mel_spectrogram(cut.samples, CONFIG).numpy(), "uint8")
        np.testing.assert_array_equal(cache.read([r["window_id"] for r in mine]), expected)
        assert {r["class_name"] for r in mine} == {path.split("/")[0]}


def test_tables_attributes_and_stats(clean):
    cache = open_cache(clean)
    assert cache.class_names == sorted(CLASSES)
    assert cache.recordings.num_rows == sum(n for _, n in CLASSES.values())
    assert set(cache.recordings.column("status").to_pylist()) == {"ok"}
    np.testing.assert_array_equal(cache.windows.column("label").to_numpy(), cache.labels)
    np.testing.assert_array_equal(cache.windows.column("window_id").to_numpy(), np.arange(len(cache)))
    values = cache.specs[:].astype(np.float64) / 255
    np.testing.assert_allclose(cache.stats["mean"], values.mean(axis=(0, 2)), rtol=1e-10)
    np.testing.assert_allclose(cache.stats["std"], values.std(axis=(0, 2)), rtol=1e-9)
    assert cache.attrs["fingerprint"] == CONFIG.fingerprint()
    assert cache.attrs["counts"]["windows"] == len(cache)


def test_read_keeps_order_and_duplicates(clean):
    cache = open_cache(clean)
    everything = cache.specs[:]
    order = [5, 0, 5, len(cache) - 1, 3]
    np.testing.assert_array_equal(cache.read(order), everything[order])
    np.testing.assert_array_equal(cache.read(range(2, 6)), everything[2:6])
    with pytest.raises(IndexError):
        cache.read([len(cache)])


def test_running_again_changes_nothing(corpus, clean, tmp_path):
    journal = (clean / "build-journal.jsonl").read_bytes()
    table_time = (clean / "windows.parquet").stat().st_mtime_ns
    report = build(corpus, clean)
    assert report.recordings_added == 0 and report.recordings_already_cached == 8
    assert (clean / "build-journal.jsonl").read_bytes() == journal
    assert (clean / "windows.parquet").stat().st_mtime_ns == table_time


def test_appending_new_recordings_equals_a_build_of_everything(corpus, clean, tmp_path):
    grown = tmp_path / "grown"
    make_corpus(grown, extra=1)
    partial = tmp_path / "partial"
    import shutil

    shutil.copytree(clean, partial)
    report = build(grown, partial)
    assert report.recordings_added == 3 and report.recordings_already_cached == 8
    appended = snapshot(partial)
    old = snapshot(clean)
    n_old = len(old["labels"])
    np.testing.assert_array_equal(appended["specs"][:n_old], old["specs"])  # old data untouched
    assert appended["windows"][:n_old] == old["windows"]
    assert len(appended["labels"]) > n_old
    assert verify_cache(partial).ok


BUILD_SCRIPT = """
import sys
from chirpid_io.cache import build_cache, StorageOptions
from chirpid_io.config import SpectrogramConfig
config = SpectrogramConfig.from_dict({config})
build_cache(sys.argv[1], sys.argv[2], config, storage=StorageOptions(chunk_windows=2, shard_windows=4),
            workers=0, progress=False)
"""


@pytest.mark.parametrize("kill_after_lines", [1, 3, 6])
def test_sigkill_then_resume_equals_a_clean_build(corpus, clean, tmp_path, kill_after_lines):
    out = tmp_path / "killed"
    script = BUILD_SCRIPT.format(config=repr(CONFIG.to_dict()))
    proc = subprocess.Popen([sys.executable, "-c", script, str(corpus), str(out)])
    journal = out / "build-journal.jsonl"
    while proc.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= kill_after_lines:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    if proc.returncode == -signal.SIGKILL:
        with pytest.raises(CacheError, match="has not finished: no build is running"):
            open_cache(out)
    build(corpus, out)
    assert_same(snapshot(out), snapshot(clean))


def test_torn_journal_line_is_ignored(corpus, clean, tmp_path):
    import shutil

    out = tmp_path / "torn"
    shutil.copytree(clean, out)
    # as a first build killed while writing its third journal line leaves it
    lines = (out / "build-journal.jsonl").read_bytes().splitlines(keepends=True)
    (out / "build-journal.jsonl").write_bytes(b"".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    for name in ("windows.parquet", "recordings.parquet"):
        (out / name).unlink()
    group = json.loads((out / "zarr.json").read_text())
    for key in ("counts", "stats", "band_sums", "provenance"):
        del group["attributes"][key]
    group["attributes"]["state"] = "building"
    (out / "zarr.json").write_text(json.dumps(group))
    build(corpus, out)
    assert_same(snapshot(out), snapshot(clean))


def test_verify_finds_a_flipped_byte(clean, tmp_path):
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(clean, out)
    assert verify_cache(out).ok
    shard = out / "specs" / "c" / "1" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x40
    shard.write_bytes(bytes(data))
    report = verify_cache(out)
    assert not report.ok
    assert any("windows 4-5" in p or "windows 6-7" in p for p in report.problems), report.problems
    from chirpid_io.cli import main

    assert main(["verify", str(out)]) == 1


def test_a_killed_writers_temporary_shard_file_is_removed(clean, tmp_path):
    import shutil

    out = tmp_path / "stale"
    shutil.copytree(clean, out)
    stale = out / "specs" / "c" / "0" / "0" / ".0.tmp-99999"  # as a SIGKILL mid-write leaves it
    stale.write_bytes(b"half a shard")
    with CacheWriter(out, CONFIG):
        pass
    assert not stale.exists() and verify_cache(out).ok


def test_second_writer_is_refused(clean):
    with CacheWriter(clean, CONFIG):
        with pytest.raises(CacheError, match="another build"):
            CacheWriter(clean, CONFIG)


def test_other_config_is_refused_naming_the_fields(clean, corpus):
    with pytest.raises(FingerprintMismatchError, match="n_mels: 32 there, 64 asked"):
        open_cache(clean, CONFIG.replace(n_mels=64))
    with pytest.raises(FingerprintMismatchError, match="hop_length"):
        build_cache(corpus, clean, CONFIG.replace(hop_length=64), workers=0, progress=False)
    assert open_cache(clean, CONFIG).fingerprint == CONFIG.fingerprint()


def test_max_per_class_fills_recording_by_recording(corpus, tmp_path):
    out = tmp_path / "capped"
    report = build(corpus, out, max_per_class=3)
    cache = open_cache(out)
    counts = np.bincount(cache.labels, minlength=3)
    assert counts.max() <= 3 and report.capped_windows > 0
    rows = cache.windows.to_pylist()
    for name in CLASSES:  # the first recordings in order give their windows first
        paths = [r["path"] for r in rows if r["class_name"] == name]
        assert paths == sorted(paths)


def bad_files(root: Path) -> dict[str, str]:
    """Twelve-plus kinds of bad or awkward input; returns {relpath: expected status}."""
    good = root / "alpha" / "alpha_0.wav"
    raw = good.read_bytes()
    t = np.arange(SR * 3) / SR
    sine = (0.3 * np.sin(2 * np.pi * 600 * t)).astype(np.float32)
    bad = root / "alpha"
    (bad / "zero.wav").write_bytes(b"")
    (bad / "truncated.wav").write_bytes(raw[: 2 * len(raw) // 3])  # decodes what is there (2 s)
    (bad / "header_only.wav").write_bytes(raw[:44])
    (bad / "random.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    (bad / "text.wav").write_text("this is not a recording\n")
    (bad / "folder.wav").mkdir()
    nan = sine.copy()
    nan[10] = np.nan
    sf.write(bad / "nan.wav", nan, SR, subtype="FLOAT")
    inf = sine.copy()
    inf[20] = np.inf
    sf.write(bad / "inf.wav", inf, SR, subtype="FLOAT")
    sf.write(bad / "silence.wav", np.zeros(SR * 3, np.float32), SR)
    sf.write(bad / "one_sample.wav", np.array([0.5], np.float32), SR)
    sf.write(bad / "low_rate_8k.wav", sine[::2], 8_000)
    sf.write(bad / "stereo_192k.wav", np.repeat(np.sin(2 * np.pi * 600 * np.arange(192_000 * 2) / 192_000)[:, None], 2, 1) * 0.3, 192_000)
    sf.write(bad / "six_channels.wav", np.repeat(sine[:, None], 6, 1), SR)
    sf.write(bad / "grünfink_ñandú_鳥.wav", sine, SR)
    return {
        "alpha/zero.wav": "skipped", "alpha/truncated.wav": "ok", "alpha/header_only.wav": "skipped",
        "alpha/random.wav": "skipped", "alpha/text.wav": "skipped", "alpha/nan.wav": "skipped",
        "alpha/inf.wav": "skipped", "alpha/silence.wav": "skipped", "alpha/one_sample.wav": "skipped",
        "alpha/low_rate_8k.wav": "ok", "alpha/stereo_192k.wav": "ok", "alpha/six_channels.wav": "ok",
        "alpha/grünfink_ñandú_鳥.wav": "ok",
    }


def test_bad_files_are_skipped_and_good_windows_unchanged(clean, tmp_path):
    mixed = make_corpus(tmp_path / "mixed")
    expected = bad_files(mixed)
    out = tmp_path / "mixed-cache"
    report = build(mixed, out, workers=2)
    cache = open_cache(out)
    status = {r["path"]: (r["status"], r["reason"]) for r in cache.recordings.to_pylist()}
    for path, want in expected.items():
        assert status[path][0] == want, (path, status[path])
        if want == "skipped":
            assert status[path][1] and (path, status[path][1]) in report.skipped
    assert "alpha/folder.wav" not in status  # a directory is not a recording of a folder input
    reference = snapshot(clean)
    rows = cache.windows.to_pylist()
    good_ids = [r["window_id"] for r in rows if r["path"] in {w["path"] for w in reference["windows"]}]
    np.testing.assert_array_equal(cache.read(good_ids), reference["specs"])
    assert verify_cache(out).ok


def test_cli_builds_inspects_and_verifies(corpus, tmp_path, capsys):
    from chirpid_io.cli import main

    out = tmp_path / "cli-cache"
    args = ["build-cache", str(corpus), str(out), "--window-seconds", "5", "--pad-short", "--workers", "0", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "recordings: 8 added, 0 skipped" in printed
    assert main(["inspect", str(out)]) == 0
    assert "windows per class" in capsys.readouterr().out
    assert main(["verify", str(out)]) == 0
    assert main(["inspect", str(tmp_path / "nowhere")]) == 1
    assert "no such folder; build a cache with" in capsys.readouterr().err


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_band_delta_codec_is_lossless(tmp_path, axis):
    import zarr

    from chirpid_io.cache.codec import BandDelta

    data = np.random.default_rng(axis).integers(0, 256, (5, 7, 9), dtype=np.uint8)
    array = zarr.create_array(tmp_path / "a", shape=data.shape, dtype="uint8", chunks=(2, 7, 9),
                              filters=[BandDelta(axis=axis)])
    array[:] = data
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a")[:], data)


def test_plain_zarr_reads_the_cache_through_the_entry_point(clean):
    # no import of chirpid_io here: zarr finds the band-delta codec through the entry point
    code = "import sys, zarr, numpy; numpy.save(sys.stdout.buffer, zarr.open_array(sys.argv[1])[:])"
    out = subprocess.run([sys.executable, "-c", code, str(clean / "specs")], capture_output=True, check=True)
    import io

    np.testing.assert_array_equal(np.load(io.BytesIO(out.stdout)), open_cache(clean).specs[:])


def test_old_png_set_is_imported_without_recomputing(corpus, tmp_path):
    pytest.importorskip("librosa")
    from chirpid_io.legacy import WINDOWS_CSV, legacy_preprocess, read_legacy_dataset

    five_second = make_corpus(tmp_path / "long-audio")
    for path in five_second.rglob("*.wav"):  # the old recipe needs 5 s windows at 32 kHz
        write_recording(path, 2_000, 11.0, seed=len(path.name), rate=32_000)
    legacy_preprocess(five_second, tmp_path / "old")
    old = read_legacy_dataset(tmp_path / "old" / WINDOWS_CSV)
    out = tmp_path / "imported"
    report = build_cache(tmp_path / "old" / WINDOWS_CSV, out, progress=False)
    cache = open_cache(out)
    assert report.windows_added == len(cache) == len(old.labels) > 0
    np.testing.assert_array_equal(cache.specs[:], old.images)  # the PNG pixels, untouched
    names = [old.class_names[i] for i in old.labels]
    assert [cache.class_names[i] for i in cache.labels] == names
    assert build_cache(tmp_path / "old" / WINDOWS_CSV, out, progress=False).windows_added == 0


@pytest.mark.parametrize("dtype, storage", [
    ("uint8", StorageOptions(chunk_windows=2, shard_windows=4, delta="none")),
    ("uint8", StorageOptions(chunk_windows=2, shard_windows=4, delta="band", level=5)),
    ("uint8", StorageOptions(chunk_windows=1, shard_windows=4, delta="per-band")),
    ("float16", StorageOptions(chunk_windows=2, shard_windows=4)),
])
def test_batch_reads_equal_zarr_for_every_storage_option(corpus, tmp_path, dtype, storage):
    out = tmp_path / "variant"
    build_cache(corpus, out, CONFIG.replace(storage_dtype=dtype), storage=storage, workers=0, progress=False)
    cache = open_cache(out)
    everything = cache.specs[:]  # decoded by zarr's own codec pipeline
    order = np.random.default_rng(0).permutation(len(cache))
    np.testing.assert_array_equal(cache.read(order), everything[order])


def test_a_damaged_chunk_is_refused_on_read(clean, tmp_path):
    import shutil

    out = tmp_path / "damaged-read"
    shutil.copytree(clean, out)
    shard = out / "specs" / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0x01  # inside the first chunk
    shard.write_bytes(bytes(data))
    cache = open_cache(out)
    with pytest.raises(CacheError, match="windows 0-1 could not be read.*damaged.*chirpid-io verify"):
        cache.read([0])
    np.testing.assert_array_equal(cache.read([2, 3]), open_cache(clean).read([2, 3]))  # others fine
