"""cross_validate: grouped k-fold training over a cache, folds in sequence or in processes.

Folds come from ``loaders.group_kfold`` (no recordist/group on both sides), batches from
``loaders.make_loader``; each fold trains a fresh model with ``fit``. The result has each
fold's best metrics, their mean and standard deviation, and metrics pooled over every
fold's validation predictions (one confusion matrix over the whole data set, each window
predicted by the fold that held it out).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .loop import TrainConfig, confusion_metrics, fit

SUMMARY_METRICS = ("val_loss", "val_accuracy", "val_macro_f1", "val_roc_auc", "val_cmap", "train_loss",
                   "train_accuracy")


@dataclass
class CVResult:
    """Per-fold records (fold, best_epoch, n_train, n_val, metrics), the mean and
    (population) std of each metric across folds, pooled metrics and confusion matrix."""

    folds: list[dict]
    mean: dict
    std: dict
    pooled: dict
    confusion: np.ndarray
    class_names: list[str]


def cross_validate(cache, model_fn: Callable[[int], object], config: TrainConfig, *, k: int = 4,
                   group: str = "group", parallel: int = 1, batch_size: int = 64, seed: int = 0,
                   augment=None, device=None, log: Callable[[dict], None] | None = None,
                   secondary_weight: float = 1.0, fold_ids=None) -> CVResult:
    """Train and validate ``k`` grouped folds of ``cache`` (an open Cache or its path).

    ``model_fn(n_classes)`` builds a fresh model (called after seeding torch with
    ``config.seed + fold``, so folds are reproducible). ``parallel`` > 1 runs that many
    folds at once in spawned processes, dividing the CPU threads between them (for CPU
    training; on one GPU, folds in sequence are usually as fast). ``model_fn`` must then be
    picklable (a module-level function or a class). ``log`` receives each epoch record
    with a ``fold`` key added (in sequence only). ``fold_ids``: train only these folds
    (e.g. one rank's share under torchrun); the result then covers them alone.
    """
    from ..cache import Cache, open_cache
    from ..loaders import group_kfold

    cache = cache if isinstance(cache, Cache) else open_cache(cache)
    folds = group_kfold(cache, k, group=group, seed=seed)
    jobs = [dict(cache_path=str(cache.path), fold=i, train_idx=tr, val_idx=va, model_fn=model_fn,
                 config=config, batch_size=batch_size, seed=seed, augment=augment, device=device,
                 secondary_weight=secondary_weight)
            for i, (tr, va) in enumerate(folds) if fold_ids is None or i in fold_ids]
    if parallel <= 1:
        results = [_run_fold(**job, log=log) for job in jobs]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // parallel)
        with ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_limit_threads, initargs=(threads,)) as pool:
            results = list(pool.map(_run_fold_job, jobs))
    return summarise(results, cache.class_names)


def summarise(results: list[dict], class_names) -> CVResult:
    """Fold results -> mean/std per metric and pooled metrics."""
    names = [m for m in SUMMARY_METRICS if all(m in r["metrics"] for r in results)]
    values = {m: np.array([r["metrics"][m] for r in results], dtype=np.float64) for m in names}
    # single-label folds pool their confusion matrices; multi-label ones report mean and std only
    confusion = None if any(r["confusion"] is None for r in results) else sum(np.asarray(r["confusion"]) for r in results)
    return CVResult(
        folds=results,
        mean={m: float(v.mean()) for m, v in values.items()},
        std={m: float(v.std()) for m, v in values.items()},
        pooled=confusion_metrics(confusion) if confusion is not None else {},
        confusion=confusion,
        class_names=list(class_names),
    )


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_fold_job(job: dict) -> dict:
    return _run_fold(**job)


def _run_fold(*, cache_path, fold, train_idx, val_idx, model_fn, config: TrainConfig, batch_size, seed, augment,
              device, secondary_weight=1.0, log=None) -> dict:
    import torch

    from ..cache import open_cache
    from ..loaders import make_loader

    cache = open_cache(cache_path)
    fold_config = dataclasses.replace(
        config, seed=config.seed + fold, device=device or config.device,
        checkpoint_dir=None if config.checkpoint_dir is None else Path(config.checkpoint_dir) / f"fold{fold}",
    )
    targets = {"targets": config.task, "secondary_weight": secondary_weight}
    train = make_loader(cache, batch_size, indices=train_idx, shuffle=True, device=fold_config.device,
                        augment=augment, seed=seed + fold, **targets)
    val = make_loader(cache, batch_size, indices=val_idx, shuffle=False, device=fold_config.device, **targets)
    torch.manual_seed(fold_config.seed)
    model = model_fn(len(cache.class_names))
    fold_log = None if log is None else (lambda record: log({"fold": fold, **record}))
    result = fit(model, train, val, fold_config, log=fold_log)
    n = len(cache.class_names)
    confusion = result.confusion if result.confusion is not None else None
    if confusion is None and config.task == "single":
        confusion = np.zeros((n, n), dtype=np.int64)
    return {"fold": fold, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
            "n_train": int(len(train_idx)), "n_val": int(len(val_idx)), "metrics": result.best_metrics,
            "confusion": None if confusion is None else np.asarray(confusion)}
