"""The tune section: a study's optimisation history, per-epoch values (pruning), parameter
importances, parallel coordinates, timeline (parallel workers) and its trials.

Parameter importances use Optuna's PED-ANOVA evaluator, which needs nothing beyond
numpy (f-ANOVA, Optuna 4's default, needs scikit-learn); with fewer than two complete
trials, or parameters that never varied, the section says so instead of a chart.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import ConfigError
from .page import Section


def open_study(path: str | Path, study_name: str | None = None):
    """The study in ``path`` (a study.db, or a tune folder holding one), read-only in
    spirit: nothing is written, and a missing file is refused rather than created."""
    import optuna

    path = Path(path)
    db = path / "study.db" if path.is_dir() else path
    if not db.is_file():
        raise ConfigError(f"{db}: no such study database (tune writes OUT/study.db)")
    with db.open("rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise ConfigError(f"{db}: not an SQLite database")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # skip_table_creation: a report never writes the schema (a tune starting now creates it)
    storage = optuna.storages.RDBStorage(f"sqlite:///{db.resolve()}", skip_table_creation=True)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if not names:
        raise ConfigError(f"{db}: holds no study")
    if study_name is None:
        study_name = names[0] if len(names) == 1 else None
        if study_name is None:
            raise ConfigError(f"{db}: holds studies {', '.join(names)}; choose one with --study-name")
    elif study_name not in names:
        raise ConfigError(f"{db}: no study {study_name!r} (it holds {', '.join(names)})")
    return optuna.load_study(study_name=study_name, storage=storage)


def add_study_section(section: Section, study) -> None:
    import optuna
    import optuna.visualization as vis

    trials = study.get_trials(deepcopy=False)
    metric = study.user_attrs.get("metric", "objective")
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no trials"
    direction = study.direction.name.lower()
    section.note(f"study {study.study_name}: {len(trials)} trials ({summary}); {direction} {metric}")
    if complete:
        best = best_trial(study)
        params = ", ".join(f"{k} = {_fmt(v)}" for k, v in best.params.items())
        section.note(f"best: trial {best.number}, {metric} {best.value:.4f}; {params}")
        registered = study.user_attrs.get("registered") or {}
        if registered.get("trial") == best.number:
            section.note(f"its model: {registered.get('name')} v{registered.get('version')} in "
                         f"{registered.get('registry')}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks several plots experimental
        plots = [("Optimisation history", lambda: vis.plot_optimization_history(study, target_name=metric), 1),
                 ("Per-epoch values (pruned trials stop early)",
                  lambda: vis.plot_intermediate_values(study), 1),
                 ("Parameter importances (PED-ANOVA)", lambda: _importances(study, metric), 2),
                 ("Parallel coordinates", lambda: vis.plot_parallel_coordinate(study, target_name=metric), 1),
                 ("Timeline (one row per trial; overlapping bars ran in parallel)",
                  lambda: vis.plot_timeline(study), 1)]
        for title, make, needed in plots:
            section.heading3(title)
            if len(complete) < needed:
                section.note(f"needs at least {needed} complete trial{'s' if needed > 1 else ''}")
                continue
            try:
                fig = make()
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                section.note(f"not available: {exc}")
                continue
            fig.update_layout(template="plotly_white", title=None, margin={"t": 30})
            section.figure(fig)
    rows = []
    for t in trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start \
            else None
        steps = max(t.intermediate_values) if t.intermediate_values else None
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
        rows.append([t.number, t.state.name.lower(), t.value, steps, seconds, params,
                     t.user_attrs.get("error", "")])
    section.heading3("Trials")
    section.table(["trial", "state", metric, "epochs", "seconds", "parameters", "error"], rows,
                  numeric={0, 2, 3, 4}, scroll=True)


def best_trial(study):
    """The best complete trial; among equal values, the one whose model tune registered."""
    best = study.best_trial
    registered = (study.user_attrs.get("registered") or {}).get("trial")
    if isinstance(registered, int) and 0 <= registered < len(study.trials):
        trial = study.trials[registered]
        if trial.state.name == "COMPLETE" and trial.value == best.value:
            return trial
    return best


def _importances(study, metric: str):
    import optuna
    import optuna.visualization as vis

    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    if not importances or not any(v > 0 for v in importances.values()):
        raise ValueError("no parameter varied enough between the complete trials to rank")
    return vis.plot_param_importances(study, evaluator=evaluator, target_name=metric)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
