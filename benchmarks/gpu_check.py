"""One script for a CUDA machine: is every mel backend right there, and how fast is it?

    python benchmarks/gpu_check.py                     # all checks on cuda
    python benchmarks/gpu_check.py --only parity       # some checks
    python benchmarks/gpu_check.py --device cpu --batches 1,8   # smoke test without a GPU

Each check is a function registered with ``@check("name")`` that takes the run's
``Context`` and returns ``(data, markdown)``: the data goes into the JSON report
(``$OUT/gpu_check.json`` when OUT is set, or ``--json PATH``), the markdown is printed.
A check fails when its data says ``"ok": False`` or when it raises; the others still run,
and the exit status is 1 when any check failed. Checks: mel parity and throughput per
backend, host-to-device bandwidth (pinned vs pageable), loader throughput into device
memory by worker count (0, 2, 4, 8), random crops from a waveform cache with on-device
mel by worker count, stored differences undone on the device against the CPU, and
BirdCNNv5c step time in float32 against bf16. The whole run is sized to stay under ~4
minutes on an H100.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a bare checkout

from chirpid_io.config import SpectrogramConfig  # noqa: E402
from chirpid_io.kernels import mel_spectrogram  # noqa: E402

#: Largest max-abs difference from the float64 reference, in dB, that counts as correct.
PARITY_TOL_DB = 0.01
BACKENDS = ("torch", "torchaudio", "dali")


@dataclass
class Context:
    device: torch.device
    config: SpectrogramConfig
    batches: tuple[int, ...]
    repeats: int
    seed: int
    backends: tuple[str, ...] = field(default_factory=tuple)  # those that import here
    workers: tuple[int, ...] = (0, 2, 4, 8)  # loader worker counts timed


CHECKS: dict[str, Callable[[Context], tuple[dict, str]]] = {}


def check(name: str):
    """Register a check under ``name``; checks run in the order they are defined."""

    def register(fn):
        CHECKS[name] = fn
        return fn

    return register


# -- helpers ------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_signals(config: SpectrogramConfig, seed: int) -> dict[str, np.ndarray]:
    """Seeded noise at three levels and three linear chirps, (B, n_samples) float32 each."""
    rng = np.random.default_rng(seed)
    n, rate = config.n_samples, config.sample_rate
    t, duration = np.arange(n) / rate, n / rate
    noise = rng.standard_normal((3, n)) * np.array([[1.0], [0.05], [3.0]])
    sweeps = [(50.0, rate / 2 - 50.0), (rate / 2 - 1000.0, 200.0), (1000.0, 4000.0)]
    phases = [f0 * t + (f1 - f0) * t**2 / (2 * duration) for f0, f1 in sweeps]  # cycles
    chirps = np.sin(2 * np.pi * np.stack(phases))
    return {"noise": noise.astype(np.float32), "chirp": chirps.astype(np.float32)}


def clips_per_second(run: Callable[[], object], batch: int, device: torch.device, repeats: int,
                     budget_s: float = 4.0) -> float:
    """Median throughput of ``run`` (one batch per call) after two warm-up calls.

    Stops early, after at least three timed calls, once ``budget_s`` seconds are spent.
    """
    for _ in range(2):
        run()
    synchronize(device)
    times: list[float] = []
    while len(times) < repeats and (len(times) < 3 or sum(times) < budget_s):
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def device_info(device: torch.device) -> dict:
    info = {
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import torchaudio

        info["torchaudio"] = torchaudio.__version__
    except ImportError:
        info["torchaudio"] = None
    try:
        import nvidia.dali

        info["dali"] = nvidia.dali.__version__
    except ImportError:
        info["dali"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
    return info


def available_backends() -> tuple[str, ...]:
    names = ["torch"]
    try:
        import torchaudio  # noqa: F401

        names.append("torchaudio")
    except ImportError:
        pass
    try:
        import nvidia.dali  # noqa: F401

        names.append("dali")
    except ImportError:
        pass
    return tuple(names)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# -- checks -------------------------------------------------------------------------------


@check("parity")
def check_parity(ctx: Context) -> tuple[dict, str]:
    """Max abs dB difference of each backend on ``ctx.device`` from the float64 reference."""
    config = ctx.config.replace(scaling="db")
    data, rows = {}, []
    for kind, waves in make_signals(config, ctx.seed).items():
        expected = mel_spectrogram(waves, config, backend="reference").numpy()
        for backend in ctx.backends:
            try:
                with torch.inference_mode():
                    out = mel_spectrogram(waves, config, backend=backend, device=ctx.device)
            except Exception as exc:  # noqa: BLE001 - one broken backend must not hide the rest
                data[f"{backend}/{kind}"] = {"error": f"{type(exc).__name__}: {exc}", "ok": False}
                rows.append([backend, kind, "-", f"error: {type(exc).__name__}", "FAIL"])
                continue
            on_device = out.device.type == ctx.device.type
            error = float(np.abs(out.cpu().numpy() - expected).max())
            ok = on_device and error <= PARITY_TOL_DB
            data[f"{backend}/{kind}"] = {"max_abs_db": error, "device": str(out.device), "ok": ok}
            rows.append([backend, kind, str(out.device), f"{error:.2e}", "ok" if ok else "FAIL"])
    data["ok"] = all(entry["ok"] for entry in data.values())
    return data, markdown_table(["backend", "signal", "device", "max abs dB vs reference", ""], rows)


@check("mel_throughput")
def check_mel_throughput(ctx: Context) -> tuple[dict, str]:
    """Clips/s of each backend on ``ctx.device`` and of the torch backend on the CPU.

    Input: 5 s noise clips, already on the device for torch and torchaudio (what a
    prefetching loader hands over), on the host for DALI (which copies it in itself).
    """
    cpu = torch.device("cpu")
    rng = np.random.default_rng(ctx.seed)
    host = torch.from_numpy(rng.standard_normal((max(ctx.batches), ctx.config.n_samples), np.float32))
    resident = host.to(ctx.device)
    columns = [(backend, ctx.device) for backend in ctx.backends]
    if ctx.device.type != "cpu":
        columns.append(("torch", cpu))
    data: dict[str, dict] = {"clips_per_second": {}, "errors": {}}
    rows = []
    for batch in ctx.batches:
        row: dict[str, float | None] = {}
        for backend, device in columns:
            waves = (host if backend == "dali" or device.type == "cpu" else resident)[:batch]

            def run(waves=waves, backend=backend, device=device):
                with torch.inference_mode():
                    return mel_spectrogram(waves, ctx.config, backend=backend, device=device)

            key = f"{backend}@{device.type}"
            try:
                row[key] = clips_per_second(run, batch, device, ctx.repeats)
            except Exception as exc:  # noqa: BLE001 - keep timing the other backends
                row[key] = None
                data["errors"][f"{key}/{batch}"] = f"{type(exc).__name__}: {exc}"
        data["clips_per_second"][str(batch)] = row
        on_device = [row[f"{b}@{ctx.device.type}"] or 0.0 for b in ctx.backends]
        baseline = row["torch@cpu"]
        cells = ["error" if value is None else f"{value:,.0f}" for value in row.values()]
        rows.append([batch, *cells, f"{max(on_device) / baseline:.1f}x" if baseline else "-"])
        print(f"  batch {batch}: " + ", ".join(f"{k} {c}/s" for k, c in zip(row, cells)), flush=True)
    data["ok"] = not data["errors"]
    header = ["batch", *[f"{b} {d.type} (clips/s)" for b, d in columns], "best vs torch cpu"]
    return data, markdown_table(header, rows)


@check("batch_invariance")
def check_batch_invariance(ctx: Context) -> tuple[dict, str]:
    """Does a clip's image depend on the batch it was computed in? A resumed build puts
    clips in other batches than a clean one, so any difference shows up as stored values
    that differ between the two. Informational: reports how many uint8 values differ."""
    from chirpid_io.kernels import to_storage

    waves = torch.from_numpy(np.concatenate(list(make_signals(ctx.config, ctx.seed).values())))
    waves = waves.repeat(8, 1)[:32]  # 32 clips
    data, rows = {}, []
    for backend in ctx.backends:
        try:
            with torch.inference_mode():
                whole = mel_spectrogram(waves, ctx.config, backend=backend, device=ctx.device).cpu().numpy()
                split = np.concatenate([
                    mel_spectrogram(waves[i : i + 5], ctx.config, backend=backend, device=ctx.device).cpu().numpy()
                    for i in range(0, len(waves), 5)
                ])
        except Exception as exc:  # noqa: BLE001 - report the backend, keep the others
            data[backend] = {"error": f"{type(exc).__name__}: {exc}"}
            rows.append([backend, "error", "-", "-"])
            continue
        stored_diff = int((to_storage(whole, "uint8") != to_storage(split, "uint8")).sum())
        data[backend] = {"max_abs": float(np.abs(whole - split).max()), "uint8_values_differing": stored_diff,
                         "uint8_values": int(whole.size)}
        rows.append([backend, f"{data[backend]['max_abs']:.2e}", stored_diff, whole.size])
    return data, markdown_table(["backend", "max abs diff, batch 32 vs batches of 5 ([0, 1] images)",
                                 "uint8 values differing", "of"], rows)


@check("h2d_bandwidth")
def check_h2d_bandwidth(ctx: Context) -> tuple[dict, str]:
    """Host-to-device copy speed from pinned and from pageable memory (GB/s), for one
    loader batch (42 uint8 windows) and for 64 MB."""
    sizes = {"batch (42 x 224 x 313 uint8)": 42 * ctx.config.n_mels * ctx.config.frames, "64 MB": 64 << 20}
    data, rows = {}, []
    for label, nbytes in sizes.items():
        row = {}
        for kind in ("pageable", "pinned"):
            host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=(kind == "pinned" and ctx.device.type == "cuda"))
            host.fill_(1)
            seconds = median_seconds(lambda: host.to(ctx.device, non_blocking=True), ctx.device, ctx.repeats)
            row[kind] = nbytes / seconds / 1e9
        data[label] = row
        rows.append([label, f"{row['pageable']:.1f}", f"{row['pinned']:.1f}", f"{row['pinned'] / row['pageable']:.1f}x"])
    return data, markdown_table(["transfer", "pageable GB/s", "pinned GB/s", "pinned / pageable"], rows)


def loader_rates(ctx: Context, data: dict, rows: list, label: str, make) -> None:
    """Windows/s of ``make(workers)``'s loader (batches of 42) for each of ``ctx.workers``,
    after a warm-up epoch (workers started, chunks in the page cache)."""
    for workers in ctx.workers:
        loader = make(workers)
        for _ in loader:
            pass

        def epoch(loader=loader):
            return sum(len(y) for _, y in loader)

        seconds = median_seconds(epoch, ctx.device, max(3, ctx.repeats // 2))
        rate = len(loader) * 42 / seconds
        data[f"{label}/{workers} workers"] = rate
        rows.append([f"{label}, {workers} workers", f"{rate:,.0f}"])


@check("loader_throughput")
def check_loader_throughput(ctx: Context) -> tuple[dict, str]:
    """Windows/s from a cache on local disk into normalised, augmented batches in device
    memory (make_loader), against the same windows read as old PNG files (legacy_loader,
    then copied to the device). The cache holds seeded noise windows: reading cost does not
    depend on what the windows show."""
    import tempfile

    from chirpid_io.cache import build_cache, open_cache
    from chirpid_io.loaders import Augment, make_loader

    work = Path(tempfile.mkdtemp())
    config = ctx.config.replace(energy_threshold=None)
    write_noise_recordings(work / "audio", config, ctx.seed, classes=4, seconds=150)
    build_cache(work / "audio", work / "cache", config, device=str(ctx.device), progress=False)
    cache = open_cache(work / "cache")
    data, rows = {"windows": len(cache)}, []
    rng = np.random.default_rng(ctx.seed)
    plan = [rng.choice(len(cache), 42, replace=False) for _ in range(20)]
    seconds = median_seconds(lambda: [cache.read(b) for b in plan], torch.device("cpu"), 5)
    data["Cache.read"] = rate = 20 * 42 / seconds
    rows.append(["Cache.read, random batches of 42", f"{rate:,.0f} (host memory)"])
    loader_rates(ctx, data, rows, "make_loader", lambda workers: make_loader(
        cache, 42, device=ctx.device, num_workers=workers, augment=Augment(), drop_last=True))
    return data, markdown_table(["loader", "windows/s into device memory"], rows)


@check("crops")
def check_crops(ctx: Context) -> tuple[dict, str]:
    """Random 5 s crops from a waveform cache (FLAC chunks) into normalised, augmented mel
    batches in device memory, by worker count; and the crop mel on the device against the
    CPU's for the same samples (stored uint8 levels that differ)."""
    import tempfile

    from chirpid_io.audio import from_int16
    from chirpid_io.cache import build_cache, open_cache
    from chirpid_io.cache.format import WaveformStorage
    from chirpid_io.kernels import mel_spectrogram, to_storage
    from chirpid_io.loaders import Augment, make_loader
    from chirpid_io.loaders.crops import WaveAugment

    work = Path(tempfile.mkdtemp())
    config = ctx.config.replace(energy_threshold=None)
    write_noise_recordings(work / "audio", config, ctx.seed, classes=4, seconds=150)
    build_cache(work / "audio", work / "waves", config, storage=WaveformStorage(), device=str(ctx.device),
                progress=False)
    cache = open_cache(work / "waves")
    data, rows = {"audio_seconds": float(cache.wave_spans()[1].sum() / config.sample_rate)}, []
    rows_int16 = cache.read(np.arange(min(len(cache), 40)))
    waves = from_int16(rows_int16.reshape(-1)[: 8 * config.n_samples].reshape(8, -1))
    here = to_storage(mel_spectrogram(waves, config, device=ctx.device).cpu().numpy(), config.storage_dtype)
    cpu = to_storage(mel_spectrogram(waves, config, device="cpu").numpy(), config.storage_dtype)
    gap = np.abs(here.astype(np.int16) - cpu.astype(np.int16))
    data["mel_levels_differing"], data["mel_max_level_gap"] = float((gap > 0).mean()), int(gap.max())
    data["ok"] = bool(gap.max() <= 1)
    rows.append(["crop mel on the device vs the CPU", f"{(gap > 0).mean():.2e} of levels differ, max {gap.max()}"])
    loader_rates(ctx, data, rows, "make_loader crops", lambda workers: make_loader(
        cache, 42, device=ctx.device, num_workers=workers, augment=Augment(), drop_last=True,
        crop_weighting="duration", wave_augment=WaveAugment(gain_db=6, mixup_alpha=0.4)))
    return data, markdown_table(["crops (5 s, waveform mixup and gain, SpecAugment)", "crops/s into device memory"],
                                rows)


