"""Dataset, padded batches and DataLoader construction over a split in memory (`PackedSplit`,
`PackedParts`) or streamed from its shards (`ShardStream`)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from signray.data.packed import Split
from signray.data.samplers import BucketBatchSampler, ShardBatchSampler
from signray.data.streaming import ShardStream

__all__ = ["Batch", "ClipDataset", "batch_sampler", "build_loader", "collate_padded"]

Item = tuple[np.ndarray, int, int]


class ClipDataset(Dataset[Item]):
    """Map-style dataset over a packed split; items are zero-copy views of the packed frames.

    Items stay NumPy in their stored dtype: frames shared through Ray's object store or
    memory-mapped are read-only, which torch tensors cannot represent; the collate copies them
    into one writable float32 batch anyway.
    """

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> Item:
        s = self.split
        return s.clip(index), int(s.gloss[index]), int(s.cat[index])


@dataclass
class Batch:
    """A zero-padded batch; ``lengths`` says how many leading frames of each row are real.

    ``host_lengths`` holds the same values as ``lengths`` on the host, so that code that needs
    them there (packed sequences, value checks) never copies ``lengths`` back from the GPU: a
    host sync every step. It stays on the host when the batch moves to a device. Whoever changes
    ``lengths`` (e.g. an augmentation that crops clips) must set it again, or set it to None when
    the new lengths are only known on the device (a model that needs them then copies them to
    the host itself).
    """

    x: torch.Tensor  # (B, T, D) float32, zero beyond each length
    lengths: torch.Tensor  # (B,) int64, on the batch's device
    gloss: torch.Tensor  # (B,) int64
    cat: torch.Tensor  # (B,) int64
    host_lengths: torch.Tensor | None = None  # (B,) int64 on the CPU: `lengths`, or None

    def __post_init__(self) -> None:
        if self.host_lengths is None and self.lengths.device.type == "cpu":
            self.host_lengths = self.lengths

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        moved = (t.to(device, non_blocking=non_blocking) for t in self._tensors())
        return Batch(*moved, host_lengths=self.host_lengths)

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)``, so host-to-GPU copies can be asynchronous."""
        return Batch(*(t.pin_memory() for t in self._tensors()), host_lengths=self.host_lengths)

    def _tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.x, self.lengths, self.gloss, self.cat


def collate_padded(items: Sequence[Item]) -> Batch:
    """Stack clips of different lengths into one zero-padded ``(B, T_max, D)`` float32 batch.

    Float16 frames are cast here, one batch at a time, by torch (NumPy's float16 conversion is
    ~5x slower; ``python -m benchmarks.ablations collate``).
    """
    if not items:
        raise ValueError("collate_padded needs at least one item, but got an empty batch")
    lengths = torch.tensor([clip.shape[0] for clip, _, _ in items], dtype=torch.int64)
    dim = items[0][0].shape[1]
    x = torch.zeros((len(items), int(lengths.max()), dim), dtype=torch.float32)  # (B, T, D)
    with warnings.catch_warnings():
        # Frames from the object store or a file mapping are read-only; they are only read here.
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        for row, (clip, _, _) in enumerate(items):
            x[row, : clip.shape[0]] = torch.from_numpy(np.ascontiguousarray(clip))
    gloss = torch.tensor([g for _, g, _ in items], dtype=torch.int64)
    cat = torch.tensor([c for _, _, c in items], dtype=torch.int64)
    return Batch(x, lengths, gloss, cat)


def batch_sampler(
    split: Split | ShardStream,
    *,
    batch_size: int,
    train: bool,
    bucket: bool = True,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> tuple[Dataset[Item], BucketBatchSampler | ShardBatchSampler]:
    """The clips one rank reads and the batches of their indices it trains (shuffled) or
    evaluates (all once) on. A split in memory is sampled with one global permutation
    (``BucketBatchSampler``); a `ShardStream` gives this rank its own shards and shard-local
    orders (``ShardBatchSampler``, see `signray.data.streaming`)."""
    if isinstance(split, ShardStream):
        shards = split.for_rank(rank, world_size)
        return shards, ShardBatchSampler(
            shards.sizes, shards.lengths, batch_size, bucket=bucket, seed=seed, rank=rank,
            train=train, epoch_clips=split.epoch_clips(world_size) if train else None,
        )  # fmt: skip
    return ClipDataset(split), BucketBatchSampler(
        split.lengths, batch_size, shuffle=train, bucket=bucket, seed=seed, rank=rank,
        world_size=world_size, drop_last=drop_last, train=train,
    )  # fmt: skip


def build_loader(
    split: Split | ShardStream,
    *,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
    persistent_workers: bool | None = None,
    **sampling: Any,
) -> DataLoader[Item]:
    """A DataLoader yielding ``Batch``; call ``loader.batch_sampler.set_epoch(epoch)`` each epoch.

    `sampling` goes to `batch_sampler` (bucket, seed, rank, world_size, drop_last). Training
    shuffles and gives every rank the same number of batches; evaluation covers the split exactly
    once over all ranks. Workers, when used, are kept alive between epochs unless
    ``persistent_workers=False``.
    """
    dataset, sampler = batch_sampler(split, batch_size=batch_size, train=train, **sampling)
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra["persistent_workers"] = True if persistent_workers is None else persistent_workers
        if prefetch_factor is not None:
            extra["prefetch_factor"] = prefetch_factor
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_padded,
        num_workers=num_workers,
        pin_memory=pin_memory,
        **extra,
    )
