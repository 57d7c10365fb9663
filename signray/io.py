"""The one way signray writes a file, locally or to an object store, so that no reader ever
sees half a file; and the matching readers.

- Local paths: the bytes go to a temporary file in the target's folder, are flushed and fsynced,
  then renamed over the target: readers see the old file or the new one, never a truncated one.
  Files are created 0644 (outputs are meant to be shared), not the 0600 of a bare `mkstemp`.
- Object-store URIs (`signray.storage`): the whole payload is built in memory first, uploaded
  to a temporary key and then copied over the target (an atomic server-side copy), because
  pyarrow's output streams cannot abort: a failed upload would otherwise leave a partial object
  under the real name.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from signray.storage import Location, RemotePath, as_location

__all__ = [
    "atomic_write",
    "copy_file",
    "read_bytes",
    "read_text",
    "remove_tree",
    "write_bytes",
    "write_npz",
    "write_text",
]

# A fixed zip timestamp makes equal arrays give byte-identical files (np.savez stamps "now").
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

PathLike = str | os.PathLike[str] | RemotePath


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> Location:
    """Call `write(fileobj)` and put the result at `path` in one step (see the module doc)."""
    target = as_location(path)
    if isinstance(target, RemotePath):
        buffer = io.BytesIO()
        write(buffer)
        _put_object(target, buffer.getvalue())
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _put_object(target: RemotePath, data: bytes) -> None:
    fs, key = target.fs, target.fs_path
    tmp = f"{target.parent.fs_path}/.{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.copy_file(tmp, key)
    finally:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass  # never written, or the store is gone: the target is untouched either way


def write_bytes(path: PathLike, data: bytes) -> Location:
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: PathLike, text: str) -> Location:
    return write_bytes(path, text.encode("utf-8"))


def read_bytes(path: PathLike) -> bytes:
    return as_location(path).read_bytes()


def read_text(path: PathLike, encoding: str = "utf-8") -> str:
    return as_location(path).read_text(encoding=encoding)


def copy_file(src: PathLike, dst: PathLike) -> Location:
    """Copy `src` so that `dst` is never seen half-written (server-side within one store)."""
    source, target = as_location(src), as_location(dst)
    if (
        isinstance(source, RemotePath)
        and isinstance(target, RemotePath)
        and source._store == target._store
    ):
        source.fs.copy_file(source.fs_path, target.fs_path)  # one atomic CopyObject
        return target
    with source.open("rb") as f:
        return atomic_write(target, lambda out: shutil.copyfileobj(f, out))


def remove_tree(path: PathLike) -> None:
    """Delete a folder and everything below it (a key prefix on an object store)."""
    target = as_location(path)
    if isinstance(target, RemotePath):
        target.fs.delete_dir(target.fs_path)
    else:
        shutil.rmtree(target)


def write_npz(path: PathLike, arrays: Mapping[str, np.ndarray]) -> Location:
    """An uncompressed, deterministic .npz (equal arrays give equal bytes), never pickled."""

    def write(fh: BinaryIO) -> None:
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
            for key, value in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)

    return atomic_write(path, write)
