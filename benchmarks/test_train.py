"""Stage "train": windows per second through training steps (1 x 224 x 313 inputs, batch 42,
Adam, gradient clipping at 0.81) of the old BirdCNN_v5c network on a GPU, and of the small
``BirdCNN`` on a CPU (where the 8 M network manages about one window per second on 2 cores
and would time only its own convolutions, the same on both sides).

Old path: ``LegacyPNGDataset`` + ``legacy_loader`` (one PNG per item, per-item scalar
standardisation and SpecAugment) and the old loop: AMP only on CUDA (fp16 with a
GradScaler), and a host sync every batch (``loss.item()`` and the correct count, as the old
code accumulated them). chirpid-io: ``make_loader`` (chunked reads, per-band
normalisation and SpecAugment on the device) and ``trainers.fit`` (AMP "auto": bf16 or
fp16 on CUDA, float32 on CPU; channels_last on CUDA; metrics kept on the device).

Both sides train a freshly seeded model on the same windows (the loader stage's cache and
its PNG copy); a round is ``CPU_BATCHES`` batches on a CPU, whole epochs of at least
``MIN_ITEMS`` windows on a GPU. Throughput is windows per second.
"""

from __future__ import annotations

import math

import pytest

from test_loader import BATCH, loader_data  # noqa: F401  (the same windows as the loader stage)

UNIT = "windows/s"
CPU_BATCHES = 2
MIN_ITEMS = 1_000
CLIP = 0.81


def _plan(n_windows: int, device: str) -> tuple[int, int]:
    """(windows used, epochs per round)."""
    batches = n_windows // BATCH
    if batches == 0:
        pytest.skip(f"the corpus gives {n_windows} windows, fewer than one batch of {BATCH}")
    if not device.startswith("cuda"):
        return min(batches, CPU_BATCHES) * BATCH, 1
    return batches * BATCH, max(1, math.ceil(MIN_ITEMS / (batches * BATCH)))


def _model(n_classes: int, device: str):
    """(model, name): BirdCNN_v5c on CUDA, the small BirdCNN on a CPU."""
    from chirpid_io.trainers import BirdCNN, BirdCNNv5c

    if device.startswith("cuda"):
        return BirdCNNv5c(n_classes), "BirdCNN_v5c"
    return BirdCNN(n_classes), "BirdCNN"


def test_train_old(measure, loader_data, settings, synchronize):  # noqa: F811
    import torch
    from torch.utils.data import Subset

    from chirpid_io.legacy import LegacyPNGDataset, legacy_loader
    cache, csv_path, png_dir = loader_data
    n_items, epochs = _plan(len(cache), settings.device)
    dataset = Subset(LegacyPNGDataset(csv_path, png_dir, augment=True, seed=0), range(n_items))
    loader = legacy_loader(dataset, BATCH, train=True, num_workers=0)
    device = torch.device(settings.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model, name = _model(len(cache.class_names), settings.device)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=2.8e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    criterion = torch.nn.CrossEntropyLoss()

    def run():
        model.train()
        running, correct = 0.0, 0
        for _ in range(epochs):
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                optimizer.zero_grad()
                with torch.autocast(device.type, enabled=cuda):
                    out = model(x)
                    loss = criterion(out, y)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
                scaler.step(optimizer)
                scaler.update()
                running += loss.item() * x.size(0)  # the old per-batch host syncs
                correct += (out.argmax(1) == y).sum().item()
        synchronize()
        return running, correct

    measure(run, stage="train", side="old", items=epochs * n_items, unit=UNIT,
            label=f"PNG dataset + old AMP loop, {name}, {settings.device}")


def test_train_new(measure, loader_data, settings, synchronize):  # noqa: F811
    import torch

    from chirpid_io.loaders import Augment, make_loader
    from chirpid_io.trainers import TrainConfig, fit

    cache, _, _ = loader_data
    n_items, epochs = _plan(len(cache), settings.device)
    cuda = settings.device.startswith("cuda")
    loader = make_loader(cache, BATCH, indices=range(n_items), device=settings.device, augment=Augment(),
                         drop_last=True, seed=0)
    torch.manual_seed(0)
    model, name = _model(len(cache.class_names), settings.device)
    config = TrainConfig(epochs=epochs, optimizer="adam", lr=1e-3, weight_decay=2.8e-4, schedule="none",
                         grad_clip=CLIP, amp="auto", channels_last=cuda, device=settings.device,
                         early_stopping=["train_loss"])

    def run():
        result = fit(model, loader, None, config)
        synchronize()
        return result

    amp = "AMP auto" if cuda else "float32"
    measure(run, stage="train", side="new", items=epochs * n_items, unit=UNIT,
            label=f"make_loader + fit ({amp}), {name}, {settings.device}")
