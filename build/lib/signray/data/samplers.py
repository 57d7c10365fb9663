"""Length-bucketed, rank-sharded batch sampling for single-process and data-parallel runs."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["BucketBatchSampler"]


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
            chunk = self.chunk_batches * self.batch_size  # a multiple of batch_size: no straddling
            idx = np.concatenate(
                [
                    part[np.argsort(self.lengths[part], kind="stable")]
                    for part in np.split(idx, range(chunk, len(idx), chunk))
                ]
            )
        batches = [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.train and self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.train and self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, 1]).permutation(len(batches))
            batches = [batches[i] for i in order]
        for batch in batches:
            yield batch.tolist()
