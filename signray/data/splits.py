"""`load_split`: a folder of per-clip ``.npz`` files or a packed shard folder -> a validated split
in this process.

Every problem found (labels, files, arrays) is collected and raised as one ``DataError``, so a
user fixes a dataset in one pass instead of one crash per epoch.
"""

from __future__ import annotations

import os

import numpy as np

from signray.data.packed import PackedParts, PackedSplit, Split, subsample_indices
from signray.data.scan import SplitIndex, walk_split

__all__ = ["load_split", "load_split_indexed"]


def _cap_frames(split: PackedSplit, max_frames: int | None) -> PackedSplit:
    if max_frames is None or len(split) == 0 or int(split.lengths.max()) <= max_frames:
        return split
    clips = [
        split.clip(i)[subsample_indices(len(split.clip(i)), max_frames)] for i in range(len(split))
    ]
    return PackedSplit.from_clips(clips, split.gloss, split.cat, split.names)


def _concatenate(parts: list[PackedSplit]) -> PackedSplit:
    """One allocation for the whole split; each part is copied in and dropped."""
    total = sum(p.num_frames for p in parts)
    dtype = np.result_type(*[p.frames.dtype for p in parts])
    frames = np.empty((total, parts[0].feature_dim), dtype=dtype)
    offsets, labels = [np.zeros(1, dtype=np.int64)], [(p.gloss, p.cat, p.names) for p in parts]
    start = 0
    while parts:
        part = parts.pop(0)
        frames[start : start + part.num_frames] = part.frames
        offsets.append(part.offsets[1:] + start)
        start += part.num_frames
    gloss, cat, names = (np.concatenate(column) for column in zip(*labels, strict=True))
    return PackedSplit(frames, np.concatenate(offsets), gloss, cat, names)


def load_split(
    source: str | os.PathLike[str], labels_csv: str | os.PathLike[str] | None = None, **options
) -> Split:
    """Validate and load one split.

    ``source`` is a folder of per-clip ``.npz`` files (``labels_csv`` required) or a packed shard
    folder holding ``manifest.json`` (labels come from the shards; a ``labels_csv`` given too must
    agree). ``options`` (keyword-only, as `walk_split`'s): ``keys`` are tried in order
    per file; ``num_gloss``/``num_cat`` bound the ids (``None`` only rejects negatives);
    ``max_frames`` uniformly subsamples longer clips; ``shard_indices`` loads only some shards;
    ``split`` names the split in messages.

    A per-clip folder or format-1 shards come back as one `PackedSplit`; format-2 shards, after
    their checksums are verified, as `PackedParts` over the memory-mapped shards (no copy).
    Raises one ``DataError`` listing every problem; a gloss seen with two categories only warns.
    """
    return load_split_indexed(source, labels_csv, **options)[0]


def load_split_indexed(
    source: str | os.PathLike[str], labels_csv: str | os.PathLike[str] | None = None, **options
) -> tuple[Split, SplitIndex]:
    """`load_split`, and what the pass learnt on the way (key, statistics, ...)."""
    parts: list[PackedSplit] = []
    index = walk_split(source, labels_csv, on_part=parts.append, **options)
    max_frames = options.get("max_frames")
    if index.kind == "shards-v2":
        return PackedParts(parts, max_frames), index
    packed = parts[0] if len(parts) == 1 else _concatenate(parts)
    return _cap_frames(packed, max_frames), index
