"""The training loop (``fit``): mixed precision, schedules, clipping, multi-metric early
stopping that really restores the best weights, and crash-safe checkpoints.

The module is ``loop``, not ``fit``, so that ``chirpid_io.trainers.fit`` stays the
function (a submodule named like it would replace it on the package once imported).

The loop takes any iterables of ``(x, y)`` batches (``x`` float (B, 1, n_mels, frames),
``y`` int64 class indices): a ``chirpid_io.loaders`` loader, a ``DataLoader`` or a list.
Per-epoch metrics (loss, accuracy, macro-F1) are accumulated on the device (a confusion
matrix through ``index_add_``), so a batch never waits for the host; the only per-batch
sync left is the fp16 GradScaler's own overflow check.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..text import shown
from .metrics import BY_TASK, SINGLE_LABEL, confusion_metrics, multilabel_metrics, per_class_from_confusion

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "plateau", "onecycle", "none")
AMP_MODES = ("auto", "bf16", "fp16", "off")
TASKS = ("single", "multilabel")
LOSSES = ("auto", "ce", "bce", "focal")
METRICS = SINGLE_LABEL  # the single-label task's, for code that predates multi-label
#: Every metric name ``fit`` records (either task); early stopping and ``--version best``
#: accept these.
METRIC_NAMES = tuple(dict.fromkeys(f"{split}_{m}" for split in ("val", "train")
                                   for task in TASKS for m in BY_TASK[task]))
CHECKPOINT = "last.pt"


@dataclass
class TrainConfig:
    """Everything that decides a training run.

    ``lr`` is the peak learning rate; ``schedule``: "cosine" (linear warm-up over
    ``warmup_epochs``, then cosine decay to 0 at ``epochs``), "plateau" (x0.5 after 3
    epochs without a better val_loss), "onecycle" (per step; needs a loader with a length),
    "none". ``amp``: "auto" (bf16 on a GPU that has it, else fp16 with loss scaling on
    CUDA; off on CPU, where bf16 autocast is slower than float32 without AMX units),
    "bf16" (also on CPU), "fp16" (CUDA only), "off". ``grad_clip``: max global L2 norm.
    ``class_weights``: "balanced" (n / (k * count) per class, from the training labels),
    an explicit list, or None. ``early_stopping``: metrics watched ("val_loss",
    "val_accuracy", "val_macro_f1", or "train_..."); training stops once none of them
    improved by more than ``min_delta`` for ``patience`` epochs (None: never stop early).
    The weights returned are those of the epoch where the first listed metric was best.
    ``seed``: fit seeds Python's, numpy's and torch's global generators with it first
    (build the model after your own ``torch.manual_seed`` for a reproducible init).
    ``checkpoint_dir``: write ``last.pt`` there after every epoch (atomically);
    ``resume``: continue from it when it exists.
    """

    task: str = field(default="single", metadata={"help": "single: one class per window (softmax); multilabel: "
                                                          "every species in the window's label set (sigmoid)",
                                                  "choices": TASKS})
    loss: str = field(default="auto", metadata={"help": "auto: ce for single, bce for multilabel; focal: "
                                                        "multilabel focal loss", "choices": LOSSES})
    focal_gamma: float = field(default=2.0, metadata={"help": "focal loss: focusing exponent gamma"})
    threshold: float = field(default=0.5, metadata={"help": "multilabel: probability above which a species "
                                                            "counts as predicted (per-class precision/recall/F1)"})
    epochs: int = field(default=30, metadata={"help": "maximum epochs"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=1e-4, metadata={"help": "weight decay (decoupled for adamw)"})
    optimizer: str = field(default="adamw", metadata={"help": "optimizer", "choices": OPTIMIZERS})
    momentum: float = field(default=0.9, metadata={"help": "sgd: momentum (Nesterov when > 0)"})
    schedule: str = field(default="cosine", metadata={"help": "learning-rate schedule", "choices": SCHEDULES})
    warmup_epochs: int = field(default=0, metadata={"help": "cosine: linear warm-up epochs"})
    amp: str = field(default="auto", metadata={"help": "mixed precision (auto: bf16 or fp16 on CUDA, off on CPU)",
                                               "choices": AMP_MODES})
    channels_last: bool = field(default=False, metadata={"help": "channels-last memory format"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    grad_clip: float | None = field(default=None, metadata={"help": "clip the gradient's global L2 norm to this"})
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing of the training loss"})
    class_weights: str | Sequence[float] | None = field(
        default="balanced", metadata={"help": "loss weight per class: balanced (n / (k * count)) or none"})
    early_stopping: Sequence[str] = field(
        default=("val_loss", "val_macro_f1"),
        metadata={"help": "metrics watched, comma-separated; the first picks the weights kept"})
    patience: int | None = field(default=10, metadata={"help": "stop after this many epochs without improvement in "
                                                              "any watched metric (none: never early)"})
    min_delta: float = field(default=0.0, metadata={"help": "smallest change that counts as an improvement"})
    seed: int = field(default=0, metadata={"help": "seed of every generator (and of the split, order, augmentation)"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1 ... (none: cuda when available)"})
    checkpoint_dir: str | None = field(default=None, metadata={"help": "write last.pt here after every epoch"})
    resume: bool = field(default=False, metadata={"help": "continue from checkpoint_dir's last.pt"})

    def __post_init__(self) -> None:
        if isinstance(self.early_stopping, str):  # "val_loss,val_macro_f1", as the command line gives it
            self.early_stopping = tuple(m.strip() for m in self.early_stopping.split(",") if m.strip())
        self.early_stopping = tuple(self.early_stopping)
        for name, value, choices in (("optimizer", self.optimizer, OPTIMIZERS), ("task", self.task, TASKS),
                                     ("loss", self.loss, LOSSES),
                                     ("schedule", self.schedule, SCHEDULES), ("amp", self.amp, AMP_MODES)):
            if value not in choices:
                raise ConfigError(f"TrainConfig.{name} must be one of {choices}, got {value!r}")
        if self.loss in ("bce", "focal") and self.task != "multilabel" or self.loss == "ce" and self.task != "single":
            raise ConfigError(f"TrainConfig.loss={self.loss!r} does not fit task={self.task!r} (single: ce; "
                              "multilabel: bce or focal; auto picks)")
        if self.task == "multilabel" and self.early_stopping == ("val_loss", "val_macro_f1"):
            self.early_stopping = ("val_loss", "val_roc_auc")  # the default, in this task's terms
        known = [f"{split}_{m}" for split in ("val", "train") for m in BY_TASK[self.task]]
        for metric in self.early_stopping:
            if metric not in known:
                raise ConfigError(f"TrainConfig.early_stopping: unknown metric {metric!r} for task {self.task!r}; "
                                  f"use {', '.join(known)}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"TrainConfig.threshold must lie strictly between 0 and 1, got {self.threshold}")
        if self.resume and self.checkpoint_dir is None:
            raise ConfigError("TrainConfig.resume=True needs checkpoint_dir (where the run's last.pt is)")
        if not self.early_stopping:
            raise ConfigError("TrainConfig.early_stopping needs at least one metric, e.g. ['val_loss']")
        if self.epochs < 1:
            raise ConfigError(f"TrainConfig.epochs must be >= 1, got {self.epochs}")
        if isinstance(self.class_weights, str) and self.class_weights.lower() == "none":
            self.class_weights = None  # as a search space or a file spells it
        if isinstance(self.class_weights, str) and self.class_weights != "balanced":
            raise ConfigError(f"TrainConfig.class_weights must be 'balanced', a list or None, "
                              f"got {self.class_weights!r}")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["early_stopping"] = list(self.early_stopping)
        if out["checkpoint_dir"] is not None:
            out["checkpoint_dir"] = str(out["checkpoint_dir"])
        return out


@dataclass
class FitResult:
    """The trained model (best weights loaded, on the training device), one dict per epoch,
    the best epoch (1-based) and its metrics, and its validation confusion matrix
    (rows: true class, columns: predicted)."""

    model: nn.Module
    history: list[dict]
    best_epoch: int
    best_metrics: dict
    confusion: np.ndarray | None = None
    per_class: dict | None = None  #: the best epoch's per-class precision, recall, F1, support (and ROC-AUC)
    stopped_early: bool = False
    stop_reason: str = ""  #: why training stopped before ``epochs``, as a sentence ("" when it did not)
    resumed_at: int = 0  #: the epoch a resumed run continued after (0: not resumed)


# -- precision ------------------------------------------------------------------------
def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mode`` on ``device`` (None: full float32)."""
    if mode == "off":
        return None
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if mode == "auto":
            return torch.bfloat16 if bf16 else torch.float16
        if mode == "bf16" and not bf16:
            raise ConfigError(f"amp='bf16' asked for, but {torch.cuda.get_device_name(device)} has no "
                              "bfloat16; use amp='fp16' or 'auto'")
        return torch.bfloat16 if mode == "bf16" else torch.float16
    if mode == "fp16":
        raise ConfigError(f"amp='fp16' needs a CUDA device, training runs on {device}; use 'bf16' or 'off'")
    return torch.bfloat16 if mode == "bf16" else None


