"""Length-bucketed, rank-sharded batch sampling for single-process and data-parallel runs."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["BucketBatchSampler", "ShardBatchSampler"]


def _sorted_in_chunks(idx: np.ndarray, lengths: np.ndarray, chunk: int) -> list[np.ndarray]:
    """`idx` cut into chunks of `chunk` indices (a multiple of the batch size, so no batch
    straddles two), each sorted by clip length: similar lengths meet, little padding."""
    return [
        part[np.argsort(lengths[part], kind="stable")]
        for part in np.split(idx, range(chunk, len(idx), chunk))
    ]


def _cut(idx: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]


class BucketBatchSampler(Sampler[list[int]]):
    """Yields batches of clip indices for one rank.

    Training (``train=True``): every epoch permutes all indices with ``(seed, epoch)``, repeats
    indices from the start until the count divides ``world_size`` and gives rank ``r`` the
    indices ``r::world_size``. Every rank therefore yields exactly the same number of batches,
    which DDP needs to avoid hanging. With ``bucket=True`` the rank's indices are sorted by length
    inside chunks of ``chunk_batches`` batches before cutting batches, so a batch holds clips of
    similar length and little padding; batch order is then shuffled.

    Evaluation (``train=False``): rank ``r`` takes ``r::world_size`` with no padding, so the ranks
    together see every clip exactly once (counts are all-reduced afterwards); ranks may then
    differ by one batch. With ``bucket=True`` batches are sorted by length, longest first, so
    memory peaks on the first batch. ``shuffle`` and ``drop_last`` are ignored here.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = True,
        bucket: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        train: bool = True,
        chunk_batches: int = 50,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        for name, value, low in (
            ("batch_size", batch_size, 1),
            ("world_size", world_size, 1),
            ("chunk_batches", chunk_batches, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, but got {value!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"`0 <= rank < world_size` must hold, but got {rank=}, {world_size=}")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.bucket = bucket
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.train = train
        self.chunk_batches = chunk_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose permutation the next iteration uses (call before each epoch)."""
        self.epoch = epoch

    def _num_rank_indices(self) -> int:
        n = len(self.lengths)
        if self.train:
            return math.ceil(n / self.world_size)
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        m = self._num_rank_indices()
        if self.train and self.drop_last:
            return m // self.batch_size
        return math.ceil(m / self.batch_size)

    def _rank_indices(self, rng: np.random.Generator) -> np.ndarray:
        n = len(self.lengths)
        if not self.train:
            return np.arange(self.rank, n, self.world_size, dtype=np.int64)
        order = rng.permutation(n) if self.shuffle else np.arange(n, dtype=np.int64)
        total = math.ceil(n / self.world_size) * self.world_size
        order = np.resize(order, total)  # pads by repeating from the start
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        # All ranks draw the same permutations (clips and batch order), so step k of every rank
        # together forms the same global batch as step k of a one-process run.
        rng = np.random.default_rng([self.seed, self.epoch])
        idx = self._rank_indices(rng)
        if len(idx) == 0:
            return
        if self.bucket and not self.train:
            idx = idx[np.argsort(-self.lengths[idx], kind="stable")]
        elif self.bucket:
            chunk = self.chunk_batches * self.batch_size
            idx = np.concatenate(_sorted_in_chunks(idx, self.lengths, chunk))
        batches = _cut(idx, self.batch_size)
        if self.train and self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.train and self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, 1]).permutation(len(batches))
            batches = [batches[i] for i in order]
        for batch in batches:
            yield batch.tolist()


class ShardBatchSampler(Sampler[list[int]]):
    """Batches of one rank's clips in stream mode, where a rank reads only its own shards.

    Indices address the rank's clips, its shards one after another (`shard_sizes` clips each).
    Training: every epoch draws, from ``(seed, epoch, rank)``, an order of the rank's shards and
    an order of the clips inside each shard; the sequence is repeated from its start up to
    `epoch_clips` (the most clips any rank holds, so every rank takes the same number of steps
    and DDP never waits on a rank that ran out); with ``bucket=True`` it is cut into windows of
    ``chunk_batches`` batches, sorted by length inside each window, and the batches of a window
    are shuffled among themselves. Reads therefore move through one shard at a time.

    Evaluation (``train=False``): every clip of the rank's shards once, shard by shard, longest
    first within a shard when bucketing; ranks may take different numbers of batches.
    """

    def __init__(
        self,
        shard_sizes: Sequence[int],
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        epoch_clips: int | None = None,
        bucket: bool = True,
        seed: int = 0,
        rank: int = 0,
        train: bool = True,
        chunk_batches: int = 50,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        self.sizes = [int(n) for n in shard_sizes]
        if sum(self.sizes) != len(self.lengths):
            raise ValueError(
                f"shard_sizes add up to {sum(self.sizes)} clips but there are "
                f"{len(self.lengths)} lengths"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, but got {batch_size!r}")
        if train and (epoch_clips is None or epoch_clips < len(self.lengths) or not self.sizes):
            raise ValueError(
                f"training needs shards and epoch_clips >= the rank's {len(self.lengths)} clips, "
                f"but got {epoch_clips=}"
            )
        self.starts = np.cumsum([0, *self.sizes])
        self.batch_size, self.epoch_clips, self.bucket = batch_size, epoch_clips, bucket
        self.seed, self.rank, self.train, self.chunk_batches = seed, rank, train, chunk_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose orders the next iteration uses (call before each epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        clips = self.epoch_clips if self.train else len(self.lengths)
        return math.ceil(clips / self.batch_size)

    def _shard(self, s: int) -> np.ndarray:
        return np.arange(self.starts[s], self.starts[s + 1], dtype=np.int64)

    def __iter__(self) -> Iterator[list[int]]:
        if not self.train:
            parts = [self._shard(s) for s in range(len(self.sizes))]
            if self.bucket:
                parts = [p[np.argsort(-self.lengths[p], kind="stable")] for p in parts]
            idx = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            for batch in _cut(idx, self.batch_size):
                yield batch.tolist()
            return
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        order = rng.permutation(len(self.sizes))
        idx = np.concatenate([self._shard(s)[rng.permutation(self.sizes[s])] for s in order])
        idx = np.resize(idx, self.epoch_clips)  # repeats from the start of this epoch's order
        chunk = self.chunk_batches * self.batch_size
        if self.bucket:
            windows = _sorted_in_chunks(idx, self.lengths, chunk)
        else:
            windows = np.split(idx, range(chunk, len(idx), chunk))
        for window in windows:
            batches = _cut(window, self.batch_size)
            for i in rng.permutation(len(batches)):
                yield batches[i].tolist()
