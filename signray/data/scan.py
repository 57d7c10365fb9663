"""One validating pass over a split — a per-clip folder, or format 1 or 2 shards — in bounded
memory: every problem is collected, the frames are handed on in parts (or dropped), and what is
left is a `SplitIndex` (names, ids, lengths, D, dtype, normalisation statistics).

The driver scans before anything starts and keeps no frames; a data holder walks the same way
and puts each part in the object store; the packer scans, cuts shards, then walks again to
write them; `load_split` walks and keeps the parts.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from signray.data.clips import ClipProblem, read_clip
from signray.data.labels import parse_labels
from signray.data.manifest import is_shard_dir, read_manifest
from signray.data.packed import PackedParts, PackedSplit, frame_dtype, subsample_indices
from signray.data.shards import ShardLabels, csv_problems, load_v1_shard, open_shard, verify_shard
from signray.data.stats import FrameMoments, NormStats
from signray.errors import DataError
from signray.storage import Location, RemotePath, as_location

__all__ = ["SplitIndex", "check_split_args", "iter_clips", "iter_parts", "scan_split", "walk_split"]

PartSink = Callable[[PackedSplit], None]


@dataclass
class SplitIndex:
    """A split checked completely, without its frames."""

    source: Location
    kind: str  # "clips" | "shards-v1" | "shards-v2" | "memory"
    key: str  # the npz key most clips came from
    names: np.ndarray  # (N,) str
    gloss: np.ndarray  # (N,) int64
    cat: np.ndarray  # (N,) int64
    lengths: np.ndarray  # (N,) int64, after max_frames
    feature_dim: int
    dtype: np.dtype  # of the frames in memory: float16 or float32
    norm: NormStats  # over every frame (after max_frames)
    manifest: dict[str, Any] | None = None
    shards: list[int] | None = None  # the manifest's shards this split is made of

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())

    @property
    def nbytes(self) -> int:
        """Bytes of the frames once in memory (what a node's object store must hold)."""
        return self.num_frames * self.feature_dim * self.dtype.itemsize

    @classmethod
    def of_split(cls, split, source: str = "<in memory>") -> SplitIndex:
        """The index of a split already in memory (the built-in synthetic data)."""
        return cls(
            Path(source), "memory", "X", split.names, split.gloss, split.cat, split.lengths,
            split.feature_dim, split.dtype, split.norm_stats(),
        )  # fmt: skip

    @property
    def streamable(self) -> bool:
        """Format 2 shards: memory-mappable, so each rank can read its own shards."""
        return self.kind == "shards-v2"


def check_split_args(
    num_gloss: Any, num_cat: Any, max_frames: Any, keys: Sequence[str]
) -> list[str]:
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


class _Walk:
    """The state of one pass: what was kept, what was wrong."""

    def __init__(self, folder: Location, on_part: PartSink | None) -> None:
        self.folder = folder
        self.on_part = on_part
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.names: list[np.ndarray] = []
        self.gloss: list[np.ndarray] = []
        self.cat: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.dtypes: list[np.dtype] = []
        self.keys: Counter[str] = Counter()
        self.moments: FrameMoments | None = None
        self.feature_dim = 0

    def emit(self, part: PackedSplit) -> None:
        """Hand `part` on, unless a problem already condemned the pass."""
        if self.on_part is not None and not self.problems:
            self.on_part(part)

    def index(self, kind: str, norm: NormStats | None, manifest=None, shards=None) -> SplitIndex:
        def joined(field: str, dtype) -> np.ndarray:
            parts = getattr(self, field)
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        key = self.keys.most_common(1)[0][0] if self.keys else ""
        norm = norm or (self.moments.stats() if self.moments else None)
        return SplitIndex(
            self.folder, kind, key, joined("names", str), joined("gloss", np.int64),
            joined("cat", np.int64), joined("lengths", np.int64), self.feature_dim,
            frame_dtype(self.dtypes), norm, manifest, shards,
        )  # fmt: skip


def _walk_clips(
    w: _Walk, csv: Location | None, keys, limits, max_frames, part_bytes: int | None
) -> str:
    if csv is None:
        w.problems.append(
            f"{w.folder}: is a folder of per-clip .npz files (no manifest.json), so labels_csv "
            "is required"
        )
        return "clips"
    rows, problems, w.notes = parse_labels(csv, limits["gloss"], limits["cat"])
    w.problems += problems
    if not w.folder.is_dir():
        what = "does not exist" if not w.folder.exists() else "is not a folder"
        w.problems.append(f"data folder {w.folder} {what} (expected a folder of .npz clips)")
        return "clips"
    dims: list[tuple[int, Location]] = []
    chunk: list[tuple[np.ndarray, Any]] = []

    def flush() -> None:
        if chunk:
            w.emit(PackedSplit.from_clips(
                [a for a, _ in chunk], [r.gloss for _, r in chunk], [r.cat for _, r in chunk],
                [r.name for _, r in chunk],
            ))  # fmt: skip
            chunk.clear()

    for row in rows:
        path = w.folder / f"{row.name}.npz"
        try:
            arr, key = read_clip(path, keys, max_frames)
        except ClipProblem as exc:
            w.problems.append(f"{exc} (listed on {csv} line {row.line})")
            continue
        dims.append((arr.shape[1], path))
        if w.moments is None:
            w.moments, w.feature_dim = FrameMoments(arr.shape[1]), arr.shape[1]
        if arr.shape[1] != w.feature_dim:
            continue  # reported below, against the majority
        w.moments.add(arr)
        w.keys[key] += 1
        w.dtypes.append(arr.dtype)
        for field, value in (("names", row.name), ("gloss", row.gloss), ("cat", row.cat),
                             ("lengths", len(arr))):  # fmt: skip
            getattr(w, field).append(np.asarray([value]))
        if w.on_part is not None:
            chunk.append((arr, row))
            if part_bytes is not None and sum(a.nbytes for a, _ in chunk) >= part_bytes:
                flush()
    if dims:
        majority, count = Counter(d for d, _ in dims).most_common(1)[0]
        w.problems += [
            f"{path}: has D = {d} features per frame but the majority of files "
            f"({count} of {len(dims)}) have D = {majority} (expected one D for all clips)"
            for d, path in dims
            if d != majority
        ]
    flush()
    return "clips"


def _chosen(num_shards: int, folder: Location, shard_indices: Sequence[int] | None):
    if shard_indices is None:
        return list(range(num_shards)), []
    indices = [int(i) for i in shard_indices]
    if (
        not indices
        or len(set(indices)) != len(indices)
        or any(not 0 <= i < num_shards for i in indices)
    ):
        return None, [
            f"shard_indices {list(shard_indices)} (expected distinct indices in "
            f"[0, {num_shards}) for {folder})"
        ]
    return indices, []


def _walk_shards(
    w: _Walk,
    csv: Location | None,
    keys,
    limits,
    max_frames,
    shard_indices,
    verify: bool,
    reader: str,
) -> tuple[str, NormStats | None, dict | None, list[int] | None]:
    manifest, w.problems = read_manifest(w.folder)
    if manifest is None:
        return "shards", None, None, None
    if manifest["key"] not in keys:
        w.problems.append(
            f"{w.folder / 'manifest.json'}: shards were packed from key {manifest['key']!r} "
            f"(expected one of {', '.join(map(repr, keys))}; pass keys to match the data)"
        )
    indices, problems = _chosen(manifest["num_shards"], w.folder, shard_indices)
    w.problems += problems
    if indices is None:
        return "shards", None, manifest, None
    v2 = manifest["format_version"] == 2
    w.feature_dim = manifest["feature_dim"]
    # Format 2 carries the statistics of its stored frames; they hold unless clips get cut.
    stored_norm = v2 and (max_frames is None or max_frames >= manifest["max_length"])
    if not stored_norm:
        w.moments = FrameMoments(w.feature_dim)
    for i in indices:
        entry = manifest["shards"][i]
        part = labels = None
        if v2:
            if verify:
                labels, problems = verify_shard(w.folder, entry, manifest, limits)
                w.problems += problems
                if labels is None:
                    continue
            if w.on_part is not None or w.moments is not None or labels is None:
                part = open_shard(w.folder, entry, manifest, reader=reader)
        else:
            arrays, problems = load_v1_shard(w.folder / entry["file"], entry, manifest, limits)
            w.problems += problems
            if arrays is None:
                continue
            part = PackedSplit(**arrays)
        labels = labels or ShardLabels(part.offsets, part.gloss, part.cat, part.names)
        lengths = labels.lengths if max_frames is None else np.minimum(labels.lengths, max_frames)
        for field, value in (("names", labels.names), ("gloss", labels.gloss),
                             ("cat", labels.cat), ("lengths", lengths)):  # fmt: skip
            getattr(w, field).append(value)
        w.dtypes.append(np.dtype(manifest["dtype"]) if v2 else part.frames.dtype)
        w.keys[manifest["key"]] += len(lengths)
        if w.moments is not None and not w.problems:
            PackedParts([part], max_frames).add_frames_to(w.moments)
        if part is not None:
            w.emit(part)
    if not w.problems:
        names = np.concatenate(w.names)
        if csv is not None:
            problems, w.notes = csv_problems(
                w.folder, csv, names, np.concatenate(w.gloss), np.concatenate(w.cat), limits,
                complete=shard_indices is None,
            )  # fmt: skip
            w.problems += problems
        elif len(set(names.tolist())) != len(names):
            w.problems.append(f"{w.folder}: a clip name appears in more than one shard")
    kind = "shards-v2" if v2 else "shards-v1"
    return kind, (manifest["norm"] if stored_norm else None), manifest, indices


def walk_split(
    source: str | os.PathLike[str] | RemotePath,
    labels_csv: str | os.PathLike[str] | RemotePath | None = None,
    *,
    keys: Sequence[str] = ("X",),
    num_gloss: int | None,
    num_cat: int | None,
    max_frames: int | None = None,
    split: str = "train",
    shard_indices: Sequence[int] | None = None,
    on_part: PartSink | None = None,
    part_bytes: int | None = None,
    verify: bool = True,
    reader: str = "load",
) -> SplitIndex:
    """Check one split completely, handing its frames to `on_part` in parts; raises one
    `DataError` listing every problem (a gloss seen with two categories only warns).

    Parts are format-1 shards read in full, format-2 shards memory-mapped, or, for a per-clip
    folder, chunks of about `part_bytes` (one part when None). `verify=False` skips format 2's
    checksums (for a reader after the driver checked them). `reader` names who opens shards in
    the shard log. `max_frames` applies to the index; clips of per-clip folders are cut as they
    are read, shards stay as stored (cut them when reading clips: `PackedParts`).
    """
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    problems = check_split_args(num_gloss, num_cat, max_frames, keys)
    if problems:
        raise DataError(problems, title=f"invalid {split} data")
    limits = {"gloss": num_gloss, "cat": num_cat}
    folder = as_location(source)
    csv = as_location(labels_csv) if labels_csv is not None else None
    w = _Walk(folder, on_part)
    norm = manifest = shards = None
    if is_shard_dir(folder):
        kind, norm, manifest, shards = _walk_shards(
            w, csv, keys, limits, max_frames, shard_indices, verify, reader
        )
    elif shard_indices is not None:
        kind = "clips"
        w.problems.append(
            f"{folder}: shard_indices given but there is no manifest.json (no shards)"
        )
    else:
        kind = _walk_clips(w, csv, keys, limits, max_frames, part_bytes)
    for note in w.notes:
        warnings.warn(note, UserWarning, stacklevel=3)
    if not w.problems and not w.names:
        w.problems.append(f"{split} split from {folder} is empty (expected at least one clip)")
    if w.problems:
        raise DataError(w.problems, title=f"invalid {split} data")
    return w.index(kind, norm, manifest, shards)


def scan_split(source: str | os.PathLike[str], labels_csv=None, **options) -> SplitIndex:
    """`walk_split` keeping no frames: the driver's and the packer's check, in bounded memory."""
    return walk_split(source, labels_csv, reader="verify", **options)


def iter_parts(
    index: SplitIndex,
    *,
    keys: Sequence[str],
    max_frames: int | None,
    part_bytes: int = 1 << 27,
    reader: str = "load",
) -> Iterator[PackedSplit]:
    """Read a split that `scan_split` checked, part by part, in the index's clip order: shards
    one at a time (format 2 memory-mapped, checksums not read again), a per-clip folder in
    chunks of about `part_bytes` (clips cut to `max_frames` as read; shards are not cut)."""
    if index.manifest is not None:
        for entry in (index.manifest["shards"][i] for i in index.shards or ()):
            if index.kind == "shards-v2":
                part = open_shard(index.source, entry, index.manifest, reader=reader)
            else:
                arrays, problems = load_v1_shard(
                    index.source / entry["file"],
                    entry,
                    index.manifest,
                    {"gloss": None, "cat": None},
                )
                if arrays is None:
                    raise DataError(problems, title="shards changed after they were checked")
                part = PackedSplit(**arrays)
            yield part
        return
    chunk: list[np.ndarray] = []
    start = 0
    for i, name in enumerate(index.names.tolist()):
        try:
            chunk.append(read_clip(index.source / f"{name}.npz", keys, max_frames)[0])
        except ClipProblem as exc:
            raise DataError([str(exc)], title="clips changed after they were checked") from None
        if sum(c.nbytes for c in chunk) >= part_bytes or i == len(index) - 1:
            rows = slice(start, i + 1)
            yield PackedSplit.from_clips(
                chunk, index.gloss[rows], index.cat[rows], index.names[rows]
            )
            chunk, start = [], i + 1


def iter_clips(
    index: SplitIndex, *, keys: Sequence[str], max_frames: int | None
) -> Iterator[tuple[np.ndarray, str, int, int]]:
    """``(frames, name, gloss, cat)`` of every clip in index order, cut to `max_frames`."""
    for part in iter_parts(index, keys=keys, max_frames=max_frames, reader="pack"):
        for i in range(len(part)):
            frames = part.clip(i)
            if max_frames is not None and len(frames) > max_frames:
                frames = frames[subsample_indices(len(frames), max_frames)]
            yield frames, str(part.names[i]), int(part.gloss[i]), int(part.cat[i])
