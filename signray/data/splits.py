"""`load_split`: a folder of per-clip ``.npz`` files or a packed shard folder -> a validated
`PackedSplit`.

Every problem found (labels, files, arrays) is collected and raised as one ``DataError``, so a
user fixes a dataset in one pass instead of one crash per epoch.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from signray.data.clips import load_clip_folder, subsample_indices
from signray.data.packed import PackedSplit
from signray.data.shards import is_shard_dir, load_shards
from signray.errors import DataError
from signray.storage import RemotePath, as_location

__all__ = ["load_split", "load_split_with_key"]


def _check_args(num_gloss: Any, num_cat: Any, max_frames: Any, keys: Sequence[str]) -> list[str]:
    problems = []
    for name, value in (("num_gloss", num_gloss), ("num_cat", num_cat)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
        ):
            problems.append(f"{name} is {value!r} (expected a positive integer)")
    if max_frames is not None and (
        isinstance(max_frames, bool)
        or not isinstance(max_frames, (int, np.integer))
        or max_frames < 1
    ):
        problems.append(f"max_frames is {max_frames!r} (expected a positive integer or None)")
    if isinstance(keys, str) or not keys or not all(isinstance(k, str) for k in keys):
        problems.append(f"keys is {keys!r} (expected a non-empty sequence of npz key names)")
    return problems


def _cap_frames(split: PackedSplit, max_frames: int | None) -> PackedSplit:
    if max_frames is None or len(split) == 0 or int(split.lengths.max()) <= max_frames:
        return split
    clips = [
        split.clip(i)[subsample_indices(len(split.clip(i)), max_frames)] for i in range(len(split))
    ]
    return PackedSplit.from_clips(clips, split.gloss, split.cat, split.names)


def load_split(
    source: str | os.PathLike[str] | RemotePath,
    labels_csv: str | os.PathLike[str] | RemotePath | None = None,
    **options,
) -> PackedSplit:
    """Validate and load one split into a ``PackedSplit``.

    ``source`` is a folder of per-clip ``.npz`` files (``labels_csv`` required) or a packed shard
    folder holding ``manifest.json`` (labels come from the shards; a ``labels_csv`` given too must
    agree), local or at an object-store URI (``s3://bucket/fsl/keypoints_train``). ``options``
    (keyword-only, see `load_split_with_key`): ``keys`` are tried in order per file;
    ``num_gloss``/``num_cat`` bound the ids (``None`` only rejects negatives); ``max_frames``
    uniformly subsamples longer clips; ``shard_indices`` loads only some shards, so a
    data-parallel worker reads only its part; ``split`` names the split in messages.

    Raises one ``DataError`` listing every problem; a gloss seen with two categories only warns.
    """
    return load_split_with_key(source, labels_csv, **options)[0]


def load_split_with_key(
    source: str | os.PathLike[str] | RemotePath,
    labels_csv: str | os.PathLike[str] | RemotePath | None = None,
    *,
    keys: Sequence[str] = ("X",),
    num_gloss: int | None,
    num_cat: int | None,
    max_frames: int | None = None,
    split: str = "train",
    shard_indices: Sequence[int] | None = None,
) -> tuple[PackedSplit, str]:
    """`load_split`, and the npz key most clips came from (for manifests)."""
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    problems = _check_args(num_gloss, num_cat, max_frames, keys)
    if problems:
        raise DataError(problems, title=f"invalid {split} data")
    num_gloss, num_cat, max_frames = (
        None if v is None else int(v) for v in (num_gloss, num_cat, max_frames)
    )
    folder = as_location(source)
    csv_path = as_location(labels_csv) if labels_csv is not None else None
    notes: list[str] = []
    packed: PackedSplit | None = None
    key_counts: Counter[str] = Counter()
    if is_shard_dir(folder):
        packed, problems, notes, key_counts = load_shards(
            folder, csv_path, keys, num_gloss, num_cat, shard_indices
        )
    elif shard_indices is not None:
        problems = [f"{folder}: shard_indices given but there is no manifest.json (no shards)"]
    else:
        packed, problems, notes, key_counts = load_clip_folder(
            folder, csv_path, keys, num_gloss, num_cat, max_frames
        )
        max_frames = None  # already applied per clip while reading
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=3)
    if not problems and packed is not None and len(packed) == 0:
        problems.append(f"{split} split from {folder} is empty (expected at least one clip)")
    if problems or packed is None:
        raise DataError(problems, title=f"invalid {split} data")
    key = key_counts.most_common(1)[0][0] if key_counts else keys[0]
    return _cap_frames(packed, max_frames), key