# -- metrics --------------------------------------------------------------------------
class _Meter:
    """Single-label: loss sum and confusion matrix (hence the count), kept on the device."""

    def __init__(self, n_classes: int, device: torch.device, config: TrainConfig):
        self.n = n_classes
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.confusion = torch.zeros(n_classes * n_classes, dtype=torch.int64, device=device)

    def update(self, loss_sum: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += loss_sum.detach().double()
        pred = logits.detach().argmax(1)
        y = _hard(y)  # soft targets (mixup) count as their dominant class
        # index_add_, not bincount: CUDA's bincount reads the input's max back to the host
        cells = y * self.n + pred
        self.confusion.index_add_(0, cells, torch.ones_like(cells))

    @property
    def count(self) -> int:
        return int(self.confusion.sum().item())

    def reduce(self) -> None:
        """Sum over the ranks of a distributed run."""
        from .distributed import all_reduce_sum

        all_reduce_sum(self.loss)
        all_reduce_sum(self.confusion)

    def result(self, prefix: str) -> tuple[dict, np.ndarray, dict]:
        confusion = self.confusion.view(self.n, self.n).cpu().numpy()  # the epoch's one sync
        loss = float(self.loss.item()) / max(int(confusion.sum()), 1)
        metrics = {f"{prefix}_loss": loss, **{f"{prefix}_{k}": v for k, v in confusion_metrics(confusion).items()}}
        return metrics, confusion, per_class_from_confusion(confusion)


class _MultiMeter:
    """Multi-label: loss sum, and every window's probabilities and targets (ROC-AUC and
    average precision need them all), kept on the device until the epoch ends."""

    def __init__(self, n_classes: int, device: torch.device, config: TrainConfig):
        self.n, self.threshold = n_classes, config.threshold
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.probabilities: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def update(self, loss_sum: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += loss_sum.detach().double()
        self.probabilities.append(torch.sigmoid(logits.detach().float()))
        self.targets.append(y.detach())

    @property
    def count(self) -> int:
        return sum(len(t) for t in self.targets)

    def reduce(self) -> None:
        """Every rank's windows, on every rank, of a distributed run."""
        from .distributed import all_reduce_sum, gather_rows

        all_reduce_sum(self.loss)
        probabilities = torch.cat(self.probabilities) if self.probabilities else torch.zeros((0, self.n))
        targets = torch.cat(self.targets).float() if self.targets else torch.zeros((0, self.n))
        self.probabilities, self.targets = [gather_rows(probabilities)], [gather_rows(targets)]

    def result(self, prefix: str) -> tuple[dict, None, dict]:
        if not self.targets:
            return {f"{prefix}_loss": 0.0}, None, {}
        probabilities = torch.cat(self.probabilities).cpu().numpy()
        targets = torch.cat(self.targets).float().cpu().numpy()
        metrics, per_class = multilabel_metrics(probabilities, targets, self.threshold)
        loss = float(self.loss.item()) / max(targets.size, 1)  # per window and class, as BCE's mean
        return {f"{prefix}_loss": loss, **{f"{prefix}_{k}": v for k, v in metrics.items()}}, None, per_class


def _criteria(config: TrainConfig, train_loader, n_classes: int, device):
    """(training loss, validation loss, meter class) for the task: both losses sum over
    the batch; validation scores the plain loss (class weights and label smoothing are
    training devices, and would make val_loss incomparable across configs)."""
    weights = _class_weights(config, train_loader, n_classes, device)
    if config.task == "single":
        return (nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing, reduction="sum"),
                nn.CrossEntropyLoss(reduction="sum"), _Meter)
    if config.loss == "focal":
        return FocalLoss(config.focal_gamma, weights), nn.BCEWithLogitsLoss(reduction="sum"), _MultiMeter
    return nn.BCEWithLogitsLoss(weight=weights, reduction="sum"), nn.BCEWithLogitsLoss(reduction="sum"), _MultiMeter


class FocalLoss(nn.Module):
    """Binary focal loss summed over windows and classes: BCE times ``(1 - p_t) ** gamma``,
    where ``p_t`` is the probability given to the target (soft targets interpolate)."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight if weight is not None else None)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        bce = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = bce * (1 - p_t).pow(self.gamma)
        if self.weight is not None:
            loss = loss * self.weight
        return loss.sum()


# -- the loop -------------------------------------------------------------------------
def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None, config: TrainConfig,
        *, log: Callable[[dict], None] | None = None, run: dict | None = None,
        progress: bool | None = None, distributed=None) -> FitResult:
    """Train ``model`` on ``train_loader``, validating on ``val_loader`` after each epoch.

    Targets are int64 class indices, or (B, n_classes) probabilities (mixup).

    ``train_loss`` is the objective minimised (mean over windows of the weighted,
    smoothed cross-entropy); ``val_loss`` the plain mean cross-entropy.
    ``log`` is called with each epoch's record (the dict appended to ``history``: epoch,
    lr, train_/val_ loss, accuracy and macro_f1, seconds (epoch), train_seconds,
    train_windows_per_second), after that
    epoch's checkpoint is on disk. Returns the model with the best epoch's weights.

    ``run``: plain values that identify the run beyond ``config`` (the cache, the split,
    the model...); a checkpoint of a run whose config or ``run`` differ (other than in
    ``RESUMABLE_CHANGES``) is refused on resume. ``progress``: a bar over each epoch's
    batches (None: only on a terminal).
    """
    device = torch.device(distributed.device if distributed is not None else
                          config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    main = distributed is None or distributed.main
    _seed_everything(config.seed)
    amp_dtype = resolve_amp(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_classes = _n_classes(model)
    criterion, plain, meter = _criteria(config, train_loader, n_classes, device)
    optimizer = _optimizer(model, config)
    scheduler = _scheduler(optimizer, config, train_loader)
    step = torch.compile(model) if config.compile else model
    if distributed is not None:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            step = torch.compile(model) if config.compile else model
        # the wrapper trains; evaluation uses the module itself (no collective per batch)
        step = nn.parallel.DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = _optimizer(model, config)
        scheduler = _scheduler(optimizer, config, train_loader)

    state = {"epoch": 0, "history": [], "best": {}, "best_epoch": 0, "best_state": None,
             "best_confusion": None, "best_per_class": None, "bad_epochs": 0}
    ckpt_path = Path(config.checkpoint_dir) / CHECKPOINT if config.checkpoint_dir else None
    if config.resume and ckpt_path is not None and ckpt_path.exists():
        state = _load_checkpoint(ckpt_path, model, optimizer, scheduler, scaler, device, config, run)
    resumed_at = state["epoch"]

    watched = list(config.early_stopping)
    stop_reason = ""
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)  # seeded per-epoch shuffles survive a resume
        if config.schedule == "cosine":
            for group in optimizer.param_groups:
                group["lr"] = config.lr * cosine_factor(epoch, config)
        started = time.perf_counter()
        train_meter = _run_epoch(step, train_loader, criterion, device, amp_dtype, meter(n_classes, device, config), config,
                                 optimizer=optimizer, scaler=scaler,
                                 scheduler=scheduler if config.schedule == "onecycle" else None,
                                 progress=progress, desc=f"epoch {epoch}/{config.epochs}")
        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        if distributed is not None:
            train_meter.reduce()
        metrics, _, _ = train_meter.result("train")  # waits for the device: the timing is honest
        train_seconds = time.perf_counter() - started
        record.update(metrics)
        confusion = per_class = None
        if val_loader is not None:
            with torch.no_grad():
                val_meter = _run_epoch(model, val_loader, plain, device, amp_dtype, meter(n_classes, device, config),
                                       config)
            if distributed is not None:
                val_meter.reduce()
            metrics, confusion, per_class = val_meter.result("val")
            record.update(metrics)
        seconds = time.perf_counter() - started
        count = train_meter.count
        if count == 0:
            raise ConfigError("the training loader yielded no batches: check its indices and batch "
                              "size (drop_last with fewer windows than one batch gives none)")
        record.update(seconds=seconds, train_seconds=train_seconds,
                      train_windows_per_second=count / train_seconds if train_seconds else 0.0)
        if config.schedule == "plateau":
            scheduler.step(record.get("val_loss", record["train_loss"]))
        state["history"].append(record)

        present = [m for m in watched if m in record]  # no val_ metrics without a val_loader
        improved = [m for m in present if _better(m, record[m], state["best"].get(m), config.min_delta)]
        for m in improved:
            state["best"][m] = record[m]
        if not present:
            improved = ["epoch"]  # nothing to watch: every epoch is the best so far
        if not present or present[0] in improved or state["best_state"] is None:
            # a real copy: state_dict() tensors alias the live parameters
            state["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            state["best_epoch"], state["best_confusion"], state["best_per_class"] = epoch, confusion, per_class
        state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        state["epoch"] = epoch
        if ckpt_path is not None and main:
            _save_checkpoint(ckpt_path, model, optimizer, scheduler, scaler, state, config, run)
        if distributed is not None:
            from .distributed import barrier

            barrier()  # every rank goes on once this epoch's checkpoint is on disk
        if log is not None and main:
            log(record)
        if config.patience is not None and state["bad_epochs"] >= config.patience:
            best_at = {m: next(r["epoch"] for r in state["history"] if r.get(m) == state["best"].get(m))
                       for m in present if m in state["best"]}
            stop_reason = (f"stopped early after epoch {epoch}: none of {', '.join(present or watched)} improved for "
                           f"{config.patience} epochs (best " + ", ".join(
                               f"{m} {state['best'][m]:.4f} at epoch {e}" for m, e in best_at.items()) + ")")
            break

    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    best = next((r for r in state["history"] if r["epoch"] == state["best_epoch"]), {})
    return FitResult(model=model, history=state["history"], best_epoch=state["best_epoch"], best_metrics=dict(best),
                     confusion=state["best_confusion"], per_class=state.get("best_per_class"),
                     stopped_early=bool(stop_reason), stop_reason=stop_reason,
                     resumed_at=resumed_at)


def _run_epoch(model, loader, criterion, device, amp_dtype, meter, config, *, optimizer=None, scaler=None,
               scheduler=None, progress=None, desc=""):
    from tqdm import tqdm

    training = optimizer is not None
    model.train(training)
    non_blocking = device.type == "cuda"
    total = len(loader) if hasattr(loader, "__len__") else None
    bar = tqdm(loader, total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
               disable=(None if progress is None else not progress) if training else True)
    for x, y in bar:
        x = x.to(device, non_blocking=non_blocking)
        y = y.to(device, non_blocking=non_blocking)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            logits = model(x)
        loss_sum = criterion(logits.float(), y)
        if training:
            optimizer.zero_grad(set_to_none=True)
            # the mean per window (single) or per window and class (multilabel, as BCE's mean)
            scaler.scale(loss_sum / y.numel() if config.task == "multilabel" else loss_sum / len(y)).backward()
            if config.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
        meter.update(loss_sum, logits, y)
    return meter


def _better(metric: str, value: float, best: float | None, min_delta: float) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    if metric.endswith("loss"):
        return value < best - min_delta
    return value > best + min_delta


def _n_classes(model: nn.Module) -> int:
    n = getattr(model, "n_classes", None)
    if n is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError("cannot tell the number of classes: give the model an n_classes attribute")
        n = linears[-1].out_features
    return int(n)


def _class_weights(config: TrainConfig, loader, n_classes: int, device) -> torch.Tensor | None:
    """Loss weight per class. "balanced": ``n / (k * count)`` from the training targets
    (single: each window's class; multilabel: each present species), 0 for absent classes."""
    if config.class_weights is None:
        return None
    if config.class_weights != "balanced":
        weights = torch.as_tensor(config.class_weights, dtype=torch.float32)
        if weights.shape != (n_classes,):
            raise ConfigError(f"TrainConfig.class_weights has {weights.numel()} values, the model has "
                              f"{n_classes} classes")
        return weights.to(device)
    dataset = getattr(loader, "dataset", None)
    if hasattr(dataset, "cache") and hasattr(dataset, "indices"):  # a chirpid_io loader: no reading
        if config.task == "multilabel":
            counts = torch.as_tensor(dataset.cache.multi_hot(dataset.indices) > 0).sum(0).double()
        else:
            counts = torch.bincount(torch.as_tensor(np.asarray(dataset.cache.labels[dataset.indices])),
                                    minlength=n_classes).double()
    else:  # any other iterable: one pass over its targets
        targets = [torch.as_tensor(y).cpu() for _, y in loader]
        if config.task == "multilabel":
            counts = (torch.cat(targets) > 0).sum(0).double()
        else:
            counts = torch.bincount(torch.cat([_hard(t) for t in targets]), minlength=n_classes).double()
    # sklearn's "balanced": n / (k * count); absent classes get weight 0, not infinity
    weights = torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp_min(1)), 0.0)
    return weights.float().to(device)


