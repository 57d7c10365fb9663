"""Real videos for the tests: scikit-image's photograph of a person (the astronaut Eileen
Collins) moved across a plain background, encoded with PyAV."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 256, 192
PERSON = 160  # the photograph's side in pixels, after scaling


@functools.cache
def person() -> np.ndarray:
    """The photograph scaled to PERSON x PERSON, uint8 RGB."""
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut(), (PERSON, PERSON), interpolation=cv2.INTER_AREA)


def frame(i: int, n: int, with_person: bool = True) -> tuple[np.ndarray, tuple[int, ...]]:
    """Frame `i` of `n`: the person slides left to right; returns (RGB frame, person's box
    (x0, y0, x1, y1) in pixels). Without the person: the empty background."""
    canvas = np.full((HEIGHT, WIDTH, 3), 90, dtype=np.uint8)
    x0 = int(round((WIDTH - PERSON) * i / max(n - 1, 1)))
    y0 = HEIGHT - PERSON
    if with_person:
        canvas[y0:, x0 : x0 + PERSON] = person()
    return canvas, (x0, y0, x0 + PERSON, HEIGHT)


def write_video(
    path: Path, frames: int = 24, fps: int = 30, codec: str = "mpeg4", with_person: bool = True
) -> Path:
    """Encode `frames` frames of the moving person at `fps`; the container follows the suffix."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(frames):
            image, _ = frame(i, frames, with_person)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_zero_frame_video(path: Path) -> Path:
    """A valid AVI file with a video stream and no frames."""
    import av

    with av.open(str(path), mode="w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        out.start_encoding()
    return path
