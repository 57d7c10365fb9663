"""The one atomic writer: a crash mid-write keeps the old file; outputs are shareable."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from signray.io import atomic_write, copy_file, write_npz, write_text


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
