"""The ``chirpid-io`` command. Each subcommand mirrors one function of the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import ChirpIOError

EPILOG = """examples:
  chirpid-io build-cache --samples sample-cache      # the bundled recordings
  chirpid-io build-cache recordings/ my-cache        # one sub-folder per class
  chirpid-io build-cache train.csv my-cache --audio-root audio/ --max-per-class 100
  chirpid-io inspect my-cache
  chirpid-io verify my-cache
  chirpid-io train my-cache models/ --epochs 30
  chirpid-io predict models/ rec.wav --json
  chirpid-io tune my-cache search/ --trials 20 --jobs 2
  chirpid-io report models/runs my-cache search/ -o report.html
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chirpid-io",
        description=(
            "Audio feature extraction and data loading for bird-sound classifiers: turn "
            "recordings into a compressed log-mel spectrogram cache and feed it to training."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"chirpid-io {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    _add_build(commands)
    _add_inspect(commands)
    _add_verify(commands)
    from .trainers.cli import add_predict_parser, add_train_parser

    add_train_parser(commands)
    add_predict_parser(commands)
    # search and see (issue 14): hyperparameter search and the HTML report
    from .report.cli import add_report_parser
    from .trainers.tune import add_tune_parser

    add_tune_parser(commands)
    add_report_parser(commands)
    return parser


def _add_build(commands) -> None:
    p = commands.add_parser(
        "build-cache", help="build (resume, or extend) a spectrogram cache from recordings",
        description=(
            "Decode recordings, cut them into windows, compute log-mel spectrograms and store "
            "them in a compressed Zarr v3 cache with Parquet tables. SOURCE is a folder with one "
            "sub-folder per class, a ChirpID recording CSV (filename, class_id, author), a "
            "CSV/Parquet table with path, label[, group], or an old PNG/CSV spectrogram set "
            "(imported without recomputing). Running the same command again resumes a killed "
            "build, does nothing on a finished one, and appends recordings added since."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="SOURCE OUT", help="input and cache folder (only OUT with --samples)")
    p.add_argument("--samples", action="store_true", help="use the bundled sample recordings as SOURCE (implies --pad-short)")
    p.add_argument("--audio-root", help="folder that relative paths in a table resolve under (default: the table's folder)")
    p.add_argument("--class-map", help="ChirpID class map CSV (class_id, scientific_name, common_name)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "torchaudio", "dali"),
                   help="mel kernel (default auto: DALI on a GPU when installed, else torch)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--workers", type=int, help="decoding threads (default: CPU count; 0 decodes in the main thread)")
    p.add_argument("--window-seconds", type=float, default=5.0, help="window length in seconds (default 5)")
    p.add_argument("--hop-seconds", type=float, help="seconds between window starts (default: the window length, no overlap)")
    p.add_argument("--pad-short", action="store_true", help="zero-pad recordings shorter than one window instead of skipping them")
    p.add_argument("--energy-threshold", type=_threshold, default=0.75,
                   help="keep windows whose RMS exceeds this times the recording's mean frame RMS (default 0.75; 'none' keeps all)")
    p.add_argument("--max-per-class", type=int, help="at most this many windows per class, filled recording by recording")
    p.add_argument("--dtype", default="uint8", choices=("uint8", "float16"), help="storage type (default uint8, rounded)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per kernel call (default 32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it also hides itself when not on a terminal)")
    p.set_defaults(run=_run_build)


def _threshold(text: str):
    return None if text.lower() == "none" else float(text)


def _run_build(args) -> int:
    from .cache import build_cache
    from .config import SpectrogramConfig
    from .manifest import samples_dir

    if args.samples:
        if len(args.paths) != 1:
            raise SystemExit("chirpid-io build-cache: with --samples give only OUT")
        source, out = samples_dir(), args.paths[0]
    elif len(args.paths) != 2:
        raise SystemExit("chirpid-io build-cache: give SOURCE and OUT (or --samples OUT)")
    else:
        source, out = args.paths
    config = SpectrogramConfig(
        window_seconds=args.window_seconds,
        hop_seconds=args.hop_seconds or args.window_seconds,
        pad_short=args.pad_short or args.samples,
        energy_threshold=args.energy_threshold,
        storage_dtype=args.dtype,
    )
    report = build_cache(
        source, out, config, backend=args.backend, device=args.device, workers=args.workers,
        max_per_class=args.max_per_class, batch_size=args.batch_size, audio_root=args.audio_root,
        class_map=args.class_map, progress=False if args.no_progress else None,
    )
    print("\n".join(report.lines()))
    return 0


def _add_inspect(commands) -> None:
    p = commands.add_parser("inspect", help="show a cache's config, counts per class, codecs and sizes")
    p.add_argument("cache")
    p.add_argument("--json", action="store_true", help="print the attributes as JSON")
    p.set_defaults(run=_run_inspect)


def _run_inspect(args) -> int:
    from .cache import open_cache

    cache = open_cache(args.cache)
    if args.json:
        print(json.dumps(cache.attrs, indent=2))
        return 0
    counts = cache.attrs["counts"]
    size = sum(p.stat().st_size for p in Path(cache.path).rglob("*") if p.is_file())
    specs = cache.specs
    lines = [
        f"cache {cache.path} (format {cache.attrs['format_version']}, fingerprint {cache.fingerprint})",
        f"windows: {len(cache)} x {specs.shape[1]} mels x {specs.shape[2]} frames, {specs.dtype}",
        f"recordings: {counts['recordings']} ({counts['skipped_recordings']} skipped)",
        f"storage: {cache.chunk_windows} window(s) per chunk, {cache.shard_windows} per shard file; "
        f"codecs: {', '.join(_codec_names(specs))}",
        f"size on disk: {size / 2**20:.2f} MiB ({size / max(len(cache), 1) / 1024:.1f} KiB per window)",
        "config: " + ", ".join(f"{k}={v}" for k, v in cache.config.to_dict().items()),
        "windows per class:",
    ]
    lines += [f"  {name:30s} {n}" for name, n in counts["per_class"].items()]
    print("\n".join(lines))
    return 0


def _codec_names(array) -> list[str]:
    """Each inner codec as ``name(setting=value, ...)``, from its zarr metadata."""
    codecs = array.metadata.codecs
    inner = getattr(codecs[0], "codecs", codecs)  # inside the sharding codec
    names = []
    for codec in inner:
        spec = codec.to_dict()
        settings = ", ".join(f"{k}={v}" for k, v in (spec.get("configuration") or {}).items())
        names.append(f"{spec['name']}({settings})" if settings else spec["name"])
    return names


def _add_verify(commands) -> None:
    p = commands.add_parser("verify", help="check every chunk's checksum and the tables (exit 1 on damage)")
    p.add_argument("cache")
    p.set_defaults(run=_run_verify)


def _run_verify(args) -> int:
    from .cache import verify_cache

    report = verify_cache(args.cache)
    if report.ok:
        print(f"{report.path}: ok ({report.chunks_checked} chunks checked)")
        return 0
    for problem in report.problems:
        print(f"{report.path}: {problem}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except ChirpIOError as exc:
        print(f"chirpid-io {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"chirpid-io {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
