"""Batches cut from a split held in device memory.

The packed frames are copied to the device once; each batch is then gathered there, with the
same sampler as `build_loader` (length buckets, DDP shards, per-epoch shuffles) and the same
zero padding as `collate_padded`. A step costs no collate on the CPU and no copy of frames, only
one small copy of the batch's indices (3 x B integers).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch

from signray.data.loader import Batch
from signray.data.packed import PackedSplit
from signray.data.samplers import BucketBatchSampler

__all__ = ["DeviceBatches"]


class DeviceBatches:
    """Iterates `Batch`es already on `device`; ``batch_sampler.set_epoch`` works as for loaders."""

    def __init__(
        self, split: PackedSplit, batch_sampler: BucketBatchSampler, device: torch.device
    ) -> None:
        self.batch_sampler = batch_sampler
        self.device = device
        with warnings.catch_warnings():  # object-store arrays are read-only; they are only read
            warnings.simplefilter("ignore", UserWarning)
            self.frames = torch.from_numpy(split.frames).to(device)  # (total_frames, D)
        self.gloss = torch.from_numpy(split.gloss).to(device)  # (N,)
        self.cat = torch.from_numpy(split.cat).to(device)  # (N,)
        self._offsets = split.offsets[:-1]
        self._lengths = split.lengths

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes + self.gloss.nbytes + self.cat.nbytes

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[Batch]:
        for indices in self.batch_sampler:
            yield self.batch(np.asarray(indices, dtype=np.int64))

    def batch(self, index: np.ndarray) -> Batch:
        """The padded batch of clips `index`, gathered on the device."""
        lengths = self._lengths[index]
        t_max = int(lengths.max())  # host-side numpy: no device sync
        meta = np.stack([index, self._offsets[index], lengths])  # (3, B)
        clip, start, length = torch.from_numpy(meta).to(self.device, non_blocking=True)
        steps = torch.arange(t_max, device=self.device)  # (T,)
        valid = steps[None, :] < length[:, None]  # (B, T)
        rows = torch.where(valid, start[:, None] + steps[None, :], 0)  # (B, T); pads read row 0
        x = torch.where(valid[..., None], self.frames[rows], 0.0)  # (B, T, D)
        return Batch(x, length, self.gloss[clip], self.cat[clip])
