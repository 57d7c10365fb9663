"""Write format-2 shards clip by clip in bounded memory: one folder of ``.npy`` files per shard
(frames in their stored dtype, so they memory-map as they are), sha256 of every file, the
normalisation statistics of every frame written, and ``manifest.json`` last.

Each file is written atomically (`signray.io`) and the manifest only after every shard, so a
crash never leaves a folder that loads as complete.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from signray.data.manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    SHARD_FILES,
    shard_name,
)
from signray.data.packed import FRAME_DTYPES
from signray.data.stats import FrameMoments
from signray.errors import DataError
from signray.io import atomic_write, write_bytes, write_text

__all__ = ["ShardWriter", "prepare_output", "shard_boundaries"]

Clip = tuple[np.ndarray, str, int, int]  # frames (T, D), name, gloss, cat


def shard_boundaries(lengths: np.ndarray, num_shards: int) -> np.ndarray:
    """Clip indices ``(num_shards + 1,)`` cutting contiguous shards with balanced frame counts.

    Each cut sits at the clip boundary nearest to an equal share of frames; every shard keeps at
    least one clip.
    """
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    n = len(lengths)
    if not 1 <= num_shards <= n:
        raise DataError(f"num_shards is {num_shards} (expected 1 <= num_shards <= {n}, the clips)")
    total = offsets[-1]
    cuts = np.zeros(num_shards + 1, dtype=np.int64)
    cuts[-1] = n
    for k in range(1, num_shards):
        target = total * k / num_shards
        i = int(np.searchsorted(offsets, target))
        if i > 0 and target - offsets[i - 1] <= offsets[min(i, n)] - target:
            i -= 1
        cuts[k] = min(max(i, cuts[k - 1] + 1), n - (num_shards - k))
    return cuts


def prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless `overwrite`; then remove only what a pack wrote there
    (the manifest first, so the folder never reads as packed while shards are replaced)."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--output-dir {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"output folder {out} is not empty (pass --overwrite to replace it)")
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        for path in out.glob("shard-*-of-*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)


class _Hashing:
    """A file wrapper that hashes what is written through it."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.digest, self.size = fh, hashlib.sha256(), 0

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        self.digest.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def info(self) -> dict[str, Any]:
        return {"bytes": self.size, "sha256": self.digest.hexdigest()}


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class ShardWriter:
    """Writes the shards of one split in order, then its manifest (`finish`)."""

    def __init__(
        self,
        out: Path,
        num_shards: int,
        feature_dim: int,
        dtype: np.dtype | str,
        *,
        key: str = "X",
        num_gloss: int | None = None,
        num_cat: int | None = None,
        max_frames: int | None = None,
        on_shard: Callable[[dict[str, Any]], None] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """`extra`: more manifest fields about the frames (e.g. the keypoint ``layout``)."""
        self.on_shard = on_shard
        self.dtype = np.dtype(dtype)
        if self.dtype not in FRAME_DTYPES:
            raise DataError(f"shards store float16 or float32 frames, not {self.dtype}")
        self.out, self.num_shards, self.feature_dim = Path(out), num_shards, feature_dim
        self.header = {"key": key, "num_gloss": num_gloss, "num_cat": num_cat,
                       "max_frames": max_frames, **(extra or {})}  # fmt: skip
        self.moments = FrameMoments(feature_dim)
        self.entries: list[dict[str, Any]] = []

    def write_shard(self, clips: Iterable[Clip], num_frames: int) -> dict[str, Any]:
        """Write the next shard from `clips` (exactly `num_frames` frames in all)."""
        name = shard_name(len(self.entries), self.num_shards)
        folder = self.out / name
        lengths: list[int] = []
        labels: dict[str, list] = {"names": [], "gloss": [], "cat": []}
        files: dict[str, dict[str, Any]] = {}

        def write_frames(fh: BinaryIO) -> None:
            sink = _Hashing(fh)
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": (num_frames, self.feature_dim)}  # fmt: skip
            np.lib.format.write_array_header_1_0(sink, header)
            for frames, clip_name, gloss, cat in clips:
                frames = np.ascontiguousarray(frames, dtype=self.dtype)  # (T, D)
                if frames.ndim != 2 or frames.shape[1] != self.feature_dim or not len(frames):
                    raise DataError(f"clip {clip_name!r} has shape {frames.shape} "
                                    f"(expected [T >= 1, {self.feature_dim}])")  # fmt: skip
                sink.write(frames)
                self.moments.add(frames)
                lengths.append(len(frames))
                for field, value in (("names", clip_name), ("gloss", gloss), ("cat", cat)):
                    labels[field].append(value)
            if sum(lengths) != num_frames:
                raise DataError(f"shard {name} got {sum(lengths)} frames (expected {num_frames})")
            files["frames.npy"] = sink.info()

        atomic_write(folder / "frames.npy", write_frames)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        arrays = {"offsets": offsets, "gloss": np.asarray(labels["gloss"], dtype=np.int64),
                  "cat": np.asarray(labels["cat"], dtype=np.int64),
                  "names": np.asarray(labels["names"], dtype=str)}  # fmt: skip
        for key, array in arrays.items():
            data = _npy_bytes(array)
            write_bytes(folder / f"{key}.npy", data)
            files[f"{key}.npy"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        entry = {
            "name": name,
            "num_clips": len(lengths),
            "num_frames": num_frames,
            "max_length": max(lengths),
            "gloss_range": [int(arrays["gloss"].min()), int(arrays["gloss"].max())],
            "cat_range": [int(arrays["cat"].min()), int(arrays["cat"].max())],
            "files": {f: files[f] for f in SHARD_FILES},
        }
        self.entries.append(entry)
        if self.on_shard is not None:
            self.on_shard(entry)
        return entry

    def finish(self) -> dict[str, Any]:
        """Write ``manifest.json`` (after every shard); returns it."""
        if len(self.entries) != self.num_shards:
            raise DataError(f"wrote {len(self.entries)} of {self.num_shards} shards")
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "num_shards": self.num_shards,
            "num_clips": sum(e["num_clips"] for e in self.entries),
            "num_frames": sum(e["num_frames"] for e in self.entries),
            "feature_dim": self.feature_dim,
            "dtype": self.dtype.name,
            **self.header,
            "max_length": max(e["max_length"] for e in self.entries),
            "norm": self.moments.stats().to_json(),
            "shards": self.entries,
        }
        write_text(self.out / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")
        return manifest

    def write_all(self, clips: Iterable[Clip], lengths: np.ndarray) -> dict[str, Any]:
        """Every shard from one stream of clips of these `lengths`, cut by `shard_boundaries`."""
        cuts = shard_boundaries(lengths, self.num_shards)
        stream = iter(clips)
        for lo, hi in itertools.pairwise(cuts.tolist()):
            self.write_shard(itertools.islice(stream, hi - lo), int(lengths[lo:hi].sum()))
        return self.finish()
