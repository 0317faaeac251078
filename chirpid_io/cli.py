"""The ``chirpid-io`` command. Each subcommand mirrors one function of the Python API, and
its options are made from that API's dataclasses and registries (``chirpid_io.options``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__
from .errors import ChirpIOError
from .options import add_no_progress
from .text import shown

EPILOG = """examples:
  chirpid-io build-cache --samples sample-cache      # the bundled recordings
  chirpid-io build-cache recordings/ my-cache        # one sub-folder per class
  chirpid-io build-cache train_metadata.csv my-cache --audio-root train_audio/ --preset birdclef
  chirpid-io build-cache table.csv my-cache --path-column file --label-column species
  chirpid-io build-cache recordings/ parts --part 0/2 & chirpid-io build-cache recordings/ parts --part 1/2
  chirpid-io merge-cache my-cache parts/part-*
  chirpid-io inspect my-cache --recipe > recipe.toml
  chirpid-io verify my-cache
  chirpid-io build-cache recordings/ s3://bucket/my-cache   # AWS_* variables give credentials and endpoint
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
    _add_merge(commands)
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
    from .export import add_export_parser  # issue 12: ONNX export for CPU-only serving
    add_export_parser(commands)
    return parser


def _add_build(commands) -> None:
    from .cache.format import STORES, StorageOptions, WaveformStorage
    from .config import PRESETS, SpectrogramConfig
    from .inputs import ALL_KINDS
    from .kernels import BACKENDS
    from .options import add_fields

    p = commands.add_parser(
        "build-cache", help="build (resume, or extend) a spectrogram cache from recordings",
        description=(
            "Decode recordings, cut them into windows, compute log-mel spectrograms and store them in a "
            "compressed Zarr v3 cache with Parquet tables. SOURCE is a folder with one sub-folder per class, a "
            "BirdCLEF metadata table (primary_label, secondary_labels, filename, author, ...), a CSV/Parquet "
            "table with path, label[, group] (or any table, naming its columns with --path-column etc.), the "
            "old ChirpID recording table (filename, class_id, author), or an old PNG/CSV spectrogram set "
            "(imported without recomputing). The recipe is a preset (--preset), changed by a recipe file "
            "(--recipe, as `inspect --recipe` prints it), changed by any flag below. Running the same command "
            "again resumes a killed build, does nothing on a finished one, and appends recordings added since."),
    )
    p.add_argument("paths", nargs="+", metavar="SOURCE OUT",
                   help="input, and the cache: a folder or an object-store URL (s3://bucket/prefix, gs://..., az://...; "
                        "credentials and endpoint from the standard environment variables) (only OUT with --samples)")
    p.add_argument("--samples", action="store_true",
                   help="use the bundled sample recordings as SOURCE (implies --pad-short; default: off)")
    inputs = p.add_argument_group("the input")
    inputs.add_argument("--audio-root", help="folder that a table's paths are relative to (default: the table's folder)")
    inputs.add_argument("--class-map", help="ChirpID class map (class_id, scientific_name), or a table of every class "
                                            "(a primary_label, label or class_name column, e.g. BirdCLEF's "
                                            "taxonomy.csv) (default: the classes found)")
    for role, meaning in (("path", "the recording's file"), ("label", "its class"),
                          ("group", "what splits keep together (recordist, site)"),
                          ("labels", "its other classes (a list, or names separated by spaces)")):
        inputs.add_argument(f"--{role}-column", metavar="NAME",
                            help=f"table column holding {meaning} (default: the input kind's own)")
    inputs.add_argument("--input-kind", choices=ALL_KINDS, help="read SOURCE as this kind (default: told by its "
                                                                "columns, or a folder)")
    inputs.add_argument("--allow-outside-root", action="store_true",
                        help="let a table list files outside the audio root (default: refused)")
    recipe = p.add_argument_group("the recipe (SpectrogramConfig)")
    recipe.add_argument("--preset", default="chirpid", choices=sorted(PRESETS),
                        help="named recipe to start from (default: chirpid, the old ChirpID recipe)")
    recipe.add_argument("--recipe", metavar="FILE", help="TOML/JSON recipe file, as `inspect --recipe` prints it (default: none, the preset alone)")
    add_fields(recipe, SpectrogramConfig, default_note="of the chirpid preset",
               helps={"hop_seconds": "seconds between window starts (less than the window: overlap; with "
                                     "--window-seconds alone: the window length)"})
    stores = p.add_argument_group("what to store")
    stores.add_argument("--store", choices=STORES,
                        help="spectrogram: the recipe's windows as log-mel images, for make_loader's fixed windows; "
                             "waveform: each recording's decoded mono audio as lossless int16, for random crops with "
                             "on-device features (make_loader(crop_seconds=...); train crops the recipe's window) (default: "
                             "spectrogram, or the kind of the cache at OUT)")
    add_fields(p.add_argument_group("spectrogram storage (StorageOptions)"), StorageOptions)
    add_fields(p.add_argument_group("waveform storage (WaveformStorage, with --store waveform)"), WaveformStorage,
               prefix="wave_")
    run = p.add_argument_group("the build")
    run.add_argument("--backend", default="auto", choices=("auto", *BACKENDS),
                     help="mel kernel (default: auto, the torch kernel: the only one whose GPU path a recorded GPU "
                          "run checked)")
    run.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    run.add_argument("--workers", type=int, help="decoding threads (default: CPU count; 0 decodes in the main thread)")
    run.add_argument("--max-per-class", type=int, help="at most this many windows per class, filled recording by "
                                                       "recording (default: no cap)")
    run.add_argument("--batch-size", type=int, default=32, help="windows per kernel call (default: 32)")
    run.add_argument("--part", metavar="I/N",
                     help="build part I of N (0-based) into OUT/part-III-of-NNN, the recordings whose path hashes "
                          "to it; join the parts with merge-cache (default: the whole input; under torchrun "
                          "RANK/WORLD_SIZE, in a SLURM array SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace an existing cache at OUT: the new one is built beside it and swapped in only "
                          "once complete; folders only, refused for an object-store URL (default: resume or extend OUT)")
    add_no_progress(run)
    p.set_defaults(run=_run_build)


