"""Batches cut from a split held in device memory.

The packed frames are copied to the device once, in bounded parts; each batch is then gathered
there, with the same sampler as `build_loader` (length buckets, DDP shards, per-epoch shuffles)
and the same zero padding as `collate_padded`. A step costs no collate on the CPU and no copy of
frames, only one small copy of the batch's indices (3 x B integers), made without waiting. Each
batch also carries its lengths on the host (`Batch.host_lengths`), read from the sampler's side.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch

from signray.data.loader import Batch
from signray.data.packed import PackedParts, PackedSplit, Split, subsample_indices
from signray.data.samplers import BucketBatchSampler

__all__ = ["COPY_CHUNK_BYTES", "DeviceBatches"]

# The packed frames reach the device in copies of at most this many bytes.
COPY_CHUNK_BYTES = 64 * 2**20


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
        host = torch.from_numpy(lengths)  # what the device's `length` holds, for the host
        return Batch(x, length, self.gloss[clip], self.cat[clip], host_lengths=host)


def _frames_on(split: Split, offsets: np.ndarray, device: torch.device) -> torch.Tensor:
    """Every clip's frames (cut to max_frames) back to back on `device`, in their stored dtype
    (float16 stays float16 in GPU memory; batches are cast to float32 as they are cut).

    One allocation on the device, filled by one copy per part of at most `COPY_CHUNK_BYTES`:
    neither the parts nor the clips are copied to the device one by one and concatenated there
    (twice the data at setup), and host temporaries stay within one part."""
    parts = split.parts if isinstance(split, PackedParts) else [split]
    cut = getattr(split, "max_frames", None)
    dtype = torch.from_numpy(np.empty(0, split.dtype)).dtype
    out = torch.empty((int(offsets[-1]), split.feature_dim), dtype=dtype, device=device)
    rows = max(1, COPY_CHUNK_BYTES // (split.feature_dim * np.dtype(split.dtype).itemsize))
    start = 0
    with warnings.catch_warnings():  # object-store and mapped arrays are read-only; only read
        warnings.simplefilter("ignore", UserWarning)
        for chunk in _host_chunks(parts, cut, rows):
            end = start + len(chunk)
            out[start:end].copy_(torch.from_numpy(chunk), non_blocking=True)
            start = end
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # once: the host chunks are gone after this
    return out


def _host_chunks(parts: list[PackedSplit], cut: int | None, rows: int) -> Iterator[np.ndarray]:
    """The frames of every clip in order, cut to `cut`, as host arrays of about `rows` frames:
    views of a part's frames where no clip is cut, else gathered (subsampled) copies."""
    for part in parts:
        if cut is None or int(part.lengths.max()) <= cut:
            for lo in range(0, len(part.frames), rows):
                yield np.ascontiguousarray(part.frames[lo : lo + rows])
            continue
        picked: list[np.ndarray] = []  # row indices into part.frames, clip by clip
        count = 0
        for i, length in enumerate(part.lengths):
            picked.append(part.offsets[i] + subsample_indices(int(length), cut))
            count += len(picked[-1])
            if count >= rows:
                yield part.frames[np.concatenate(picked)]
                picked, count = [], 0
        if picked:
            yield part.frames[np.concatenate(picked)]
