"""Trainers: models, the fit loop, early stopping, AMP, resume, registry, inference, CV.

Real data: a small cache (32 mel bands, 0.5 s windows) of the bundled great tit and
zebra finch recordings; validation holds out whole groups (the great tits of nest box
SW83 and two zebra finch recordings), so a model can only score by hearing the species.
Synthetic tensors drive the cases that need an exact construction (a validation metric
that peaks early).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from chirpid_io.cache import build_cache, open_cache
from chirpid_io.config import SpectrogramConfig
from chirpid_io.errors import ConfigError, FingerprintMismatchError
from chirpid_io.loaders import make_loader
from chirpid_io.trainers import (BirdCNN, BirdCNNv5c, ExperimentLog, ModelRegistry, TrainConfig, classify,
                                 confusion_metrics, count_parameters, cross_validate, fit, plot_confusion,
                                 plot_history)
from chirpid_io.trainers.explog import read_log
from chirpid_io.trainers.loop import resolve_amp

SAMPLES = Path(__file__).resolve().parents[1] / "chirpid_io" / "data" / "samples"
CONFIG = SpectrogramConfig(sample_rate=16_000, window_seconds=0.5, hop_seconds=0.125, n_fft=512, win_length=512,
                           hop_length=128, n_mels=32, fmax=8_000.0, pad_short=True)
VAL_GROUPS = ("SW83", "samba", "WhiLbl0010_110411-DC-01")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny models on a shared 2-core machine: one thread is ~10x faster than two fighting
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Great tit (groups = nest box) vs zebra finch (group = recording)."""
    root = tmp_path_factory.mktemp("trainers")
    table = root / "table.csv"
    with open(SAMPLES / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] in ("great_tit", "zebra_finch")]
    with open(table, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["path", "label", "group"])
        for r in rows:
            out.writerow([r["path"], r["label"], r["group"] if r["label"] == "great_tit" else Path(r["path"]).stem])
    build_cache(table, root / "cache", CONFIG, audio_root=SAMPLES, workers=0, progress=False)
    return open_cache(root / "cache")


@pytest.fixture(scope="module")
def split(cache):
    groups = np.asarray(cache.windows.column("group").to_pylist())
    held_out = np.isin(groups, VAL_GROUPS)
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


@pytest.fixture(scope="module")
def trained(cache, split):
    torch.manual_seed(0)
    model = BirdCNN(len(cache.class_names), width=8)
    train = make_loader(cache, 32, indices=split[0], device="cpu", seed=1)
    val = make_loader(cache, 64, indices=split[1], shuffle=False, device="cpu")
    config = TrainConfig(epochs=4, lr=3e-3, class_weights="balanced", early_stopping=["val_macro_f1", "val_loss"],
                         device="cpu", amp="off")
    return fit(model, train, val, config)


def _predict(model, loader) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    probs, labels = [], []
    with torch.no_grad():
        for x, y in loader:
            probs.append(torch.softmax(model(x), 1))
            labels.append(y)
    return torch.cat(probs).cpu().numpy(), torch.cat(labels).cpu().numpy()


# -- models -----------------------------------------------------------------------------
def test_birdcnn_v5c_has_the_old_size_and_takes_any_input():
    model = BirdCNNv5c(n_classes=33)
    assert abs(count_parameters(model) - 8.0e6) / 8.0e6 < 0.05
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 224, 313)).shape == (2, 33)
        assert model(torch.randn(1, 1, 32, 63)).shape == (1, 33)
    rebuilt = BirdCNNv5c(**model.init_kwargs)
    assert count_parameters(rebuilt) == count_parameters(model)
    small = BirdCNN(5, width=4)
    assert small.init_kwargs == {"n_classes": 5, "in_channels": 1, "width": 4, "dropout": 0.2}
    assert small(torch.randn(3, 1, 17, 29)).shape == (3, 5)


def test_confusion_metrics_match_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 300)
    pred = np.where(rng.random(300) < 0.6, y, rng.integers(0, 4, 300))  # class 4 never predicted
    confusion = np.zeros((6, 6), dtype=np.int64)  # class 5 never occurs: left out of the mean
    np.add.at(confusion, (y, pred), 1)
    got = confusion_metrics(confusion)
    assert got["accuracy"] == pytest.approx(metrics.accuracy_score(y, pred), abs=1e-12)
    assert got["macro_f1"] == pytest.approx(metrics.f1_score(y, pred, average="macro"), abs=1e-12)