@check("residuals")
def check_residuals(ctx: Context) -> tuple[dict, str]:
    """Stored differences undone on the device (the loader's GPU path) against the CPU's
    decode, for each delta setting: bit for bit."""
    import tempfile

    from chirpid_io.cache import build_cache, open_cache
    from chirpid_io.cache.format import DELTAS, StorageOptions

    work = Path(tempfile.mkdtemp())
    config = ctx.config.replace(energy_threshold=None)
    write_noise_recordings(work / "audio", config, ctx.seed, classes=1, seconds=30)
    data, rows, ok = {}, [], True
    for delta in DELTAS:
        build_cache(work / "audio", work / delta, config, storage=StorageOptions(delta=delta), progress=False,
                    device=str(ctx.device))
        cache = open_cache(work / delta)
        index = np.arange(len(cache))
        plain = cache.read(index)
        stored = torch.from_numpy(cache.read(index, residuals=True)).to(ctx.device)
        undone = cache.undo_residuals(stored).to(torch.uint8).cpu().numpy() if delta != "none" else plain
        same = bool(np.array_equal(undone, plain))
        ok &= same
        data[delta] = same
        rows.append([delta, "bit-exact" if same else "DIFFERS"])
    data["ok"] = ok
    return data, markdown_table(["delta", f"undone on {ctx.device.type} vs read on the CPU"], rows)


