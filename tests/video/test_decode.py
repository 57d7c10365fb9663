"""Decoding and sampling real videos (PyAV), and the reasons a video is refused."""

from __future__ import annotations

import numpy as np
import pytest
from videohelpers import write_video, write_zero_frame_video

from signray.video.decode import FEATURE_SIZE, VideoProblem, read_chunks


def _read(path, **options):
    settings = dict(target_fps=30, out_size=64, chunk_frames=10, features=False) | options
    info, chunks = read_chunks(path, **settings)
    return info, list(chunks)


def test_blocks_are_bounded_and_ordered(person_video):
    info, chunks = _read(person_video, features=True)
    assert (info.fps, info.width, info.height) == (30.0, 256, 192)
    assert [len(c.timestamps_ms) for c in chunks] == [10, 10, 4]
    assert [c.index for c in chunks] == [0, 1, 2] and [c.last for c in chunks] == [0, 0, 1]
    assert chunks[0].frames.shape == (10, 64, 64, 3) and chunks[0].frames.dtype == np.uint8
    assert chunks[0].feature_frames.shape == (10, FEATURE_SIZE, FEATURE_SIZE, 3)
    stamps = np.concatenate([c.timestamps_ms for c in chunks])
    np.testing.assert_allclose(stamps, np.arange(24) * 1000 / 30, atol=1)


@pytest.mark.parametrize("suffix", [".mkv", ".webm"])
def test_millisecond_timestamps_keep_every_frame(tmp_path, suffix):
    codec = "libvpx" if suffix == ".webm" else "mpeg4"
    video = write_video(tmp_path / f"v{suffix}", frames=15, codec=codec)
    _, chunks = _read(video)
    assert sum(len(c.timestamps_ms) for c in chunks) == 15


def test_a_faster_video_is_sampled_at_the_target_rate(tmp_path):
    video = write_video(tmp_path / "fast.avi", frames=30, fps=60)
    _, chunks = _read(video)
    stamps = np.concatenate([c.timestamps_ms for c in chunks])
    assert len(stamps) == 15
    np.testing.assert_allclose(np.diff(stamps), 1000 / 30, atol=1)


def test_the_last_full_block_is_marked_last(tmp_path):
    video = write_video(tmp_path / "twenty.mp4", frames=20)
    _, chunks = _read(video)
    assert [(len(c.timestamps_ms), c.last) for c in chunks] == [(10, False), (10, True)]


def test_unreadable_videos_say_why(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01 not a video " * 64)
    with pytest.raises(VideoProblem, match="empty file"):
        _read(empty)
    with pytest.raises(VideoProblem, match="cannot be read as a video"):
        _read(corrupt)
    with pytest.raises(VideoProblem, match="no frames"):
        _read(write_zero_frame_video(tmp_path / "zero.avi"))


def test_a_truncated_video_is_refused(tmp_path):
    whole = write_video(tmp_path / "whole.mkv", frames=60)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(VideoProblem, match=r"truncated: frames end at 0\.\d+ s .* 2\.00 s"):
        _read(cut)
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 5])  # not even one frame
    with pytest.raises(VideoProblem, match="truncated or corrupt: no frame decodes"):
        _read(cut)
    cut_mp4 = tmp_path / "cut.mp4"
    mp4 = write_video(tmp_path / "whole.mp4", frames=30)
    cut_mp4.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    with pytest.raises(VideoProblem):
        _read(cut_mp4)
