"""ChunkShuffleSampler: a shuffled order in which each batch touches few compressed chunks.

A cache stores windows in chunks of ``chunk_windows`` consecutive windows; reading one
window decompresses its whole chunk. A fully random permutation makes every batch touch
about ``batch_size`` chunks, so each chunk is decompressed ~``chunk_windows`` times per
epoch. This sampler shuffles the *chunks*, then shuffles windows only within a pool of
``pool_chunks`` consecutive (already shuffled) chunks: a batch then spans about
``batch_size / chunk_windows + pool_chunks`` chunks, and the order is still different
every epoch at both levels.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError


#: How an epoch is shared between distributed ranks (see :class:`ChunkShuffleSampler`).
SPLITS = ("contiguous", "batches", "disjoint")


class ChunkShuffleSampler:
    """Positions ``0 .. n-1`` of a dataset, chunk-aware shuffled, for one distributed rank.

    ``n_or_dataset``: the number of items, or a dataset with an ``indices`` array of cache
    window indices (a :class:`~chirpid_io.loaders.SpectrogramDataset`, possibly a train
    split); position ``p`` then lies in chunk ``indices[p] // chunk_windows``, otherwise in
    chunk ``p // chunk_windows``.

    The order depends only on ``seed`` and the epoch (``set_epoch``; it does not advance by
    itself, as with torch's ``DistributedSampler``). ``shuffle=False`` keeps position order.

    Distributed: the epoch's global order is cut into ``world_size`` contiguous, equal
    parts (contiguous, so each rank keeps the chunk locality); rank ``r`` takes part ``r``.
    When ``world_size`` does not divide ``n``, ``drop_last=False`` pads the order by
    wrapping around to its start (a few items are seen twice per epoch, as with
    ``DistributedSampler``); ``drop_last=True`` drops the tail instead (a few items are not
    seen this epoch; a different few each shuffled epoch).

    ``split="batches"`` (distributed training, with the global ``batch_size``): rank ``r``
    takes its slice of each global batch of the epoch's order, so the ranks together step
    through exactly the single-process batches (the last one padded by wrapping to equal
    shares). ``split="disjoint"`` (distributed evaluation): contiguous parts without any
    window twice, sizes differing by at most one.

    ``state_dict()`` records the epoch and how many items this rank has consumed;
    after ``load_state_dict`` the next iteration continues exactly there.
    """

    def __init__(
        self,
        n_or_dataset,
        chunk_windows: int,
        *,
        shuffle: bool = True,
        pool_chunks: int = 4,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        split: str = "contiguous",
        batch_size: int | None = None,
    ):
        if isinstance(n_or_dataset, (int, np.integer)):
            window_of = np.arange(int(n_or_dataset), dtype=np.int64)
        else:
            window_of = np.asarray(n_or_dataset.indices, dtype=np.int64)
        if chunk_windows <= 0 or pool_chunks <= 0:
            raise ConfigError(f"chunk_windows ({chunk_windows}) and pool_chunks ({pool_chunks}) must be positive")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ConfigError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if split == "batches" and (batch_size is None or batch_size % world_size):
            raise ConfigError(f"split='batches' needs a global batch size divisible by world_size ({world_size}), "
                              f"got {batch_size}")
        self.split, self.global_batch = split, batch_size
        self.n = len(window_of)
        self.shuffle = shuffle
        self.pool_chunks = pool_chunks
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self._start = 0  # items of this epoch consumed before the next iteration starts
        self._yielded = 0  # items of this epoch yielded so far
        # positions grouped by chunk, each group in position order
        chunk_of = window_of // chunk_windows
        by_chunk = np.argsort(chunk_of, kind="stable")
        bounds = np.flatnonzero(np.diff(chunk_of[by_chunk])) + 1
        self._chunks = np.split(by_chunk, bounds) if self.n else []
        if split == "batches":
            n_batches = self.n // batch_size if drop_last else -(-self.n // batch_size)
            self.per_rank = n_batches * (batch_size // world_size)
        elif split == "disjoint":
            self.per_rank = len(self._disjoint(np.arange(self.n)))
        elif drop_last:
            self.per_rank = self.n // world_size
        else:
            self.per_rank = -(-self.n // world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order (and forget a loaded mid-epoch position)."""
        self.epoch = int(epoch)
        self._start = self._yielded = 0

    def order(self, epoch: int | None = None) -> np.ndarray:
        """This rank's full order of positions for ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            order = np.arange(self.n, dtype=np.int64)
        else:
            rng = np.random.default_rng([self.seed, epoch])
            chunks = [self._chunks[i] for i in rng.permutation(len(self._chunks))]
            pools = []
            for start in range(0, len(chunks), self.pool_chunks):
                pool = np.concatenate(chunks[start : start + self.pool_chunks])
                pools.append(pool[rng.permutation(len(pool))])
            order = np.concatenate(pools) if pools else np.empty(0, dtype=np.int64)
        if self.split == "disjoint":
            return self._disjoint(order)
        total = self.per_rank * self.world_size
        if total > self.n:  # pad by wrapping (possibly more than once for tiny n)
            order = np.resize(order, total)
        if self.split == "batches":  # rank r: its slice of every global batch
            share = self.global_batch // self.world_size
            return order[:total].reshape(-1, self.world_size, share)[:, self.rank].reshape(-1)
        return order[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]

    def _disjoint(self, order: np.ndarray) -> np.ndarray:
        """Rank r's contiguous part of ``order``, parts of sizes differing by at most one
        and never repeating a window (for evaluation: every window scored once)."""
        bounds = np.linspace(0, len(order), self.world_size + 1).round().astype(int)
        return order[bounds[self.rank] : bounds[self.rank + 1]]

    def __iter__(self):
        order = self.order()
        start, self._start = self._start, 0
        self._yielded = start
        for position in order[start:].tolist():
            self._yielded += 1
            yield position

    def __len__(self) -> int:
        """Items the next iteration yields (fewer after a mid-epoch ``load_state_dict``)."""
        return self.per_rank - self._start

    def state_dict(self, consumed: int | None = None) -> dict:
        """The epoch and how many of its items were consumed: ``consumed`` when given (a
        loader that prefetches knows better than the sampler), else the count yielded."""
        consumed = self._yielded if consumed is None else consumed
        return {"epoch": self.epoch, "consumed": int(consumed), "seed": self.seed,
                "rank": self.rank, "world_size": self.world_size, "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next iteration yields the rest of ``state``'s epoch."""
        for key in ("seed", "world_size", "n"):
            if state.get(key, getattr(self, key)) != getattr(self, key):
                raise ConfigError(
                    f"sampler state was saved with {key}={state[key]!r}, this sampler has "
                    f"{key}={getattr(self, key)!r}; resume with the same data and settings"
                )
        self.epoch = int(state["epoch"])
        consumed = int(state["consumed"])
        if not 0 <= consumed <= self.per_rank:
            raise ConfigError(f"sampler state consumed={consumed} is outside 0..{self.per_rank}")
        self._start = self._yielded = consumed


#: How :class:`CropSampler` spreads an epoch's crops over recordings.
WEIGHTINGS = ("recording", "duration", "windows")


class CropSampler(ChunkShuffleSampler):
    """Random crops ``(recording, first sample)`` of ``crop`` samples, for one rank.

    ``lengths``: each recording's length in samples. ``weighting``:

    - ``"recording"``: an epoch is one crop from every recording, in a shuffled order;
      long and short recordings count the same (class balance follows the recordings).
    - ``"duration"``: an epoch is ``round(total length / crop)`` crops (at least one per
      recording), each from a recording drawn with probability proportional to its length,
      so every second of audio is as likely to be seen; an hour-long soundscape gives
      many crops per epoch, a 3 s clip rarely one.
    - ``"windows"``: not random: windows ``hop`` samples apart that cover each recording,
      the last one zero-padded, as ``predict`` cuts them (validation;
      ``shuffle=False`` keeps recording order).

    A crop's first sample is uniform over ``0 .. length - crop`` (0 for a recording
    shorter than ``crop``, which is then zero-padded by the reader). With
    ``noise_lengths`` (the segments of a background-noise bank) every slot also gets a
    noise crop: a segment drawn in proportion to its length, a uniform start, and the
    items become ``(recording, first sample, noise segment, its first sample)``. Everything depends
    only on ``seed`` and the epoch, so the same epoch gives the same crops on any machine
    and a resumed run continues with them; the split between ranks, padding and
    ``state_dict`` are :class:`ChunkShuffleSampler`'s, over the epoch's crop slots.
    """

    def __init__(self, lengths, crop: int, *, weighting: str = "recording", hop: int | None = None,
                 shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False, split: str = "contiguous", batch_size: int | None = None,
                 noise_lengths=None):
        lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        self.noise_lengths = None if noise_lengths is None else np.asarray(noise_lengths, dtype=np.int64)
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        if crop <= 0:
            raise ConfigError(f"crops must be at least one sample long, got {crop}")
        if lengths.size and lengths.min() <= 0:
            raise ConfigError("every recording must hold at least one sample")
        self.lengths, self.crop, self.weighting = lengths, int(crop), weighting
        if weighting == "windows":
            if hop is None or hop <= 0:
                raise ConfigError(f"weighting='windows' needs a positive hop in samples, got {hop}")
            from ..streaming import cover_count

            counts = np.array([cover_count(int(n), self.crop, hop) for n in lengths], dtype=np.int64)
            first = np.repeat(np.cumsum(counts) - counts, counts)
            self._fixed = (np.repeat(np.arange(len(lengths), dtype=np.int64), counts),
                           (np.arange(counts.sum(), dtype=np.int64) - first) * hop)
            slots = len(self._fixed[0])
        elif weighting == "duration":
            slots = max(len(lengths), int(round(lengths.sum() / self.crop))) if len(lengths) else 0
        else:
            slots = len(lengths)
        self._epoch_crops: tuple[int, tuple] | None = None
        super().__init__(slots, 1, shuffle=shuffle, pool_chunks=1, seed=seed, rank=rank,
                         world_size=world_size, drop_last=drop_last, split=split, batch_size=batch_size)

    def crops(self, epoch: int) -> tuple[np.ndarray, ...]:
        """(recording, first sample[, noise segment, its first sample]) of every slot of
        ``epoch``, by slot."""
        if self._epoch_crops is not None and self._epoch_crops[0] == epoch:
            return self._epoch_crops[1]
        rng = np.random.default_rng([self.seed, epoch, 0x63726F70])  # apart from the order's stream
        if self.weighting == "windows":
            columns = self._fixed
        else:
            if self.weighting == "duration":
                recording = rng.choice(len(self.lengths), size=self.n, p=self.lengths / self.lengths.sum())
            else:
                recording = np.arange(self.n, dtype=np.int64)
            columns = (recording.astype(np.int64), _uniform_starts(rng, self.lengths[recording], self.crop))
        if self.noise_lengths is not None:
            lengths = self.noise_lengths
            segment = rng.choice(len(lengths), size=self.n, p=lengths / lengths.sum()).astype(np.int64)
            columns = (*columns, segment, _uniform_starts(rng, lengths[segment], self.crop))
        self._epoch_crops = (epoch, columns)
        return columns

    def __iter__(self):
        columns = self.crops(self.epoch)
        for slot in super().__iter__():
            yield tuple(int(c[slot]) for c in columns)


def _uniform_starts(rng: np.random.Generator, lengths: np.ndarray, crop: int) -> np.ndarray:
    """A uniform first sample in ``0 .. length - crop`` for each length (0 if shorter)."""
    room = np.maximum(lengths - crop, 0)
    return np.floor(rng.random(len(lengths)) * (room + 1)).astype(np.int64)