@check("train_step")
def check_train_step(ctx: Context) -> tuple[dict, str]:
    """BirdCNNv5c training step time at batch 42 (1 x 224 x 313): float32 against bf16
    autocast, channels_last on CUDA (on a CPU smoke test, the small BirdCNN)."""
    from chirpid_io.trainers.models import BirdCNN, BirdCNNv5c

    model_cls = BirdCNNv5c if ctx.device.type == "cuda" else BirdCNN
    x = torch.randn(42, 1, ctx.config.n_mels, ctx.config.frames, device=ctx.device)
    y = torch.randint(0, 33, (42,), device=ctx.device)
    data, rows = {"model": model_cls.__name__}, []
    for precision in ("fp32", "bf16"):
        torch.manual_seed(ctx.seed)
        model = model_cls(n_classes=33).to(ctx.device)
        if ctx.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step(model=model, optimizer=optimizer, precision=precision):
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        for _ in range(3):
            step()
        seconds = median_seconds(step, ctx.device, ctx.repeats)
        data[precision] = {"ms_per_step": seconds * 1e3, "windows_per_s": 42 / seconds}
        rows.append([precision, f"{seconds * 1e3:.1f}", f"{42 / seconds:,.0f}"])
    data["bf16_speedup"] = data["fp32"]["ms_per_step"] / data["bf16"]["ms_per_step"]
    return data, markdown_table([f"{model_cls.__name__} step", "ms", "windows/s"], rows)


