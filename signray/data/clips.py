"""One clip file: read safely (no pickles), checked (numeric, [T, D], finite), subsampled.

The only reader of per-clip ``.npz`` files: training, evaluation and prediction all call it, so
a clip that trains also predicts.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

from signray.data.labels import LabelRow, parse_labels
from signray.data.packed import PackedSplit
from signray.storage import Location, explain_error

__all__ = ["ClipProblem", "load_clip_folder", "read_clip", "subsample_indices"]

READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def subsample_indices(length: int, max_frames: int) -> np.ndarray:
    """Uniform temporal subsampling indices so a clip has at most ``max_frames`` frames."""
    if length <= max_frames:
        return np.arange(length, dtype=np.int64)
    return np.linspace(0, length - 1, max_frames).round().astype(np.int64)


class ClipProblem(Exception):
    """One clip's first problem; callers collect it with the others."""


def read_clip(
    path: Location, keys: Sequence[str], max_frames: int | None
) -> tuple[np.ndarray, str]:
    """Read one clip (local or object store), the file's only read; returns ``(float16/32
    [T, D] array, key used)``."""
    try:
        data = path.read_bytes()  # clips are small: one request on an object store
    except FileNotFoundError:
        raise ClipProblem(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ClipProblem(f"{path}: is a folder (expected an .npz file)") from None
    except PermissionError as exc:
        raise ClipProblem(f"{path}: cannot read it ({exc.strerror})") from None
    except OSError as exc:
        raise ClipProblem(f"{path}: cannot read it ({explain_error(exc, path)})") from None
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
    except READ_ERRORS:
        if data[:1] == b"\x80":
            raise ClipProblem(
                f"{path}: is a pickle, not an .npz archive (pickled data is refused)"
            ) from None
        raise ClipProblem(f"{path}: not a valid .npz archive (corrupt or not a zip file)") from None
    if isinstance(npz, np.ndarray):
        raise ClipProblem(f"{path}: is a bare .npy array, not an .npz archive with key(s) {keys}")

    with npz:
        key = next((k for k in keys if k in npz.files), "")
        if not key:
            present = ", ".join(repr(k) for k in npz.files) or "none"
            wanted = " or ".join(repr(k) for k in keys)
            raise ClipProblem(f"{path}: has no key {wanted} (keys present: {present})")
        try:
            arr = npz[key]
        except ValueError as exc:
            if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                raise ClipProblem(
                    f"{path}: key {key!r} holds an object array; object/pickled arrays are "
                    "refused (expected a numeric [T, D] array)"
                ) from None
            raise ClipProblem(f"{path}: key {key!r} cannot be read, corrupt .npz ({exc})") from None
        except READ_ERRORS as exc:
            raise ClipProblem(f"{path}: key {key!r} cannot be read, corrupt .npz ({exc})") from None

    where = f"{path}: key {key!r}"
    if arr.dtype.kind not in "biuf":
        raise ClipProblem(
            f"{where} has non-numeric dtype {arr.dtype} (expected a float or integer [T, D] array)"
        )
    if arr.ndim != 2:
        raise ClipProblem(
            f"{where} has shape {arr.shape}, rank {arr.ndim} (expected rank 2, [T, D])"
        )
    t, d = arr.shape
    if t == 0 or d == 0:
        which = "T = 0 frames" if t == 0 else "D = 0 features"
        raise ClipProblem(f"{where} has shape {arr.shape}: {which} (expected T >= 1 and D >= 1)")
    if arr.dtype not in (np.float16, np.float32):
        arr = arr.astype(np.float32)  # f16 stays half size until packing casts it
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.argmax(bad.any(axis=1)))
        raise ClipProblem(
            f"{where} has {int(bad.sum())} NaN/Inf value(s) as float32, first in frame {first} "
            "(expected finite numbers)"
        )
    if max_frames is not None and t > max_frames:
        arr = arr[subsample_indices(t, max_frames)]
    return arr, key


def load_clip_folder(
    folder: Location,
    labels_csv: Location | None,
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
    rows, csv_problems, notes = parse_labels(labels_csv, num_gloss, num_cat)
    problems.extend(csv_problems)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        problems.append(f"data folder {folder} {what} (expected a folder of .npz clips)")
        return None, problems, notes, Counter()

    clips: list[np.ndarray] = []
    kept: list[LabelRow] = []
    key_counts: Counter[str] = Counter()
    dims: list[tuple[int, Location]] = []
    for row in rows:
        path = folder / f"{row.name}.npz"
        try:
            arr, key = read_clip(path, keys, max_frames)
        except ClipProblem as exc:
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
