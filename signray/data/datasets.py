"""Load a split from per-clip .npz files or packed shards, validating everything up front.

Every problem found (labels, files, arrays) is collected and raised as one ``DataError``, so a
user fixes a dataset in one pass instead of one crash per epoch.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from signray.data._shards import SHARD_ARRAYS, is_shard_dir, read_manifest
from signray.data.packed import PackedSplit
from signray.errors import DataError

__all__ = [
    "LabelRow",
    "load_split",
    "load_split_with_key",
    "read_labels",
    "subsample_indices",
]

REQUIRED_COLUMNS = ("file", "gloss", "cat")
_INT_RE = re.compile(r"[+-]?\d+")
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


@dataclass(frozen=True)
class LabelRow:
    """One labels-CSV row; ``line`` is the line number a user sees in an editor (header = 1)."""

    line: int
    name: str
    gloss: int
    cat: int


def subsample_indices(length: int, max_frames: int) -> np.ndarray:
    """Uniform temporal subsampling indices so a clip has at most ``max_frames`` frames."""
    if length <= max_frames:
        return np.arange(length, dtype=np.int64)
    return np.linspace(0, length - 1, max_frames).round().astype(np.int64)


def _strip_npz(name: str) -> str:
    return name[: -len(".npz")] if name.lower().endswith(".npz") else name


def _parse_id(text: str) -> int | None:
    return int(text) if _INT_RE.fullmatch(text) else None


def _range_text(field: str, limit: int | None) -> str:
    return f"0 <= {field} < {limit}" if limit is not None else f"{field} >= 0"


def _parse_labels(
    path: Path, num_gloss: int | None, num_cat: int | None
) -> tuple[list[LabelRow], list[str], list[str]]:
    """Returns ``(rows, problems, warnings)`` for a labels CSV; never raises for bad input."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return [], [f"labels CSV {path}: file not found"], []
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"labels CSV {path}: cannot read it ({exc})"], []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        records = [(reader.line_num, cells) for cells in reader]
    except csv.Error as exc:
        return [], [f"labels CSV {path}: cannot parse it as CSV ({exc})"], []

    expected = ",".join(REQUIRED_COLUMNS)
    if not records or not any(cell.strip() for cell in records[0][1]):
        return [], [f"labels CSV {path}: is empty (expected a header line {expected!r})"], []
    header = [cell.strip().lower() for cell in records[0][1]]
    problems: list[str] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        found = ", ".join(repr(c) for c in header)
        problems.append(
            f"labels CSV {path}: missing column(s) {', '.join(repr(c) for c in missing)} "
            f"(expected columns {expected}; found {found})"
        )
    duplicated = sorted(c for c, n in Counter(header).items() if n > 1 and c in REQUIRED_COLUMNS)
    if duplicated:
        problems.append(f"labels CSV {path}: column(s) {', '.join(duplicated)} appear twice")
    if problems:
        return [], problems, []

    col = {c: header.index(c) for c in REQUIRED_COLUMNS}
    limits = {"gloss": num_gloss, "cat": num_cat}
    rows: list[LabelRow] = []
    first_line: dict[str, int] = {}
    cats_of_gloss: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for line, cells in records[1:]:
        if not any(cell.strip() for cell in cells):
            continue
        where = f"labels CSV {path} line {line}"
        cells = [cell.strip() for cell in cells]
        get = {c: cells[i] if i < len(cells) else "" for c, i in col.items()}
        row_problems = []
        name = _strip_npz(get["file"])
        if not name:
            row_problems.append(f"{where}: file is empty (expected an .npz basename)")
        ids: dict[str, int] = {}
        for field in ("gloss", "cat"):
            value = _parse_id(get[field])
            if value is None:
                row_problems.append(
                    f"{where}: {field} {get[field]!r} is not an integer "
                    f"(expected an integer id, {_range_text(field, limits[field])})"
                )
            elif value < 0 or (limits[field] is not None and value >= limits[field]):
                row_problems.append(
                    f"{where}: {field} {value} is out of range "
                    f"(expected {_range_text(field, limits[field])})"
                )
            else:
                ids[field] = value
        if name:
            if name in first_line:
                row_problems.append(
                    f"{where}: duplicate file {name!r} (first listed on line {first_line[name]})"
                )
            else:
                first_line[name] = line
        problems.extend(row_problems)
        if not row_problems:
            rows.append(LabelRow(line, name, ids["gloss"], ids["cat"]))
            cats_of_gloss[ids["gloss"]][ids["cat"]].append(line)

    notes = []
    for gloss, by_cat in sorted(cats_of_gloss.items()):
        if len(by_cat) > 1:
            parts = "; ".join(
                f"cat {c} on line(s) {', '.join(map(str, lines_[:10]))}"
                + (f" and {len(lines_) - 10} more" if len(lines_) > 10 else "")
                for c, lines_ in sorted(by_cat.items())
            )
            notes.append(
                f"labels CSV {path}: gloss {gloss} has more than one category ({parts}); "
                "expected one category per gloss"
            )
    if not rows and not problems:
        problems.append(f"labels CSV {path}: has no data rows (expected at least one clip)")
    return rows, problems, notes


