"""Run under torchrun by tests/test_distributed.py: the windows each rank's training loader
reads in each epoch, gathered on rank 0 and written as JSON (argv: cache, out, epochs)."""

import json
import sys

from chirpid_io.cache import open_cache
from chirpid_io.loaders import group_split
from chirpid_io.trainers import TrainConfig
from chirpid_io.trainers.distributed import from_env, gather_objects
from chirpid_io.trainers.run import RunSpec, training_loaders

cache_path, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
dist = from_env("cpu")
cache = open_cache(cache_path)
spec, config = RunSpec(batch_size=8, group="recording_id"), TrainConfig(device="cpu")
train_idx, val_idx = group_split(cache, spec.val_fraction, group=spec.group, seed=config.seed)
train, val = training_loaders(cache, spec, config, None, train_idx, val_idx, dist, "cpu")
seen = {epoch: train.dataset.indices[train.sampler.order(epoch)].tolist() for epoch in range(1, epochs + 1)}
scored = val.dataset.indices[val.sampler.order(1)].tolist()
everyone = gather_objects({"rank": dist.rank, "seen": seen, "val": scored, "batch": train.batch_size,
                           "batches": len(train)})
if dist.main:
    with open(out, "w") as f:
        json.dump(everyone, f)