# -- fit ----------------------------------------------------------------------------------
def test_fit_learns_species_on_held_out_groups(trained, cache, split):
    best = trained.best_metrics
    # validation: 191 great tit windows, 9 zebra finch: always answering "great tit" scores
    # macro-F1 0.49, chance 0.5
    assert best["val_macro_f1"] > 0.8
    assert trained.history[-1]["train_loss"] < trained.history[0]["train_loss"]
    # the returned model is the best epoch's: recomputing its metrics by hand gives them
    val = make_loader(cache, 64, indices=split[1], shuffle=False, device="cpu")
    probs, labels = _predict(trained.model, val)
    confusion = np.zeros((2, 2), dtype=np.int64)
    np.add.at(confusion, (labels, probs.argmax(1)), 1)
    np.testing.assert_array_equal(confusion, trained.confusion)
    assert confusion_metrics(confusion)["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-12)
    loss = -np.log(probs[np.arange(len(labels)), labels]).mean()
    assert loss == pytest.approx(best["val_loss"], rel=1e-4)


class _TurningLoader:
    """Correct labels for the first ``turn`` epochs, inverted after: the validation loss
    improves, then worsens, so the best epoch is ``turn``."""

    def __init__(self, x, y, turn: int, batch: int = 16):
        self.x, self.y, self.turn, self.batch, self.epoch = x, y, turn, batch, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        y = self.y if self.epoch <= self.turn else 1 - self.y
        for i in range(0, len(y), self.batch):
            yield self.x[i : i + self.batch], y[i : i + self.batch]


def _separable(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = (x[:, 0, 0, 0] + x[:, 0, 1, 1] > 0).long()
    return x, y


def _linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 2))


