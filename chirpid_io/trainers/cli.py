"""The ``train`` and ``predict`` subcommands of ``chirpid-io`` (wired in ``chirpid_io.cli``).

Their options are made from the API's dataclasses and registries: ``train`` from
:class:`~chirpid_io.trainers.run.RunSpec`, :class:`~chirpid_io.trainers.TrainConfig` and
:class:`~chirpid_io.loaders.Augment` (so ``chirpid-io train`` and ``train(...)``/
``fit(TrainConfig())`` share every default), the model choices from
``trainers.models.MODELS``.
"""

from __future__ import annotations

import argparse
import json

from ..options import add_fields, given, parse_key_values


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    from ..loaders.augment import Augment
    from .loop import METRIC_NAMES, TrainConfig
    from .models import MODELS
    from .run import RunSpec

    p = subparsers.add_parser(
        "train", help="train a classifier on a cache and register it (or cross-validate with --folds)",
        description=(
            "Train a model on CACHE with a grouped train/validation split (no group on both sides), print one "
            "line per epoch (and a progress bar within each on a terminal), and store the best epoch's weights in "
            "the model registry REGISTRY with the cache's recipe, classes and normalisation. With --folds K, run "
            "grouped K-fold cross-validation and print its metrics instead. Metrics: " + ", ".join(METRIC_NAMES)
            + ". The same run in Python: chirpid_io.trainers.train(cache, registry, TrainConfig(...), RunSpec(...))."
        ),
    )
    p.add_argument("cache", help="cache folder (from build-cache)")
    p.add_argument("registry", help="model registry folder (created if missing)")
    run = p.add_argument_group("the run (RunSpec)")
    add_fields(run, RunSpec, skip=("model_kwargs",), choices={"model": list(MODELS)})
    run.add_argument("--model-arg", action="append", metavar="KEY=VALUE", default=None,
                     help="a constructor argument of the model, e.g. width=8 (repeatable; checked against the "
                          "architecture; default: the architecture's own)")
    add_fields(p.add_argument_group("training (TrainConfig)"), TrainConfig, choices={"class_weights": ["balanced"]})
    add_fields(p.add_argument_group("augmentation of training batches (Augment)"), Augment,
               flags={"p": "mask_probability"})
    extra = p.add_argument_group("logging")
    extra.add_argument("--log", help="JSON-lines experiment log (default: REGISTRY/runs/NAME-<time>.jsonl)")
    extra.add_argument("--mlflow", action="store_true", help="also log to MLflow, when it is installed (default: off)")
    extra.add_argument("--tensorboard", metavar="DIR", help="also write TensorBoard event files to DIR, to watch the "
                                                            "run live (needs: pip install tensorboard; default: none)")
    extra.add_argument("--no-report", action="store_true", help="do not write the run's HTML report and PNG plots "
                                                                "beside its log (default: written)")
    extra.add_argument("--no-progress", action="store_true",
                       help="no progress bar within epochs (default: a bar on a terminal, none otherwise)")
    p.set_defaults(run=train_command)
    return p


def add_predict_parser(subparsers) -> argparse.ArgumentParser:
    from .loop import METRIC_NAMES

    p = subparsers.add_parser(
        "predict", help="classify recordings with a registered model",
        description=(
            "Window and featurise each recording exactly as the model's training cache was made, average the "
            "softmax over its windows, and print the label and confidence. A recording that cannot be read or has "
            "no usable window is reported, not fatal (exit 2 if any was)."
        ),
    )
    p.add_argument("registry", help="model registry folder")
    p.add_argument("audio", nargs="+", help="audio files (WAV, FLAC, OGG, MP3, m4a, Opus, ...)")
    p.add_argument("--name", help="model name (default: the only one in the registry)")
    p.add_argument("--version", default="latest", help="latest, best, or a number (default: latest)")
    p.add_argument("--metric", default="val_macro_f1", choices=METRIC_NAMES,
                   help="metric that --version best ranks by (default: val_macro_f1)")
    p.add_argument("--batch-size", type=int, default=64, help="windows per model call (default: 64)")
    p.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="one JSON object per recording, per line (default: off)")
    p.set_defaults(run=predict_command)
    return p


def train_command(args) -> int:
    from ..loaders.augment import Augment
    from .loop import TrainConfig
    from .run import RunSpec, train

    spec = RunSpec(**given(args, RunSpec), model_kwargs=parse_key_values(args.model_arg, "--model-arg"))
    config = TrainConfig(**given(args, TrainConfig))
    augment = Augment(**given(args, Augment))
    train(args.cache, args.registry, config, spec, augment, log_path=args.log, mlflow=args.mlflow,
          tensorboard=args.tensorboard, report=not args.no_report, echo=lambda line: print(line, flush=True),
          progress=False if args.no_progress else None)
    return 0


def predict_command(args) -> int:
    from ..errors import ConfigError
    from .inference import classify
    from .registry import ModelRegistry

    registry = ModelRegistry(args.registry)
    name = args.name
    if name is None:
        names = registry.names()
        if len(names) != 1:
            raise ConfigError(f"{args.registry}: holds {len(names)} models ({', '.join(names) or 'none'}); "
                              "choose one with --name")
        name = names[0]
    version = args.version if args.version in ("latest", "best") else int(args.version.lstrip("v"))
    entry = registry.load(name, version, metric=args.metric, device=args.device)
    results = classify(args.audio, entry, batch_size=args.batch_size, device=args.device)
    for result in results:
        if args.json:
            print(json.dumps(result.to_dict()))
        elif result.label is None:
            print(f"{result.source}\t-\tskipped: {result.reason}")
        else:
            print(f"{result.source}\t{result.label}\t{result.confidence:.3f}")
    return 0 if all(r.label is not None for r in results) else 2