def _hard(y: torch.Tensor) -> torch.Tensor:
    return y.argmax(1) if y.ndim == 2 else y.reshape(-1)


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=config.momentum > 0)


def _scheduler(optimizer, config: TrainConfig, loader):
    """The per-step or per-epoch scheduler; None for "none" and "cosine" (which ``fit``
    sets from :func:`cosine_factor` each epoch, so a resumed run with more epochs
    continues the schedule of its new length instead of a stale closure's)."""
    if config.schedule in ("none", "cosine"):
        return None
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
    try:
        steps = len(loader)
    except TypeError:
        raise ConfigError("schedule='onecycle' needs a training loader with a length (batches "
                          "per epoch); use 'cosine' for an endless iterable") from None
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, epochs=config.epochs,
                                               steps_per_epoch=max(steps, 1))


def cosine_factor(epoch: int, config: TrainConfig) -> float:
    """The learning-rate factor for ``epoch`` (1-based) of the cosine schedule: linear
    warm-up over ``warmup_epochs``, then a cosine from 1 down to 0 after the last epoch."""
    done, warmup, total = epoch - 1, config.warmup_epochs, config.epochs
    if done < warmup:
        return (done + 1) / (warmup + 1)
    return 0.5 * (1 + math.cos(math.pi * (done - warmup) / max(1, total - warmup)))


