from __future__ import annotations

import numpy as np
import pytest

from signray.data import PackedSplit
from signray.errors import DataError


def _split() -> PackedSplit:
    clips = [np.full((n, 3), i, dtype=np.float64) for i, n in enumerate([2, 5, 1, 3])]
    return PackedSplit.from_clips(clips, [0, 1, 2, 1], [0, 1, 1, 1], ["a", "bb", "c", "d"])


def test_from_clips_packs_frames_and_offsets() -> None:
    s = _split()
    assert len(s) == 4
    assert s.frames.dtype == np.float32 and s.frames.shape == (11, 3)
    assert s.offsets.tolist() == [0, 2, 7, 8, 11]
    assert s.lengths.tolist() == [2, 5, 1, 3] and s.lengths.dtype == np.int64
    assert s.feature_dim == 3 and s.num_frames == 11
    assert s.gloss.dtype == np.int64 and s.cat.dtype == np.int64
    assert s.names.dtype.kind == "U" and s.names.tolist() == ["a", "bb", "c", "d"]
    assert s.nbytes >= s.frames.nbytes + s.offsets.nbytes


def test_clip_is_a_view() -> None:
    s = _split()
    c = s.clip(1)
    assert c.shape == (5, 3) and np.all(c == 1)
    assert np.shares_memory(c, s.frames)
    assert np.array_equal(s.clip(-1), s.clip(3))
    with pytest.raises(IndexError):
        s.clip(4)


def test_inconsistent_arrays_are_rejected() -> None:
    with pytest.raises(DataError) as err:
        PackedSplit(np.zeros((4, 2)), np.array([0, 2, 5]), np.zeros(3), np.zeros(2), ["a", "b"])
    text = str(err.value)
    assert "offsets run from 0 to 5" in text and "gloss has shape (3,)" in text


def test_from_clips_rejects_mixed_dims() -> None:
    with pytest.raises(DataError, match="one D"):
        PackedSplit.from_clips([np.zeros((2, 3)), np.zeros((2, 4))], [0, 0], [0, 0], ["a", "b"])
