"""The shard manifest (``manifest.json``): its names, and the checks that run before any shard
is opened. Format 2 (one folder of ``.npy`` files per shard, memory-mappable, checksummed) is
what `signray.data.pack` writes; format 1 (one ``.npz`` per shard) still loads.

Format 2, every field checked here::

    format "signray-packed", format_version 2, num_shards, num_clips, num_frames,
    feature_dim, dtype ("float16" | "float32"), key, num_gloss, num_cat, max_frames,
    max_length (longest clip), norm {count, mean[D], std[D]} (float64, over every frame),
    shards [{name, num_clips, num_frames, max_length, gloss_range [lo, hi], cat_range [lo, hi],
             files {frames.npy: {bytes, sha256}, offsets.npy: ..., gloss.npy, cat.npy,
                    names.npy}}]
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from signray.data.packed import FRAME_DTYPES
from signray.data.stats import NormStats
from signray.storage import Location

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "SHARD_FILES",
    "V1_ARRAYS",
    "is_shard_dir",
    "read_manifest",
    "shard_name",
]

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "signray-packed"
FORMAT_VERSION = 2
# Format 1: one .npz per shard holding these arrays.
V1_ARRAYS = ("frames", "offsets", "gloss", "cat", "names")
# Format 2: one folder per shard holding these files.
SHARD_FILES = ("frames.npy", "offsets.npy", "gloss.npy", "cat.npy", "names.npy")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def shard_name(index: int, num_shards: int) -> str:
    """The folder of shard `index` (format 2)."""
    return f"shard-{index:05d}-of-{num_shards:05d}"


def is_shard_dir(path: Location) -> bool:
    return (path / MANIFEST_NAME).is_file()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_problems(obj: dict, names: tuple[str, ...], low: int) -> list[str]:
    return [
        f"{name} is {obj.get(name)!r} (expected an integer >= {low})"
        for name in names
        if not _is_int(obj.get(name)) or obj[name] < low
    ]


def read_manifest(folder: Location) -> tuple[dict[str, Any] | None, list[str]]:
    """Parse and check ``manifest.json`` (format 1 or 2); returns ``(manifest or None, problems)``.

    A format 2 manifest comes back with ``norm`` parsed into `NormStats`.
    """
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
    if version not in (1, FORMAT_VERSION):
        problems.append(
            f"{path}: format_version is {version!r} (expected 1 or {FORMAT_VERSION}; "
            "re-pack the data with this version of signray)"
        )
        return None, problems
    problems += [
        f"{path}: {p}"
        for p in _int_problems(manifest, ("num_shards", "num_clips", "feature_dim"), 1)
        + _int_problems(manifest, ("num_frames",), 0)
    ]
    if not isinstance(manifest.get("key"), str):
        problems.append(f"{path}: key is {manifest.get('key')!r} (expected the npz key packed)")
    for field in ("num_gloss", "num_cat"):
        value = manifest.get(field)
        if value is not None and (not _is_int(value) or value < 1):
            problems.append(f"{path}: {field} is {value!r} (expected a positive integer or null)")
    if version == FORMAT_VERSION:
        problems += _v2_header_problems(path, manifest)

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
        problems += [f"{where}.{p}" for p in _entry_problems(entry, version)]
    if problems:
        return None, problems

    for field in ("num_clips", "num_frames"):
        total = sum(entry[field] for entry in shards)
        if total != manifest[field]:
            problems.append(
                f"{path}: shards hold {total} {field.removeprefix('num_')} in all "
                f"but {field} is {manifest[field]}"
            )
    names = [entry.get("name", entry.get("file")) for entry in shards]
    if len(set(names)) != len(names):
        problems.append(f"{path}: a shard is listed twice (expected each shard once)")
    if version == FORMAT_VERSION and not problems:
        longest = max(entry["max_length"] for entry in shards)
        if longest != manifest["max_length"]:
            problems.append(
                f"{path}: the longest clip of the shards has {longest} frames but max_length "
                f"is {manifest['max_length']}"
            )
        norm, why = NormStats.from_json(manifest.get("norm"), manifest["feature_dim"])
        if norm is None:
            problems.append(f"{path}: norm {why}")
        manifest = {**manifest, "norm": norm}
    return (None if problems else manifest), problems


def _v2_header_problems(path: Location, manifest: dict[str, Any]) -> list[str]:
    problems = []
    if manifest.get("dtype") not in [d.name for d in FRAME_DTYPES]:
        problems.append(
            f"{path}: dtype is {manifest.get('dtype')!r} (expected "
            f"{' or '.join(repr(d.name) for d in FRAME_DTYPES)})"
        )
    problems += [f"{path}: {p}" for p in _int_problems(manifest, ("max_length",), 1)]
    max_frames = manifest.get("max_frames")
    if max_frames is not None and (not _is_int(max_frames) or max_frames < 1):
        problems.append(f"{path}: max_frames is {max_frames!r} (expected a positive integer)")
    return problems


def _entry_problems(entry: dict[str, Any], version: int) -> list[str]:
    """Problems of one shard entry, each starting with the field (the caller names the entry)."""
    problems = _int_problems(entry, ("num_clips", "num_frames"), 0)
    if version == 1:
        name = entry.get("file")
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".npz"):
            problems.append(f"file is {name!r} (expected an .npz file name in the folder)")
        return problems
    name = entry.get("name")
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        problems.append(f"name is {name!r} (expected a shard folder name in the folder)")
    problems += _int_problems(entry, ("num_clips", "max_length"), 1)
    for field in ("gloss_range", "cat_range"):
        value = entry.get(field)
        if (
            not (isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value))
            or value[0] > value[1]
        ):
            problems.append(f"{field} is {value!r} (expected [lowest, highest] ids)")
    files = entry.get("files")
    if not isinstance(files, dict) or sorted(files) != sorted(SHARD_FILES):
        found = sorted(files) if isinstance(files, dict) else files
        problems.append(f"files lists {found!r} (expected {', '.join(SHARD_FILES)})")
        return problems
    for file, info in files.items():
        ok = isinstance(info, dict) and _is_int(info.get("bytes")) and info["bytes"] > 0
        if (
            not ok
            or not isinstance(info.get("sha256"), str)
            or not _SHA256.fullmatch(info["sha256"])
        ):
            problems.append(
                f"files[{file!r}] is {info!r} (expected bytes > 0 and a sha256 hex digest)"
            )
    return problems
