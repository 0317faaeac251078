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

from ..options import add_fields, add_no_progress, given, parse_key_values


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    from ..loaders.augment import Augment
    from ..loaders.crops import WaveAugment
    from .loop import METRIC_NAMES, TrainConfig
    from .models import MODELS
    from .run import RunSpec

    p = subparsers.add_parser(
        "train", help="train a classifier on a cache and register it (or cross-validate with --folds)",
        description=(
            "Train a model on CACHE with a grouped train/validation split (no group on both sides), print one "
            "line per epoch (and a progress bar within each on a terminal), and store the best epoch's weights in "
            "the model registry REGISTRY with the cache's recipe, classes and normalisation. With --folds K, run "
            "grouped K-fold cross-validation and print its metrics instead. On a waveform cache (build-cache "
            "--store waveform) it trains on random crops, augmented as waveforms (--wave-*) and turned into mel "
            "images on the training device, and validates on the fixed windows predict cuts. Metrics: "
            + ", ".join(METRIC_NAMES)
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
    add_fields(p.add_argument_group("waveform augmentation of random crops (WaveAugment; waveform caches)"),
               WaveAugment, prefix="wave_")
    extra = p.add_argument_group("logging")
    extra.add_argument("--experiment-log", dest="log", metavar="FILE",
                       help="JSON-lines experiment log (default: REGISTRY/runs/NAME-<time>.jsonl; not --log, which "
                            "torchrun would take for its own --log-dir)")
    extra.add_argument("--mlflow", action="store_true", help="also log to MLflow, when it is installed (default: off)")
    extra.add_argument("--tensorboard", metavar="DIR", help="also write TensorBoard event files to DIR, to watch the "
                                                            "run live (needs: pip install tensorboard; default: none)")
    extra.add_argument("--no-report", action="store_true", help="do not write the run's HTML report and PNG plots "
                                                                "beside its log (default: written)")
    add_no_progress(extra, " within epochs")
    p.set_defaults(run=train_command)
    return p


def add_predict_parser(subparsers) -> argparse.ArgumentParser:
    from ..predict.engine import PredictOptions
    from ..predict.formats import FORMATS
    from .loop import METRIC_NAMES

    p = subparsers.add_parser(
        "predict", help="score every window of recordings with a registered model",
        description=(
            "Cut each recording into windows that cover all of it (the last zero-padded, flagged in the output), "
            "featurise them exactly as the model's training cache was made, and score them: a softmax for a "
            "single-label model, a sigmoid per species for a multi-label one. AUDIO_OR_FOLDER are audio files, "
            "folders of them (searched recursively) or tables with a path column. With --out, writes one row per "
            "window (predictions.parquet, and the formats of --format), recordings.parquet and errors.csv; a "
            "killed run started again with the same command continues where it stopped. Without --out, prints one "
            "line per recording (--json: one JSON object per line: recording, label, confidence, top, windows, "
            "duration_seconds, detections). Exit 0 when every recording was scored, 2 when some could not be "
            "read (their reasons are printed and in errors.csv), 1 on an error that stops the run."),
    )
    p.add_argument("registry", metavar="REGISTRY_OR_ONNX",
                   help="model registry folder, or a file written by `chirpid-io export` (served by onnxruntime, "
                        "without torch; --name, --version, --metric and --device do not apply to it)")
    p.add_argument("audio", nargs="+", metavar="AUDIO_OR_FOLDER",
                   help="audio files (WAV, FLAC, OGG, MP3, m4a, Opus, ...), folders, or tables of paths")
    p.add_argument("--out", help="folder for the per-window outputs (default: none, print a summary per recording)")
    p.add_argument("--format", default="parquet", help=f"outputs with --out, comma-separated, of {', '.join(FORMATS)} "
                                                       "(default: parquet; predictions.parquet is always written)")
    p.add_argument("--json", action="store_true", help="print each recording's summary as one JSON line "
                                                       "(default: a tab-separated line)")
    p.add_argument("--name", help="model name (default: the only one in the registry)")
    p.add_argument("--version", default="latest", help="latest, best, or a number (default: latest)")
    p.add_argument("--metric", default="val_macro_f1", choices=METRIC_NAMES,
                   help="metric that --version best ranks by (default: val_macro_f1)")
    p.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="start --out afresh instead of continuing it "
                                                            "(default: continue)")
    add_no_progress(p)
    add_fields(p.add_argument_group("windows and outputs (PredictOptions)"), PredictOptions)
    p.set_defaults(run=predict_command)
    return p


def train_command(args) -> int:
    from ..loaders.augment import Augment
    from .loop import TrainConfig
    from .run import RunSpec, train

    spec = RunSpec(**given(args, RunSpec), model_kwargs=parse_key_values(args.model_arg, "--model-arg"))
    config = TrainConfig(**given(args, TrainConfig))
    augment = Augment(**given(args, Augment))
    from ..loaders.crops import WaveAugment

    waves = given(args, WaveAugment, prefix="wave_")
    try:
        train(args.cache, args.registry, config, spec, augment, wave_augment=WaveAugment(**waves) if waves else None,
              log_path=args.log, mlflow=args.mlflow,
              tensorboard=args.tensorboard, report=not args.no_report, echo=lambda line: print(line, flush=True),
              progress=False if args.no_progress else None)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # joined under torchrun: leave it cleanly
            dist.destroy_process_group()
    return 0


def _scorer(args):
    """What scores the windows: an exported ONNX file (a file), else the registered model."""
    from pathlib import Path

    from ..errors import ConfigError
    from ..text import shown

    if Path(args.registry).is_file():
        from ..export import OnnxModel

        return OnnxModel(args.registry)
    from ..predict.scoring import TorchScorer
    from .registry import ModelRegistry

    registry = ModelRegistry(args.registry)
    name = args.name
    if name is None:
        names = registry.names()
        if len(names) != 1:
            raise ConfigError(f"{shown(args.registry)}: holds {len(names)} models ({', '.join(names) or 'none'}); "
                              "choose one with --name")
        name = names[0]
    version = args.version if args.version in ("latest", "best") else int(str(args.version).lstrip("v"))
    entry = registry.load(name, version, metric=args.metric, device=args.device)
    return TorchScorer(entry, device=args.device)


def predict_command(args) -> int:
    import shutil
    import tempfile

    from ..predict.engine import PredictOptions, predict
    from ..predict.sources import list_sources
    from ..text import shown

    scorer = _scorer(args)
    options = PredictOptions(**given(args, PredictOptions))
    out = args.out or tempfile.mkdtemp(prefix="chirpid-io-predict-")
    try:
        report = predict(scorer, list_sources(args.audio), out, options,
                         formats=[f.strip() for f in args.format.split(",") if f.strip()], overwrite=args.overwrite,
                         progress=False if args.no_progress else None)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    for summary in report.summaries:
        if args.json:
            print(json.dumps(summary))
        elif summary["label"] is None:
            print(f"{shown(summary['recording'])}\t-\t{summary.get('reason', '')}")
        else:
            print(f"{shown(summary['recording'])}\t{summary['label']}\t{summary['confidence']:.3f}")
    for failed, reason in report.failed:
        if args.json:
            print(json.dumps({"recording": failed, "label": None, "reason": reason}))
        else:
            print(f"{shown(failed)}\t-\tfailed: {shown(reason)}")
    if args.out is not None:
        import sys

        print("\n".join(report.lines()), file=sys.stderr)
    return 2 if report.failed else 0
