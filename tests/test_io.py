"""The one atomic writer: a crash mid-write keeps the old file; outputs are shareable."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from signray.io import atomic_write, copy_file, write_bytes, write_npz, write_text


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "x.pt"
    target.write_bytes(b"old")

    def crash(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.pt"]


def test_files_are_readable_by_others_and_folders_are_created(tmp_path):
    path = write_text(tmp_path / "a" / "b.txt", "hi")
    assert path.read_text() == "hi"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    copy = copy_file(path, tmp_path / "c.txt")
    assert copy.read_text() == "hi" and stat.S_IMODE(copy.stat().st_mode) == 0o644


def test_npz_is_deterministic_and_loads_without_pickle(tmp_path):
    arrays = {"x": np.arange(6, dtype=np.float16).reshape(2, 3), "names": np.array(["a", "bc"])}
    first = write_npz(tmp_path / "1.npz", arrays).read_bytes()
    second = write_npz(tmp_path / "2.npz", arrays).read_bytes()
    assert first == second
    with np.load(tmp_path / "1.npz", allow_pickle=False) as npz:
        assert npz["x"].dtype == np.float16 and npz["names"].tolist() == ["a", "bc"]


def test_object_store_writes_are_whole_or_absent(s3, s3_bucket):
    """Nothing partial ever appears under the real key, and no temporary key stays behind."""
    target = f"s3://{s3_bucket}/runs/x.pt"
    write_text(target, "old")

    def crash(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert s3.read(s3_bucket, "runs/x.pt") == b"old"
    big = os.urandom(12 * 1024**2)  # over the multipart threshold
    write_bytes(target, big)
    assert s3.read(s3_bucket, "runs/x.pt") == big
    assert s3.keys(s3_bucket) == ["runs/x.pt"]


def test_copies_between_local_files_and_object_stores(s3, s3_bucket, tmp_path):
    local = write_text(tmp_path / "a.txt", "a")
    up = copy_file(local, f"s3://{s3_bucket}/a.txt")
    same_store = copy_file(up, f"s3://{s3_bucket}/sub/b.txt")  # server-side
    down = copy_file(same_store, tmp_path / "b.txt")
    assert down.read_text() == "a" and stat.S_IMODE(down.stat().st_mode) == 0o644
    assert sorted(s3.keys(s3_bucket)) == ["a.txt", "sub/b.txt"]
    npz = write_npz(f"s3://{s3_bucket}/x.npz", {"x": np.arange(3)})
    with npz.open() as f, np.load(f, allow_pickle=False) as loaded:
        assert loaded["x"].tolist() == [0, 1, 2]
