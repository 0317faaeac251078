"""Runs from experiment logs: learning curves, a run's confusion matrix and per-class scores.

Metrics are read generically: every numeric key of an epoch record that starts with
``train_`` or ``val_`` is a metric (timings, ``*_seconds`` and ``*_per_second``, are
not), grouped by what follows the prefix ("loss", "accuracy", "macro_f1", ...), plus the
learning rate. Per-class values come from the end record: its confusion matrix (rows:
true class) gives precision, recall and F1, and any list of one number per class in it
(``per_class`` or a key naming precision, recall, f1 or roc_auc) is shown beside them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .page import label

SPLITS = ("train", "val")
_TIMING_SUFFIXES = ("_seconds", "_per_second")
_PER_CLASS_WORDS = ("precision", "recall", "f1", "roc_auc", "auc", "ap", "support")
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


@dataclass
class Run:
    """One experiment log: its start, epoch and end records."""

    name: str
    path: Path
    start: dict = field(default_factory=dict)
    epochs: list[dict] = field(default_factory=list)
    end: dict | None = None

    @property
    def config(self) -> dict:
        return self.start.get("config") or {}

    @property
    def result(self) -> dict:
        return (self.end or {}).get("result") or {}

    @property
    def state(self) -> str:
        """complete / pruned / failed (as a tune trial ends), finished, or unfinished."""
        if self.end is None:
            return "unfinished"
        return str(self.result.get("state", "finished"))

    def metric_keys(self) -> list[str]:
        keys: dict[str, None] = {}
        for record in self.epochs:
            for key, value in record.items():
                if key.startswith(("train_", "val_")) and not key.endswith(_TIMING_SUFFIXES) \
                        and _number(value) is not None:
                    keys[key] = None
        return list(keys)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        pairs = [(r.get("epoch"), _number(r.get(key))) for r in self.epochs]
        pairs = [(e, v) for e, v in pairs if e is not None and v is not None]
        return [e for e, _ in pairs], [v for _, v in pairs]

    def watched(self) -> str | None:
        """The metric that picks the best epoch: the config's first early-stopping metric,
        a tune trial's metric, or val_loss."""
        stopping = self.config.get("early_stopping")
        if isinstance(stopping, (list, tuple)) and stopping:
            return str(stopping[0])
        return self.config.get("metric") or ("val_loss" if "val_loss" in self.metric_keys() else None)

    def best_epoch(self) -> int | None:
        best = self.result.get("best_epoch")
        if isinstance(best, int) and not isinstance(best, bool):
            return best
        metric = self.watched()
        epochs, values = self.series(metric) if metric else ([], [])
        finite = [(v, e) for e, v in zip(epochs, values) if math.isfinite(v)]
        if not finite:
            return None
        pick = min if metric.endswith("loss") else max
        return pick(finite, key=lambda ve: ve[0])[1]

    def stopped_early(self) -> int | None:
        """The last epoch, when the run ended before its configured epochs (early stopping
        or pruning); None when it ran them all or has not ended."""
        if self.end is None or not self.epochs:
            return None
        flag = self.result.get("stopped_early")
        last = self.epochs[-1].get("epoch")
        planned = self.config.get("epochs")
        if flag is True or (flag is None and isinstance(planned, int) and isinstance(last, int) and last < planned):
            return last
        return None

    def class_names(self) -> list[str] | None:
        for source in (self.result, self.config):
            names = source.get("class_names")
            if isinstance(names, list) and names:
                return [str(n) for n in names]
        return None

    def confusion(self) -> np.ndarray | None:
        matrix = self.result.get("confusion")
        if matrix is None:
            return None
        try:
            matrix = np.asarray(matrix, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.size == 0 or not np.isfinite(matrix).all():
            return None
        return matrix


def load_runs(paths) -> list[Run]:
    """Runs from JSON-lines logs (files, or folders searched for ``*.jsonl``), in order."""
    from ..trainers.explog import read_log

    runs = []
    for path in _log_files(paths):
        records = read_log(path)
        start = next((r for r in records if r.get("event") == "start"), {})
        run = Run(name=str(start.get("run") or path.stem), path=path, start=start,
                  epochs=[r for r in records if r.get("event") == "epoch"],
                  end=next((r for r in reversed(records) if r.get("event") == "end"), None))
        if run.start or run.epochs or run.end:
            runs.append(run)
    return runs


def _log_files(paths) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        files += sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    seen: dict[Path, None] = {}
    for f in files:
        seen.setdefault(f.resolve(), None)
    return list(seen)


# -- figures ---------------------------------------------------------------------------------
def metric_groups(runs: list[Run]) -> list[str]:
    """Metric names after the split prefix, loss first, in order of appearance."""
    names: dict[str, None] = {}
    for run in runs:
        for key in run.metric_keys():
            names[key.split("_", 1)[1]] = None
    ordered = sorted(names, key=lambda n: (n != "loss", list(names).index(n)))
    return ordered


def learning_curves(runs: list[Run], *, visible: int = 12):
    """One subplot per metric (train dashed, val solid) and one for the learning rate;
    each run is one legend group (click to hide it everywhere). The best epoch is a star
    and a dotted line, an early stop a cross. Beyond ``visible`` runs, the rest start
    hidden (legend-only)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    groups = metric_groups(runs)
    has_lr = any(_number(r.get("lr")) is not None for run in runs for r in run.epochs)
    panels = groups + (["lr"] if has_lr else [])
    if not panels:
        return None
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.06 / max(1, len(panels) / 4),
                        subplot_titles=[_title(p) for p in panels])
    for index, run in enumerate(runs):
        color = PALETTE[index % len(PALETTE)]
        shown = True if index < visible else "legendonly"
        best, stop = run.best_epoch(), run.stopped_early()
        name = label(run.name) + ("" if run.state in ("finished", "complete") else f" ({run.state})")
        first = True
        for row, panel in enumerate(panels, start=1):
            keys = [("lr", "lr")] if panel == "lr" else [(s, f"{s}_{panel}") for s in SPLITS]
            values_here = []
            for split, key in keys:
                x, y = run.series(key)
                if not x:
                    continue
                values_here += y
                fig.add_trace(go.Scatter(
                    x=x, y=y, mode="lines+markers", name=name, legendgroup=run.name, showlegend=first,
                    visible=shown, line={"color": color, "dash": "dash" if split == "train" else "solid"},
                    marker={"size": 4}, hovertemplate=f"{label(run.name)}<br>{key}: %{{y:.4g}}<br>epoch %{{x}}"
                                                      "<extra></extra>"), row=row, col=1)
                first = False
                if split == "val" or panel == "lr":
                    for epoch, symbol, what in ((best, "star", "best epoch"), (stop, "x", "early stop")):
                        if epoch is not None and epoch in x:
                            fig.add_trace(go.Scatter(
                                x=[epoch], y=[y[x.index(epoch)]], mode="markers", legendgroup=run.name,
                                showlegend=False, visible=shown, name=what,
                                marker={"symbol": symbol, "size": 13 if symbol == "star" else 10, "color": color,
                                        "line": {"width": 1, "color": "#222"}},
                                hovertemplate=f"{label(run.name)}<br>{what}: epoch {epoch}<br>{key} %{{y:.4g}}"
                                              "<extra></extra>"), row=row, col=1)
            finite = [v for v in values_here if math.isfinite(v)]
            if best is not None and finite:
                fig.add_trace(go.Scatter(
                    x=[best, best], y=[min(finite), max(finite)], mode="lines", legendgroup=run.name,
                    showlegend=False, visible=shown, line={"color": color, "dash": "dot", "width": 1},
                    hoverinfo="skip"), row=row, col=1)
        if first:  # a run without any epoch: still in the legend, so it is seen
            fig.add_trace(go.Scatter(x=[], y=[], name=name + " (no epochs)", legendgroup=run.name), row=1, col=1)
    for row, panel in enumerate(panels, start=1):
        if panel == "lr":
            fig.update_yaxes(type="log", row=row, col=1, exponentformat="power")
    fig.update_xaxes(title_text="epoch", row=len(panels), col=1)
    fig.update_layout(height=230 * len(panels) + 120, template="plotly_white", hovermode="closest",
                      legend={"title": {"text": "runs (click to hide)"}}, margin={"t": 40, "r": 10})
    return fig


def confusion_figure(matrix: np.ndarray, names: list[str], title: str):
    import plotly.graph_objects as go

    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    names = _unique_labels(names)
    counts = matrix.astype(np.int64)
    fig = go.Figure(go.Heatmap(
        z=share, x=names, y=names, customdata=counts, colorscale="Blues", zmin=0, zmax=1,
        text=counts if len(names) <= 40 else None, texttemplate="%{text}" if len(names) <= 40 else None,
        colorbar={"title": {"text": "share of<br>true class"}},
        hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata} windows (%{z:.1%} of the row)<extra></extra>"))
    size = max(420, 34 * len(names) + 220)
    fig.update_layout(title={"text": title}, template="plotly_white", height=size, width=size + 120,
                      xaxis={"title": {"text": "predicted"}, "type": "category", "tickangle": -45},
                      yaxis={"title": {"text": "true"}, "type": "category", "autorange": "reversed"})
    return fig


def per_class_scores(run: Run, names: list[str]) -> dict[str, list[float]]:
    """Per-class precision/recall/F1/support from the confusion matrix, plus any per-class
    lists the end record carries (``per_class`` or keys naming precision, recall, f1,
    roc_auc...) with one value per class."""
    out: dict[str, list[float]] = {}
    matrix = run.confusion()
    if matrix is not None and matrix.shape[0] == len(names):
        tp = np.diag(matrix)
        predicted, actual = matrix.sum(0), matrix.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(predicted > 0, tp / predicted, np.nan)
            recall = np.where(actual > 0, tp / actual, np.nan)
            f1 = np.where(predicted + actual > 0, 2 * tp / (predicted + actual), np.nan)
        out.update(precision=precision.tolist(), recall=recall.tolist(), f1=f1.tolist(), support=actual.tolist())
    sources = dict(run.result)
    nested = sources.pop("per_class", None)
    if isinstance(nested, dict):
        sources.update({f"per_class {k}": v for k, v in nested.items()})
    for key, value in sources.items():
        if key == "confusion" or not isinstance(value, list) or len(value) != len(names):
            continue
        if not any(word in key.lower() for word in _PER_CLASS_WORDS):
            continue
        numbers = [_number(v) for v in value]
        if all(v is not None for v in numbers):
            out[key] = numbers
    return out


def per_class_figure(scores: dict[str, list[float]], names: list[str], title: str):
    import plotly.graph_objects as go

    fig = go.Figure()
    names = _unique_labels(names)
    for key, values in scores.items():
        if key == "support" or key.endswith("support"):
            continue
        fig.add_trace(go.Bar(x=names, y=[None if not math.isfinite(v) else v for v in values], name=label(key),
                             hovertemplate=f"%{{x}}<br>{label(key)} %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title={"text": title}, barmode="group", template="plotly_white", height=420,
                      yaxis={"range": [0, 1.02], "title": {"text": "score"}},
                      xaxis={"type": "category", "tickangle": -45})
    return fig


def _title(panel: str) -> str:
    return "learning rate" if panel == "lr" else label(panel.replace("_", " "))


def _unique_labels(names: list[str]) -> list[str]:
    """Escaped labels, made unique (a categorical axis merges equal names)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        text = label(name)
        if text in seen:
            seen[text] += 1
            text = f"{text} ({seen[text]})"
        else:
            seen[text] = 1
        out.append(text)
    return out


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def runs_table(runs: list[Run]) -> tuple[list[str], list[list], set[int]]:
    """Header, rows and numeric columns for the runs overview."""
    metrics = []
    for run in runs:
        for key in run.metric_keys():
            if key.startswith("val_") and key not in metrics:
                metrics.append(key)
    header = ["run", "state", "model", "epochs", "best epoch", "early stop"] + [f"best-epoch {m}" for m in metrics]
    rows = []
    for run in runs:
        best = run.best_epoch()
        record = next((r for r in run.epochs if r.get("epoch") == best), {})
        rows.append([run.name, run.state, run.config.get("model"), len(run.epochs), best, run.stopped_early()]
                    + [_number(record.get(m)) for m in metrics])
    return header, rows, {3, 4, 5} | set(range(6, 6 + len(metrics)))


def default_run(runs: list[Run]) -> Run | None:
    """The run a report details when none is named: the last one with a confusion matrix."""
    with_matrix = [r for r in runs if r.confusion() is not None]
    return with_matrix[-1] if with_matrix else (runs[-1] if runs else None)


def find_run(runs: list[Run], wanted: str | os.PathLike) -> Run | None:
    wanted = str(wanted)
    for run in runs:
        if wanted in (run.name, run.path.stem, run.path.name, str(run.path)):
            return run
    return None
