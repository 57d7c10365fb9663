"""One clip file: read safely (no pickles), checked (numeric, [T, D], finite), subsampled.

The only reader of per-clip ``.npz`` files: training, evaluation, prediction and packing all call
it, so a clip that trains also predicts.

A clip with a ``mask`` ``[T, P]`` bool (written by `signray.extract` and the reference's
extraction: False where a point was not seen, or seen below the confidence threshold) beside a
keypoint array ``[T, 2P]`` of (x, y) pairs has its unseen points set to exactly (0, 0) here, the
value that marks a missing point everywhere else (`signray.data.layouts`, the augmentations):
training and augmentation see the same points missing whatever wrote the file.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Sequence

import numpy as np

from signray.data.packed import subsample_indices
from signray.storage import Location, explain_error

__all__ = ["READ_ERRORS", "ClipProblem", "read_clip"]

READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


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
        seen = _read_mask(npz, path) if "mask" in npz.files else None

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
    if seen is not None and d == 2 * seen.shape[1]:  # (x, y) pairs: a feature array is left alone
        if seen.shape[0] != t:
            raise ClipProblem(
                f"{path}: key 'mask' has {seen.shape[0]} frames but {key!r} has {t} "
                "(expected one mask row per frame)"
            )
        arr.reshape(t, -1, 2)[~seen] = 0
    if max_frames is not None and t > max_frames:
        arr = arr[subsample_indices(t, max_frames)]
    return arr, key


def _read_mask(npz, path: Location) -> np.ndarray:
    try:
        seen = npz["mask"]
    except READ_ERRORS as exc:
        raise ClipProblem(f"{path}: key 'mask' cannot be read, corrupt .npz ({exc})") from None
    if seen.ndim != 2 or seen.dtype.kind not in "bui":
        raise ClipProblem(
            f"{path}: key 'mask' has shape {seen.shape} and dtype {seen.dtype} (expected "
            "[T, points] bool, True where a point was seen)"
        )
    return seen.astype(bool)
