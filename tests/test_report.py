"""report: one self-contained HTML file, tested in a real browser with the network off.

Headless Chromium is Debian's package (``make browser`` installs it); Playwright drives
it through a pipe. Without Chromium the browser tests skip locally and FAIL when the
environment variable CI is set, so CI cannot pass without having looked.

Inputs are real: a train run and a tune study on the bundled recordings' cache, that
cache, a cache whose class and file names are hostile (markup, control characters), and
tests/data/bench-results.json (a real ``benchmarks/run.py --quick -k "decode or storage"
--rounds 2`` run on this 2-core machine, under load: its ratios mean nothing).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from browser import check_page, chromium_missing_reason
from chirpid_io.errors import ConfigError
from chirpid_io.report import build_report, load_runs
from chirpid_io.report.png import indexed_png
from chirpid_io.report.runs import learning_curves, per_class_scores
from chirpid_io.report.study_view import open_study
from chirpid_io.trainers.explog import ExperimentLog

DATA = Path(__file__).resolve().parent / "data"
SAMPLES = Path(__file__).resolve().parents[1] / "chirpid_io" / "data" / "samples"
GROUP = "recording_id"
HOSTILE = ("<img src=x onerror=alert(1)>", "esc\x1b[31mred\ttab", "quote\"'&amp;")
TINY_SPACE = {"train": {"epochs": 3, "amp": "off", "lr": {"low": 1e-3, "high": 1e-2, "log": True}},
              "model": {"width": {"choices": [4, 8]}}, "augment": {"p": {"low": 0.0, "high": 1.0}},
              "loader": {"batch_size": 32}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def browser_ready():
    reason = chromium_missing_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and the browser test cannot run: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def train_log(small_cache, tmp_path_factory) -> Path:
    from chirpid_io.cli import main

    root = tmp_path_factory.mktemp("train")
    log = root / "runs" / "train-run.jsonl"
    assert main(["train", str(small_cache.path), str(root / "models"), "--epochs", "4", "--model-arg", "width=4",
                 "--device", "cpu", "--amp", "off", "--group", GROUP, "--patience", "1", "--experiment-log", str(log)]) == 0
    return log


@pytest.fixture(scope="module")
def study_out(small_cache, tmp_path_factory) -> Path:
    from chirpid_io.trainers.tune import tune

    out = tmp_path_factory.mktemp("tune") / "search"
    tune(small_cache, out, TINY_SPACE, trials=6, group=GROUP, device="cpu", progress=False, pruner="median",
         prune_startup_trials=2, prune_warmup_epochs=1)
    states = [t.state.name for t in open_study(out).trials]
    assert states.count("COMPLETE") >= 2 and "PRUNED" in states, states  # the report shows both kinds
    return out


@pytest.fixture(scope="module")
def hostile_cache(tmp_path_factory, small_config):
    from chirpid_io.cache import build_cache, open_cache

    root = tmp_path_factory.mktemp("hostile")
    sources = [SAMPLES / "zebra_finch" / "bells.wav", SAMPLES / "great_tit" / "2021-B32-0415_05-11.wav",
               SAMPLES / "owl" / "owl.mp3"]
    for name, source in zip(HOSTILE, sources):
        folder = root / "audio" / name
        folder.mkdir(parents=True)
        shutil.copy(source, folder / ("<svg onload=alert(2)>" + source.suffix))
    (root / "audio" / HOSTILE[0] / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")  # skipped
    build_cache(root / "audio", root / "cache", small_config, workers=0, progress=False)
    return open_cache(root / "cache")


# -- pieces -------------------------------------------------------------------------------------
def test_png_writer_round_trips_through_pillow():
    Image = pytest.importorskip("PIL.Image")
    import io

    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    for shape in ((1, 1), (1, 17), (31, 1), (224, 313)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        decoded = Image.open(io.BytesIO(indexed_png(image, palette)))
        assert decoded.mode == "P" and decoded.size == (shape[1], shape[0])
        np.testing.assert_array_equal(np.asarray(decoded), image)
        assert np.asarray(decoded.getpalette(), dtype=np.uint8).reshape(-1, 3)[:256].tolist() == palette.tolist()
    with pytest.raises(ValueError):
        indexed_png(np.zeros((0, 4), np.uint8), palette)


def test_per_class_scores_match_sklearn(tmp_path):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 400)
    pred = np.where(rng.random(400) < 0.6, y, rng.integers(0, 3, 400))  # class 3 never predicted
    confusion = np.zeros((5, 5), dtype=np.int64)  # class 4 never occurs
    np.add.at(confusion, (y, pred), 1)
    path = tmp_path / "run.jsonl"
    with ExperimentLog(path) as log:
        log.start({"epochs": 1})
        log.end({"confusion": confusion, "val_roc_auc_per_class": [0.9, 0.8, 0.7, 0.6, 0.5],
                 "per_class": {"recall": [0.1] * 3}})  # wrong length: ignored
    scores = per_class_scores(load_runs([path])[0], list("abcde"))
    p, r, f, s = metrics.precision_recall_fscore_support(y, pred, labels=range(4), zero_division=np.nan)
    np.testing.assert_allclose(scores["precision"][:4], p, equal_nan=True)
    np.testing.assert_allclose(scores["recall"][:4], r)
    np.testing.assert_allclose(scores["f1"][:4], f)
    assert scores["support"] == [float(n) for n in np.bincount(y, minlength=5)]
    assert np.isnan(scores["recall"][4]) and scores["val_roc_auc_per_class"] == [0.9, 0.8, 0.7, 0.6, 0.5]
    assert "per_class recall" not in scores


def test_learning_curves_read_any_metric_and_mark_best_epoch_and_early_stop(tmp_path):
    path = tmp_path / "run.jsonl"
    f1 = [0.2, 0.5, 0.7, 0.6, 0.55, 0.5]
    with ExperimentLog(path, run_name="synthetic") as log:
        log.start({"epochs": 10, "early_stopping": ["val_macro_f1"]})
        for epoch, value in enumerate(f1, start=1):
            log({"epoch": epoch, "lr": 1e-3 / epoch, "train_loss": 1 / epoch, "val_loss": 1.2 / epoch,
                 "val_macro_f1": value, "val_cmap": value / 2, "train_seconds": 1.0, "train_windows_per_second": 9.0})
        log.end({"state": "finished"})
    run = load_runs([path])[0]
    assert run.best_epoch() == 3 and run.stopped_early() == 6
    fig = learning_curves([run])
    titles = [a.text for a in fig.layout.annotations]
    assert {"loss", "macro f1", "cmap", "learning rate"} <= set(titles)
    assert not any("seconds" in t for t in titles)
    marks = {(t.name, t.x[0]) for t in fig.data if t.mode == "markers"}
    assert ("best epoch", 3) in marks and ("early stop", 6) in marks


def test_inputs_that_are_not_reports_are_named(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    for path, message in ((tmp_path / "missing", "no such file"), (tmp_path / "notes.txt", "not an experiment log"),
                          (tmp_path / "empty", "a folder with no cache")):
        with pytest.raises(ConfigError, match=message):
            build_report([path], tmp_path / "r.html")
    (tmp_path / "fake.db").write_bytes(b"not sqlite at all")
    with pytest.raises(ConfigError, match="not an SQLite database"):
        build_report([tmp_path / "fake.db"], tmp_path / "r.html")
    (tmp_path / "bench.json").write_text('{"something": 1}')
    with pytest.raises(ConfigError, match="not pytest-benchmark JSON"):
        build_report([tmp_path / "bench.json"], tmp_path / "r.html")


def test_train_writes_its_report_and_png_plots(train_log):
    assert train_log.with_suffix(".html").stat().st_size > 1_000_000  # plotly.js is inside
    for suffix in ("-history.png", "-confusion.png"):
        png = train_log.with_name(train_log.stem + suffix)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = load_runs([train_log])[0]
    assert run.class_names() is not None and run.confusion() is not None and run.best_epoch() is not None


# -- the whole report, in a browser ----------------------------------------------------------
@pytest.fixture(scope="module")
def full_report(small_cache, train_log, study_out, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    build_report([train_log, study_out, small_cache.path, DATA / "bench-results.json"], out)
    return out


def test_the_report_is_one_offline_file_of_reasonable_size(full_report):
    text = full_report.read_text(encoding="utf-8")
    assert full_report.stat().st_size < 10 * 2**20
    assert "<script src" not in text and "<link" not in text and "@import" not in text
    assert text.count("Plotly.newPlot") == 1  # one loader for every figure, plotly.js embedded once
    for heading in ("Tune study", "Learning curves", "Run: ", "Cache: ", "Benchmarks"):
        assert heading in text


def test_report_renders_every_plot_in_chromium_offline(full_report, browser_ready, tmp_path):
    shot = tmp_path / "report.png"
    result = check_page(full_report, shot)
    expected = full_report.read_text(encoding="utf-8").count('<div class="plot"')
    assert result.errors == [] and result.dialogs == [], result
    assert result.outside_requests == [], result.outside_requests
    text = full_report.read_text(encoding="utf-8")
    for note in ('<p class="note">needs at least', '<p class="note">not available'):
        assert note not in text  # every study plot was drawn
    assert expected >= 13 and result.plots == expected  # study 5, curves 1, run 2, cache 3, benchmarks 2
    assert result.plots_without_svg == [] and result.rendered_plots == expected, result
    assert result.images >= 7 and result.broken_images == 0  # the spectrogram gallery decoded
    _assert_not_blank(shot)


def test_hostile_names_stay_text_in_the_browser(hostile_cache, browser_ready, tmp_path):
    out = build_report([hostile_cache.path], tmp_path / "hostile.html")
    result = check_page(out, tmp_path / "hostile.png")
    assert result.dialogs == [] and result.outside_requests == [] and result.errors == [], result
    assert result.plots_without_svg == []
    text = out.read_text(encoding="utf-8")
    assert "<img src=x" not in text and "<svg onload" not in text and "\x1b" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "esc\\x1b[31mred\\ttab" in text
    assert "broken.wav" in text  # the skipped recording is listed with its reason


def _assert_not_blank(png: Path) -> None:
    Image = pytest.importorskip("PIL.Image")
    image = np.asarray(Image.open(png).convert("RGB"), dtype=np.float64)
    assert image.shape[0] > 2000 and image.shape[1] >= 1200
    assert image.std() > 20  # a white page has 0
    colours = np.unique(image.reshape(-1, 3)[:: 97], axis=0)
    assert len(colours) > 200  # plots, text and spectrograms, not a flat fill
