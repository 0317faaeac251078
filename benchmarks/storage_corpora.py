"""Storage per corpus kind: the cache's codecs against the old PNG set, as a Markdown table.

    python benchmarks/storage_corpora.py [--minutes 1] [--ogg-seconds 120] [--hop-seconds 1]
        [--rounds 3] [--torch-threads N] [--reference] [--sweep] [--out table.md]

For each kind of real audio, the same windows (default recipe but a window every
``--hop-seconds``, so that little real audio gives many distinct windows; energy filter
on, as a build keeps them) are stored as the old path's PNG set (one 8-bit PNG per window,
truncated, Pillow, ``legacy_pixels``) and as a cache's ``specs`` with each candidate
codec (``chirpid_io.cache.shards``: the shard files a build writes, read the way
``Cache.read`` reads them). Reported: bytes per window on disk as ``du`` counts them (file
blocks) and as raw file sizes, both against the PNG set; random-batch reads (batches of
42 windows, 20 batches) and whole-set writes in windows/s; medians over ``--rounds``
rounds, the candidates interleaved within each round so that drift hits them alike; and
each codec's reads against the default's in the same round.

Corpus kinds (built in a temporary folder each run from real recordings; nothing is
downloaded):

- ``benchmark``: ``corpus.py``'s corpus (``--minutes`` of the bundled clips end to end at
  44.1 kHz, with noise) plus the bundled clips themselves.
- ``narrow-band 22.05 kHz``: the bundled great tit recordings (22.05 kHz), end to end at
  their own rate, so the recipe resamples them to 32 kHz and the top mel bands are flat.
- ``11.025 kHz``: every bundled WAV clip first downsampled to 11.025 kHz (no real bird
  audio at that rate is bundled), end to end; plus the one real 11.05 kHz recording of
  ``scripts/fetch_corpora.py`` when it has been fetched (``benchmarks/corpora``).
- ``44.1 kHz stereo OGG``: the bundled clips (and the fetched songs and soundscapes, when
  present) end to end at 44.1 kHz, ``--ogg-seconds`` long, a second channel delayed 10 ms
  at half level, written as OGG Vorbis in blocks (one huge Vorbis write crashes
  libsndfile).

``--sweep`` measures only the benchmark corpus, with the default against zstd levels 1, 9
and 19, 4 or 16 windows per chunk and 64 or 1024 windows per shard: why the default is
what it is.

``--reference`` adds lossless image codecs that are no cache option (imagecodecs, when
installed: JPEG-LS, JPEG XL at efforts 3 and 7), raw bytes per window and in-memory decode
windows/s, to show what the best known codecs reach on the same windows.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402

FETCHED = Path(__file__).resolve().parent / "corpora"  # scripts/fetch_corpora.py's default
BATCH, N_BATCHES = 42, 20
CANDIDATES = [  # (label, StorageOptions kwargs); the first is the default
    ("band+time (default)", {}),
    ("per-band predictor", {"delta": "per-band"}),
    ("band", {"delta": "band"}),
    ("none", {"delta": "none"}),
]
SWEEP = [  # --sweep: why the default's level, chunk and shard sizes (benchmark corpus only)
    ("band+time, zstd-1", {"level": 1}),
    ("band+time, zstd-9", {"level": 9}),
    ("band+time, zstd-19", {"level": 19}),
    ("none, zstd-19", {"delta": "none", "level": 19}),
    ("band+time, 4 windows per chunk", {"chunk_windows": 4}),
    ("band+time, 16 windows per chunk", {"chunk_windows": 16}),
    ("band+time, 64 windows per shard", {"shard_windows": 64}),
    ("band+time, 1024 windows per shard", {"shard_windows": 1024}),
]
NO_LONG_SOUNDSCAPE = ("No long real soundscape with a clear licence is reachable from PyPI, npm or Debian (the "
                      "longest real field recordings there are 10-15 s), so the OGG corpus is real clips end to end.")


@dataclass
class Corpus:
    name: str
    images: np.ndarray  #: (n, n_mels, frames) float32 in [0, 1], the recipe's output
    note: str


# --------------------------------------------------------------------------- corpora


HOP_SECONDS = [1.0]  #: set from --hop-seconds


def _windows(paths, pad_short: bool = False) -> np.ndarray:
    from chirpid_io.audio import load, windows
    from chirpid_io.config import SpectrogramConfig
    from chirpid_io.kernels import mel_spectrogram

    config = SpectrogramConfig().replace(pad_short=pad_short, hop_seconds=HOP_SECONDS[0])
    waves = [windows(load(p, config.sample_rate), config).samples for p in paths]
    waves = np.concatenate([w for w in waves if len(w)])
    return np.concatenate([mel_spectrogram(waves[i:i + 32], config).numpy() for i in range(0, len(waves), 32)])


def _end_to_end(paths, rate: int, seconds: float | None = None) -> np.ndarray:
    """The recordings at ``rate``, one after the other (repeated up to ``seconds``)."""
    from chirpid_io.audio import load

    clips = [load(p, rate) for p in paths]
    wave = np.concatenate(clips)
    if seconds is not None:
        wave = np.tile(wave, -(-int(seconds * rate) // len(wave)))[: int(seconds * rate)]
    return wave


def _fetched(*kinds: str) -> list[Path]:
    found = [p for kind in kinds for p in (FETCHED / kind).rglob("*") if p.suffix.lower() in (".wav", ".flac")]
    return sorted(found)


def build_corpora(work: Path, minutes: float, ogg_seconds: float, only_benchmark: bool = False) -> list[Corpus]:
    import soundfile as sf

    samples = corpus.sample_files()
    wav_clips = [p for p in samples if p.suffix.lower() == ".wav"]
    out = [Corpus("benchmark", np.concatenate([_windows(corpus.build_corpus(minutes)), _windows(samples, True)]),
                  f"{minutes:g} min of corpus.py's corpus + the bundled clips")]
    if only_benchmark:
        return out

    great_tits = sorted(corpus.SAMPLES.glob("great_tit/*.wav"))
    path = work / "narrowband-22050.wav"
    sf.write(path, _end_to_end(great_tits, 22_050), 22_050, subtype="PCM_16")
    out.append(Corpus("narrow-band 22.05 kHz", _windows([path]),
                      f"{len(great_tits)} bundled great tit recordings (22.05 kHz) end to end"))

    path = work / "downsampled-11025.wav"
    sf.write(path, _end_to_end(wav_clips, 11_025), 11_025, subtype="PCM_16")
    real11 = [p for p in _fetched("narrowband") if sf.info(str(p)).samplerate < 12_000]
    images = _windows([path])
    if real11:
        images = np.concatenate([images, _windows(real11, True)])
    out.append(Corpus("11.025 kHz", images, f"{len(wav_clips)} bundled WAV clips downsampled to 11.025 kHz "
                      f"end to end{' + the real 11.05 kHz recording' if real11 else ''}"))

    sources = wav_clips + _fetched("songs", "soundscapes")
    mono = _end_to_end(sources, 44_100, ogg_seconds)
    stereo = np.stack([mono, 0.5 * np.roll(mono, 441)], axis=1).astype(np.float32)
    path = work / "field.ogg"
    with sf.SoundFile(path, "w", 44_100, 2, format="OGG", subtype="VORBIS") as f:
        for start in range(0, len(stereo), 1 << 16):  # in blocks: one huge Vorbis write crashes libsndfile
            f.write(stereo[start:start + (1 << 16)])
    out.append(Corpus("44.1 kHz stereo OGG", _windows([path]),
                      f"{len(sources)} real clips end to end, {ogg_seconds:g} s, 44.1 kHz stereo OGG Vorbis"))
    return out


# --------------------------------------------------------------------------- measuring


def disk_bytes(root: Path) -> tuple[int, int]:
    """(file blocks as du counts them, raw file sizes) of every file under ``root``."""
    files = [p.stat() for p in root.rglob("*") if p.is_file()]
    return sum(s.st_blocks * 512 for s in files), sum(s.st_size for s in files)


def _plan(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.choice(n, min(BATCH, n), replace=False) for _ in range(N_BATCHES)]


def png_round(pixels: np.ndarray, folder: Path) -> dict:
    from PIL import Image

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i}.png")
    write = time.perf_counter() - start
    plan = _plan(len(pixels))
    start = time.perf_counter()
    for batch in plan:
        back = np.stack([np.asarray(Image.open(folder / f"{i}.png")) for i in batch])
    read = time.perf_counter() - start
    assert np.array_equal(back, pixels[plan[-1]])
    du, raw = disk_bytes(folder)
    return {"du": du, "raw": raw, "read": sum(map(len, plan)) / read, "write": len(pixels) / write}


def cache_round(data: np.ndarray, kwargs: dict, folder: Path) -> dict:
    """One candidate, one round: its shard files written as a build writes them, then
    random batches read as ``Cache.read`` reads them (sorted, each chunk once)."""
    from chirpid_io.cache import StorageOptions
    from chirpid_io.cache import format as fmt
    from chirpid_io.cache.files import LocalStore
    from chirpid_io.cache.shards import ShardCodec

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    options = StorageOptions(**kwargs)
    store = LocalStore(folder)
    start = time.perf_counter()
    store.write("specs/zarr.json", fmt.dumps(fmt.specs_metadata(len(data), data.shape[1:], "uint8", options)))
    codec = ShardCodec.create(store, data.shape[1:], "uint8", options)
    for first in range(0, len(data), options.shard_windows):
        codec.write_shard(first // options.shard_windows, data[first:first + options.shard_windows])
    write = time.perf_counter() - start
    plan = [np.sort(b) for b in _plan(len(data))]
    out = np.empty((BATCH, *data.shape[1:]), np.uint8)
    start = time.perf_counter()
    for batch in plan:
        codec.read_sorted(batch, out[: len(batch)])
    read = time.perf_counter() - start
    assert np.array_equal(out[: len(plan[-1])], data[plan[-1]])
    du, raw = disk_bytes(folder / "specs")
    return {"du": du, "raw": raw, "read": sum(map(len, plan)) / read, "write": len(data) / write}


def reference_codecs():
    """(label, encode, decode) of lossless image codecs for comparison, or [] without imagecodecs."""
    try:
        import imagecodecs as ic
    except ImportError:
        print("--reference: imagecodecs is not installed (pip install imagecodecs); skipped", file=sys.stderr)
        return []
    return [("JPEG-LS (reference, not a cache option)", ic.jpegls_encode, ic.jpegls_decode),
            ("JPEG XL lossless, effort 3 (reference)",
             lambda x: ic.jpegxl_encode(x, lossless=True, effort=3), ic.jpegxl_decode),
            ("JPEG XL lossless, effort 7 (reference)",
             lambda x: ic.jpegxl_encode(x, lossless=True, effort=7), ic.jpegxl_decode)]


def reference_round(data: np.ndarray, encode, decode) -> dict:
    start = time.perf_counter()
    blobs = [encode(x) for x in data]
    write = time.perf_counter() - start
    plan = _plan(len(data))
    start = time.perf_counter()
    for batch in plan:
        back = np.stack([np.asarray(decode(blobs[i])).reshape(data.shape[1:]) for i in batch])
    read = time.perf_counter() - start
    assert np.array_equal(back, data[plan[-1]])
    raw = sum(map(len, blobs))
    return {"du": None, "raw": raw, "read": sum(map(len, plan)) / read, "write": len(data) / write}


def measure_corpus(item: Corpus, work: Path, rounds: int, references, candidates=CANDIDATES) -> list[tuple[str, dict]]:
    from chirpid_io.kernels import to_storage
    from chirpid_io.legacy import legacy_pixels

    data = to_storage(item.images, "uint8")  # what a cache stores: rounded
    pixels = legacy_pixels(item.images)  # what the old path stored: truncated
    runs: dict[str, list[dict]] = {}
    for _ in range(rounds):
        runs.setdefault("png", []).append(png_round(pixels, work / "png"))
        for label, kwargs in candidates:
            runs.setdefault(label, []).append(cache_round(data, kwargs, work / "cache"))
        for label, encode, decode in references:
            runs.setdefault(label, []).append(reference_round(data, encode, decode))
    default = candidates[0][0]
    rows = []
    for label, results in runs.items():
        summary = {k: statistics.median(r[k] for r in results) for k in ("read", "write", "raw")}
        summary["du"] = results[-1]["du"]
        summary["read_vs_default"] = statistics.median(r["read"] / d["read"] for r, d in zip(results, runs[default]))
        rows.append((label, summary))
    return rows


def table(measured: list[tuple[Corpus, list]], rounds: int, threads: int) -> str:
    lines = ["| corpus | storage | KiB per window (du) | bytes vs PNG (du) | raw bytes vs PNG | "
             "random-batch read windows/s | read vs default | write windows/s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for item, rows in measured:
        n = len(item.images)
        png = dict(rows)["png"]
        for label, r in rows:
            name = "old path: 8-bit PNG per window" if label == "png" else label
            du = "" if r["du"] is None else f"{r['du'] / n / 1024:.1f}"
            du_ratio = "" if r["du"] is None else f"{r['du'] / png['du']:.3f}"
            vs = "" if label == "png" or r["du"] is None else f"{r['read_vs_default']:.2f}"
            lines.append(f"| {item.name} ({n}) | {name} | {du} | {du_ratio} | {r['raw'] / png['raw']:.3f} | "
                         f"{r['read']:.0f} | {vs} | {r['write']:.0f} |")
    lines += ["", "Corpora (windows kept by the default recipe's energy filter, in brackets above): "
              + "; ".join(f"{item.name}: {item.note}" for item, _ in measured) + ".",
              f"Windows every {HOP_SECONDS[0]:g} s; medians of {rounds} rounds; torch threads: {threads}. "
              f"{NO_LONG_SOUNDSCAPE}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0, help="minutes of corpus.py's corpus")
    parser.add_argument("--ogg-seconds", type=float, default=120.0, help="length of the OGG soundscape (s)")
    parser.add_argument("--hop-seconds", type=float, default=1.0, help="seconds between window starts")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement (medians)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads for the cache's decoding (default: torch's own choice)")
    parser.add_argument("--reference", action="store_true", help="add JPEG-LS and JPEG XL (needs imagecodecs)")
    parser.add_argument("--sweep", action="store_true",
                        help="only the benchmark corpus, with zstd levels, chunk and shard sizes around the default")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    HOP_SECONDS[0] = args.hop_seconds
    work = Path(tempfile.mkdtemp(prefix="storage-corpora-"))
    try:
        corpora = build_corpora(work, args.minutes, args.ogg_seconds, only_benchmark=args.sweep)
        references = reference_codecs() if args.reference else []
        candidates = CANDIDATES[:1] + SWEEP if args.sweep else CANDIDATES
        measured = []
        for item in corpora:
            measured.append((item, measure_corpus(item, work, args.rounds, references, candidates)))
            print(f"{item.name}: {len(item.images)} windows measured", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(measured, args.rounds, torch.get_num_threads())
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
