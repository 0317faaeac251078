"""Training under torchrun: the process group from the environment, and what ranks share.

``torchrun --nproc-per-node=N -m chirpid_io train ...`` (or a script calling ``train`` or
``fit`` under torchrun) sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`from_env`
then joins the process group (nccl on CUDA, gloo on CPU) and gives each rank its device
(``cuda:LOCAL_RANK``). Without those variables nothing changes: one process, no group.

How a distributed run stays equal to a single-process one:

- each global batch is the single-process batch, its windows split between the ranks
  (``make_loader(split="batches")``); DistributedDataParallel averages the gradients, so a
  step is the single-process step (on CPU, batch norm sees each rank's share of the batch:
  SyncBatchNorm runs only on GPUs; on CUDA batch norm is synchronised);
- validation windows are split without repeats (``split="disjoint"``) and every metric is
  computed from sums reduced over the ranks (confusion matrices, loss sums; multi-label
  probabilities gathered), so every rank reaches the same numbers and the same
  early-stopping decision;
- only rank 0 writes checkpoints, logs and the registry; every rank reads a checkpoint to
  resume. A rank that fails ends the job: torchrun stops the others, and collective calls
  time out (``TIMEOUT``) rather than hang.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

#: How long a collective call waits for the other ranks before the job fails.
TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class Dist:
    """This process's place in a distributed run."""

    rank: int
    world_size: int
    local_rank: int
    device: str

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env(device: str | None = None) -> Dist | None:
    """Join the torchrun process group when the environment names one (else None)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return None
    import torch
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return Dist(rank, world, local, f"cuda:{local}" if cuda else "cpu")


def all_reduce_sum(tensor):
    """``tensor`` summed over the ranks (in place; returned)."""
    import torch.distributed as dist

    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_rows(tensor):
    """Every rank's rows of ``tensor`` (N_r, ...) concatenated in rank order, on every rank."""
    import torch
    import torch.distributed as dist

    world = dist.get_world_size()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def gather_objects(value) -> list:
    """Every rank's ``value`` (plain data made by this program, never read from files)."""
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
