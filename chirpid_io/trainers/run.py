"""A whole training run, as ``chirpid-io train`` does it, in one call: :func:`train`.

    from chirpid_io.trainers import RunSpec, TrainConfig, train
    outcome = train("my-cache", "models/", TrainConfig(epochs=30), RunSpec(model="birdcnn"))

The run holds out a grouped validation split (no group on both sides), trains with
:func:`~chirpid_io.trainers.fit`, logs every epoch to a JSON-lines experiment log, and
registers the best epoch's weights with the cache's recipe, classes and normalisation;
with ``spec.folds`` it cross-validates instead. ``chirpid-io train`` builds its options
from :class:`RunSpec`, :class:`~chirpid_io.trainers.TrainConfig` and
:class:`~chirpid_io.loaders.Augment`, so the two cannot disagree.
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from ..text import shown


@dataclass
class RunSpec:
    """How a run is set up around ``fit``: the model, the split and the loaders."""

    name: str | None = field(default=None, metadata={"help": "registry name of the model (none: the cache "
                                                              "folder's name)"})
    model: str = field(default="birdcnn", metadata={"help": "architecture (birdcnn: small and fast; birdcnn_v5c: the "
                                                            "old 8 M network)"})
    model_kwargs: dict = field(default_factory=dict, metadata={"help": "constructor arguments of the model"})
    batch_size: int = field(default=64, metadata={"help": "windows per batch"})
    val_fraction: float = field(default=0.2, metadata={"help": "share of the windows held out for validation"})
    group: str = field(default="group", metadata={"help": "cache column whose groups never straddle a split"})
    workers: int = field(default=0, metadata={"help": "loader worker processes (0: a read-ahead thread)"})
    augment: bool = field(default=True, metadata={"help": "augment training batches (SpecAugment, by default)"})
    secondary_weight: float = field(default=1.0, metadata={"help": "multilabel: target of a window's secondary "
                                                                   "species (1: plain multi-hot)"})
    folds: int | None = field(default=None, metadata={"help": "cross-validate with this many grouped folds "
                                                               "instead of training one model"})
    parallel: int = field(default=1, metadata={"help": "with folds: folds trained at once, in processes"})
    crop_weighting: str = field(default="recording", metadata={
        "help": "waveform caches: one random crop per recording and epoch (recording), or crops in proportion to "
                "each recording's length (duration)", "choices": ("recording", "duration")})
    background: str | None = field(default=None, metadata={
        "help": "waveform caches: background noise to mix in (--wave-noise-p): a waveform cache or a folder of "
                "recordings"})


@dataclass
class TrainOutcome:
    """What a run produced: the fit result (or the cross-validation result), the metrics
    registered, the registry name and version (None for cross-validation), the log."""

    result: object
    metrics: dict
    name: str
    version: int | None
    log_path: Path


def train(cache, registry, config=None, spec: RunSpec | None = None, augment=None, *, wave_augment=None,
          log_path=None, mlflow: bool = False, tensorboard=None, report: bool = True,
          echo: Callable[[str], None] = print, progress: bool | None = None) -> TrainOutcome:
    """Train (or cross-validate) on ``cache`` and register the model in ``registry``.

    ``config``: a TrainConfig (default: its defaults); ``spec``: a RunSpec; ``augment``:
    an Augment for training batches (default ``Augment()`` when ``spec.augment``).
    On a waveform cache (``build-cache --store waveform``) training batches are random
    crops (``spec.crop_weighting``), augmented as waveforms by ``wave_augment`` (a
    ``WaveAugment``; noise from ``spec.background``) before their mel images are made on
    the training device; validation scores the fixed windows ``predict`` cuts.
    ``echo`` receives one line per epoch and the run's notes (warnings go to stderr).
    ``tensorboard``: also write TensorBoard event files to that folder. ``report``: write
    the run's HTML report and PNG plots beside its log at the end.

    Under torchrun (``RANK``/``WORLD_SIZE`` set) every rank calls this: the model trains as
    DistributedDataParallel, each rank reading its share of every batch; cross-validation
    folds go to the ranks in turn. Only rank 0 logs, reports and registers; the others
    return with ``version=None``. See ``trainers/distributed.py``.
    """
    import torch

    from ..cache import Cache, open_cache
    from ..loaders import Augment, group_split, make_loader
    from ..loaders.splits import split_warnings
    from .crossval import cross_validate
    from .explog import ExperimentLog, format_epoch
    from .loop import TrainConfig, fit
    from .models import build_model
    from .registry import ModelRegistry

    from .distributed import barrier, from_env, gather_objects

    config = config or TrainConfig()
    spec = spec or RunSpec()
    dist = from_env(config.device)
    main = dist is None or dist.main
    if not main:
        echo = _quiet
    cache = cache if isinstance(cache, Cache) else open_cache(cache)
    name = spec.name or Path(cache.path).resolve().name
    device = dist.device if dist is not None else config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if config.device != device:
        import dataclasses

        config = dataclasses.replace(config, device=device)
    augment = (augment or Augment()) if spec.augment else None
    model_fn = functools.partial(build_model, spec.model, **spec.model_kwargs)
    model_fn(len(cache.class_names))  # a wrong model argument fails now, before any epoch
    log_path = Path(log_path) if log_path else Path(registry) / "runs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    echo(f"training {spec.model} on {shown(cache.path)} ({device}"
         + (f", {dist.world_size} processes" if dist is not None else "") + f"); log: {shown(log_path)}")
    settings = {**config.to_dict(), **{k: v for k, v in asdict(spec).items()}, "cache": str(cache.path),
                "fingerprint": cache.fingerprint, "augment": None if augment is None else asdict(augment),
                "wave_augment": None if wave_augment is None else asdict(wave_augment)}
    logger = ExperimentLog(log_path, run_name=name, mlflow=mlflow, echo=echo, tensorboard=tensorboard) if main \
        else _NoLog()
    with logger as log:
        log.start(settings, device=device)
        if spec.folds:
            progress_log = None if spec.parallel > 1 else (lambda r: echo(f"fold {r['fold']}  " + format_epoch(r)))
            mine = None if dist is None else list(range(dist.rank, spec.folds, dist.world_size))
            result = cross_validate(cache, model_fn, config, k=spec.folds, group=spec.group, parallel=spec.parallel,
                                    batch_size=spec.batch_size, seed=config.seed, augment=augment, device=device,
                                    log=progress_log, secondary_weight=spec.secondary_weight, fold_ids=mine)
            if dist is not None:  # one fold per rank in turn: everyone's folds, summarised alike
                from .crossval import summarise

                folds = sorted((f for part in gather_objects(result.folds) for f in part), key=lambda f: f["fold"])
                result = summarise(folds, cache.class_names)
            shown_metrics = [m for m in ("val_loss", "val_accuracy", "val_roc_auc", "val_cmap", "val_macro_f1")
                             if m in result.mean]
            for fold in result.folds:
                m = fold["metrics"]
                echo(f"fold {fold['fold']}: best epoch {fold['best_epoch']}, "
                     + ", ".join(f"{k} {m[k]:.4f}" for k in shown_metrics)
                     + f" ({fold['n_train']} train / {fold['n_val']} val windows)")
            for key in shown_metrics:
                echo(f"{key}: {result.mean[key]:.4f} ± {result.std[key]:.4f}")
            if result.pooled:
                echo("pooled over folds: " + ", ".join(f"{k} {v:.4f}" for k, v in result.pooled.items()))
            metrics = {"mean": result.mean, "std": result.std, "pooled": result.pooled}
            log.end({**metrics, "confusion": result.confusion, "class_names": list(cache.class_names),
                     "folds": [{k: v for k, v in f.items() if k != "confusion"} for f in result.folds]})
            if main:
                _write_report(report, log_path, cache, echo)  # every line of the log is flushed already
            return TrainOutcome(result, metrics, name, None, log_path)

        train_idx, val_idx = group_split(cache, spec.val_fraction, group=spec.group, seed=config.seed)
        for warning in split_warnings(cache, train_idx, val_idx):
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        train_loader, val_loader = training_loaders(cache, spec, config, augment, train_idx, val_idx, dist, device,
                                                    wave_augment=wave_augment)
        torch.manual_seed(config.seed)
        model = model_fn(len(cache.class_names))
        run = {"cache_id": cache.cache_id, "fingerprint": cache.fingerprint, "model": spec.model,
               "model_kwargs": dict(spec.model_kwargs), "batch_size": spec.batch_size, "n_train": int(len(train_idx)),
               "n_val": int(len(val_idx)), "augment": None if augment is None else asdict(augment),
               "secondary_weight": spec.secondary_weight,
               "wave_augment": None if wave_augment is None else asdict(wave_augment)}
        result = fit(model, train_loader, val_loader, config, log=log, run=run, progress=progress, distributed=dist)
        if result.stop_reason:
            echo(result.stop_reason)
        metrics = {**{k: v for k, v in result.best_metrics.items() if isinstance(v, (int, float))},
                   "best_epoch": result.best_epoch, "n_train": int(len(train_idx)), "n_val": int(len(val_idx))}
        if not main:
            barrier()  # rank 0 registers
            return TrainOutcome(result, metrics, name, None, log_path)
        version = ModelRegistry(registry).save(
            result.model, name, cache=cache, metrics=metrics,
            extra={"task": config.task, "train_config": config.to_dict(), "run": run, "log": str(log_path),
                   "per_class": result.per_class,
                   "epochs_run": result.history[-1]["epoch"] if result.history else 0,
                   "resumed_at_epoch": result.resumed_at, "stop_reason": result.stop_reason},
        )
        log.end({**metrics, "registered": f"{name} v{version}", "confusion": result.confusion,
                 "per_class": result.per_class, "stopped_early": result.stopped_early,
                 "stop_reason": result.stop_reason, "class_names": list(cache.class_names),
                 "processes": 1 if dist is None else dist.world_size})
    _write_report(report, log_path, cache, echo)
    if dist is not None:
        barrier()
    scores = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("val_accuracy", "val_roc_auc", "val_cmap", "val_macro_f1")
                       if k in metrics)
    echo(f"best epoch {result.best_epoch}: {scores}; registered {name} v{version} in {shown(registry)}")
    return TrainOutcome(result, metrics, name, version, log_path)


def training_loaders(cache, spec: RunSpec, config, augment, train_idx, val_idx, dist=None, device=None,
                     wave_augment=None):
    """The run's (training, validation) loaders: under torchrun each rank reads its share
    of every global batch, and validation windows are split without repeats."""
    from ..loaders import make_loader

    targets = {"targets": config.task, "secondary_weight": spec.secondary_weight}
    ranks = {} if dist is None else {"rank": dist.rank, "world_size": dist.world_size}
    crops = {}
    if getattr(cache, "kind", "spectrogram") == "waveform":
        crops = {"crop_weighting": spec.crop_weighting, "wave_augment": wave_augment, "background": spec.background}
    elif wave_augment is not None and wave_augment.active or spec.background is not None:
        raise ConfigError(f"{shown(cache.path)} is a spectrogram cache: waveform augmentation and background noise "
                          "need a waveform cache (build-cache --store waveform)")
    train = make_loader(cache, spec.batch_size, indices=train_idx, device=device, augment=augment, seed=config.seed,
                        num_workers=spec.workers, split="batches" if ranks else "contiguous", **ranks, **targets,
                        **crops)
    val = make_loader(cache, spec.batch_size, indices=val_idx, shuffle=False, device=device, num_workers=spec.workers,
                      split="disjoint", **ranks, **targets)
    return train, val


def _quiet(line: str) -> None:
    """Ranks other than 0 print nothing."""


class _NoLog:
    """The experiment log of a rank other than 0: it writes nothing."""

    def start(self, *args, **kwargs) -> None:
        pass

    def __call__(self, record: dict) -> None:
        pass

    def end(self, result: dict) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def _write_report(wanted: bool, log_path: Path, cache, echo) -> None:
    """The run's HTML report and PNG plots beside its log (every log line is flushed)."""
    if not wanted:
        return
    from ..report import write_run_report

    echo("report: " + ", ".join(shown(p) for p in write_run_report(log_path, cache=cache)))
