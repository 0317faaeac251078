"""Experiment log: one JSON-lines file per run, written as the run goes, plus plots.

Records, one per line, each with an ``event`` and a ``time`` (Unix seconds):
``start`` (run name, config, environment: torch version, device, CPU, Python),
``epoch`` (one per epoch: the ``fit`` history record, metrics and timings), ``end``
(final result). Every line is flushed when written, so a crashed run's log is readable up
to its last epoch. MLflow receives the same params and metrics when asked for and
installed; TensorBoard event files (``tensorboard=DIR``) receive every numeric value of
each epoch record as a scalar under the same name, so a run can be watched live with
``tensorboard --logdir DIR``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def environment(device=None) -> dict:
    """Versions and hardware a result depends on."""
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "cuda": torch.version.cuda,
           "device": str(device) if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    from .. import __version__

    env["chirpid_io"] = __version__
    return env


class ExperimentLog:
    """Append-only JSON-lines log of one run at ``path``; callable with an epoch record,
    so it can be passed to ``fit(log=...)``. ``mlflow=True`` also logs to the active
    MLflow tracking setup when ``mlflow`` is importable (silently skipped otherwise).
    ``tensorboard``: a folder for TensorBoard event files (through
    ``torch.utils.tensorboard``; needs ``pip install tensorboard``): each epoch's numbers
    as scalars at step ``epoch``, the config and the result as text."""

    def __init__(self, path: str | os.PathLike, *, run_name: str | None = None, mlflow: bool = False,
                 echo=None, tensorboard: str | os.PathLike | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.run_name = run_name or self.path.stem
        self.echo = echo  # optional callable(str) for a progress line per epoch
        self._tensorboard = _tensorboard_writer(tensorboard) if tensorboard is not None else None
        self._file = open(self.path, "a", encoding="utf-8")
        self._mlflow = None
        if mlflow:
            try:
                import mlflow as _mlflow
            except ImportError:
                _mlflow = None
            if _mlflow is not None:
                self._mlflow = _mlflow
                _mlflow.start_run(run_name=self.run_name)

    def write(self, event: str, **payload) -> None:
        record = {"event": event, "time": time.time(), **payload}
        self._file.write(json.dumps(record, default=_jsonable) + "\n")
        self._file.flush()

    def start(self, config: dict, *, device=None, **extra) -> None:
        self.write("start", run=self.run_name, config=config, environment=environment(device), **extra)
        if self._mlflow is not None:
            self._mlflow.log_params({k: str(v) for k, v in _flatten(config).items()})
        if self._tensorboard is not None:
            self._tensorboard.add_text("config", _as_markdown(config))
            self._tensorboard.flush()

    def __call__(self, record: dict) -> None:
        self.write("epoch", **record)
        if self.echo is not None:
            self.echo(format_epoch(record))
        if self._mlflow is not None:
            numbers = {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and k != "epoch"}
            self._mlflow.log_metrics(numbers, step=int(record.get("epoch", 0)))
        if self._tensorboard is not None:
            step = int(record.get("epoch", 0))
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tensorboard.add_scalar(key, value, step)
            self._tensorboard.flush()  # watched live: every epoch reaches the file at once

    def end(self, result: dict) -> None:
        self.write("end", result=result)
        if self._mlflow is not None:
            numbers = {k: float(v) for k, v in result.items() if isinstance(v, (int, float))}
            self._mlflow.log_metrics(numbers)
        if self._tensorboard is not None:
            self._tensorboard.add_text("result", _as_markdown(result))
            self._tensorboard.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._mlflow is not None:
            self._mlflow.end_run()
            self._mlflow = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def format_epoch(record: dict) -> str:
    """One progress line: epoch, losses, accuracy, macro-F1, lr, seconds."""
    parts = [f"epoch {record.get('epoch', '?'):>3}"]
    for key in ("train_loss", "val_loss", "val_accuracy", "val_macro_f1"):  # the names --metric accepts
        if key in record:
            parts.append(f"{key} {record[key]:.4f}")
    if "lr" in record:
        parts.append(f"lr {record['lr']:.2e}")
    if "seconds" in record:
        parts.append(f"{record['seconds']:.1f} s")
    return "  ".join(parts)


def read_log(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines log (a torn last line is ignored)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    return records


def plot_history(log_path: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Loss and accuracy/macro-F1 per epoch from a run's log, as a PNG."""
    epochs = [r for r in read_log(log_path) if r.get("event") == "epoch"]
    x = [r["epoch"] for r in epochs]
    fig = _figure((10, 4))
    ax_loss, ax_score = fig.subplots(1, 2)
    try:
        for key in ("train_loss", "val_loss"):
            if any(key in r for r in epochs):
                ax_loss.plot(x, [r.get(key) for r in epochs], label=key)
        for key in ("train_accuracy", "val_accuracy", "val_macro_f1"):
            if any(key in r for r in epochs):
                ax_score.plot(x, [r.get(key) for r in epochs], label=key)
        for ax, title in ((ax_loss, "loss"), (ax_score, "score")):
            ax.set_xlabel("epoch")
            ax.set_title(title)
            ax.legend()
        fig.tight_layout()
        fig.savefig(out_png, dpi=100)
    finally:
        fig.clear()
    return Path(out_png)


def plot_confusion(matrix, class_names, out_png: str | os.PathLike) -> Path:
    """A confusion matrix (rows: true class, columns: predicted), row-normalised colours
    with the counts written in, as a PNG."""
    import numpy as np

    matrix = np.asarray(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    size = max(4, 0.45 * len(class_names) + 2)
    fig = _figure((size, size))
    ax = fig.subplots()
    try:
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        ticks = range(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=90)
        ax.set_yticks(ticks, class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if len(class_names) <= 40:
            for i in ticks:
                for j in ticks:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")
        fig.tight_layout()
        fig.savefig(out_png, dpi=100)
    finally:
        fig.clear()
    return Path(out_png)


def _figure(size):
    """A matplotlib Figure outside pyplot: it is never in pyplot's list of open figures
    (nothing to close, nothing to leak) and the caller's backend is left alone (pyplot's
    ``matplotlib.use("Agg")`` would switch it, closing an interactive session's figures)."""
    from matplotlib.figure import Figure

    return Figure(figsize=size)


def _tensorboard_writer(folder):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from ..errors import ConfigError

        raise ConfigError(f"TensorBoard logging to {folder} needs the tensorboard package: "
                          "pip install tensorboard (or chirpid-io[dev])") from None
    return SummaryWriter(log_dir=str(folder))


def _as_markdown(values: dict) -> str:
    # TensorBoard renders text as Markdown: indent by four spaces to show the JSON verbatim
    text = json.dumps(values, indent=2, default=_jsonable)
    return "\n".join("    " + line for line in text.splitlines())


def _flatten(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return str(value)
    return str(value)
