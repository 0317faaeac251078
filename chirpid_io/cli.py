"""The ``chirpid-io`` command. Each subcommand mirrors one function of the Python API."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chirpid-io",
        description=(
            "Audio feature extraction and data loading for bird-sound classifiers: turn "
            "recordings into a compressed log-mel spectrogram cache and feed it to training."
        ),
    )
    parser.add_argument("--version", action="version", version=f"chirpid-io {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