def test_early_stopping_restores_the_best_epoch_weights():
    x, y = _separable(128, 1)
    val = [_separable(64, 2)]
    snapshots = {}
    model = _linear()
    config = TrainConfig(epochs=20, lr=0.05, optimizer="sgd", schedule="none", patience=3, device="cpu", amp="off")
    result = fit(model, _TurningLoader(x, y, turn=3), val, config,
                 log=lambda r: snapshots.update({r["epoch"]: {k: v.clone() for k, v in model.state_dict().items()}}))
    losses = [r["val_loss"] for r in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1 == 3
    assert result.stopped_early and len(result.history) == 3 + 3
    final = result.model.state_dict()
    for key, value in final.items():
        assert torch.equal(value, snapshots[3][key])
    assert not torch.equal(final["1.weight"], snapshots[6]["1.weight"])
    assert result.best_metrics == result.history[2]


def test_patience_counts_epochs_where_no_watched_metric_improved():
    x, y = _separable(128, 1)
    val = [_separable(64, 2)]
    # with val_accuracy watched too, a tie in accuracy alone is not an improvement
    config = TrainConfig(epochs=12, lr=0.05, optimizer="sgd", schedule="none", patience=2, device="cpu", amp="off",
                         early_stopping=["val_loss", "val_accuracy"], min_delta=1e-9)
    result = fit(_linear(), _TurningLoader(x, y, turn=2), val, config)
    history = result.history
    best = {"val_loss": np.inf, "val_accuracy": -np.inf}
    bad = 0
    for record in history:  # replay the rule by hand
        improved = record["val_loss"] < best["val_loss"] - 1e-9 or record["val_accuracy"] > best["val_accuracy"] + 1e-9
        best["val_loss"] = min(best["val_loss"], record["val_loss"])
        best["val_accuracy"] = max(best["val_accuracy"], record["val_accuracy"])
        bad = 0 if improved else bad + 1
    assert bad == 2 and len(history) < 12
    assert result.best_epoch == int(np.argmin([r["val_loss"] for r in history])) + 1


def test_bf16_autocast_runs_on_cpu():
    assert resolve_amp("auto", torch.device("cpu")) is None
    assert resolve_amp("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ConfigError, match="fp16"):
        resolve_amp("fp16", torch.device("cpu"))
    x, y = _separable(64, 1)
    model = _linear()
    seen = []
    model[1].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    result = fit(model, [(x, y)], [_separable(32, 2)], TrainConfig(epochs=3, amp="bf16", device="cpu", lr=0.05))
    assert set(seen) == {torch.bfloat16}
    assert all(np.isfinite(r["train_loss"]) for r in result.history)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert model[1].weight.dtype == torch.float32  # master weights stay float32


class _Crash(Exception):
    pass


def _crash_after(epoch: int):
    def log(record):
        if record["epoch"] == epoch:
            raise _Crash
    return log


def test_fit_is_reproducible_and_resume_continues_the_same_run(cache, split, tmp_path):
    def run(checkpoint_dir, *, resume=False, log=None):
        torch.manual_seed(123)
        model = BirdCNN(2, width=4, dropout=0.3)
        train = make_loader(cache, 32, indices=split[0], device="cpu", seed=5)
        val = make_loader(cache, 64, indices=split[1], shuffle=False, device="cpu")
        config = TrainConfig(epochs=4, lr=3e-3, warmup_epochs=1, class_weights="balanced", grad_clip=1.0,
                             checkpoint_dir=checkpoint_dir, resume=resume, seed=7, device="cpu", amp="off")
        return fit(model, train, val, config, log=log)

    straight = run(tmp_path / "a")
    again = run(tmp_path / "b")
    with pytest.raises(_Crash):
        run(tmp_path / "c", log=_crash_after(2))
    assert (tmp_path / "c" / "last.pt").is_file()
    resumed = run(tmp_path / "c", resume=True)
    for other in (again, resumed):
        assert other.best_epoch == straight.best_epoch
        for key, value in straight.model.state_dict().items():
            assert torch.equal(value, other.model.state_dict()[key]), key
        strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds", "train_windows_per_second")} for r in h]
        assert strip(other.history) == strip(straight.history)
    assert not list((tmp_path / "c").glob("*.tmp"))


# -- registry -------------------------------------------------------------------------------
def test_registry_round_trip_gives_identical_predictions(trained, cache, split, tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    v1 = registry.save(trained.model, "birds", cache=cache, metrics={"val_macro_f1": 0.5, "val_loss": 0.9})
    v2 = registry.save(trained.model, "birds", cache=cache, metrics={**trained.best_metrics, "val_macro_f1": 0.9})
    v3 = registry.save(BirdCNN(2, width=8), "birds", cache=cache, metrics={"val_macro_f1": 0.7, "val_loss": 0.1})
    assert (v1, v2, v3) == (1, 2, 3)
    assert registry.load("birds").version == 3
    assert registry.load("birds", "best").version == 2
    assert registry.load("birds", "best", metric="val_loss").version == 3
    entry = registry.load("birds", 2)
    assert not entry.model.training
    assert entry.config == cache.config and entry.fingerprint == cache.fingerprint
    assert entry.class_names == cache.class_names
    np.testing.assert_array_equal(entry.stats["mean"], cache.stats["mean"])
    val = make_loader(cache, 64, indices=split[1], shuffle=False, device="cpu")
    np.testing.assert_array_equal(_predict(entry.model, val)[0], _predict(trained.model, val)[0])
    state = torch.load(entry.path / "weights.pt", weights_only=True)
    assert set(state) == set(trained.model.state_dict())
    assert not list((tmp_path / "models" / "birds").glob(".incoming-*"))


def test_features_of_another_recipe_are_refused(trained, cache, tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    registry.save(trained.model, "birds", cache=cache)
    entry = registry.load("birds")
    entry.check_features(cache)  # same recipe: fine
    with pytest.raises(FingerprintMismatchError, match="n_mels"):
        entry.check_features(cache.config.replace(n_mels=64))
    with pytest.raises(FingerprintMismatchError, match="hop_length"):
        classify([np.zeros(16_000, np.float32)], entry, config=cache.config.replace(hop_length=256))


# -- inference --------------------------------------------------------------------------------
def test_classify_sees_what_training_saw(trained, cache, tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    registry.save(trained.model, "birds", cache=cache)
    entry = registry.load("birds")
    windows = cache.windows
    paths = np.asarray(windows.column("path").to_pylist())
    chosen = ["great_tit/2021-SW83-0418_04-91.wav", "zebra_finch/samba.wav"]
    # the windows training kept (energy filter on); batches cut within recordings
    results = classify([SAMPLES / p for p in chosen], entry, batch_size=7, energy_filter=True)
    for relpath, result in zip(chosen, results):
        rows = np.flatnonzero(paths == relpath)
        loader = make_loader(cache, 64, indices=rows, shuffle=False, device="cpu")
        expected, labels = _predict(trained.model, loader)
        np.testing.assert_allclose(result.window_probabilities, expected, atol=1e-5)
        np.testing.assert_allclose(result.start_seconds, windows.column("start_seconds").to_numpy()[rows])
        mean = expected.mean(0)
        assert result.label == cache.class_names[int(mean.argmax())] == cache.class_names[labels[0]]
        assert result.confidence == pytest.approx(float(mean.max()), abs=1e-6)


def test_classify_reports_unusable_recordings_without_stopping(trained, cache, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    good = SAMPLES / "great_tit/2021-B32-0415_05-11.wav"
    results = classify([broken, tmp_path / "missing.wav", np.zeros(21_000, np.float32), good, np.empty(0)],
                       trained.model, config=cache.config, class_names=cache.class_names, stats=cache.stats)
    assert [r.label is None for r in results] == [True, True, False, False, True]
    assert "not decodable" in results[0].reason
    assert "cannot be read" in results[1].reason
    # every window scored, silence too: 1.3125 s in 0.5 s windows every 0.125 s, the last one padded
    assert results[2].window_probabilities.shape == (8, 2)
    assert results[2].padded.tolist() == [False] * 7 + [True]
    silent = classify([np.zeros(20_000, np.float32)], trained.model, config=cache.config, class_names=cache.class_names,
                      stats=cache.stats, energy_filter=True)[0]
    assert silent.label is None and "silent" in silent.reason
    assert results[3].label == "great_tit" and results[3].window_probabilities.shape[1] == 2
    assert results[3].to_dict()["top"][0]["label"] == "great_tit"
    with pytest.raises(ConfigError, match="stats=cache.stats"):  # a bare model must say how it was fed
        classify([good], trained.model, config=cache.config, class_names=cache.class_names)


# -- experiment log ------------------------------------------------------------------------------
def test_experiment_log_and_plots(tmp_path):
    import matplotlib.pyplot as plt

    x, y = _separable(64, 1)
    path = tmp_path / "run.jsonl"
    lines = []
    config = TrainConfig(epochs=3, lr=0.05, device="cpu", amp="off")
    with ExperimentLog(path, echo=lines.append) as log:
        log.start(config.to_dict(), device="cpu")
        result = fit(_linear(), [(x, y)], [_separable(32, 2)], config, log=log)
        log.end({"best_epoch": result.best_epoch, **result.best_metrics})
    records = read_log(path)
    assert [r["event"] for r in records] == ["start", "epoch", "epoch", "epoch", "end"]
    assert records[0]["config"]["epochs"] == 3 and records[0]["environment"]["torch"] == torch.__version__
    assert [r["val_loss"] for r in records[1:4]] == [r["val_loss"] for r in result.history]
    assert len(lines) == 3 and lines[0].startswith("epoch   1")
    for png in (plot_history(path, tmp_path / "history.png"),
                plot_confusion(result.confusion, ["a", "b"], tmp_path / "confusion.png")):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == []


# -- cross-validation --------------------------------------------------------------------------
def test_cross_validate_predicts_every_window_once(cache):
    config = TrainConfig(epochs=1, lr=3e-3, class_weights="balanced", device="cpu", amp="off")
    result = cross_validate(cache, lambda n: BirdCNN(n, width=4), config, k=2, batch_size=64)
    assert len(result.folds) == 2
    assert sum(f["n_val"] for f in result.folds) == len(cache)
    assert int(result.confusion.sum()) == len(cache)
    np.testing.assert_array_equal(result.confusion.sum(1), np.bincount(cache.labels, minlength=2))
    accuracies = [f["metrics"]["val_accuracy"] for f in result.folds]
    assert result.mean["val_accuracy"] == pytest.approx(np.mean(accuracies))
    assert result.std["val_accuracy"] == pytest.approx(np.std(accuracies))
    assert result.pooled == confusion_metrics(result.confusion)


@pytest.mark.slow
def test_cross_validate_in_processes_matches_in_sequence(cache):
    import functools

    from chirpid_io.trainers import build_model

    config = TrainConfig(epochs=1, lr=3e-3, class_weights="balanced", device="cpu", amp="off")
    model_fn = functools.partial(build_model, "birdcnn", width=4)  # picklable for spawn
    one = cross_validate(cache, model_fn, config, k=2, batch_size=64)
    two = cross_validate(cache, model_fn, config, k=2, batch_size=64, parallel=2)
    assert [f["n_val"] for f in two.folds] == [f["n_val"] for f in one.folds]
    for a, b in zip(one.folds, two.folds):
        # same seeds and data; only the thread count may differ between the processes
        assert b["metrics"]["val_loss"] == pytest.approx(a["metrics"]["val_loss"], rel=1e-3)
    assert int(two.confusion.sum()) == len(cache)


# -- GPU ------------------------------------------------------------------------------------------
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("amp", ["auto", "fp16"])
@pytest.mark.gpu
@cuda_only
def test_fit_on_cuda_with_mixed_precision(cache, split, tmp_path, amp):
    torch.manual_seed(0)
    model = BirdCNN(2, width=8)
    train = make_loader(cache, 32, indices=split[0], device="cuda", seed=1)
    val = make_loader(cache, 64, indices=split[1], shuffle=False, device="cuda")
    config = TrainConfig(epochs=4, lr=3e-3, class_weights="balanced", amp=amp, channels_last=True, grad_clip=1.0,
                         device="cuda", checkpoint_dir=tmp_path, early_stopping=["val_macro_f1", "val_loss"])
    result = fit(model, train, val, config)
    assert all(np.isfinite(r["train_loss"]) for r in result.history)
    assert result.best_metrics["val_macro_f1"] > 0.8
    probs, labels = _predict(result.model, val)
    confusion = np.zeros((2, 2), dtype=np.int64)
    np.add.at(confusion, (labels, probs.argmax(1)), 1)
    assert abs(confusion_metrics(confusion)["accuracy"] - result.best_metrics["val_accuracy"]) < 0.02
    payload = torch.load(tmp_path / "last.pt", weights_only=False)
    assert payload["state"]["epoch"] == len(result.history)


@pytest.mark.gpu
@cuda_only
def test_classify_on_cuda_matches_cpu(trained, cache, tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    registry.save(trained.model, "birds", cache=cache)
    paths = [SAMPLES / "great_tit/2021-SW83-0418_04-91.wav", SAMPLES / "zebra_finch/samba.wav"]
    on_cpu = classify(paths, registry.load("birds"))
    on_gpu = classify(paths, registry.load("birds", device="cuda"))
    for a, b in zip(on_cpu, on_gpu):
        assert a.label == b.label
        # the GPU kernel may round a few pixels to the neighbouring uint8 level
        np.testing.assert_allclose(b.window_probabilities, a.window_probabilities, atol=2e-2)


# -- command line ----------------------------------------------------------------------------------
def test_train_and_predict_commands(cache, tmp_path, capsys):
    import json

    from chirpid_io.cli import main

    registry = tmp_path / "models"
    args = ["train", str(cache.path), str(registry), "--name", "birds", "--epochs", "2", "--model-arg", "width=4",
            "--device", "cpu", "--amp", "off", "--experiment-log", str(tmp_path / "run.jsonl")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "epoch   2" in out and "registered birds v1" in out
    assert [r["event"] for r in read_log(tmp_path / "run.jsonl")] == ["start", "epoch", "epoch", "end"]
    entry = ModelRegistry(registry).load("birds")
    assert entry.meta["train_config"]["epochs"] == 2 and entry.metrics["n_val"] > 0

    good = SAMPLES / "zebra_finch/bells.wav"
    assert main(["predict", str(registry), str(good), str(tmp_path / "missing.wav"), "--json"]) == 2
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = classify([good], entry)[0]
    assert lines[0]["label"] == expected.label
    assert lines[0]["confidence"] == pytest.approx(expected.confidence)
    assert lines[1]["label"] is None and "cannot be read" in lines[1]["reason"]
