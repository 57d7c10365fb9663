"""Reading packed shards, format 1 (``.npz``) and format 2 (a folder of ``.npy`` per shard), and
checking them against their manifest. Every read of a shard file goes through the few functions
at the top of this module, so storage other than a local path changes only them.

Set ``SIGNRAY_SHARD_LOG=FOLDER`` to have every process append one JSON line per shard file set it
opens (pid, host, split folder, shard, who read it, labels / frames / all) to
``FOLDER/<host>-<pid>.jsonl``: the multi-node test reads it to prove that each DDP rank opened
only its own shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from signray.data.clips import READ_ERRORS
from signray.data.labels import parse_labels, range_text
from signray.data.manifest import SHARD_FILES, V1_ARRAYS
from signray.data.packed import PackedSplit
from signray.errors import DataError
from signray.storage import Location, RemotePath

__all__ = [
    "SHARD_LOG_ENV",
    "ShardLabels",
    "csv_problems",
    "load_v1_shard",
    "map_frames",
    "open_shard",
    "read_shard_labels",
    "verify_shard",
]

SHARD_LOG_ENV = "SIGNRAY_SHARD_LOG"
_READ_CHUNK = 1 << 24  # bytes per read while hashing


# --- file access: the only functions that touch shard files -------------------------------


def _log_open(folder: Location, shard: str, reader: str, what: str = "labels") -> None:
    log_dir = os.environ.get(SHARD_LOG_ENV)
    if not log_dir:
        return
    host = socket.gethostname()
    record = {"pid": os.getpid(), "host": host, "folder": str(folder), "shard": shard,
              "reader": reader, "what": what, "time": time.time()}  # fmt: skip
    with open(Path(log_dir) / f"{host}-{os.getpid()}.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _hash_npy(path: Location, expected_bytes: int) -> tuple[str, np.dtype, tuple, str | None]:
    """(sha256, dtype, shape, problem) of an .npy file, read once in chunks (bounded memory).

    Frames are also checked to be finite on the way through.
    """
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size != expected_bytes:
            return (
                "",
                np.dtype(None),
                (),
                f"has {size} bytes but the manifest says {expected_bytes}",
            )
        f.seek(0)
        digest = hashlib.sha256()
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)  # fmt: skip
        if read_header is None:
            return "", np.dtype(None), (), f"is .npy version {version} (expected 1.0 or 2.0)"
        shape, fortran, dtype = read_header(f)
        header = f.tell()
        f.seek(0)
        digest.update(f.read(header))
        if fortran or dtype.hasobject:
            return "", dtype, shape, "holds a Fortran-ordered or object array (refused)"
        if header + int(np.prod(shape)) * dtype.itemsize != size:
            return (
                "",
                dtype,
                shape,
                f"is truncated or padded (shape {shape} does not fit {size} bytes)",
            )
        row = max(dtype.itemsize * int(np.prod(shape[1:])), 1)
        buffer = bytearray(max(1, _READ_CHUNK // row) * row)
        view = memoryview(buffer)
        finite = True
        while n := f.readinto(buffer):
            digest.update(view[:n])
            if dtype.kind == "f" and finite:
                finite = bool(np.isfinite(np.frombuffer(buffer, dtype, n // dtype.itemsize)).all())
    problem = None if finite else "holds NaN/Inf values (expected finite numbers)"
    return digest.hexdigest(), dtype, shape, problem


def _load_npy(path: Location) -> np.ndarray:
    with path.open("rb") as f:
        return np.load(f, allow_pickle=False)


def _map_npy(path: Location) -> np.ndarray:
    """Memory-mapped when local; an object store cannot be mapped, so the file is read whole
    (one shard at a time: pack more shards with ``--num-shards``)."""
    if isinstance(path, RemotePath):
        return _load_npy(path)
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _load_npz(path: Location):
    if isinstance(path, RemotePath):
        with path.open("rb") as f:  # read whole: NpzFile reads lazily from an open file
            return np.load(io.BytesIO(f.read()), allow_pickle=False)
    return np.load(path, allow_pickle=False)


# --- format 2 -------------------------------------------------------------------------------


@dataclass
class ShardLabels:
    """What a shard holds besides its frames: small, read in full."""

    offsets: np.ndarray  # (N + 1,) int64
    gloss: np.ndarray  # (N,) int64
    cat: np.ndarray  # (N,) int64
    names: np.ndarray  # (N,) str

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _labels_problems(
    where: str, labels: ShardLabels, entry: dict, limits: dict[str, int | None]
) -> list[str]:
    problems = []
    n = len(labels.offsets) - 1
    if n != entry["num_clips"] or labels.offsets[-1] != entry["num_frames"]:
        problems.append(
            f"{where}: holds {n} clips and {int(labels.offsets[-1])} frames but the manifest "
            f"says {entry['num_clips']} clips and {entry['num_frames']} frames"
        )
    for k in ("gloss", "cat", "names"):
        if len(getattr(labels, k)) != n:
            problems.append(f"{where}: {k} has {len(getattr(labels, k))} entries (expected {n})")
    if labels.offsets[0] != 0 or np.any(np.diff(labels.offsets) <= 0):
        problems.append(f"{where}: offsets are inconsistent (expected strictly increasing from 0)")
    if problems:
        return problems
    for k in ("gloss", "cat"):
        ids, limit = getattr(labels, k), limits[k]
        bad = (ids < 0) | (ids >= limit) if limit is not None else ids < 0
        if bad.any():
            i = int(np.argmax(bad))
            problems.append(
                f"{where}: {int(bad.sum())} {k} id(s) out of range, e.g. clip "
                f"{str(labels.names[i])!r} has {k} {int(ids[i])} (expected {range_text(k, limit)})"
            )
        elif [int(ids.min()), int(ids.max())] != entry[f"{k}_range"]:
            problems.append(
                f"{where}: {k} ids span [{int(ids.min())}, {int(ids.max())}] but the manifest "
                f"says {entry[f'{k}_range']}"
            )
    if int(labels.lengths.max()) != entry["max_length"]:
        problems.append(
            f"{where}: the longest clip has {int(labels.lengths.max())} frames but the manifest "
            f"says max_length {entry['max_length']}"
        )
    return problems


def _arrays_problems(where: str, arrays: dict[str, np.ndarray]) -> list[str]:
    problems = []
    for k in ("offsets", "gloss", "cat"):
        if arrays[k].dtype.kind not in "iu" or arrays[k].ndim != 1:
            problems.append(
                f"{where}: {k} is {arrays[k].dtype} {arrays[k].shape} (expected int [N])"
            )
    if arrays["names"].dtype.kind != "U" or arrays["names"].ndim != 1:
        problems.append(f"{where}: names has dtype {arrays['names'].dtype} (expected unicode [N])")
    if not problems and len(arrays["offsets"]) < 2:
        problems.append(f"{where}: offsets has {len(arrays['offsets'])} entries (expected N + 1)")
    return problems


def _frames_problem(where: str, dtype: np.dtype, shape: tuple, manifest: dict, entry: dict):
    expected = (entry["num_frames"], manifest["feature_dim"])
    if dtype.name != manifest["dtype"] or tuple(shape) != expected:
        return (
            f"{where}: frames.npy is {dtype.name} {tuple(shape)} but the manifest says "
            f"{manifest['dtype']} {expected} (one D and one dtype for every shard)"
        )
    return None


def verify_shard(
    folder: Location, entry: dict, manifest: dict, limits: dict[str, int | None]
) -> tuple[ShardLabels | None, list[str]]:
    """Check one format-2 shard completely: every file's size and sha256, shapes, dtypes and
    counts against the manifest, finite frames, ids in range. Reads each file once."""
    where = str(folder / entry["name"])
    _log_open(folder, entry["name"], "verify", "all")
    arrays: dict[str, np.ndarray] = {}
    problems = []
    for file in SHARD_FILES:
        path = folder / entry["name"] / file
        info = entry["files"][file]
        try:
            digest, dtype, shape, problem = _hash_npy(path, info["bytes"])
            if problem is None and file != "frames.npy":
                arrays[file.removesuffix(".npy")] = _load_npy(path)
        except FileNotFoundError:
            problems.append(f"{path}: shard file listed in the manifest is missing")
            continue
        except READ_ERRORS as exc:
            problems.append(f"{path}: not a valid .npy file (corrupt: {exc})")
            continue
        if problem is None and digest != info["sha256"]:
            problem = "sha256 differs from the manifest's (corrupt or changed since packing)"
        if problem is None and file == "frames.npy":
            problem = _frames_problem(where, dtype, shape, manifest, entry)
            problems += [problem] if problem else []
        elif problem is not None:
            problems.append(f"{path}: {problem}")
    if problems:
        return None, problems
    problems = _arrays_problems(where, arrays)
    if problems:
        return None, problems
    labels = ShardLabels(**{k: v.astype(np.int64) if k != "names" else v
                            for k, v in arrays.items()})  # fmt: skip
    problems = _labels_problems(where, labels, entry, limits)
    return (None if problems else labels), problems


def read_shard_labels(folder: Location, entry: dict, *, reader: str) -> ShardLabels:
    """A format-2 shard's small arrays (offsets, ids, names), without touching its frames."""
    _log_open(folder, entry["name"], reader)
    base = folder / entry["name"]
    small = {k: _load_npy(base / f"{k}.npy") for k in ("offsets", "gloss", "cat", "names")}
    return ShardLabels(**small)


