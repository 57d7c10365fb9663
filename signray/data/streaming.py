"""Stream mode: each DDP rank memory-maps only its own format-2 shards, from storage every node
reaches at the same path, and reads them with length bucketing; no split passes through the
object store or through any other process.

What an epoch means here (memory mode keeps one global permutation instead):

- Shards are dealt to ranks once, from the manifest alone: largest shard first, each to the rank
  holding the fewest clips so far. A rank reads the same shards every epoch, so its node's page
  cache stays warm and no rank ever opens another rank's shards.
- Each epoch a rank visits its shards in a fresh random order and each shard's clips in a fresh
  random order (`ShardBatchSampler`); batches are bucketed by length within windows of a few
  dozen batches, so reads move through about one shard at a time and at most `OPEN_SHARDS`
  shards are mapped per process.
- Every rank takes ceil(most clips of any rank / batch) steps: ranks with fewer clips repeat
  some, so DDP never waits on a rank that ran out.
- Validation: each rank evaluates every clip of its own val shards once; the loop all-reduces the
  counts, so metrics cover the whole val split exactly once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from signray.data.packed import PackedParts, subsample_indices
from signray.data.scan import SplitIndex
from signray.data.shards import map_frames, open_shard, read_shard_labels
from signray.errors import DataError
from signray.storage import as_location

__all__ = ["OPEN_SHARDS", "RankShards", "ShardStream", "assign_shards"]

OPEN_SHARDS = 2  # frames mappings a process keeps open at once


def assign_shards(clips_per_shard: list[int], world_size: int) -> list[list[int]]:
    """Shard indices per rank, balancing clip counts (largest first, to the emptiest rank);
    each rank's shards in index order. Deterministic: every rank computes the same answer."""
    loads = [0] * world_size
    ranks: list[list[int]] = [[] for _ in range(world_size)]
    for s in sorted(range(len(clips_per_shard)), key=lambda s: (-clips_per_shard[s], s)):
        r = min(range(world_size), key=lambda r: (loads[r], r))
        ranks[r].append(s)
        loads[r] += clips_per_shard[s]
    return [sorted(shards) for shards in ranks]


@dataclass(frozen=True)
class ShardStream:
    """A checked format-2 split to read in stream mode: its folder and manifest, no frames.

    Small and picklable, so it travels to every rank; each rank opens its own part with
    `for_rank`.
    """

    folder: str
    manifest: dict[str, Any]
    max_frames: int | None = None
    split: str = "train"

    @classmethod
    def from_index(cls, index: SplitIndex, max_frames: int | None, split: str) -> ShardStream:
        if not index.streamable or index.manifest is None:
            raise DataError(
                [f"{index.source} is not a format-2 shard folder; stream mode reads only those "
                 "(pack it with python -m signray.data.pack)"]
            )  # fmt: skip
        return cls(str(index.source), index.manifest, max_frames, split)

    def __len__(self) -> int:
        return int(self.manifest["num_clips"])

    @property
    def feature_dim(self) -> int:
        return int(self.manifest["feature_dim"])

    @property
    def clips_per_shard(self) -> list[int]:
        return [entry["num_clips"] for entry in self.manifest["shards"]]

    def assignment(self, world_size: int) -> list[list[int]]:
        return assign_shards(self.clips_per_shard, world_size)

    def epoch_clips(self, world_size: int) -> int:
        """Clips every rank goes through per training epoch: the most any rank holds."""
        sizes = self.clips_per_shard
        return max(sum(sizes[s] for s in shards) for shards in self.assignment(world_size))

    def too_few_shards(self, world_size: int) -> str | None:
        """Why training on `world_size` ranks cannot stream this split (None: it can)."""
        if len(self.clips_per_shard) >= world_size:
            return None
        return (
            f"{self.folder} has {len(self.clips_per_shard)} shard(s) but training streams it on "
            f"{world_size} ranks, one shard at least each (re-pack with --num-shards "
            f">= {world_size}, or use --data-mode memory)"
        )

    def open_all(self, reader: str) -> PackedParts:
        """Every shard memory-mapped as one split (one process evaluating the whole split)."""
        folder = as_location(self.folder)
        parts = [
            open_shard(folder, e, self.manifest, reader=reader) for e in self.manifest["shards"]
        ]
        return PackedParts(parts, self.max_frames)

    def for_rank(self, rank: int, world_size: int) -> RankShards:
        return RankShards(self, self.assignment(world_size)[rank], f"rank {rank}/{world_size}")


class RankShards(Dataset):
    """The clips of one rank's shards, addressed one after another; frames are mapped lazily,
    at most `OPEN_SHARDS` shards at a time, and read as zero-copy views (cut to max_frames)."""

    def __init__(self, stream: ShardStream, shards: list[int], reader: str) -> None:
        self.stream, self.shards, self.reader = stream, list(shards), reader
        folder = as_location(stream.folder)
        labels = [
            read_shard_labels(folder, stream.manifest["shards"][s], reader=reader) for s in shards
        ]
        self.sizes = [len(lab.gloss) for lab in labels]
        self.starts = np.cumsum([0, *self.sizes])
        self.offsets = [lab.offsets.astype(np.int64) for lab in labels]
        join = lambda xs, dtype: np.concatenate(xs).astype(dtype) if xs else np.zeros(0, dtype)  # noqa: E731
        self.gloss = join([lab.gloss for lab in labels], np.int64)
        self.cat = join([lab.cat for lab in labels], np.int64)
        self.names = join([lab.names for lab in labels], str)
        raw = join([lab.lengths for lab in labels], np.int64)
        mf = stream.max_frames
        self.lengths = raw if mf is None else np.minimum(raw, mf)
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self) -> dict[str, Any]:
        # A DataLoader worker maps its own shards: never pickle a mapping (it would copy it).
        return {**self.__dict__, "_open": OrderedDict()}

    def _frames(self, k: int) -> np.ndarray:
        if k in self._open:
            self._open.move_to_end(k)
            return self._open[k]
        if len(self._open) >= OPEN_SHARDS:
            self._open.popitem(last=False)  # unmapped once the last view of it is gone
        entry = self.stream.manifest["shards"][self.shards[k]]
        frames = map_frames(
            as_location(self.stream.folder), entry, self.stream.manifest, reader=self.reader
        )
        self._open[k] = frames
        return frames

    def clip(self, i: int) -> np.ndarray:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        j = i - int(self.starts[k])
        frames = self._frames(k)[self.offsets[k][j] : self.offsets[k][j + 1]]
        mf = self.stream.max_frames
        if mf is not None and len(frames) > mf:
            frames = frames[subsample_indices(len(frames), mf)]
        return frames

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, int]:
        return self.clip(i), int(self.gloss[i]), int(self.cat[i])
