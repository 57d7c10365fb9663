"""`SplitHolder`: one node's copy of the data in its object store (memory mode).

It imports no torch (only Ray, NumPy and `signray.data`'s readers), so the idle process that
keeps a node's copy alive costs about 0.1 GB, not the ~0.6 GB of a process that trains.
"""

from __future__ import annotations

from typing import Any

import ray

from signray.data.scan import SplitIndex, iter_parts
from signray.data.synth_generator import synthetic_splits

__all__ = ["HOLDER_PART_BYTES", "SPLITS", "SplitHolder"]

# A per-clip folder is read and put in parts of about this size (bounded memory in the holder).
HOLDER_PART_BYTES = 1 << 27
SPLITS = ("train", "val")


@ray.remote(num_cpus=0)
class SplitHolder:
    """Reads both splits from the files, part by part, and ``ray.put``s each part: it owns the
    parts, so they live as long as it does."""

    def __init__(self) -> None:
        self._refs: dict[str, list[ray.ObjectRef]] = {}

    def load(
        self,
        indices: tuple[SplitIndex, SplitIndex],
        keys: tuple[str, ...],
        max_frames: int | None,
        synthetic: dict[str, Any] | None = None,
    ) -> int:
        """Put both splits (or, with `synthetic`, the built-in synthetic data made here) in
        this node's object store; returns the bytes put."""
        if synthetic is not None:
            splits = synthetic_splits(**synthetic)
            self._refs = {name: [ray.put(s)] for name, s in zip(SPLITS, splits, strict=True)}
            return sum(s.nbytes for s in splits)
        total = 0
        for name, index in zip(SPLITS, indices, strict=True):
            self._refs[name] = []
            for part in iter_parts(index, keys=keys, max_frames=max_frames,
                                   part_bytes=HOLDER_PART_BYTES, reader="holder"):  # fmt: skip
                self._refs[name].append(ray.put(part))
                total += part.nbytes
        return total

    def refs(self) -> dict[str, list[ray.ObjectRef]]:
        return self._refs
