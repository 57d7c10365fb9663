"""Packed shard folders: the manifest format, shared by the packer, and the validated loader."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from signray.data.clips import READ_ERRORS
from signray.data.labels import parse_labels, range_text
from signray.data.packed import PackedSplit
from signray.storage import Location, explain_error

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "SHARD_ARRAYS",
    "is_shard_dir",
    "load_shards",
    "read_manifest",
    "shard_file_name",
]

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "signray-packed"
FORMAT_VERSION = 1
SHARD_ARRAYS = ("frames", "offsets", "gloss", "cat", "names")


def shard_file_name(index: int, num_shards: int) -> str:
    return f"shard-{index:05d}-of-{num_shards:05d}.npz"


def is_shard_dir(path: Location) -> bool:
    return (path / MANIFEST_NAME).is_file()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_manifest(folder: Location) -> tuple[dict[str, Any] | None, list[str]]:
    """Parse and check ``manifest.json``; returns ``(manifest or None, problems)``."""
    path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"{path}: cannot read the shard manifest ({exc})"]
    if not isinstance(manifest, dict):
        return None, [f"{path}: expected a JSON object, got {type(manifest).__name__}"]

    problems: list[str] = []
    if manifest.get("format") != FORMAT_NAME:
        problems.append(f"{path}: format is {manifest.get('format')!r} (expected {FORMAT_NAME!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        problems.append(
            f"{path}: format_version is {version!r} (expected {FORMAT_VERSION}; "
            "re-pack the data with this version of signray)"
        )
    for field in ("num_shards", "num_clips", "num_frames", "feature_dim"):
        value = manifest.get(field)
        low = 0 if field == "num_frames" else 1
        if not _is_int(value) or value < low:
            problems.append(f"{path}: {field} is {value!r} (expected an integer >= {low})")
    if not isinstance(manifest.get("key"), str):
        problems.append(f"{path}: key is {manifest.get('key')!r} (expected the npz key packed)")
    for field in ("num_gloss", "num_cat"):
        value = manifest.get(field)
        if value is not None and (not _is_int(value) or value < 1):
            problems.append(f"{path}: {field} is {value!r} (expected a positive integer or null)")

    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        problems.append(f"{path}: shards is {shards!r} (expected a non-empty list)")
        return None, problems
    if _is_int(manifest.get("num_shards")) and len(shards) != manifest["num_shards"]:
        problems.append(
            f"{path}: lists {len(shards)} shards but num_shards is {manifest['num_shards']}"
        )
    for i, entry in enumerate(shards):
        where = f"{path}: shards[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} is {entry!r} (expected an object)")
            continue
        name = entry.get("file")
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".npz"):
            problems.append(f"{where}.file is {name!r} (expected an .npz file name in the folder)")
        for field in ("num_clips", "num_frames"):
            value = entry.get(field)
            if not _is_int(value) or value < 0:
                problems.append(f"{where}.{field} is {value!r} (expected an integer >= 0)")
    if problems:
        return None, problems

    for field in ("num_clips", "num_frames"):
        total = sum(entry[field] for entry in shards)
        if total != manifest[field]:
            problems.append(
                f"{path}: shards hold {total} {field.removeprefix('num_')} in all "
                f"but {field} is {manifest[field]}"
            )
    return (None if problems else manifest), problems


def _load_shard_file(
    path: Location, entry: dict[str, Any], manifest: dict[str, Any], limits: dict[str, int | None]
) -> tuple[dict[str, np.ndarray] | None, list[str]]:
    try:
        fh = path.open("rb")  # seekable, also on an object store: arrays are read one by one
    except FileNotFoundError:
        return None, [f"{path}: shard file listed in the manifest is missing"]
    except OSError as exc:
        return None, [f"{path}: cannot read it ({explain_error(exc, path)})"]
    with fh:
        return _read_shard(path, fh, entry, manifest, limits)


def _read_shard(
    path: Location,
    fh,
    entry: dict[str, Any],
    manifest: dict[str, Any],
    limits: dict[str, int | None],
) -> tuple[dict[str, np.ndarray] | None, list[str]]:
    try:
        npz = np.load(fh, allow_pickle=False)
    except READ_ERRORS:
        return None, [f"{path}: not a valid .npz shard (corrupt or not a zip file)"]
    if isinstance(npz, np.ndarray):
        return None, [f"{path}: is a bare .npy array, not an .npz shard"]
    with npz:
        missing = [k for k in SHARD_ARRAYS if k not in npz.files]
        if missing:
            return None, [
                f"{path}: missing array(s) {', '.join(missing)} "
                f"(expected {', '.join(SHARD_ARRAYS)})"
            ]
        try:
            arrays = {k: npz[k] for k in SHARD_ARRAYS}
        except READ_ERRORS as exc:
            return None, [f"{path}: cannot be read, corrupt shard or object arrays ({exc})"]

    frames, offsets, names = arrays["frames"], arrays["offsets"], arrays["names"]
    problems = []
    if frames.dtype.kind != "f" or frames.ndim != 2:
        problems.append(f"{path}: frames is {frames.dtype} {frames.shape} (expected float [F, D])")
    elif frames.shape[1] != manifest["feature_dim"]:
        problems.append(
            f"{path}: frames have D = {frames.shape[1]} but the manifest says "
            f"feature_dim = {manifest['feature_dim']}"
        )
    if names.dtype.kind != "U":
        problems.append(f"{path}: names has dtype {names.dtype} (expected a unicode string array)")
    for k in ("offsets", "gloss", "cat"):
        if arrays[k].dtype.kind not in "iu" or arrays[k].ndim != 1:
            problems.append(
                f"{path}: {k} is {arrays[k].dtype} {arrays[k].shape} (expected int [N])"
            )
    if problems:
        return None, problems

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
    if len(offsets) and (
        offsets[0] != 0 or offsets[-1] != len(frames) or np.any(np.diff(offsets) <= 0)
    ):
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
                f"{names[int(np.argmax(bad))]!r} has {k} {int(ids[np.argmax(bad)])} "
                f"(expected {range_text(k, limit)})"
            )
    if not problems and not np.isfinite(frames).all():
        problems.append(f"{path}: frames contain NaN/Inf values (expected finite numbers)")
    return (None if problems else arrays), problems


def load_shards(
    folder: Location,
    labels_csv: Location | None,
    keys: Sequence[str],
    num_gloss: int | None,
    num_cat: int | None,
    shard_indices: Sequence[int] | None,
) -> tuple[PackedSplit | None, list[str], list[str], Counter[str]]:
    manifest, problems = read_manifest(folder)
    if manifest is None:
        return None, problems, [], Counter()
    manifest_path = folder / "manifest.json"
    if manifest["key"] not in keys:
        problems.append(
            f"{manifest_path}: shards were packed from key {manifest['key']!r} "
            f"(expected one of {', '.join(map(repr, keys))}; pass keys to match the data)"
        )
    num_shards = manifest["num_shards"]
    if shard_indices is None:
        indices = list(range(num_shards))
    else:
        indices = [int(i) for i in shard_indices]
        bad = [i for i in indices if not 0 <= i < num_shards]
        if bad or not indices or len(set(indices)) != len(indices):
            problems.append(
                f"shard_indices {list(shard_indices)} (expected distinct indices in "
                f"[0, {num_shards}) for {folder})"
            )
            return None, problems, [], Counter()

    limits = {"gloss": num_gloss, "cat": num_cat}
    entries = [manifest["shards"][i] for i in indices]
    loaded: list[dict[str, np.ndarray]] = []
    for entry in entries:
        arrays, shard_problems = _load_shard_file(folder / entry["file"], entry, manifest, limits)
        problems.extend(shard_problems)
        if arrays is not None:
            loaded.append(arrays)

    notes: list[str] = []
    if problems:
        return None, problems, notes, Counter()
    names = np.concatenate([a["names"] for a in loaded])
    dupes = [n for n, c in Counter(names.tolist()).items() if c > 1]
    if dupes:
        problems.append(f"{folder}: clip name(s) {dupes[:10]} appear in more than one shard")
    gloss = np.concatenate([a["gloss"] for a in loaded]).astype(np.int64)
    cat = np.concatenate([a["cat"] for a in loaded]).astype(np.int64)

    if labels_csv is not None:
        rows, csv_problems, notes = parse_labels(labels_csv, num_gloss, num_cat)
        problems.extend(csv_problems)
        by_name = {r.name: r for r in rows}
        for name, g, c in zip(names.tolist(), gloss.tolist(), cat.tolist(), strict=True):
            row = by_name.pop(name, None)
            if row is None:
                if not csv_problems:
                    problems.append(
                        f"{folder}: clip {name!r} is in the shards but not in {labels_csv}"
                    )
            elif (row.gloss, row.cat) != (g, c):
                problems.append(
                    f"{labels_csv} line {row.line}: {name!r} has gloss {row.gloss}, cat {row.cat} "
                    f"but the shards in {folder} say gloss {g}, cat {c} (expected them to agree)"
                )
        if shard_indices is None and not csv_problems:
            for row in by_name.values():
                problems.append(
                    f"{labels_csv} line {row.line}: {row.name!r} is not in the shards in {folder}"
                )
    if problems:
        return None, problems, notes, Counter()

    # One allocation for the whole split; each shard is copied in and dropped.
    total = sum(len(a["frames"]) for a in loaded)
    frames = np.empty((total, manifest["feature_dim"]), dtype=np.float32)
    offsets = [np.zeros(1, dtype=np.int64)]
    start = 0
    while loaded:
        arrays = loaded.pop(0)
        frames[start : start + len(arrays["frames"])] = arrays["frames"]
        offsets.append(arrays["offsets"][1:].astype(np.int64) + start)
        start += len(arrays["frames"])
    split = PackedSplit(frames, np.concatenate(offsets), gloss, cat, names)
    return split, problems, notes, Counter({manifest["key"]: len(split)})
