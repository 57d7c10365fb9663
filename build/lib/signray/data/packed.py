"""In-memory packed split: every clip of a split in one array, addressed by offsets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from signray.errors import DataError

__all__ = ["PackedSplit"]


@dataclass
class PackedSplit:
    """One split held as all frames concatenated plus offsets.

    One allocation and zero per-sample file I/O. ``frames`` is ``(total_frames, D)`` float32;
    clip ``i`` is ``frames[offsets[i]:offsets[i + 1]]``.
    ``gloss`` and ``cat`` are ``(N,)`` int64 ids and ``names`` the ``(N,)`` npz basenames without
    ``.npz`` (fixed-width unicode, so the arrays save and load without pickle).
    """

    frames: np.ndarray  # (total_frames, D) float32
    offsets: np.ndarray  # (N + 1,) int64
    gloss: np.ndarray  # (N,) int64
    cat: np.ndarray  # (N,) int64
    names: np.ndarray  # (N,) str

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames, dtype=np.float32)
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
        """Pack ``(T_i, D)`` clips into one float32 array; ``feature_dim`` serves 0 clips."""
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
            frames = np.concatenate(clips, axis=0, dtype=np.float32)
        else:
            frames = np.zeros((0, feature_dim or 0), dtype=np.float32)
        return cls(frames, offsets, np.asarray(gloss), np.asarray(cat), np.asarray(names))
