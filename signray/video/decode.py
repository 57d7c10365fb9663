"""Decode a video with PyAV (its wheels bundle FFmpeg) and sample it as the reference does, in
blocks of at most `chunk_frames` frames, so that a clip never sits in memory whole.

Sampling: a frame is kept when its time reaches the next sample time, which then advances by
1/`target_fps` (so a video slower than `target_fps` keeps every frame). Each kept frame is
resized to `out_size` x `out_size` with area interpolation for keypoints and, when features are
wanted, the original frame to 299 x 299 bilinearly for InceptionV3 (OpenCV's resize, as the
reference's). Timestamps are milliseconds from the first frame.

A file that cannot be read, has no video stream or no frames, breaks off while decoding, or
ends well before the duration its header declares raises `VideoProblem` with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from signray.storage import Location, RemotePath, as_location

__all__ = ["FEATURE_SIZE", "VIDEO_SUFFIXES", "Chunk", "VideoInfo", "VideoProblem", "read_chunks"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
FEATURE_SIZE = 299
# A video whose decoded frames end before this share of its declared duration (less one
# frame) is reported as truncated.
_COMPLETE_SHARE = 0.9
# Containers such as Matroska store times in whole milliseconds: a frame 1 ms before the next
# sample time is that sample.
_TOLERANCE_S = 1e-3


class VideoProblem(Exception):
    """Why one video cannot be extracted (the failures file's reason)."""


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    width: int
    height: int
    codec: str
    declared_s: float | None  # the duration the container declares

    def as_meta(self) -> dict:
        return {"fps": self.fps, "size": [self.width, self.height], "codec": self.codec}


@dataclass
class Chunk:
    """Consecutive sampled frames of one clip."""

    index: int
    timestamps_ms: np.ndarray  # (n,) int64
    frames: np.ndarray  # (n, out_size, out_size, 3) uint8 RGB, for keypoints
    feature_frames: np.ndarray | None  # (n, 299, 299, 3) uint8 RGB, for InceptionV3
    last: bool = False


def _open(source: Location):
    import av

    if isinstance(source, RemotePath):
        size = source.fs.get_file_info(source.fs_path).size
        handle = source.open("rb")
    else:
        size, handle = os.path.getsize(source), None
    if size == 0:
        raise VideoProblem("empty file (0 bytes)")
    try:
        return av.open(handle if handle is not None else str(source), mode="r")
    except av.FFmpegError as err:
        raise VideoProblem(f"cannot be read as a video ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err)


def _info(container, stream) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    declared = None
    if stream.duration is not None and stream.time_base is not None:
        declared = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        declared = container.duration / 1_000_000
    return VideoInfo(
        fps=float(rate) if rate else 0.0,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        codec=stream.codec_context.name,
        declared_s=declared,
    )


def read_chunks(
    path: str | os.PathLike[str] | RemotePath,
    *,
    target_fps: float,
    out_size: int,
    chunk_frames: int,
    features: bool,
) -> tuple[VideoInfo, Iterator[Chunk]]:
    """Open the video (problems with the file itself raise here) and return its info and the
    generator of its blocks (problems found while decoding raise from the generator)."""
    import av

    container = _open(as_location(path))
    streams = container.streams.video
    if not streams:
        container.close()
        raise VideoProblem("has no video stream")
    stream = streams[0]
    info = _info(container, stream)

    def chunks() -> Iterator[Chunk]:
        import cv2

        step = 1.0 / target_fps
        next_t, start, seen_t, decoded = 0.0, None, 0.0, 0
        rows: list[tuple[int, np.ndarray, np.ndarray | None]] = []  # the block being filled
        full: Chunk | None = None  # held back until we know whether it is the last

        def block(index: int) -> Chunk:
            stamps, kp, feats = zip(*rows, strict=True)
            return Chunk(
                index, np.asarray(stamps, dtype=np.int64), np.stack(kp),
                np.stack(feats) if features else None,
            )  # fmt: skip

        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else decoded / (info.fps or target_fps)
                start = t if start is None else start
                decoded += 1
                seen_t = t - start
                if seen_t + _TOLERANCE_S < next_t:
                    continue
                next_t += step
                rgb = frame.to_ndarray(format="rgb24")
                kp = cv2.resize(rgb, (out_size, out_size), interpolation=cv2.INTER_AREA)
                feats = cv2.resize(rgb, (FEATURE_SIZE, FEATURE_SIZE)) if features else None
                rows.append((round(seen_t * 1000), kp, feats))
                if len(rows) == chunk_frames:
                    if full is not None:
                        yield full
                    full, rows = block(0 if full is None else full.index + 1), []
        except av.FFmpegError as err:
            raise VideoProblem(
                f"decoding failed after {decoded} frame(s): {_reason(err)} (truncated or corrupt)"
            ) from None
        finally:
            container.close()
        if decoded == 0 and info.declared_s:
            raise VideoProblem(
                f"truncated or corrupt: no frame decodes, but the file declares "
                f"{info.declared_s:.2f} s"
            )
        if decoded == 0:
            raise VideoProblem("has no frames (zero-frame video)")
        frame_s = 1.0 / info.fps if info.fps else 0.0
        if info.declared_s and seen_t + frame_s < _COMPLETE_SHARE * info.declared_s - frame_s:
            raise VideoProblem(
                f"truncated: frames end at {seen_t:.2f} s but the file declares "
                f"{info.declared_s:.2f} s"
            )
        if rows:
            if full is not None:
                yield full
            full = block(0 if full is None else full.index + 1)
        full.last = True
        yield full

    return info, chunks()
