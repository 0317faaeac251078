"""Soundscapes (issue 12): per-window predictions in the field's formats, archive runs that
resume after a SIGKILL, embeddings, and train = serve.

The model is trained (a few seconds) on the bundled recordings with the default recipe
(5 s windows), the soundscape assembled from real recordings (see test_streaming).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from chirpid_io.cache import build_cache, open_cache
from chirpid_io.config import SpectrogramConfig
from chirpid_io.inputs import samples_dir
from chirpid_io.predict import PredictOptions, TorchScorer, list_sources, predict
from chirpid_io.trainers import ModelRegistry, TrainConfig
from chirpid_io.trainers.run import RunSpec, train

from test_streaming import assembled

REPO = Path(__file__).resolve().parents[1]
SAMPLES = samples_dir()


def run_cli(*args, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "chirpid_io", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600, **kw)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small single-label model of the default recipe, and its cache."""
    root = tmp_path_factory.mktemp("predict-model")
    build_cache(SAMPLES, root / "cache", SpectrogramConfig(pad_short=True), workers=0, progress=False)
    torch.manual_seed(0)
    train(root / "cache", root / "models", TrainConfig(epochs=2, device="cpu", amp="off", patience=None),
          RunSpec(name="birds", model_kwargs={"width": 4}, batch_size=8, group="recording_id"), report=False,
          echo=lambda line: None, progress=False)
    return root


@pytest.fixture(scope="module")
def soundscape(tmp_path_factory):
    """242 s of real bird audio at 44.1 kHz stereo OGG, as a field recorder writes."""
    root = tmp_path_factory.mktemp("soundscape")
    stereo = assembled(242.0)
    with sf.SoundFile(root / "S001_20240101_050000.ogg", "w", 44_100, 2) as f:
        for start in range(0, len(stereo), 1 << 16):
            f.write(stereo[start : start + (1 << 16)])
    return root / "S001_20240101_050000.ogg"


@pytest.fixture(scope="module")
def entry(model):
    return ModelRegistry(model / "models").load("birds")


def test_a_soundscape_gives_every_window_in_every_format(model, entry, soundscape, tmp_path):
    out = tmp_path / "out"
    result = run_cli("predict", model / "models", soundscape, "--out", out, "--format", "parquet,csv,birdclef,raven",
                     "--threshold", "0.15", "--no-progress")
    assert result.returncode == 0, result.stderr
    duration = sf.info(soundscape).duration
    n = math.ceil(duration / 5)  # every window, the last one zero-padded: no holes, no energy filter
    table = pq.read_table(out / "predictions.parquet")
    assert table.num_rows == n == 49
    assert table.column_names == ["recording", "start_seconds", "end_seconds", "padded", *entry.class_names]
    assert table.column("start_seconds").to_pylist() == [5.0 * i for i in range(n)]
    assert table.column("padded").to_pylist() == [False] * (n - 1) + [True]
    probabilities = np.stack([table.column(c).to_numpy() for c in entry.class_names], axis=1)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)  # softmax of a single-label model
    # the windows are the ones the Python API scores, and the model saw what training fed it
    reference = TorchScorer(entry)
    from chirpid_io.audio import load
    from chirpid_io.streaming import Cutter

    wave = load(soundscape, 32_000)
    cutter = Cutter(160_000, 160_000)
    windows = np.stack([w for _, w in cutter.add(wave) + cutter.finish(pad_last=True)])
    np.testing.assert_allclose(probabilities, reference(windows)[0], atol=2e-4)  # streamed: samples within 1e-6
    with open(out / "submission.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["row_id", *entry.class_names]
    assert [r[0] for r in rows[1:]] == [f"S001_20240101_050000_{5 * (i + 1)}" for i in range(n)]
    np.testing.assert_allclose(np.asarray([r[1:] for r in rows[1:]], float), probabilities, atol=1e-5)
    raven = out / "raven" / "S001_20240101_050000.selections.txt"
    with open(raven, newline="") as f:
        selections = list(csv.DictReader(f, delimiter="\t"))
    expected = [(w, c) for w, c in zip(*np.nonzero(probabilities >= 0.15))]
    assert len(selections) == len(expected) > 0
    first = selections[0]
    assert list(first) == ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                           "High Freq (Hz)", "Species", "Confidence"]
    w, c = expected[0]
    assert float(first["Begin Time (s)"]) == 5.0 * w and first["Species"] == entry.class_names[c]
    assert float(first["Confidence"]) == pytest.approx(probabilities[w, c], abs=1e-4)
    csv_rows = pq.read_table(out / "predictions.parquet").num_rows
    with open(out / "predictions.csv") as f:
        assert sum(1 for _ in f) == csv_rows + 1