# -- reproducibility and checkpoints --------------------------------------------------
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    """Every generator's state as tensors and plain numbers (what weights_only loads)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    out = {"python": [version, list(python_state), gauss], "torch": torch.get_rng_state(),
           "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                     "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(rng: dict) -> None:
    version, python_state, gauss = rng["python"]
    random.setstate((version, tuple(python_state), gauss))
    state = rng["numpy"]
    np.random.set_state((state["kind"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
                         state["cached"]))
    torch.set_rng_state(rng["torch"].cpu())
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])


#: What a checkpoint says it is; anything else is refused before it is used.
CHECKPOINT_FORMAT = "chirpid-io training checkpoint"
CHECKPOINT_VERSION = 2
#: TrainConfig fields a resumed run may change: how long it runs and where, not what it is.
RESUMABLE_CHANGES = frozenset({"epochs", "patience", "min_delta", "device", "checkpoint_dir", "resume", "compile",
                               "channels_last"})


class CheckpointError(ConfigError):
    """A checkpoint that cannot be resumed: unreadable, foreign, or of another run."""


def _save_checkpoint(path: Path, model, optimizer, scheduler, scaler, state: dict, config: TrainConfig,
                     run: dict | None) -> None:
    """Everything needed to continue the run exactly, as tensors and plain values only
    (so it loads with ``weights_only=True``), written to a temporary name and renamed
    over the old file, so a crash leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plain_state = {**state, "best_confusion": None if state["best_confusion"] is None
                   else torch.as_tensor(np.asarray(state["best_confusion"]))}
    payload = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict(), "state": plain_state, "rng": _rng_state(), "config": config.to_dict(),
        "run": dict(run or {}),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{shown(path)}: the checkpoint could not be written ({exc.strerror or exc}); "
                              "free some space or choose another --checkpoint-dir") from None


