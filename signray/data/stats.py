"""Per-feature normalisation statistics of a split's frames, computed in one streaming pass.

The packer computes them while it writes shards and stores them in the manifest; the training
loop hands them to the model's `InputNorm`, so no trial re-reads the training frames to fit it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FrameMoments", "NormStats"]

# 16 MB of float64 per chunk: 65,536 rows of 2048-d features would be a 1 GB temporary.
CHUNK_BYTES = 1 << 24


@dataclass(frozen=True)
class NormStats:
    """Mean and standard deviation per feature (float64) over `count` frames."""

    mean: np.ndarray  # (D,) float64
    std: np.ndarray  # (D,) float64, population std (may be 0 for a constant feature)
    count: int

    @property
    def feature_dim(self) -> int:
        return len(self.mean)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready; Python floats print with full precision, so the values round-trip exactly."""
        return {"count": self.count, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, value: Any, feature_dim: int) -> tuple[NormStats | None, str | None]:
        """`(stats, None)` or `(None, what is wrong)` for a manifest's ``norm`` entry."""
        if not isinstance(value, Mapping):
            return None, f"is {value!r} (expected an object with count, mean and std)"
        count = value.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            return None, f"count is {count!r} (expected a positive integer)"
        arrays = {}
        for name in ("mean", "std"):
            items = value.get(name)
            ok = isinstance(items, list) and len(items) == feature_dim
            ok = ok and all(isinstance(v, (int, float)) and math.isfinite(v) for v in items)
            if not ok:
                return None, f"{name} is not a list of {feature_dim} finite numbers"
            arrays[name] = np.asarray(items, dtype=np.float64)
        if (arrays["std"] < 0).any():
            return None, "std has negative values (expected >= 0)"
        return cls(arrays["mean"], arrays["std"], count), None


class FrameMoments:
    """Running float64 sums of frames and of their squares, added chunk by chunk.

    Works on read-only and memory-mapped arrays of any float dtype without a full-size copy.
    """

    def __init__(self, feature_dim: int) -> None:
        self.count = 0
        self.total = np.zeros(feature_dim)
        self.squares = np.zeros(feature_dim)

    def add(self, frames: np.ndarray) -> None:
        """Add the rows of `frames` ``(N, D)``."""
        rows = max(1, CHUNK_BYTES // (8 * max(frames.shape[1], 1)))
        for start in range(0, len(frames), rows):
            part = frames[start : start + rows].astype(np.float64)
            self.total += part.sum(0)
            self.squares += np.square(part, out=part).sum(0)
        self.count += len(frames)

    def stats(self) -> NormStats:
        n = max(self.count, 1)
        mean = self.total / n
        var = np.maximum(self.squares / n - mean**2, 0.0)
        return NormStats(mean, np.sqrt(var), self.count)

    @classmethod
    def of(cls, frames: np.ndarray) -> NormStats:
        """The statistics of one array of frames ``(N, D)``."""
        moments = cls(frames.shape[1])
        moments.add(frames)
        return moments.stats()