def test_folders_tables_json_and_failures(model, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(SAMPLES / "owl", folder / "owl")
    (folder / "owl" / "broken.wav").write_bytes(b"not audio")
    result = run_cli("predict", model / "models", folder, "--json", "--no-progress")
    assert result.returncode == 2, result.stderr  # one recording could not be read
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_name = {Path(r["recording"]).name: r for r in lines}
    assert by_name["broken.wav"]["label"] is None and "not decodable" in by_name["broken.wav"]["reason"]
    good = [r for name, r in by_name.items() if name != "broken.wav"]
    assert good and all(r["label"] is not None and r["windows"] >= 1 for r in good)
    table = tmp_path / "list.csv"
    table.write_text("path\n" + "\n".join(f"in/owl/{Path(r['recording']).name}" for r in good) + "\n")
    again = run_cli("predict", model / "models", table, "--json", "--no-progress")
    assert again.returncode == 0, again.stderr
    assert [json.loads(line)["label"] for line in again.stdout.splitlines()] == [r["label"] for r in good]


ARCHIVE_SCRIPT = """
import sys
if len(sys.argv) > 4:  # killed from inside after that many committed parts: exact on any machine
    from killpoint import kill_after_predict_parts
    kill_after_predict_parts(int(sys.argv[4]))
from chirpid_io.predict import PredictOptions, TorchScorer, list_sources, predict
from chirpid_io.trainers import ModelRegistry
entry = ModelRegistry(sys.argv[1]).load("birds")
predict(TorchScorer(entry), list_sources([sys.argv[2]]), sys.argv[3],
        PredictOptions(part_recordings=1, workers=1, embeddings=True, batch_size=4), progress=False)
"""


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    for i, path in enumerate(sorted(SAMPLES.rglob("*.wav"))[:12]):
        shutil.copy(path, root / f"{i:02d}_{path.name}")
    return root


def test_a_killed_archive_run_resumes_with_nothing_lost_or_duplicated(model, archive, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "-c", ARCHIVE_SCRIPT, model / "models", archive, reference], env=env, check=True,
                   timeout=600)
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", ARCHIVE_SCRIPT, model / "models", archive, out, "3"],
                          env={**env, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}, timeout=600)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "predictions.parquet").exists()
    subprocess.run([sys.executable, "-c", ARCHIVE_SCRIPT, model / "models", archive, out], env=env, check=True,
                   timeout=600)
    mine, theirs = pq.read_table(out / "predictions.parquet"), pq.read_table(reference / "predictions.parquet")
    assert mine.column("recording").to_pylist() == theirs.column("recording").to_pylist()  # input order, once each
    for column in theirs.column_names[1:]:
        np.testing.assert_allclose(mine.column(column).to_numpy(), theirs.column(column).to_numpy(), atol=1e-6)
    import zarr

    embeddings = zarr.open_array(out / "embeddings.zarr")[:]
    assert embeddings.dtype == np.float16 and embeddings.shape[0] == mine.num_rows
    np.testing.assert_array_equal(embeddings, zarr.open_array(reference / "embeddings.zarr")[:])


def test_embeddings_are_the_models_penultimate_features(entry, archive, tmp_path):
    report = predict(TorchScorer(entry), list_sources([archive]), tmp_path / "out",
                     PredictOptions(embeddings=True, workers=1), progress=False)
    import zarr

    embeddings = zarr.open_array(tmp_path / "out" / "embeddings.zarr")[:]
    rows = pq.read_table(tmp_path / "out" / "predictions.parquet")
    first = rows.column("recording").to_pylist()[0]
    from chirpid_io.audio import load
    from chirpid_io.streaming import Cutter

    cutter = Cutter(160_000, 160_000)
    wave = load(first, 32_000)
    windows = np.stack([w for _, w in cutter.add(wave) + cutter.finish(pad_last=True)])
    scorer = TorchScorer(entry)
    with torch.inference_mode():
        expected = entry.model.embed(scorer.inputs(windows)).numpy()
    np.testing.assert_allclose(embeddings[: len(windows)].astype(np.float32), expected, rtol=1e-3, atol=1e-3)
    assert report.windows == rows.num_rows == embeddings.shape[0]


def test_another_model_or_setting_on_the_same_out_is_refused(entry, archive, tmp_path):
    from chirpid_io.errors import ConfigError

    sources = list_sources([archive])[:2]
    predict(TorchScorer(entry), sources, tmp_path / "out", PredictOptions(workers=1), progress=False)
    with pytest.raises(ConfigError, match=r"holds predictions of another model or with other settings \(options"):
        predict(TorchScorer(entry), sources, tmp_path / "out", PredictOptions(energy_filter=True, workers=1),
                progress=False)
    again = predict(TorchScorer(entry), sources, tmp_path / "out", PredictOptions(workers=1), progress=False)
    assert again.already_done == 2 and again.recordings == 0


def test_train_equals_serve_to_the_last_bit(model, entry):
    """One window through the loader and through predict's serving path: the same tensor."""
    from chirpid_io import audio
    from chirpid_io.loaders import make_loader

    cache = open_cache(model / "cache")
    row = next(r for r in cache.windows.to_pylist() if r["path"].startswith("great_tit"))
    loader = make_loader(cache, 1, indices=[row["window_id"]], shuffle=False, device="cpu")
    (x_loader, _), = list(loader)
    cut = audio.windows(audio.load(SAMPLES / row["path"], 32_000), cache.config)
    k = int(np.flatnonzero(np.isclose(cut.start_seconds, row["start_seconds"]))[0])
    x_serve = TorchScorer(entry).inputs(cut.samples[k : k + 1])
    assert x_loader.dtype == x_serve.dtype == torch.float32 and torch.equal(x_loader, x_serve)