def _load_checkpoint(path: Path, model, optimizer, scheduler, scaler, device, config: TrainConfig,
                     run: dict | None) -> dict:
    """Restore a run from ``path``: tensors and plain values only (``weights_only=True``);
    a foreign, damaged or different run's checkpoint is refused, naming what differs."""
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch's own message would suggest unsafe loading
        raise CheckpointError(
            f"{shown(path)}: not a chirpid-io checkpoint, or damaged ({type(exc).__name__}); it is refused "
            "without running anything in it. Fix: delete it to start the run afresh, or point "
            "--checkpoint-dir at this run's own folder") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{shown(path)}: not a chirpid-io training checkpoint (format "
                              f"{payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r}). "
                              "Fix: delete it, or point --checkpoint-dir elsewhere")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{shown(path)}: checkpoint version {payload.get('version')!r}, this chirpid-io "
                              f"resumes version {CHECKPOINT_VERSION}. Fix: delete it to start afresh")
    saved = payload.get("config", {})
    mine = config.to_dict()
    differ = {k: (saved.get(k), v) for k, v in mine.items() if k not in RESUMABLE_CHANGES and saved.get(k) != v}
    saved_run, run = payload.get("run", {}), dict(run or {})
    differ.update({k: (saved_run.get(k), v) for k, v in run.items() if saved_run.get(k) != v})
    if differ:
        listed = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in differ.items())
        raise CheckpointError(
            f"{shown(path)}: the checkpoint is of another run ({listed}). A resumed run may change only "
            f"{', '.join(sorted(RESUMABLE_CHANGES - {'resume', 'checkpoint_dir'}))}. Fix: resume with the same "
            "settings, or start a new run with another --checkpoint-dir")
    if config.schedule == "onecycle" and saved.get("epochs") != config.epochs:
        raise CheckpointError(f"{shown(path)}: a onecycle schedule cannot be extended from {saved.get('epochs')} to "
                              f"{config.epochs} epochs; use the cosine schedule, or start a new run")
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        if scheduler is not None and payload["scheduler"] is not None:
            scheduler.load_state_dict(payload["scheduler"])
        scaler.load_state_dict(payload["scaler"])
        _set_rng_state(payload["rng"])
        state = payload["state"]
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{shown(path)}: the checkpoint does not fit this model or optimizer "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}). Fix: delete it to start "
                              "afresh") from None
    if state.get("best_confusion") is not None:
        state["best_confusion"] = state["best_confusion"].cpu().numpy()
    return state