def map_frames(folder: Location, entry: dict, manifest: dict, *, reader: str) -> np.ndarray:
    """A format-2 shard's frames, memory-mapped read-only in their stored dtype."""
    _log_open(folder, entry["name"], reader, "frames")
    base = folder / entry["name"]
    frames = _map_npy(base / "frames.npy")
    problem = _frames_problem(str(base), frames.dtype, frames.shape, manifest, entry)
    if problem:
        raise DataError([problem + "; it changed after it was checked"])
    return frames


def open_shard(folder: Location, entry: dict, manifest: dict, *, reader: str) -> PackedSplit:
    """One format-2 shard as a `PackedSplit` whose frames are memory-mapped (read-only, in the
    stored dtype). Only shapes are checked: `verify_shard` checked the contents before."""
    labels = read_shard_labels(folder, entry, reader=reader)
    return PackedSplit(map_frames(folder, entry, manifest, reader=reader), **vars(labels))


# --- format 1 -------------------------------------------------------------------------------


def load_v1_shard(
    path: Location, entry: dict[str, Any], manifest: dict[str, Any], limits: dict[str, int | None]
) -> tuple[dict[str, np.ndarray] | None, list[str]]:
    """One format-1 ``.npz`` shard, read in full and checked."""
    try:
        npz = _load_npz(path)
    except FileNotFoundError:
        return None, [f"{path}: shard file listed in the manifest is missing"]
    except READ_ERRORS:
        return None, [f"{path}: not a valid .npz shard (corrupt or not a zip file)"]
    if isinstance(npz, np.ndarray):
        return None, [f"{path}: is a bare .npy array, not an .npz shard"]
    with npz:
        missing = [k for k in V1_ARRAYS if k not in npz.files]
        if missing:
            return None, [
                f"{path}: missing array(s) {', '.join(missing)} (expected {', '.join(V1_ARRAYS)})"
            ]
        try:
            arrays = {k: npz[k] for k in V1_ARRAYS}
        except READ_ERRORS as exc:
            return None, [f"{path}: cannot be read, corrupt shard or object arrays ({exc})"]

    frames = arrays["frames"]
    problems = _arrays_problems(str(path), arrays)
    if frames.dtype.kind != "f" or frames.ndim != 2:
        problems.append(f"{path}: frames is {frames.dtype} {frames.shape} (expected float [F, D])")
    elif frames.shape[1] != manifest["feature_dim"]:
        problems.append(
            f"{path}: frames have D = {frames.shape[1]} but the manifest says "
            f"feature_dim = {manifest['feature_dim']}"
        )
    if problems:
        return None, problems
    offsets = arrays["offsets"]
    n = len(offsets) - 1
    if n != entry["num_clips"] or len(frames) != entry["num_frames"]:
        problems.append(
            f"{path}: holds {n} clips and {len(frames)} frames but the manifest says "
            f"{entry['num_clips']} clips and {entry['num_frames']} frames"
        )
    for k in ("gloss", "cat", "names"):
        if len(arrays[k]) != n:
            problems.append(
                f"{path}: {k} has {len(arrays[k])} entries (expected {n}, one per clip)"
            )
    if offsets[0] != 0 or offsets[-1] != len(frames) or np.any(np.diff(offsets) <= 0):
        problems.append(
            f"{path}: offsets are inconsistent "
            f"(expected strictly increasing from 0 to {len(frames)})"
        )
    if problems:
        return None, problems
    for k in ("gloss", "cat"):
        ids, limit = arrays[k], limits[k]
        bad = (ids < 0) | (ids >= limit) if limit is not None else ids < 0
        if bad.any():
            problems.append(
                f"{path}: {int(bad.sum())} {k} id(s) out of range, e.g. clip "
                f"{str(arrays['names'][int(np.argmax(bad))])!r} has {k} {int(ids[np.argmax(bad)])} "
                f"(expected {range_text(k, limit)})"
            )
    if not problems and not np.isfinite(frames).all():
        problems.append(f"{path}: frames contain NaN/Inf values (expected finite numbers)")
    return (None if problems else arrays), problems


