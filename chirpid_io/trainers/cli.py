"""The ``train`` and ``predict`` subcommands of ``chirpid-io`` (wired in ``chirpid_io.cli``).

    chirpid-io train CACHE REGISTRY [--model birdcnn] [--epochs 30] [--folds K] [--parallel N]
    chirpid-io predict REGISTRY AUDIO... [--name NAME] [--version latest|best|N] [--json]

``train`` without ``--folds`` holds out a grouped validation split, trains with one
progress line per epoch, and registers the best weights as the next version of
``--name``; with ``--folds K`` it cross-validates instead and prints per-fold, mean ± std
and pooled metrics (nothing is registered).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train a classifier on a cache and register it (or cross-validate with --folds)",
        description=(
            "Train a model on CACHE with a grouped train/validation split (no group on both "
            "sides), print one line per epoch, and store the best epoch's weights in the model "
            "registry REGISTRY with the cache's recipe, classes and normalisation. With --folds K, "
            "run grouped K-fold cross-validation and print its metrics instead."
        ),
    )
    p.add_argument("cache", help="cache folder (from build-cache)")
    p.add_argument("registry", help="model registry folder (created if missing)")
    p.add_argument("--name", help="registry name of the model (default: the cache folder's name)")
    p.add_argument("--model", default="birdcnn", choices=("birdcnn", "birdcnn_v5c"),
                   help="architecture (default birdcnn, small and fast; birdcnn_v5c: the old 8 M network)")
    p.add_argument("--width", type=int, help="birdcnn: channels of the first stage (default 16)")
    p.add_argument("--epochs", type=int, default=30, help="maximum epochs (default 30)")
    p.add_argument("--batch-size", type=int, default=64, help="windows per batch (default 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="weight decay (default 1e-4)")
    p.add_argument("--optimizer", default="adamw", choices=("adam", "adamw", "sgd"))
    p.add_argument("--schedule", default="cosine", choices=("cosine", "plateau", "onecycle", "none"))
    p.add_argument("--warmup-epochs", type=int, default=0, help="linear warm-up epochs before the cosine decay")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"),
                   help="mixed precision (default auto: bf16 or fp16 on CUDA, off on CPU)")
    p.add_argument("--grad-clip", type=float, help="clip the gradient norm to this")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--class-weights", default="balanced", choices=("balanced", "none"),
                   help="loss weights per class (default balanced)")
    p.add_argument("--early-stopping", default="val_loss,val_macro_f1",
                   help="metrics watched, comma-separated; the first picks the weights kept "
                        "(default val_loss,val_macro_f1)")
    p.add_argument("--patience", type=int, default=10,
                   help="stop after this many epochs without improvement in any watched metric (default 10)")
    p.add_argument("--no-augment", action="store_true", help="no SpecAugment masks")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share held out for validation (default 0.2)")
    p.add_argument("--group", default="group", help="cache column whose groups never straddle a split (default group)")
    p.add_argument("--folds", type=int, help="cross-validate with K grouped folds instead of training one model")
    p.add_argument("--parallel", type=int, default=1, help="with --folds: folds trained at once, in processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--workers", type=int, default=0, help="loader worker processes (default 0)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--checkpoint-dir", help="write a checkpoint here after every epoch")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir's checkpoint")
    p.add_argument("--log", help="JSON-lines experiment log (default: REGISTRY/runs/NAME-<time>.jsonl)")
    p.add_argument("--mlflow", action="store_true", help="also log to MLflow, when it is installed")
    p.add_argument("--tensorboard", metavar="DIR", help="also write TensorBoard event files to DIR, to watch "
                                                        "the run live (needs: pip install tensorboard)")
    p.add_argument("--no-report", action="store_true", help="do not write the run's HTML report and PNG plots "
                                                            "beside its log")
    p.set_defaults(run=train_command)
    return p


def add_predict_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict", help="classify recordings with a registered model",
        description=(
            "Window and featurise each recording exactly as the model's training cache was "
            "made, average the softmax over its windows, and print the label and confidence. "
            "A recording that cannot be read or has no usable window is reported, not fatal."
        ),
    )
    p.add_argument("registry", help="model registry folder")
    p.add_argument("audio", nargs="+", help="audio files (WAV, FLAC, OGG, MP3)")
    p.add_argument("--name", help="model name (default: the only one in the registry)")
    p.add_argument("--version", default="latest", help="latest, best, or a number (default latest)")
    p.add_argument("--metric", default="val_macro_f1", help="metric that --version best ranks by")
    p.add_argument("--batch-size", type=int, default=64, help="windows per model call (default 64)")
    p.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="one JSON object per recording, per line")
    p.set_defaults(run=predict_command)
    return p


def train_command(args) -> int:
    import time

    import torch

    from ..cache import open_cache
    from ..loaders import Augment, group_split, make_loader
    from .crossval import cross_validate
    from .explog import ExperimentLog, format_epoch
    from .loop import TrainConfig, fit
    from .models import build_model
    from .registry import ModelRegistry

    cache = open_cache(args.cache)
    name = args.name or Path(args.cache).resolve().name
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_kwargs = {"width": args.width} if args.width and args.model == "birdcnn" else {}
    model_fn = functools.partial(build_model, args.model, **model_kwargs)
    config = TrainConfig(
        epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay, optimizer=args.optimizer,
        schedule=args.schedule, warmup_epochs=args.warmup_epochs, amp=args.amp, channels_last=args.channels_last,
        compile=args.compile, grad_clip=args.grad_clip, label_smoothing=args.label_smoothing,
        class_weights=None if args.class_weights == "none" else "balanced",
        early_stopping=[m.strip() for m in args.early_stopping.split(",") if m.strip()],
        patience=args.patience, seed=args.seed, device=device, checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
    )
    augment = None if args.no_augment else Augment()
    log_path = Path(args.log) if args.log else Path(args.registry) / "runs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    print(f"training {args.model} on {cache} ({device}); log: {log_path}", flush=True)

    with ExperimentLog(log_path, run_name=name, mlflow=args.mlflow, echo=lambda line: print(line, flush=True),
                       tensorboard=args.tensorboard) as log:
        log.start({**config.to_dict(), "model": args.model, "model_kwargs": model_kwargs,
                   "batch_size": args.batch_size, "cache": str(cache.path), "fingerprint": cache.fingerprint,
                   "folds": args.folds, "augment": None if augment is None else augment.__dict__}, device=device)
        if args.folds:
            progress = None if args.parallel > 1 else (lambda r: print(f"fold {r['fold']}  " + format_epoch(r),
                                                                       flush=True))
            result = cross_validate(cache, model_fn, config, k=args.folds, group=args.group, parallel=args.parallel,
                                    batch_size=args.batch_size, seed=args.seed, augment=augment, device=device,
                                    log=progress)
            for fold in result.folds:
                m = fold["metrics"]
                print(f"fold {fold['fold']}: best epoch {fold['best_epoch']}, val_acc {m['val_accuracy']:.4f}, "
                      f"val_f1 {m['val_macro_f1']:.4f} ({fold['n_train']} train / {fold['n_val']} val windows)")
            for key in ("val_accuracy", "val_macro_f1", "val_loss"):
                print(f"{key}: {result.mean[key]:.4f} ± {result.std[key]:.4f}")
            print(f"pooled over folds: accuracy {result.pooled['accuracy']:.4f}, "
                  f"macro-F1 {result.pooled['macro_f1']:.4f}")
            log.end({"mean": result.mean, "std": result.std, "pooled": result.pooled,
                     "confusion": result.confusion, "folds": [{k: v for k, v in f.items() if k != "confusion"}
                                                             for f in result.folds]})
            _write_report(args, log_path, cache)  # every line of the log is flushed already
            return 0

        train_idx, val_idx = group_split(cache, args.val_fraction, group=args.group, seed=args.seed)
        train = make_loader(cache, args.batch_size, indices=train_idx, device=device, augment=augment,
                            seed=args.seed, num_workers=args.workers)
        val = make_loader(cache, args.batch_size, indices=val_idx, shuffle=False, device=device,
                          num_workers=args.workers)
        torch.manual_seed(args.seed)
        model = model_fn(len(cache.class_names))
        result = fit(model, train, val, config, log=log)
        metrics = {**{k: v for k, v in result.best_metrics.items() if isinstance(v, (int, float))},
                   "best_epoch": result.best_epoch, "n_train": int(len(train_idx)), "n_val": int(len(val_idx))}
        version = ModelRegistry(args.registry).save(
            result.model, name, cache=cache, metrics=metrics,
            extra={"train_config": config.to_dict(), "log": str(log_path)},
        )
        log.end({**metrics, "registered": f"{name} v{version}", "confusion": result.confusion,
                 "stopped_early": result.stopped_early, "class_names": list(cache.class_names)})
    _write_report(args, log_path, cache)
    print(f"best epoch {result.best_epoch}: val_acc {metrics.get('val_accuracy', float('nan')):.4f}, "
          f"val_f1 {metrics.get('val_macro_f1', float('nan')):.4f}; registered {name} v{version} in {args.registry}")
    return 0


def _write_report(args, log_path, cache) -> None:
    """The run's HTML report and PNG plots beside its log (issue 14)."""
    if args.no_report:
        return
    from ..report import write_run_report

    print("report: " + ", ".join(str(p) for p in write_run_report(log_path, cache=cache)), flush=True)


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


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry for trying the two subcommands before they are wired into
    ``chirpid-io`` (``python -m chirpid_io.trainers.cli train ...``)."""
    from ..errors import ChirpIOError

    parser = argparse.ArgumentParser(prog="chirpid-io")
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_parser(commands)
    add_predict_parser(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ChirpIOError as exc:
        print(f"chirpid-io {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
