"""On-disk format of packed shard folders, shared by the packer and the loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "SHARD_ARRAYS",
    "is_shard_dir",
    "read_manifest",
    "shard_file_name",
]

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "signray-packed"
FORMAT_VERSION = 1
SHARD_ARRAYS = ("frames", "offsets", "gloss", "cat", "names")


def shard_file_name(index: int, num_shards: int) -> str:
    return f"shard-{index:05d}-of-{num_shards:05d}.npz"


def is_shard_dir(path: Path) -> bool:
    return (path / MANIFEST_NAME).is_file()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_manifest(folder: Path) -> tuple[dict[str, Any] | None, list[str]]:
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