# --- both formats ---------------------------------------------------------------------------


def csv_problems(
    folder: Location,
    labels_csv: Location,
    names: np.ndarray,
    gloss: np.ndarray,
    cat: np.ndarray,
    limits: dict[str, int | None],
    *,
    complete: bool,
) -> tuple[list[str], list[str]]:
    """(problems, notes) of a labels CSV given with a shard folder: it must agree with the
    shards; with `complete`, every row must name a clip of the shards."""
    rows, problems, notes = parse_labels(labels_csv, limits["gloss"], limits["cat"])
    bad_csv = bool(problems)
    dupes = [n for n, c in Counter(names.tolist()).items() if c > 1]
    if dupes:
        problems.append(f"{folder}: clip name(s) {dupes[:10]} appear in more than one shard")
    by_name = {r.name: r for r in rows}
    for name, g, c in zip(names.tolist(), gloss.tolist(), cat.tolist(), strict=True):
        row = by_name.pop(name, None)
        if row is None:
            if not bad_csv:
                problems.append(f"{folder}: clip {name!r} is in the shards but not in {labels_csv}")
        elif (row.gloss, row.cat) != (g, c):
            problems.append(
                f"{labels_csv} line {row.line}: {name!r} has gloss {row.gloss}, cat {row.cat} "
                f"but the shards in {folder} say gloss {g}, cat {c} (expected them to agree)"
            )
    if complete and not bad_csv:
        problems += [
            f"{labels_csv} line {row.line}: {row.name!r} is not in the shards in {folder}"
            for row in by_name.values()
        ]
    return problems, notes