def read_labels(
    path: str | os.PathLike[str], *, num_gloss: int | None, num_cat: int | None
) -> list[LabelRow]:
    """Parse and validate a ``file,gloss,cat`` CSV; raises one ``DataError`` with every problem."""
    rows, problems, notes = _parse_labels(Path(path), num_gloss, num_cat)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    if problems:
        raise DataError(problems)
    return rows


def _sniff_pickle(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(1) == b"\x80"
    except OSError:
        return False


class _ClipProblem(Exception):
    """One clip's first problem; caught by the loader and collected with the others."""


def _read_clip(path: Path, keys: Sequence[str], max_frames: int | None) -> tuple[np.ndarray, str]:
    """Read one clip, the file's only read; returns ``(float16/32 [T, D] array, key used)``."""
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise _ClipProblem(f"{path}: file not found") from None
    except IsADirectoryError:
        raise _ClipProblem(f"{path}: is a folder (expected an .npz file)") from None
    except PermissionError as exc:
        raise _ClipProblem(f"{path}: cannot read it ({exc.strerror})") from None
    except _READ_ERRORS:
        if _sniff_pickle(path):
            raise _ClipProblem(
                f"{path}: is a pickle, not an .npz archive (pickled data is refused)"
            ) from None
        raise _ClipProblem(
            f"{path}: not a valid .npz archive (corrupt or not a zip file)"
        ) from None
    if isinstance(npz, np.ndarray):
        raise _ClipProblem(f"{path}: is a bare .npy array, not an .npz archive with key(s) {keys}")

    with npz:
        key = next((k for k in keys if k in npz.files), "")
        if not key:
            present = ", ".join(repr(k) for k in npz.files) or "none"
            wanted = " or ".join(repr(k) for k in keys)
            raise _ClipProblem(f"{path}: has no key {wanted} (keys present: {present})")
        try:
            arr = npz[key]
        except ValueError as exc:
            if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                raise _ClipProblem(
                    f"{path}: key {key!r} holds an object array; object/pickled arrays are "
                    "refused (expected a numeric [T, D] array)"
                ) from None
            raise _ClipProblem(
                f"{path}: key {key!r} cannot be read, corrupt .npz ({exc})"
            ) from None
        except _READ_ERRORS as exc:
            raise _ClipProblem(
                f"{path}: key {key!r} cannot be read, corrupt .npz ({exc})"
            ) from None

    where = f"{path}: key {key!r}"
    if arr.dtype.kind not in "biuf":
        raise _ClipProblem(
            f"{where} has non-numeric dtype {arr.dtype} (expected a float or integer [T, D] array)"
        )
    if arr.ndim != 2:
        raise _ClipProblem(
            f"{where} has shape {arr.shape}, rank {arr.ndim} (expected rank 2, [T, D])"
        )
    t, d = arr.shape
    if t == 0 or d == 0:
        which = "T = 0 frames" if t == 0 else "D = 0 features"
        raise _ClipProblem(f"{where} has shape {arr.shape}: {which} (expected T >= 1 and D >= 1)")
    if arr.dtype not in (np.float16, np.float32):
        arr = arr.astype(np.float32)  # f16 stays half size until packing casts it
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.argmax(bad.any(axis=1)))
        raise _ClipProblem(
            f"{where} has {int(bad.sum())} NaN/Inf value(s) as float32, first in frame {first} "
            "(expected finite numbers)"
        )
    if max_frames is not None and t > max_frames:
        arr = arr[subsample_indices(t, max_frames)]
    return arr, key


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


