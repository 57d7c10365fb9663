"""Packed splits: every clip of a split in one array addressed by offsets (`PackedSplit`), or in
a few such arrays addressed as one (`PackedParts`: shards, object-store chunks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from signray.data.stats import FrameMoments, NormStats
from signray.errors import DataError

__all__ = [
    "FRAME_DTYPES",
    "PackedParts",
    "PackedSplit",
    "Split",
    "frame_dtype",
    "subsample_indices",
]

# Frames stay in the dtype they were stored in (fp16 features take half the memory); batches
# are cast to float32 one at a time when they are collated.
FRAME_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


def frame_dtype(dtypes: Sequence[np.dtype]) -> np.dtype:
    """The dtype frames of these dtypes are kept in: float16 only if all are, else float32."""
    dtypes = [np.dtype(d) for d in dtypes]
    half = dtypes and all(d == FRAME_DTYPES[0] for d in dtypes)
    return FRAME_DTYPES[0] if half else FRAME_DTYPES[1]


def subsample_indices(length: int, max_frames: int) -> np.ndarray:
    """Uniform temporal subsampling indices so a clip has at most ``max_frames`` frames."""
    if length <= max_frames:
        return np.arange(length, dtype=np.int64)
    return np.linspace(0, length - 1, max_frames).round().astype(np.int64)


@dataclass
class PackedSplit:
    """One split held as all frames concatenated plus offsets.

    One allocation and zero per-sample file I/O. ``frames`` is ``(total_frames, D)`` float16 or
    float32 (other dtypes are cast to float32) and may be read-only or memory-mapped (object
    store, ``np.load(mmap_mode="r")``): it is never copied here. Clip ``i`` is
    ``frames[offsets[i]:offsets[i + 1]]``.
    ``gloss`` and ``cat`` are ``(N,)`` int64 ids and ``names`` the ``(N,)`` npz basenames without
    ``.npz`` (fixed-width unicode, so the arrays save and load without pickle).
    """

    frames: np.ndarray  # (total_frames, D) float16 or float32
    offsets: np.ndarray  # (N + 1,) int64
    gloss: np.ndarray  # (N,) int64
    cat: np.ndarray  # (N,) int64
    names: np.ndarray  # (N,) str

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames)
        if self.frames.dtype not in FRAME_DTYPES:
            self.frames = self.frames.astype(np.float32)
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.gloss = np.asarray(self.gloss, dtype=np.int64)
        self.cat = np.asarray(self.cat, dtype=np.int64)
        self.names = np.asarray(self.names, dtype=str)
        if self.names.size == 0:
            self.names = self.names.astype("<U1")
        problems = []
        if self.frames.ndim != 2:
            problems.append(f"frames has shape {self.frames.shape} (expected [total_frames, D])")
        n = len(self.offsets) - 1
        if self.offsets.ndim != 1 or n < 0:
            problems.append(f"offsets has shape {self.offsets.shape} (expected [N + 1])")
        else:
            if self.offsets[0] != 0 or self.offsets[-1] != len(self.frames):
                problems.append(
                    f"offsets run from {self.offsets[0]} to {self.offsets[-1]} "
                    f"(expected 0 to {len(self.frames)}, the number of frames)"
                )
            if np.any(np.diff(self.offsets) < 0):
                problems.append("offsets decrease somewhere (expected non-decreasing offsets)")
            for field in ("gloss", "cat", "names"):
                shape = getattr(self, field).shape
                if shape != (n,):
                    problems.append(f"{field} has shape {shape} (expected ({n},), one per clip)")
        if problems:
            raise DataError(problems, title="invalid packed split")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def feature_dim(self) -> int:
        """D, the width of every frame."""
        return int(self.frames.shape[1])

    @property
    def dtype(self) -> np.dtype:
        """The dtype frames are stored in (float16 or float32)."""
        return self.frames.dtype

    @property
    def lengths(self) -> np.ndarray:
        """Frames per clip, ``(N,)`` int64; samplers bucket on it."""
        return np.diff(self.offsets)

    @property
    def num_frames(self) -> int:
        return int(self.offsets[-1])

    @property
    def nbytes(self) -> int:
        """Memory held by all arrays, to judge whether a split fits in RAM or must be sharded."""
        arrays = (self.frames, self.offsets, self.gloss, self.cat, self.names)
        return int(sum(a.nbytes for a in arrays))

    def norm_stats(self) -> NormStats:
        """Per-feature statistics of every frame, in one chunked pass (no full-size copy)."""
        return FrameMoments.of(self.frames)

    def clip(self, i: int) -> np.ndarray:
        """Clip ``i`` as a ``(T, D)`` view into ``frames`` (no copy)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"clip index {i} out of range for a split of {n} clips")
        i %= n
        return self.frames[self.offsets[i] : self.offsets[i + 1]]

    @classmethod
    def from_clips(
        cls,
        clips: Sequence[np.ndarray],
        gloss: Sequence[int] | np.ndarray,
        cat: Sequence[int] | np.ndarray,
        names: Sequence[str] | np.ndarray,
        *,
        feature_dim: int | None = None,
    ) -> PackedSplit:
        """Pack ``(T_i, D)`` clips into one array (float16 if every clip is, else float32);
        ``feature_dim`` serves 0 clips."""
        lengths = np.fromiter((len(c) for c in clips), dtype=np.int64, count=len(clips))
        offsets = np.zeros(len(clips) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if clips:
            dims = {c.shape[1] if c.ndim == 2 else None for c in clips}
            if len(dims) != 1 or None in dims:
                raise DataError(
                    f"clips must all be 2-D [T, D] with one D, got shapes "
                    f"{sorted({c.shape for c in clips})[:5]}",
                    title="invalid packed split",
                )
            frames = np.concatenate(clips, axis=0, dtype=frame_dtype([c.dtype for c in clips]))
        else:
            frames = np.zeros((0, feature_dim or 0), dtype=np.float32)
        return cls(frames, offsets, np.asarray(gloss), np.asarray(cat), np.asarray(names))


class PackedParts:
    """Several packed splits (shards, object-store chunks) addressed as one split.

    Nothing is concatenated: each part keeps its own arrays (read-only, memory-mapped or in the
    object store), so a split larger than any one allocation still trains. `max_frames`
    subsamples longer clips when they are read, so memory-mapped parts stay untouched.
    Offers what the loader, samplers and evaluation use: ``len``, `clip`, ``gloss``, ``cat``,
    ``names``, `lengths`, `feature_dim`.
    """

    def __init__(self, parts: Sequence[PackedSplit], max_frames: int | None = None) -> None:
        if not parts:
            raise DataError(["a split needs at least one part"], title="invalid packed split")
        dims = {p.feature_dim for p in parts}
        if len(dims) != 1:
            raise DataError(
                [f"parts have D in {sorted(dims)} (expected one D)"], title="invalid packed split"
            )
        self.parts = list(parts)
        self.max_frames = max_frames
        self._starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.gloss = np.concatenate([p.gloss for p in self.parts])
        self.cat = np.concatenate([p.cat for p in self.parts])
        self.names = np.concatenate([p.names for p in self.parts])
        raw = np.concatenate([p.lengths for p in self.parts])
        self.lengths = raw if max_frames is None else np.minimum(raw, max_frames)

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def feature_dim(self) -> int:
        return self.parts[0].feature_dim

    @property
    def dtype(self) -> np.dtype:
        return frame_dtype([p.dtype for p in self.parts])

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())

    @property
    def nbytes(self) -> int:
        return int(sum(p.nbytes for p in self.parts))

    def add_frames_to(self, moments: FrameMoments) -> None:
        """Add every frame, as clips are read (after max_frames), to `moments`."""
        for part in self.parts:
            if self.max_frames is None or int(part.lengths.max()) <= self.max_frames:
                moments.add(part.frames)
            else:
                for i in range(len(part)):
                    clip = part.clip(i)
                    moments.add(clip[subsample_indices(len(clip), self.max_frames)])

    def norm_stats(self) -> NormStats:
        """Per-feature statistics of every frame as clips are read (after max_frames)."""
        moments = FrameMoments(self.feature_dim)
        self.add_frames_to(moments)
        return moments.stats()

    def clip(self, i: int) -> np.ndarray:
        """Clip ``i``: a view into its part, or a subsampled copy when longer than max_frames."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"clip index {i} out of range for a split of {n} clips")
        i %= n
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        frames = self.parts[k].clip(i - int(self._starts[k]))
        if self.max_frames is not None and len(frames) > self.max_frames:
            frames = frames[subsample_indices(len(frames), self.max_frames)]
        return frames


# What the loader, the samplers and evaluation accept.
Split = PackedSplit | PackedParts