def recipe_from_args(args, samples: bool = False):
    """(SpectrogramConfig, StorageOptions or None) from --preset, --recipe and the flags."""
    from .cache.format import StorageOptions
    from .config import SpectrogramConfig
    from .options import given
    from .recipes import build_recipe, load_recipe

    spectrogram, storage = given(args, SpectrogramConfig), given(args, StorageOptions)
    if args.recipe:
        config, stored = load_recipe(args.recipe)
        if args.preset != "chirpid":
            from .errors import ConfigError

            raise ConfigError("--recipe names its own preset (preset = ... in the file); leave --preset out")
        config, stored = build_recipe("chirpid", {**config.to_dict(), **spectrogram},
                                      {**stored.to_dict(), **storage})
    else:
        if "window_seconds" in spectrogram and "hop_seconds" not in spectrogram:
            spectrogram["hop_seconds"] = spectrogram["window_seconds"]  # no gaps, no overlap
        if samples:
            spectrogram.setdefault("pad_short", True)
        config, stored = build_recipe(args.preset, spectrogram, storage)
    explicit = bool(args.recipe or storage)
    from .cache.format import WaveformStorage

    waves = given(args, WaveformStorage, prefix="wave_") if hasattr(args, "wave_codec") else {}
    store = getattr(args, "store", None)
    if store == "waveform" or waves:
        from .errors import ConfigError

        if store != "waveform":
            raise ConfigError("--wave-* options set how a waveform cache is stored; add --store waveform")
        if storage:
            raise ConfigError(f"--{next(iter(storage)).replace('_', '-')} sets how spectrograms are stored; a "
                              "waveform cache takes the --wave-* options")
        return config, WaveformStorage(**waves) if waves else None
    return config, stored if explicit else None


