"""tune: hyperparameter search over a cache with Optuna, resumable and parallel.

    chirpid-io tune CACHE OUT [--space space.toml] [--trials 20] [--jobs 2]
    tune("my-cache", "search", trials=20, jobs=2)

Layout of OUT:

    OUT/study.db              the Optuna study (SQLite): every trial, its parameters, its
                              per-epoch values, its state
    OUT/runs/trial-NNNN.jsonl one experiment log per trial (the same records as ``train``)
    OUT/registry/             the best model so far, registered with its full settings
                              (``--registry DIR`` to register elsewhere)
    OUT/report.html           the study, its trials' learning curves and the cache

How it behaves:
- Sampling: TPE (multivariate, grouped, with the constant liar for parallel workers),
  seeded with ``seed + trial number``, so a sequential study is reproducible.
- Pruning: each epoch reports the study's metric (a name ``train`` prints, e.g.
  ``val_macro_f1``); the median pruner (or Hyperband) stops trials that trail.
- The metric is maximised, or minimised when its name ends in ``loss``. A trial's value
  is its best epoch's metric; fit keeps that epoch's weights.
- ``trials`` counts finished trials (complete or pruned) of the whole study, over every
  process: run the same command again after a crash and it continues where the study
  stands; start it twice (or with ``jobs`` > 1, or once per GPU with ``--device cuda:N``)
  and the processes share the work without exceeding the count. A lock file beside the
  study makes "count, then start a trial" atomic across processes.
- A process that dies (SIGKILL, power loss) stops sending its trial's heartbeat; once
  ``grace`` seconds have passed, the next process to look marks that trial failed and
  queues its parameters again (at most ``max_retries`` times), so the sampler's proposal
  is not lost and the trial count continues from the study's numbers. A trial stopped
  with Ctrl-C is queued again the same way. A trial that raises an error is recorded as
  failed and not retried; a process stops after ``max_failures`` failures in a row.
- Every trial validates on the same grouped split as ``train`` (no group on both sides).
- Whenever a trial beats every other finished trial, its model is registered as the next
  version of ``name``: the latest version is the best trial (checked again at the end).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import math
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import ChirpIOError, ConfigError
from ..options import add_no_progress
from .space import DEFAULT_SPACE_TOML, SearchSpace

STUDY_DB = "study.db"
PRUNERS = ("median", "hyperband", "none")
_SLOT_LOCK = ".trial-slot.lock"
_REGISTRY_LOCK = ".registry.lock"


@dataclass
class TuneConfig:
    """Settings of a search (every default here is the CLI's default).

    ``trials``: finished (complete + pruned) trials the study should hold. ``metric``: the
    epoch record's value to optimise. ``pruner``: "median", "hyperband" or "none";
    ``prune_startup_trials`` trials finish before the median pruner prunes any, and no
    trial is pruned in its first ``prune_warmup_epochs`` epochs. ``startup_trials``: random
    trials before TPE models the results. ``jobs``: worker processes on this machine.
    ``heartbeat``/``grace`` (seconds): how often a running trial reports it is alive, and
    how long after its last report it is taken for dead (default 3 x heartbeat).
    ``timeout`` (seconds): this process starts no trial after that. ``device``/``amp``: for
    every trial (None: CUDA when available / the space's ``train.amp``). ``name``: registry
    name (default: the cache folder's name); ``registry``: default OUT/registry.
    """

    trials: int = 20
    metric: str = "val_macro_f1"
    pruner: str = "median"
    startup_trials: int = 10
    prune_startup_trials: int = 3
    prune_warmup_epochs: int = 2
    jobs: int = 1
    study_name: str = "chirpid-io"
    val_fraction: float = 0.2
    group: str = "group"
    seed: int = 0
    device: str | None = None
    amp: str | None = None
    workers: int = 0
    timeout: float | None = None
    heartbeat: int = 10
    grace: int | None = None
    max_retries: int = 2
    max_failures: int = 5
    name: str | None = None
    registry: str | None = None
    tensorboard: str | None = None
    mlflow: bool = False
    report: bool = True

    def __post_init__(self) -> None:
        if self.pruner not in PRUNERS:
            raise ConfigError(f"TuneConfig.pruner must be one of {PRUNERS}, got {self.pruner!r}")
        for name in ("trials", "jobs", "heartbeat", "max_failures"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"TuneConfig.{name} must be a positive integer, got {value!r}")
        if self.grace is not None and self.grace < 1:
            raise ConfigError(f"TuneConfig.grace must be >= 1 second, got {self.grace!r}")
        if self.max_retries < 0 or self.startup_trials < 0 or self.prune_startup_trials < 0:
            raise ConfigError("TuneConfig.max_retries, startup_trials and prune_startup_trials must be >= 0")
        from .loop import TrainConfig

        # refuses a metric fit does not report, or an amp mode it does not know, before any trial
        TrainConfig(early_stopping=(self.metric,), **({} if self.amp is None else {"amp": self.amp}))

    @property
    def maximize(self) -> bool:
        return not self.metric.endswith("loss")


@dataclass
class TuneResult:
    """Where the study stands after ``tune``: finished trials (complete + pruned), the best
    trial, and the registered model (name, version) holding its weights."""

    storage: str
    study_name: str
    finished: int
    best_trial: int | None
    best_value: float | None
    best_params: dict
    registry: Path
    name: str
    version: int | None
    report: Path | None


# -- entry point ----------------------------------------------------------------------------
def tune(cache, out, space: SearchSpace | dict | str | os.PathLike | None = None,
         config: TuneConfig | None = None, *, enqueue: list[dict] | None = None, progress: bool | None = None,
         **options) -> TuneResult:
    """Search ``space`` (a SearchSpace, a dict, a TOML/JSON file; None: the default space)
    on ``cache`` (a path or an open Cache), storing the study in ``out/study.db``.

    ``config`` (a TuneConfig) or keyword ``options`` (its fields) set the search.
    ``enqueue``: parameter sets to try first (``{"train.lr": 3e-3, ...}``; ones already
    in the study are skipped). ``progress``: a bar over finished trials (None: only on a
    terminal). Runs until the study holds ``trials`` finished trials, or ``timeout``.
    """
    config = dataclasses.replace(config, **options) if config is not None else TuneConfig(**options)
    space = _as_space(space)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = Path(getattr(cache, "path", cache))
    job = _Job(cache_path=str(cache_path), out=str(out), space=space.to_dict(), space_source=space.source,
               config=dataclasses.asdict(config))
    study = job.open_study(enqueue=enqueue)  # creates or checks the study once, before any worker
    bar = _progress_bar(config.trials, _finished(study), progress)
    try:
        if config.jobs == 1:
            job.work(0, on_trial=lambda n: _advance(bar, n))
        else:
            _run_processes(job, config.jobs, study, bar)
    finally:
        if bar is not None:
            bar.close()
    return job.finish(study)


def _as_space(space) -> SearchSpace:
    if space is None:
        return SearchSpace.default()
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, dict):
        return SearchSpace.from_dict(space)
    return SearchSpace.load(space)


def _run_processes(job: "_Job", jobs: int, study, bar) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # torch and SQLite connections do not fork well
    workers = [context.Process(target=_worker_main, args=(job, i, jobs), name=f"tune-worker-{i}")
               for i in range(jobs)]
    for w in workers:
        w.start()
    try:
        while any(w.is_alive() for w in workers):
            _advance(bar, _finished(study))
            for w in workers:
                w.join(timeout=1.0 / jobs)
    except KeyboardInterrupt:
        for w in workers:
            w.join(timeout=30)  # they got the same Ctrl-C and queue their trials again
        raise
    _advance(bar, _finished(study))
    failed = [w for w in workers if w.exitcode != 0]
    if failed:
        raise ChirpIOError(f"{len(failed)} of {jobs} tune workers failed (exit codes "
                           f"{', '.join(str(w.exitcode) for w in failed)}); their errors are above. "
                           "Run the same command again to continue the study")


def _worker_main(job: "_Job", index: int, jobs: int) -> None:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))
    try:
        job.work(index)
    except ChirpIOError as exc:
        print(f"chirpid-io tune (worker {index}): error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


# -- one search process ---------------------------------------------------------------------
@dataclass
class _Job:
    """Everything a worker process needs, as plain data (it crosses a spawn)."""

    cache_path: str
    out: str
    space: dict
    space_source: str
    config: dict

    @property
    def cfg(self) -> TuneConfig:
        return TuneConfig(**self.config)

    @property
    def db(self) -> Path:
        return Path(self.out) / STUDY_DB

    @property
    def registry_root(self) -> Path:
        return Path(self.cfg.registry) if self.cfg.registry else Path(self.out) / "registry"

    def model_name(self, cache) -> str:
        return self.cfg.name or Path(cache.path).resolve().name

    # -- the study --------------------------------------------------------------------------
    def storage(self):
        optuna = _optuna()
        cfg = self.cfg
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback if hasattr(
            optuna.storages, "RetryHeartbeatStaleTrialCallback") else optuna.storages.RetryFailedTrialCallback
        # Optuna 5 renamed the stale-trial callback; 4.x calls it failed_trial_callback
        key = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in \
            optuna.storages.RDBStorage.__init__.__code__.co_varnames else "failed_trial_callback"
        with _quiet():
            return optuna.storages.RDBStorage(
                f"sqlite:///{self.db.resolve()}", heartbeat_interval=cfg.heartbeat,
                grace_period=cfg.grace or 3 * cfg.heartbeat, engine_kwargs={"connect_args": {"timeout": 120}},
                **{key: retry(max_retry=cfg.max_retries)})

    def open_study(self, enqueue: list[dict] | None = None):
        """Create the study, or load it and check it is the same search."""
        optuna = _optuna()
        from ..cache import open_cache

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        cfg = self.cfg
        cache = open_cache(self.cache_path)
        expected = {"metric": cfg.metric, "space": self.space, "cache_fingerprint": cache.fingerprint,
                    "group": cfg.group, "val_fraction": cfg.val_fraction, "seed": cfg.seed}
        with _Lock(Path(self.out) / _SLOT_LOCK):  # two commands starting at once create one study
            study = optuna.create_study(storage=self.storage(), study_name=cfg.study_name, load_if_exists=True,
                                        direction="maximize" if cfg.maximize else "minimize",
                                        sampler=self.sampler(0), pruner=self.pruner())
            stored = study.user_attrs
            if not stored:
                for key, value in expected.items():
                    study.set_user_attr(key, value)
                study.set_user_attr("cache", str(Path(self.cache_path).resolve()))
            else:
                differ = [k for k, v in expected.items() if stored.get(k) != v]
                if differ:
                    detail = "; ".join(f"{k}: {_short(stored.get(k))} in the study, {_short(expected[k])} now"
                                       for k in differ)
                    raise ConfigError(f"{self.db}: study {cfg.study_name!r} is another search ({detail}). "
                                      "Continue it with the same settings, or start a new one with another "
                                      "OUT folder or --study-name")
            for params in enqueue or []:
                study.enqueue_trial(params, skip_if_exists=True)
        return study

    def sampler(self, next_number: int):
        optuna = _optuna()
        with _quiet():
            return optuna.samplers.TPESampler(seed=self.cfg.seed + next_number, n_startup_trials=self.cfg.startup_trials,
                                              multivariate=True, group=True, constant_liar=True)

    def pruner(self):
        optuna = _optuna()
        cfg = self.cfg
        if cfg.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=cfg.prune_startup_trials,
                                               n_warmup_steps=cfg.prune_warmup_epochs)
        if cfg.pruner == "hyperband":
            from .loop import TrainConfig

            epochs = self.space.get("train", {}).get("epochs", TrainConfig.epochs)
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs if isinstance(epochs, int)
                                                  else "auto", reduction_factor=3)
        return optuna.pruners.NopPruner()

    # -- the loop ----------------------------------------------------------------------------
    def work(self, index: int, on_trial=None) -> None:
        """Run trials until the study holds ``trials`` finished ones (or ``timeout``)."""
        optuna = _optuna()
        import torch

        from ..cache import open_cache
        from ..loaders import group_split

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's outcome is printed below
        cfg = self.cfg
        space = SearchSpace.from_dict(self.space, source=self.space_source)
        cache = open_cache(self.cache_path)
        split = group_split(cache, cfg.val_fraction, group=cfg.group, seed=cfg.seed)
        device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        study = optuna.load_study(study_name=cfg.study_name, storage=self.storage(), pruner=self.pruner())
        slot = _Lock(Path(self.out) / _SLOT_LOCK)
        objective = _Objective(self, study, space, cache, split, device, slot)
        started, failures, done = time.monotonic(), 0, []
        while True:
            if cfg.timeout is not None and time.monotonic() - started > cfg.timeout:
                return
            slot.acquire()
            try:
                with _quiet():
                    optuna.storages.fail_stale_trials(study)  # a dead process's trial: failed, queued again
                states = _states(study)
                finished = states["COMPLETE"] + states["PRUNED"]
                if finished >= cfg.trials:
                    return
                if finished + states["RUNNING"] >= cfg.trials:
                    slot.release()  # the running trials may finish the study, or die: look again
                    time.sleep(min(1.0, cfg.heartbeat / 2))
                    continue
                study.sampler = self.sampler(len(study.get_trials(deepcopy=False)))
                done.clear()
                try:
                    with _quiet():
                        study.optimize(objective, n_trials=1, catch=(Exception,),
                                       callbacks=[lambda _study, trial: done.append(trial)])
                except KeyboardInterrupt:
                    objective.queue_interrupted()
                    raise
            finally:
                slot.release()
            trial = done[-1] if done else None
            if trial is not None and trial.state.name == "FAIL":
                failures += 1
                if failures >= cfg.max_failures:
                    raise ChirpIOError(f"{failures} trials in a row failed in this process; the last one "
                                       f"(trial {trial.number}): {trial.user_attrs.get('error', 'see above')}")
            else:
                failures = 0
            if on_trial is not None:
                on_trial(_finished(study))

    # -- the end ----------------------------------------------------------------------------
    def finish(self, study) -> TuneResult:
        """Make sure the best trial is the registry's latest version; write the report."""
        from ..cache import open_cache

        cfg = self.cfg
        cache = open_cache(self.cache_path)
        name = self.model_name(cache)
        optuna = _optuna()
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        best = study.best_trial if complete else None
        version = None
        if best is not None:
            tied = [t for t in complete if t.value == best.value]
            with _Lock(Path(self.out) / _REGISTRY_LOCK):
                version, number = _promote(self.registry_root, name, self.study_key, [t.number for t in tied])
            best = next((t for t in tied if t.number == number), best)  # the tied trial whose model is kept
            if version is not None:  # the report shows this trial, and says where its model is
                study.set_user_attr("registered", {"trial": best.number, "name": name, "version": version,
                                                   "registry": str(self.registry_root.resolve())})
        report = None
        if cfg.report:
            from ..report import build_report

            report = build_report([self.out], Path(self.out) / "report.html", cache=cache,
                                  title=f"chirpid-io tune: {cfg.study_name}")
        return TuneResult(storage=f"sqlite:///{self.db}", study_name=cfg.study_name, finished=_finished(study),
                          best_trial=None if best is None else best.number,
                          best_value=None if best is None else best.value,
                          best_params={} if best is None else dict(best.params),
                          registry=self.registry_root, name=name, version=version, report=report)

    @property
    def study_key(self) -> str:
        return f"{self.db.resolve()}#{self.cfg.study_name}"


class _Objective:
    """One trial: sample the settings, train with pruning, log, register a new best."""

    def __init__(self, job: _Job, study, space: SearchSpace, cache, split, device: str, slot: "_Lock"):
        self.job, self.study, self.space, self.cache = job, study, space, cache
        self.train_idx, self.val_idx = split
        self.device, self.slot = device, slot
        self.current = None

    def __call__(self, trial) -> float:
        self.slot.release()  # the trial exists in the study now: others may start theirs
        self.current = trial
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as exc:
            if not isinstance(exc, _optuna().TrialPruned):
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
                # a chirpid-io error names the fix; anything else is worth its traceback
                detail = "" if isinstance(exc, ChirpIOError) else "\n" + traceback.format_exc().rstrip()
                _echo(f"trial {trial.number}: failed: {type(exc).__name__}: {exc}{detail}")
            raise

    def _run(self, trial) -> float:
        optuna = _optuna()
        import torch

        from ..loaders import make_loader
        from .explog import ExperimentLog
        from .loop import fit
        from .models import build_model

        cfg = self.job.cfg
        base = {"device": self.device, "seed": cfg.seed}
        if cfg.amp is not None:  # the option beats the space's train.amp; unset, the space decides
            base["amp"] = cfg.amp
        if "early_stopping" not in self.space.fixed["train"]:
            base["early_stopping"] = (cfg.metric,)
        setup = self.space.sample(trial, base=base)
        number = trial.number
        retry_of = _retried_from(self.study, trial)
        log_path = Path(self.job.out) / "runs" / f"trial-{number:04d}.jsonl"
        tensorboard = Path(cfg.tensorboard) / f"trial-{number:04d}" if cfg.tensorboard else None
        trial.set_user_attr("log", str(log_path))
        trial.set_user_attr("pid", os.getpid())  # which process ran it (the report's timeline, the tests)
        started = time.perf_counter()
        with ExperimentLog(log_path, run_name=f"trial-{number}", mlflow=cfg.mlflow, tensorboard=tensorboard) as log:
            log.start({**setup.describe(), "cache": str(self.cache.path), "fingerprint": self.cache.fingerprint,
                       "class_names": list(self.cache.class_names), "study": cfg.study_name, "trial": number,
                       "params": dict(trial.params), "metric": cfg.metric, "retry_of": retry_of,
                       "n_train": int(len(self.train_idx)), "n_val": int(len(self.val_idx))}, device=self.device)
            train = make_loader(self.cache, setup.batch_size, indices=self.train_idx, device=self.device,
                                augment=setup.augment, seed=cfg.seed, num_workers=cfg.workers)
            val = make_loader(self.cache, setup.batch_size, indices=self.val_idx, shuffle=False,
                              device=self.device, num_workers=cfg.workers)
            torch.manual_seed(cfg.seed)
            model = build_model(setup.model, len(self.cache.class_names), **setup.model_kwargs)

            last_epoch = [0]

            def on_epoch(record: dict) -> None:
                log(record)
                last_epoch[0] = int(record["epoch"])
                value = record.get(cfg.metric)
                if not isinstance(value, (int, float)):
                    raise ConfigError(f"metric {cfg.metric!r} is not in the epoch records (they hold "
                                      f"{', '.join(k for k in record if k.startswith(('train_', 'val_')))})")
                trial.report(float(value), int(record["epoch"]))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {record['epoch']}")

            try:
                result = fit(model, train, val, setup.train, log=on_epoch)
            except optuna.TrialPruned:
                epochs = last_epoch[0]
                log.end({"state": "pruned", "epochs": epochs, "seconds": time.perf_counter() - started})
                _echo(f"trial {number}: pruned after epoch {epochs} ({time.perf_counter() - started:.1f} s)")
                raise
            except Exception as exc:
                log.end({"state": "failed", "error": f"{type(exc).__name__}: {exc}"})
                raise
            value = float(result.best_metrics.get(cfg.metric, math.nan))
            metrics = {**{k: v for k, v in result.best_metrics.items() if isinstance(v, (int, float))},
                       "best_epoch": result.best_epoch, "n_train": int(len(self.train_idx)),
                       "n_val": int(len(self.val_idx))}
            version = None
            if math.isfinite(value):
                version = self._register_if_best(trial, value, result, setup, metrics, log_path)
            name = self.job.model_name(self.cache)
            log.end({"state": "complete", "value": value, **metrics, "stopped_early": result.stopped_early,
                     "confusion": result.confusion, "class_names": list(self.cache.class_names),
                     "registered": None if version is None else f"{name} v{version}"})
        best = self._best_value(value)
        _echo(f"trial {number}: {cfg.metric} {value:.4f} (epoch {result.best_epoch} of {len(result.history)}, "
              f"{time.perf_counter() - started:.1f} s); best {best:.4f}"
              + (f"; registered {name} v{version}" if version else ""))
        return value

    def _best_value(self, mine: float) -> float:
        values = [t.value for t in self.study.get_trials(deepcopy=False) if t.value is not None] + [mine]
        values = [v for v in values if math.isfinite(v)]
        return (max if self.job.cfg.maximize else min)(values) if values else math.nan

    def _register_if_best(self, trial, value: float, result, setup, metrics: dict, log_path: Path) -> int | None:
        """Register this trial's model if it beats every complete trial and every model a
        live trial of this study registered; under a lock, so versions only improve."""
        from .registry import ModelRegistry

        cfg = self.job.cfg
        better = (lambda a, b: a > b) if cfg.maximize else (lambda a, b: a < b)
        name = self.job.model_name(self.cache)
        with _Lock(Path(self.job.out) / _REGISTRY_LOCK):
            registry = ModelRegistry(self.job.registry_root)
            states = {t.number: t.state.name for t in self.study.get_trials(deepcopy=False)}
            rivals = [t.value for t in self.study.get_trials(deepcopy=False)
                      if t.state.name == "COMPLETE" and t.value is not None]
            for version in registry.versions(name):
                tuned = registry.meta(name, version).get("tune") or {}
                if tuned.get("study") == self.job.study_key and states.get(tuned.get("trial")) in ("RUNNING",
                                                                                                    "COMPLETE"):
                    rivals.append(tuned["value"])
            if any(not better(value, r) for r in rivals if r is not None and math.isfinite(r)):
                return None
            return registry.save(result.model, name, cache=self.cache, metrics=metrics, extra={
                "train_config": setup.train.to_dict(), "model": setup.model, "batch_size": setup.batch_size,
                "augment": None if setup.augment is None else dataclasses.asdict(setup.augment),
                "log": str(log_path),
                "tune": {"study": self.job.study_key, "study_name": cfg.study_name, "trial": trial.number,
                         "metric": cfg.metric, "value": value, "params": dict(trial.params),
                         "storage": f"sqlite:///{self.job.db.resolve()}"},
            })

    def queue_interrupted(self) -> None:
        """Ctrl-C: queue the interrupted trial's parameters again, as a dead trial's are."""
        trial = self.current
        if trial is None:
            return
        try:
            frozen = self.study.get_trials(deepcopy=False)[trial.number]
            if frozen.state.name == "FAIL" and frozen.params:
                self.study.enqueue_trial(dict(frozen.params), user_attrs={"retry_of": trial.number})
        except Exception:  # interrupted while the storage was busy: the trial stays failed
            pass


def _promote(root: Path, name: str, study_key: str, best: list[int]) -> tuple[int | None, int | None]:
    """(version, trial): the registry version holding one of the ``best`` trials (equal
    best values; the one registered first wins, as registration needs a strict gain) of
    ``study_key``, re-saved as that study's latest version if a later version of the
    study sits above it (a trial that died after registering). (None, None) if none does."""
    from .registry import ModelRegistry

    registry = ModelRegistry(root)
    mine = [(v, registry.meta(name, v).get("tune") or {}) for v in registry.versions(name)]
    mine = [(v, t) for v, t in mine if t.get("study") == study_key]
    holding = [(v, t["trial"]) for v, t in mine if t.get("trial") in best]
    if not holding:
        return None, None
    trial = holding[0][1]
    version = max(v for v, t in holding if t == trial)  # its latest copy (after an earlier promotion)
    if mine[-1][0] == version:
        return version, trial
    entry = registry.load(name, version)
    extra = {k: entry.meta[k] for k in ("train_config", "model", "batch_size", "augment", "log", "tune")
             if k in entry.meta}
    return registry.save(entry.model, name, config=entry.config, cache_fingerprint=entry.meta.get("cache_fingerprint"),
                         class_names=entry.class_names, stats=entry.stats if entry.stats is not None else False,
                         metrics=entry.metrics, extra=extra), trial


# -- small helpers -------------------------------------------------------------------------------
class _Lock:
    """A blocking exclusive flock on ``path``; acquire/release are idempotent. The kernel
    drops it when the process dies, so a killed search never leaves it held."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._handle = None

    def acquire(self) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


@contextlib.contextmanager
def _quiet():
    """Silence Optuna's ExperimentalWarning for the long-standing APIs used here
    (heartbeats and their retry callback date from Optuna 2.8-2.9)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _optuna().exceptions.ExperimentalWarning)
        yield


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("tune needs Optuna: pip install 'optuna>=4.2'") from None
    return optuna


def _states(study) -> dict[str, int]:
    counts = {"COMPLETE": 0, "PRUNED": 0, "RUNNING": 0, "WAITING": 0, "FAIL": 0}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def _finished(study) -> int:
    states = _states(study)
    return states["COMPLETE"] + states["PRUNED"]


def _retried_from(study, trial) -> int | None:
    """The trial whose parameters this one runs again (a dead or interrupted trial), or None."""
    optuna = _optuna()
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
        optuna.storages.RetryFailedTrialCallback
    frozen = study.get_trials(deepcopy=False)[trial.number]  # numbers index the study's trials
    with _quiet():
        number = retry.retried_trial_number(frozen)
    return number if number is not None else frozen.user_attrs.get("retry_of")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _echo(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def _progress_bar(total: int, done: int, progress: bool | None):
    from tqdm import tqdm

    return tqdm(total=total, initial=min(done, total), unit="trial", desc="tune", dynamic_ncols=True,
                disable=None if progress is None else not progress)


def _advance(bar, finished: int) -> None:
    if bar is not None and finished > bar.n:
        bar.update(min(finished, bar.total) - bar.n)


# -- command line ----------------------------------------------------------------------------------
def _default(name: str):
    return TuneConfig.__dataclass_fields__[name].default


def add_tune_parser(subparsers):
    """The ``tune`` subcommand; defaults come from TuneConfig."""
    import argparse
    import textwrap

    p = subparsers.add_parser(
        "tune", help="search hyperparameters with Optuna (resumable, parallel) and register the best model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Search training settings on CACHE with Optuna (TPE sampling, pruning of weak trials on their "
            "per-epoch validation metric), storing the study in OUT/study.db. Running the same command "
            "again continues a stopped or killed search; several processes (--jobs, or several commands on "
            "the same OUT, e.g. one per GPU with --device cuda:N) share one study and finish --trials "
            "between them. Each trial is logged to OUT/runs/trial-NNNN.jsonl; each new best model is "
            "registered in OUT/registry (the latest version is the best trial); OUT/report.html shows the "
            "study at the end.", 88),
        epilog="\n\n".join(textwrap.fill(text, 88) for text in (
            "search space: a TOML or JSON file with sections [train] (TrainConfig fields), [model] (name and "
            "the model's arguments), [augment] (Augment fields) and [loader] (batch_size); a plain value is "
            "fixed, {low, high[, log, step]} or {choices} is searched. Print the default with --print-space.",
            "a killed process: its trial is marked failed once --grace seconds pass without a heartbeat, and "
            "its parameters are queued again (at most twice).",
            "TensorBoard: pip install tensorboard (included in chirpid-io[dev]), then --tensorboard DIR and "
            "`tensorboard --logdir DIR`.")),
    )
    p.add_argument("cache", nargs="?", help="cache folder (from build-cache)")
    p.add_argument("out", nargs="?", help="study folder: study.db, runs/, registry/, report.html (created if missing)")
    p.add_argument("--space", help="search space file, .toml or .json (default: the built-in space, see --print-space)")
    p.add_argument("--print-space", action="store_true", help="print the default search space as TOML and exit")
    p.add_argument("--trials", type=int, default=_default("trials"),
                   help=f"finished trials (complete + pruned) the study should hold, over all processes "
                        f"(default {_default('trials')})")
    p.add_argument("--jobs", type=int, default=_default("jobs"),
                   help=f"worker processes on this machine (default {_default('jobs')}); CPU threads are divided "
                        "between them")
    p.add_argument("--metric", default=_default("metric"),
                   help=f"epoch-record value to optimise, as train prints it (default {_default('metric')}; "
                        "minimised when it ends in 'loss', else maximised)")
    p.add_argument("--pruner", default=_default("pruner"), choices=PRUNERS,
                   help=f"stop weak trials early (default {_default('pruner')})")
    p.add_argument("--epochs", type=int, help="most epochs per trial (default: the space's train.epochs; "
                                               "20 in the default space)")
    p.add_argument("--study-name", default=_default("study_name"),
                   help=f"study name inside study.db (default {_default('study_name')})")
    p.add_argument("--registry", help="model registry for the best model (default OUT/registry)")
    p.add_argument("--name", help="registry name of the model (default: the cache folder's name)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    # no choices= here: they live in trainers.loop, which imports torch; TrainConfig checks the value
    p.add_argument("--amp", default=_default("amp"),
                   help="mixed precision, as TrainConfig.amp takes it (default: the space's train.amp, else "
                        "TrainConfig's default)")
    p.add_argument("--workers", type=int, default=_default("workers"),
                   help=f"loader worker processes per trial (default {_default('workers')})")
    p.add_argument("--val-fraction", type=float, default=_default("val_fraction"),
                   help=f"share held out for validation (default {_default('val_fraction')})")
    p.add_argument("--group", default=_default("group"),
                   help=f"cache column whose groups never straddle the split (default {_default('group')})")
    p.add_argument("--seed", type=int, default=_default("seed"), help=f"default {_default('seed')}")
    p.add_argument("--startup-trials", type=int, default=_default("startup_trials"),
                   help=f"random trials before TPE models the results (default {_default('startup_trials')})")
    p.add_argument("--timeout", type=float, help="seconds after which this process starts no new trial "
                                                 "(default: none)")
    p.add_argument("--heartbeat", type=int, default=_default("heartbeat"),
                   help=f"seconds between a running trial's heartbeats (default {_default('heartbeat')}); a trial "
                        "silent for 3 heartbeats (--grace) counts as dead and is queued again")
    p.add_argument("--grace", type=int, help="seconds without a heartbeat before a trial counts as dead "
                                             "(default 3 x --heartbeat)")
    p.add_argument("--tensorboard", help="also write TensorBoard event files, one folder per trial under DIR "
                                         "(needs: pip install tensorboard)")
    p.add_argument("--mlflow", action="store_true", help="also log to MLflow, when it is installed")
    p.add_argument("--no-report", action="store_true", help="do not write OUT/report.html at the end")
    add_no_progress(p)
    p.set_defaults(run=tune_command)
    return p


def tune_command(args) -> int:
    if args.print_space:
        print(DEFAULT_SPACE_TOML, end="")
        return 0
    if not args.cache or not args.out:
        raise ConfigError("give CACHE and OUT (or --print-space)")
    space = SearchSpace.load(args.space) if args.space else SearchSpace.default()
    if args.epochs is not None:
        space = space.with_fixed("train", "epochs", args.epochs)
    config = TuneConfig(
        trials=args.trials, metric=args.metric, pruner=args.pruner, startup_trials=args.startup_trials,
        jobs=args.jobs, study_name=args.study_name, val_fraction=args.val_fraction, group=args.group,
        seed=args.seed, device=args.device, amp=args.amp, workers=args.workers, timeout=args.timeout,
        heartbeat=args.heartbeat, grace=args.grace, name=args.name, registry=args.registry,
        tensorboard=args.tensorboard, mlflow=args.mlflow, report=not args.no_report,
    )
    print(f"tune: {config.trials} trials of {config.metric} on {args.cache}, study {Path(args.out) / STUDY_DB}",
          flush=True)
    result = tune(args.cache, args.out, space, config, progress=False if args.no_progress else None)
    if result.best_trial is None:
        print(f"study {result.study_name}: {result.finished} finished trials, none complete")
        return 1
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in result.best_params.items())
    print(f"study {result.study_name}: {result.finished} finished trials; best trial {result.best_trial}: "
          f"{config.metric} {result.best_value:.4f} ({params})")
    if result.version is not None:
        print(f"registered {result.name} v{result.version} in {result.registry}")
    if result.report is not None:
        print(f"report: {result.report}")
    return 0


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
