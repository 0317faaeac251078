"""Validation metrics, single-label and multi-label, in plain numpy.

Single-label (one species per window): accuracy and macro-F1 from a confusion matrix.

Multi-label (several species per window, as soundscapes are scored):

- ``roc_auc``: macro ROC-AUC over the classes with at least one positive window (and one
  negative), as BirdCLEF 2024-2025 score; from ranks (Mann-Whitney U), ties averaged.
- ``cmap``: padded class-mean average precision, BirdCLEF 2021-2023's score: five rows in
  which every class is present and predicted with certainty are added to both truth and
  predictions, then average precision is averaged over every class (so a class without
  positives counts, and rare classes weigh as much as common ones). Average precision
  is computed as scikit-learn's ``average_precision_score`` does (one step per distinct
  score).
- ``macro_precision``, ``macro_recall``, ``macro_f1`` at a probability threshold, over the
  classes that are present or predicted; per-class values come with them.

A target counts as present when it is above zero (a secondary label of weight 0.5 is a
present species; so is a mixup partner's).
"""

from __future__ import annotations

import numpy as np

SINGLE_LABEL = ("loss", "accuracy", "macro_f1")
MULTI_LABEL = ("loss", "roc_auc", "cmap", "macro_f1", "macro_precision", "macro_recall")
#: Metric names per task, without the ``train_`` / ``val_`` prefix.
BY_TASK = {"single": SINGLE_LABEL, "multilabel": MULTI_LABEL}
#: cmAP's padding rows, as BirdCLEF 2021-2023's metric adds them.
CMAP_PADDING = 5


def confusion_metrics(confusion: np.ndarray) -> dict:
    """Accuracy and macro-F1 from a (true, predicted) count matrix.

    Macro-F1 averages over the classes that occur as a target or a prediction (as
    scikit-learn does without ``labels=``); a class never seen in either is left out.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    total = confusion.sum()
    tp = np.diag(confusion)
    fp = confusion.sum(0) - tp
    fn = confusion.sum(1) - tp
    present = (tp + fp + fn) > 0
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=present)
    return {"accuracy": float(tp.sum() / total) if total else 0.0,
            "macro_f1": float(f1[present].mean()) if present.any() else 0.0}


def per_class_from_confusion(confusion: np.ndarray) -> dict:
    """Per-class precision, recall, F1 and support (true windows) from a confusion matrix."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    predicted, actual = confusion.sum(0), confusion.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    f1 = np.divide(2 * tp, predicted + actual, out=np.zeros_like(tp), where=(predicted + actual) > 0)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": actual.astype(int).tolist()}


def multilabel_metrics(probabilities: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> tuple[dict, dict]:
    """(metrics, per-class) for (N, C) probabilities against (N, C) targets."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    truth = np.asarray(targets) > 0
    aucs = np.array([roc_auc(probabilities[:, c], truth[:, c]) for c in range(truth.shape[1])])
    predicted = probabilities >= threshold
    tp = (predicted & truth).sum(0).astype(np.float64)
    n_pred, n_true = predicted.sum(0).astype(np.float64), truth.sum(0).astype(np.float64)
    precision = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    recall = np.divide(tp, n_true, out=np.zeros_like(tp), where=n_true > 0)
    f1 = np.divide(2 * tp, n_pred + n_true, out=np.zeros_like(tp), where=(n_pred + n_true) > 0)
    seen = (n_pred + n_true) > 0
    scored = ~np.isnan(aucs)
    metrics = {
        "roc_auc": float(aucs[scored].mean()) if scored.any() else float("nan"),
        "cmap": padded_cmap(probabilities, truth),
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "macro_precision": float(precision[seen].mean()) if seen.any() else 0.0,
        "macro_recall": float(recall[seen].mean()) if seen.any() else 0.0,
    }
    per_class = {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
                 "roc_auc": [None if np.isnan(a) else float(a) for a in aucs], "support": n_true.astype(int).tolist()}
    return metrics, per_class


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve of one class (NaN without positives or negatives)."""
    truth = np.asarray(truth, dtype=bool)
    positives = int(truth.sum())
    negatives = truth.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based, ties share their mean rank
    return float((ranks[truth].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Average precision of one class, one step per distinct score (scikit-learn's)."""
    truth = np.asarray(truth, dtype=bool)
    positives = truth.sum()
    if positives == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    ranked, hits = np.asarray(scores)[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(ranked) != 0), ranked.size - 1]  # last index of each distinct score
    tps = np.cumsum(hits)[last]
    precision = tps / (last + 1)
    recall = tps / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def padded_cmap(probabilities: np.ndarray, truth: np.ndarray, padding: int = CMAP_PADDING) -> float:
    """BirdCLEF 2021-2023's padded cmAP (see the module docstring)."""
    n_classes = truth.shape[1]
    truth = np.vstack([np.asarray(truth, dtype=bool), np.ones((padding, n_classes), dtype=bool)])
    probabilities = np.vstack([np.asarray(probabilities, dtype=np.float64), np.ones((padding, n_classes))])
    return float(np.mean([average_precision(probabilities[:, c], truth[:, c]) for c in range(n_classes)]))