def _run_build(args) -> int:
    from .cache import build_cache
    from .errors import BuildError
    from .inputs import ColumnMap, samples_dir

    if args.samples:
        if len(args.paths) != 1:
            raise SystemExit("chirpid-io build-cache: with --samples give only OUT")
        source, out = samples_dir(), args.paths[0]
    elif len(args.paths) != 2:
        raise SystemExit("chirpid-io build-cache: give SOURCE and OUT (or --samples OUT)")
    else:
        source, out = args.paths
    config, storage = recipe_from_args(args, samples=args.samples)
    part = _part(args.part)
    roles = {role: getattr(args, f"{role}_column") for role in ("path", "label", "group", "labels")}
    columns = None
    if any(roles.values()):
        defaults = ColumnMap()
        columns = ColumnMap(**{k: v if v is not None else getattr(defaults, k) for k, v in roles.items()})
    try:
        report = build_cache(
            source, out, config, backend=args.backend, device=args.device, workers=args.workers,
            max_per_class=args.max_per_class, batch_size=args.batch_size, storage=storage, store=args.store,
            audio_root=args.audio_root,
            class_map=args.class_map, columns=columns, kind=args.input_kind,
            allow_outside_root=args.allow_outside_root, overwrite=args.overwrite, part=part,
            progress=False if args.no_progress else None,
        )
    except BuildError as exc:
        if exc.report is not None:
            print("\n".join(exc.report.lines()))
        raise
    print("\n".join(report.lines()))
    return 0


def _part(text: str | None) -> tuple[int, int] | None:
    from .cache.build import part_from_env
    from .errors import ConfigError

    if text is None:
        return part_from_env()
    i, sep, n = text.partition("/")
    try:
        part = (int(i), int(n))
    except ValueError:
        part = None
    if not sep or part is None or not 0 <= part[0] < part[1]:
        raise ConfigError(f"--part {text!r}: give I/N with 0 <= I < N, e.g. --part 0/4")
    return part


def _add_merge(commands) -> None:
    p = commands.add_parser(
        "merge-cache", help="join the parts of a sharded build into one cache",
        description="Merge the part caches of `build-cache --part I/N` into OUT without recomputing anything: the "
                    "recordings in the order of the whole input, stored windows copied as they are, tables and "
                    "per-band statistics exactly those of a single build of the same input. Crash-safe: run the "
                    "same command again after a kill.")
    p.add_argument("out", metavar="OUT", help="the merged cache (new, or a merge to resume)")
    p.add_argument("parts", nargs="+", metavar="PART", help="the part folders (e.g. parts/part-*)")
    add_no_progress(p)
    p.set_defaults(run=_run_merge)


def _run_merge(args) -> int:
    from .cache.merge import merge_cache

    report = merge_cache(args.out, args.parts, progress=False if args.no_progress else None)
    print("\n".join(report.lines()))
    return 0


def _add_inspect(commands) -> None:
    p = commands.add_parser(
        "inspect", help="show a cache's recipe, counts per class, codecs and sizes",
        description="Show what a cache holds: its recipe and fingerprint, windows and recordings, windows per "
                    "class (as the primary label and as any label), the input's extra columns, codecs and bytes. "
                    "--recipe prints the recipe as a file that build-cache --recipe reads; --json the attributes.")
    p.add_argument("cache", help="cache folder or object-store URL (s3://bucket/prefix, gs://..., az://...)")
    shown_as = p.add_mutually_exclusive_group()
    shown_as.add_argument("--json", action="store_true", help="print the attributes as JSON (default: a summary)")
    shown_as.add_argument("--recipe", action="store_true",
                          help="print the recipe (TOML) that rebuilds this cache's fingerprint (default: a summary)")
    p.set_defaults(run=_run_inspect)