def write_noise_recordings(root: Path, config: SpectrogramConfig, seed: int, classes: int, seconds: int) -> None:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for r in range(2):
            wave = (0.1 * rng.standard_normal(seconds * config.sample_rate)).astype(np.float32)
            sf.write(root / f"class{c}" / f"rec{r}.wav", wave, config.sample_rate)


def median_seconds(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- driver -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--only", default="", help=f"comma-separated checks, of: {', '.join(CHECKS)}")
    parser.add_argument("--batches", default="1,8,64,256", help="batch sizes to time (clips)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per cell (median taken)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", default="0,2,4,8", help="loader worker counts to time (default: 0,2,4,8)")
    parser.add_argument("--json", type=Path, help="report path (default: $OUT/gpu_check.json)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: no CUDA device here; use --device cpu for a smoke test")
        return 2
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        parser.error(f"unknown checks {unknown}; choose from {list(CHECKS)}")
    ctx = Context(
        device=device, config=SpectrogramConfig(), seed=args.seed, repeats=args.repeats,
        batches=tuple(int(b) for b in args.batches.split(",")), backends=available_backends(),
        workers=tuple(int(w) for w in args.workers.split(",")),
    )

    report = {"info": device_info(device), "backends": list(ctx.backends), "checks": {}}
    print("## device\n" + json.dumps(report["info"], indent=1), flush=True)
    start_all = time.perf_counter()
    for name in names:
        print(f"\n## {name}", flush=True)
        start = time.perf_counter()
        try:
            data, markdown = CHECKS[name](ctx)
            report["checks"][name] = {"ok": bool(data.get("ok", True)), "data": data}
            print(markdown)
        except Exception as exc:  # noqa: BLE001 - a failed check must not stop the others
            traceback.print_exc()
            report["checks"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            print(f"FAILED: {type(exc).__name__}: {str(exc)[:500]}")
        report["checks"][name]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"({report['checks'][name]['seconds']} s)", flush=True)
    report["seconds"] = round(time.perf_counter() - start_all, 1)
    report["ok"] = all(result["ok"] for result in report["checks"].values())

    path = args.json or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))
        print(f"\nwrote {path}")
    print(f"\n{'all checks passed' if report['ok'] else 'SOME CHECKS FAILED'} in {report['seconds']} s")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
