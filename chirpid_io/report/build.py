"""Assemble a report from what the user points at, and the report ``train`` writes.

Inputs are recognised by what they are:
- a ``.jsonl`` file: an experiment log (``train``'s, or a tune trial's);
- a folder holding ``zarr.json``: a cache;
- a ``study.db`` file, or a folder holding one (a tune OUT): the study, plus the trial
  logs in its ``runs/`` and, unless another cache is given, the cache it searched;
- a ``.json`` file with a ``benchmarks`` list, or a folder holding ``results.json``: the
  benchmark report;
- any other folder: the experiment logs found in it (``REGISTRY/runs``, say).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .page import Page


@dataclass
class Inputs:
    logs: list[Path] = field(default_factory=list)
    caches: list[Path] = field(default_factory=list)
    studies: list[Path] = field(default_factory=list)
    benches: list[Path] = field(default_factory=list)


def classify_inputs(paths) -> Inputs:
    found = Inputs()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ConfigError(f"{path}: no such file or folder")
        if path.is_dir():
            if (path / "zarr.json").is_file():
                found.caches.append(path)
            elif (path / "study.db").is_file():
                found.studies.append(path / "study.db")
                if (path / "runs").is_dir():
                    found.logs.append(path / "runs")
            elif (path / "results.json").is_file() and not any(path.glob("*.jsonl")):
                found.benches.append(path / "results.json")
            elif any(path.rglob("*.jsonl")):
                found.logs.append(path)
            else:
                raise ConfigError(f"{path}: a folder with no cache (zarr.json), study.db, results.json or "
                                  "experiment logs (*.jsonl) in it")
        elif path.suffix == ".jsonl":
            found.logs.append(path)
        elif path.suffix == ".db" or path.name == "study.db":
            found.studies.append(path)
        elif path.suffix == ".json":
            found.benches.append(path)
        else:
            raise ConfigError(f"{path}: not an experiment log (.jsonl), cache folder, study.db or benchmark "
                              "results.json")
    return found


def build_report(inputs, out: str | os.PathLike, *, cache=None, run: str | None = None,
                 study_name: str | None = None, title: str | None = None, gallery: int | None = None) -> Path:
    """Write one self-contained HTML report of ``inputs`` (paths, see the module doc) to
    ``out`` and return its path. ``cache``: an open Cache (or path) to show besides
    those in ``inputs``; ``run``: the run whose confusion matrix and per-class scores
    are shown (a run name or log file; default: a study's best trial, else the last run
    with a confusion matrix)."""
    from ..cache import open_cache
    from .bench import add_bench_section, load_results
    from .cache_view import GALLERY_PER_CLASS, add_cache_section
    from .runs import learning_curves, load_runs, runs_table
    from .study_view import add_study_section, open_study

    found = classify_inputs(inputs)
    studies = [open_study(p, study_name) for p in found.studies]
    caches = [] if cache is None else [cache if hasattr(cache, "windows") else open_cache(cache)]
    caches += [open_cache(p) for p in found.caches]
    if not caches:  # a study remembers the cache it searched
        for study in studies:
            stored = study.user_attrs.get("cache")
            if stored and (Path(stored) / "zarr.json").is_file():
                caches.append(open_cache(stored))
    runs = load_runs(found.logs)
    if not (runs or caches or studies or found.benches):
        raise ConfigError("nothing to report: give experiment logs, a cache, a tune folder or benchmark results")
    page = Page(title or "chirpid-io report")

    if studies:
        for study, path in zip(studies, found.studies):
            add_study_section(page.section(f"study-{len(page.sections)}", f"Tune study: {path}"), study)
    if runs:
        section = page.section("runs", "Learning curves" if len(runs) > 1 else f"Learning curves: {runs[0].name}")
        section.note(f"{len(runs)} run{'s' if len(runs) > 1 else ''} from the experiment logs. Solid lines: "
                     "validation, dashed: training; star and dotted line: the best epoch (the weights kept); "
                     "cross: stopped early (patience, or pruned). Hover for values; click a run in the legend "
                     "to hide or show it, double-click to show it alone.")
        fig = learning_curves(runs)
        if fig is not None:
            section.figure(fig)
        else:
            section.note("no epoch records in these logs")
        header, rows, numeric = runs_table(runs)
        section.table(header, rows, numeric=numeric, scroll=len(rows) > 12)
        chosen = _chosen_run(runs, run, studies)
        if chosen is not None:
            _add_run_detail(page, chosen, caches)
    for c in caches:
        add_cache_section(page.section(f"cache-{len(page.sections)}", f"Cache: {Path(c.path).name}"), c,
                          gallery=GALLERY_PER_CLASS if gallery is None else gallery)
    for path in found.benches:
        add_bench_section(page.section(f"bench-{len(page.sections)}", "Benchmarks"), load_results(path), str(path))
    return page.write(out)


def _chosen_run(runs, wanted, studies):
    from .runs import default_run, find_run

    if wanted is not None:
        chosen = find_run(runs, wanted)
        if chosen is None:
            raise ConfigError(f"--run {wanted!r}: no such run (runs: {', '.join(r.name for r in runs[:20])})")
        return chosen
    from .study_view import best_trial

    for study in studies:
        try:
            best = best_trial(study)
        except ValueError:
            continue
        log = best.user_attrs.get("log")
        chosen = find_run(runs, Path(log).stem) if log else None
        if chosen is not None:
            return chosen
    return default_run(runs)


def _add_run_detail(page: Page, run, caches) -> None:
    from .runs import confusion_figure, per_class_figure, per_class_scores

    section = page.section("run", f"Run: {run.name}")
    names = run.class_names()
    matrix = run.confusion()
    if names is None:
        cache = next((c for c in caches if str(Path(c.path).resolve()) == str(Path(run.config.get("cache", "")).resolve())),
                     caches[0] if caches else None)
        names = list(cache.class_names) if cache is not None else None
    if matrix is not None and (names is None or len(names) != matrix.shape[0]):
        names = [f"class {i}" for i in range(matrix.shape[0])]
    best = run.best_epoch()
    section.note(f"{run.path}: state {run.state}, {len(run.epochs)} epochs, best epoch {best}"
                 + (f", stopped early after epoch {run.stopped_early()}" if run.stopped_early() else ""))
    if matrix is None:
        section.note("this run's log has no confusion matrix (it ended before validation, or was pruned)")
        return
    section.figure(confusion_figure(matrix, names, f"validation confusion matrix at the best epoch ({int(matrix.sum())} "
                                                   "windows)"))
    scores = per_class_scores(run, names)
    if scores:
        section.figure(per_class_figure(scores, names, "per-class scores"))
        keys = list(scores)
        rows = [[names[i]] + [scores[k][i] for k in keys] for i in range(len(names))]
        section.table(["class"] + keys, rows, numeric=set(range(1, len(keys) + 1)), scroll=len(rows) > 15)


def write_run_report(log_path: str | os.PathLike, *, cache=None, png: bool = True) -> list[Path]:
    """The report ``train`` writes at the end of a run: ``<log>.html`` beside the log (the
    run's curves, confusion matrix, per-class scores and its cache) and, when matplotlib
    is installed and ``png``, ``<log>-history.png`` and ``<log>-confusion.png``."""
    from ..cache import open_cache
    from .runs import load_runs

    log_path = Path(log_path)
    if cache is not None and not hasattr(cache, "class_names"):
        cache = open_cache(cache)
    written = [build_report([log_path], log_path.with_suffix(".html"), cache=cache,
                            title=f"chirpid-io run: {log_path.stem}")]
    if not png:
        return written
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return written
    from ..trainers.explog import plot_confusion, plot_history

    written.append(plot_history(log_path, log_path.with_name(log_path.stem + "-history.png")))
    run = load_runs([log_path])[0]
    matrix = run.confusion()
    if matrix is not None:
        names = run.class_names() or (list(cache.class_names) if cache is not None else None)
        if names is None or len(names) != matrix.shape[0]:
            names = [f"class {i}" for i in range(matrix.shape[0])]
        written.append(plot_confusion(matrix, names, log_path.with_name(log_path.stem + "-confusion.png")))
    return written