def _load_clip_folder(
    folder: Path,
    labels_csv: Path | None,
    keys: Sequence[str],
    num_gloss: int | None,
    num_cat: int | None,
    max_frames: int | None,
) -> tuple[PackedSplit | None, list[str], list[str], Counter[str]]:
    problems: list[str] = []
    if labels_csv is None:
        problems.append(
            f"{folder}: is a folder of per-clip .npz files (no manifest.json), so labels_csv "
            "is required"
        )
        return None, problems, [], Counter()
    rows, csv_problems, notes = _parse_labels(labels_csv, num_gloss, num_cat)
    problems.extend(csv_problems)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        problems.append(f"data folder {folder} {what} (expected a folder of .npz clips)")
        return None, problems, notes, Counter()

    clips: list[np.ndarray] = []
    kept: list[LabelRow] = []
    key_counts: Counter[str] = Counter()
    dims: list[tuple[int, Path]] = []
    for row in rows:
        path = folder / f"{row.name}.npz"
        try:
            arr, key = _read_clip(path, keys, max_frames)
        except _ClipProblem as exc:
            problems.append(f"{exc} (listed on {labels_csv} line {row.line})")
            continue
        clips.append(arr)
        kept.append(row)
        key_counts[key] += 1
        dims.append((arr.shape[1], path))

    if dims:
        majority, count = Counter(d for d, _ in dims).most_common(1)[0]
        for d, path in dims:
            if d != majority:
                problems.append(
                    f"{path}: has D = {d} features per frame but the majority of files "
                    f"({count} of {len(dims)}) have D = {majority} (expected one D for all clips)"
                )
    if problems:
        return None, problems, notes, Counter()
    split = PackedSplit.from_clips(
        clips,
        [r.gloss for r in kept],
        [r.cat for r in kept],
        [r.name for r in kept],
    )
    return split, problems, notes, key_counts


def _load_shard_file(
    path: Path, entry: dict[str, Any], manifest: dict[str, Any], limits: dict[str, int | None]
) -> tuple[dict[str, np.ndarray] | None, list[str]]:
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None, [f"{path}: shard file listed in the manifest is missing"]
    except _READ_ERRORS:
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
        except _READ_ERRORS as exc:
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
                f"(expected {_range_text(k, limit)})"
            )
    if not problems and not np.isfinite(frames).all():
        problems.append(f"{path}: frames contain NaN/Inf values (expected finite numbers)")
    return (None if problems else arrays), problems


def _load_shards(
    folder: Path,
    labels_csv: Path | None,
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
        rows, csv_problems, notes = _parse_labels(labels_csv, num_gloss, num_cat)
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


def load_split(
    source: str | os.PathLike[str],
    labels_csv: str | os.PathLike[str] | None = None,
    *,
    keys: Sequence[str] = ("X",),
    num_gloss: int | None,
    num_cat: int | None,
    max_frames: int | None = None,
    split: str = "train",
    shard_indices: Sequence[int] | None = None,
) -> PackedSplit:
    """Validate and load one split into a ``PackedSplit``.

    ``source`` is a folder of per-clip ``.npz`` files (``labels_csv`` required) or a packed shard
    folder holding ``manifest.json`` (labels come from the shards; a ``labels_csv`` given too must
    agree). ``keys`` are tried in order per file. ``num_gloss``/``num_cat`` bound the ids (``None``
    only rejects negatives). ``max_frames`` uniformly subsamples longer clips. ``shard_indices``
    loads only some shards, so a data-parallel worker reads only its part.

    Raises one ``DataError`` listing every problem; a gloss seen with two categories only warns.
    """
    packed, _ = load_split_with_key(
        source,
        labels_csv,
        keys=keys,
        num_gloss=num_gloss,
        num_cat=num_cat,
        max_frames=max_frames,
        split=split,
        shard_indices=shard_indices,
    )
    return packed


def load_split_with_key(
    source: str | os.PathLike[str],
    labels_csv: str | os.PathLike[str] | None = None,
    *,
    keys: Sequence[str] = ("X",),
    num_gloss: int | None,
    num_cat: int | None,
    max_frames: int | None = None,
    split: str = "train",
    shard_indices: Sequence[int] | None = None,
) -> tuple[PackedSplit, str]:
    """Like ``load_split`` but also returns the npz key most clips came from (for manifests)."""
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    problems = _check_args(num_gloss, num_cat, max_frames, keys)
    if problems:
        raise DataError(problems, title=f"invalid {split} data")
    num_gloss, num_cat, max_frames = (
        None if v is None else int(v) for v in (num_gloss, num_cat, max_frames)
    )
    folder = Path(source)
    csv_path = Path(labels_csv) if labels_csv is not None else None
    notes: list[str] = []
    packed: PackedSplit | None = None
    key_counts: Counter[str] = Counter()
    if is_shard_dir(folder):
        packed, problems, notes, key_counts = _load_shards(
            folder, csv_path, keys, num_gloss, num_cat, shard_indices
        )
    elif shard_indices is not None:
        problems = [f"{folder}: shard_indices given but there is no manifest.json (no shards)"]
    else:
        packed, problems, notes, key_counts = _load_clip_folder(
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
