"""Multi-label training (issue 12, item 1): targets from label sets, BCE and focal loss, the
BirdCLEF metrics checked against scikit-learn, and a BirdCLEF-style cache end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from chirpid_io.cache import open_cache
from chirpid_io.loaders import Augment, make_loader
from chirpid_io.trainers import ModelRegistry, TrainConfig
from chirpid_io.trainers.explog import read_log
from chirpid_io.trainers.metrics import average_precision, multilabel_metrics, padded_cmap, roc_auc

from test_inputs import birdclef, birdclef_cache  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[1]
sklearn = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    truth = rng.random((60, 7)) < 0.25
    truth[:, 5] = False  # a class without positives: left out of ROC-AUC, counted by padded cmAP
    scores = np.round(np.clip(truth * 0.3 + rng.random(truth.shape) * 0.8, 0, 1), 2)  # ties included
    metrics, per_class = multilabel_metrics(scores, truth.astype(np.float32), threshold=0.5)
    scored = truth.any(axis=0)
    assert metrics["roc_auc"] == pytest.approx(sklearn.roc_auc_score(truth[:, scored], scores[:, scored],
                                                                     average="macro"), abs=1e-12)
    for c in np.flatnonzero(scored):
        assert roc_auc(scores[:, c], truth[:, c]) == pytest.approx(sklearn.roc_auc_score(truth[:, c], scores[:, c]))
        assert average_precision(scores[:, c], truth[:, c]) == pytest.approx(
            sklearn.average_precision_score(truth[:, c], scores[:, c]), abs=1e-12)
    padded_truth = np.vstack([truth, np.ones((5, 7), bool)])
    padded_scores = np.vstack([scores, np.ones((5, 7))])
    assert padded_cmap(scores, truth) == pytest.approx(
        sklearn.average_precision_score(padded_truth, padded_scores, average="macro"), abs=1e-12)
    precision, recall, f1, _ = sklearn.precision_recall_fscore_support(truth, scores >= 0.5, zero_division=0)
    np.testing.assert_allclose(per_class["precision"], precision)
    np.testing.assert_allclose(per_class["recall"], recall)
    np.testing.assert_allclose(per_class["f1"], f1)
    assert per_class["roc_auc"][5] is None


def test_the_loader_yields_multi_hot_targets_and_mixup_mixes_them(birdclef_cache):  # noqa: F811
    cache = open_cache(birdclef_cache[0])
    loader = make_loader(cache, 16, shuffle=False, device="cpu", targets="multilabel", secondary_weight=0.5)
    y = torch.cat([y for _, y in loader]).numpy()
    np.testing.assert_array_equal(y, cache.multi_hot(np.arange(len(cache)), 0.5))
    tits = cache.windows.column("class_name").to_numpy(zero_copy_only=False) == "great_tit"
    assert (y[tits][:, cache.class_names.index("zebra_finch")] == 0.5).all()
    mixed = make_loader(cache, 16, shuffle=True, device="cpu", targets="multilabel",
                        augment=Augment(p=0.0, mixup_alpha=0.4), seed=3)
    for x, target in mixed:
        assert target.shape == (len(x), len(cache.class_names)) and target.max() <= 1.0 + 1e-6
        assert ((target > 0) & (target < 1)).any()  # mixed, not one-hot


def test_focal_loss_is_bce_weighted_by_how_wrong():
    from chirpid_io.trainers.loop import FocalLoss

    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.sigmoid(logits)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    assert FocalLoss(2.0)(logits, targets).item() == pytest.approx((bce * (1 - p_t) ** 2).sum().item(), rel=1e-6)
    assert FocalLoss(0.0)(logits, targets).item() == pytest.approx(bce.sum().item(), rel=1e-6)


def test_train_task_multilabel_end_to_end_then_predict_with_sigmoid(birdclef_cache, birdclef, tmp_path):  # noqa: F811
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    models = tmp_path / "models"
    result = subprocess.run(
        [sys.executable, "-m", "chirpid_io", "train", birdclef_cache[0], models, "--task", "multilabel", "--epochs", "3",
         "--model-arg", "width=4", "--device", "cpu", "--amp", "off", "--batch-size", "16", "--group", "recording_id",
         "--early-stopping", "val_cmap,val_loss", "--secondary-weight", "0.5", "--no-progress", "--no-report",
         "--experiment-log", tmp_path / "run.jsonl"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "val_roc_auc" in result.stdout or "val_cmap" in result.stdout
    epochs = [r for r in read_log(tmp_path / "run.jsonl") if r["event"] == "epoch"]
    assert len(epochs) == 3 and all(0 <= r["val_cmap"] <= 1 and "val_roc_auc" in r for r in epochs)
    entry = ModelRegistry(models).load("cache", "best", metric="val_cmap")
    assert entry.task == "multilabel" and entry.meta["run"]["secondary_weight"] == 0.5
    assert len(entry.meta["per_class"]["roc_auc"]) == len(entry.class_names)
    clip = next((birdclef / "train_audio" / "great_tit").iterdir())
    predicted = subprocess.run([sys.executable, "-m", "chirpid_io", "predict", models, clip, "--json",
                                "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert predicted.returncode == 0, predicted.stderr
    summary = json.loads(predicted.stdout.splitlines()[0])
    from chirpid_io.predict import TorchScorer
    from chirpid_io.predict.windows import recording_windows

    chunks = [c for c in recording_windows(clip, entry.config) if hasattr(c, "samples")]
    waves = np.concatenate([c.samples for c in chunks])
    probabilities, _ = TorchScorer(entry)(waves)
    scorer = TorchScorer(entry)
    with torch.inference_mode():
        logits = entry.model(scorer.inputs(waves)).numpy()
    np.testing.assert_allclose(probabilities, 1 / (1 + np.exp(-logits)), atol=1e-6)  # a sigmoid per class
    assert not np.allclose(probabilities.sum(axis=1), 1.0)  # not a softmax
    overall = probabilities.max(axis=0)  # multi-label: each species' highest window
    assert summary["label"] == entry.class_names[int(overall.argmax())]
    assert summary["confidence"] == pytest.approx(float(overall.max()), abs=1e-5)


def test_early_stopping_names_follow_the_task():
    from chirpid_io.errors import ConfigError

    assert TrainConfig(task="multilabel").early_stopping == ("val_loss", "val_roc_auc")
    with pytest.raises(ConfigError, match="unknown metric 'val_cmap' for task 'single'"):
        TrainConfig(early_stopping=["val_cmap"])
    with pytest.raises(ConfigError, match="loss='bce' does not fit task='single'"):
        TrainConfig(loss="bce")
