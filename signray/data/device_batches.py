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
from signray.data.packed import PackedParts, Split
from signray.data.samplers import BucketBatchSampler

__all__ = ["DeviceBatches"]


class DeviceBatches:
    """Iterates `Batch`es already on `device`; ``batch_sampler.set_epoch`` works as for loaders."""

    def __init__(
        self, split: Split, batch_sampler: BucketBatchSampler, device: torch.device
    ) -> None:
        self.batch_sampler = batch_sampler
        self.device = device
        self._lengths = np.asarray(split.lengths, dtype=np.int64)  # after max_frames
        offsets = np.concatenate([[0], np.cumsum(self._lengths)])
        self._offsets = offsets[:-1]
        self.frames = _frames_on(split, offsets, device)  # (total_frames, D), stored dtype
        self.gloss = torch.from_numpy(np.asarray(split.gloss, dtype=np.int64)).to(device)  # (N,)
        self.cat = torch.from_numpy(np.asarray(split.cat, dtype=np.int64)).to(device)  # (N,)

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
        x = torch.where(valid[..., None], self.frames[rows], 0.0).float()  # (B, T, D)
        return Batch(x, length, self.gloss[clip], self.cat[clip])


def _frames_on(split: Split, offsets: np.ndarray, device: torch.device) -> torch.Tensor:
    """Every clip's frames (cut to max_frames) back to back on `device`, in their stored dtype
    (float16 stays float16 in GPU memory; batches are cast to float32 as they are cut)."""
    parts = split.parts if isinstance(split, PackedParts) else [split]
    cut = getattr(split, "max_frames", None)
    with warnings.catch_warnings():  # object-store and mapped arrays are read-only; only read
        warnings.simplefilter("ignore", UserWarning)
        if cut is None or all(int(p.lengths.max()) <= cut for p in parts):
            return torch.cat([torch.from_numpy(p.frames).to(device) for p in parts])
        dtype = torch.from_numpy(np.empty(0, split.dtype)).dtype
        out = torch.empty((int(offsets[-1]), split.feature_dim), dtype=dtype, device=device)
        for i in range(len(split)):  # a clip longer than max_frames is subsampled when read
            out[offsets[i] : offsets[i + 1]] = torch.from_numpy(np.ascontiguousarray(split.clip(i)))
        return out