def _run_inspect(args) -> int:
    from .cache import open_cache
    from .recipes import recipe_text

    cache = open_cache(args.cache)
    if args.json:
        print(json.dumps(cache.attrs, indent=2))
        return 0
    if args.recipe:
        if cache.kind == "waveform":
            from .cache.format import StorageOptions

            w = cache.storage
            print(f"# a waveform cache: build it with --recipe FILE --store waveform --wave-codec {w.codec} "
                  f"--wave-chunk-seconds {w.chunk_seconds:g} --wave-shard-chunks {w.shard_chunks} --wave-level {w.level}")
            print(recipe_text(cache.config, StorageOptions()), end="")
        else:
            print(recipe_text(cache.config, cache.storage), end="")
        return 0
    counts = cache.attrs["counts"]
    size = cache.store.total_bytes()
    base = {"window_id", "recording_id", "path", "label", "class_name", "labels", "group", "start_seconds", "rms"}
    extra = [c for c in cache.windows.column_names if c not in base]
    where = "on disk" if cache.store.kind == "local" else "in the store"
    lines = [f"cache {shown(cache.path)} (format {cache.attrs['format_version']}, fingerprint {cache.fingerprint})"]
    if cache.kind == "waveform":
        _, samples = cache.wave_spans()
        hours = samples.sum() / cache.config.sample_rate / 3600
        w = cache.storage
        lines += [
            f"waveforms: {len(samples)} recordings, {hours:.3f} h of mono int16 audio at {cache.config.sample_rate} Hz, "
            f"in {len(cache)} chunks of {w.chunk_seconds:g} s",
            f"recordings: {counts['recordings']} ({counts['skipped_recordings']} skipped)",
            f"storage: {w.shard_chunks} chunks per shard file; codecs: " + ", ".join(_codec_names(cache)),
            f"size {where}: {size / 2**20:.2f} MiB ({size / max(hours, 1e-12) / 2**20:.1f} MiB per audio hour; int16 "
            f"PCM: {cache.config.sample_rate * 2 * 3600 / 2**20:.1f})",
            f"statistics from {cache.stats_windows} windows of the recipe"]
    else:
        lines += [
            f"windows: {len(cache)} x {cache.config.n_mels} mels x {cache.config.frames} frames, "
            f"{cache.config.storage_dtype}",
            f"recordings: {counts['recordings']} ({counts['skipped_recordings']} skipped)",
            f"storage: {cache.chunk_windows} window(s) per chunk, {cache.shard_windows} per shard file; codecs: "
            + ", ".join(_codec_names(cache)),
            f"size {where}: {size / 2**20:.2f} MiB ({size / max(len(cache), 1) / 1024:.1f} KiB per window)"]
    lines += [
        "recipe: " + ", ".join(f"{k}={v}" for k, v in cache.config.to_dict().items()),
        "input columns kept on each window: " + (", ".join(map(shown, extra)) if extra else "none"),
        f"{'chunks' if cache.kind == 'waveform' else 'windows'} per class (primary label, any label):",
    ]
    any_label = counts.get("per_class_any", {})
    lines += [f"  {shown(name):30s} {n:>7} {any_label.get(name, n):>7}" for name, n in counts["per_class"].items()]
    print("\n".join(lines))
    return 0


def _codec_names(cache) -> list[str]:
    """Each inner codec as ``name(setting=value, ...)``, from the cache's ``specs`` metadata."""
    from .cache import format as fmt

    meta = cache.layout.metadata(0)
    names = []
    for codec in meta["codecs"][0]["configuration"]["codecs"]:
        settings = ", ".join(f"{k}={v}" for k, v in (codec.get("configuration") or {}).items())
        names.append(f"{codec['name']}({settings})" if settings else codec["name"])
    return names


def _add_verify(commands) -> None:
    p = commands.add_parser(
        "verify", help="check a cache against its own claims (exit 1 on damage)",
        description="Read every chunk (each carries a CRC32C), recompute the per-band sums from every stored value "
                    "and compare them with the stored statistics, and check the metadata, the arrays and the tables "
                    "against each other: links, FIFOs, missing or truncated files, edited attributes, labels "
                    "outside the classes. Prints ok, or every finding with its file (exit 1).")
    p.add_argument("cache", help="cache folder or object-store URL (s3://bucket/prefix, gs://..., az://...)")
    add_no_progress(p)
    p.set_defaults(run=_run_verify)


def _run_verify(args) -> int:
    from .cache import verify_cache

    report = verify_cache(args.cache, progress=False if args.no_progress else None)
    if report.ok:
        print(f"{shown(report.path)}: ok ({report.chunks_checked} chunks checked)")
        return 0
    for problem in report.problems:
        print(f"{shown(report.path)}: {shown(problem)}", file=sys.stderr)
    print(f"{shown(report.path)}: {len(report.problems)} problem(s) found", file=sys.stderr)
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
        print(f"chirpid-io {args.command}: error: {shown(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"chirpid-io {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our output went away (`inspect --json | head`): stop quietly, as
        # cat does; point stdout at /dev/null so the interpreter's final flush is silent
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
