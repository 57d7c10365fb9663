"""The reference project's clip-level ``occluded`` flag (its labels CSVs carry it), from the
keypoints of a whole clip.

A frame is occluded when a hand covers the head: a face ellipse (the bounding box of at least 5
visible face points, axes x1.3) contains a visible fingertip, or the palm centre lies within the
ellipse grown x1.2 (a hand counts with at least 4 visible points). The clip is occluded when
such frames are at least `frame_prop` of the clip or form a run of at least `min_run` frames.
When no frame shows a hand over the head, the visibility rule decides: a frame is occluded when
fewer than `vis_thresh` of its 78 points are visible, aggregated the same way.
"""

from __future__ import annotations

import warnings

import numpy as np

from signray.video.keypoints import BLOCKS, NUM_POINTS

__all__ = ["hand_over_head_frames", "longest_run", "occluded"]

_FACE_MIN_POINTS, _FACE_SCALE, _NEAR_FACE = 5, 1.3, 1.2
_MIN_HAND_POINTS = 4
_TIPS, _KNUCKLES = [4, 8, 12, 16, 20], [5, 9, 13, 17]


def longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True in a 1-d bool array."""
    padded = np.concatenate([[0], flags.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0


def _inside(px, py, cx, cy, ax, by) -> np.ndarray:
    return ((px - cx[:, None]) / ax[:, None]) ** 2 + ((py - cy[:, None]) / by[:, None]) ** 2 <= 1


def hand_over_head_frames(X: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``[T]`` bool: frames where a hand covers the face ellipse (module doc)."""
    pts = X.reshape(len(X), NUM_POINTS, 2).astype(np.float64)
    _, f0, nf = BLOCKS[3]
    fmask = mask[:, f0 : f0 + nf]
    fx = np.where(fmask, pts[:, f0 : f0 + nf, 0], np.nan)
    fy = np.where(fmask, pts[:, f0 : f0 + nf, 1], np.nan)
    has_face = fmask.sum(axis=1) >= _FACE_MIN_POINTS
    with warnings.catch_warnings():  # frames without a face: all-NaN rows, unused below
        warnings.simplefilter("ignore", RuntimeWarning)
        x0, x1, y0, y1 = np.nanmin(fx, 1), np.nanmax(fx, 1), np.nanmin(fy, 1), np.nanmax(fy, 1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ax = np.maximum((x1 - x0) / 2 * _FACE_SCALE, 1e-3)
    by = np.maximum((y1 - y0) / 2 * _FACE_SCALE, 1e-3)
    occ = np.zeros(len(X), dtype=bool)
    for _, h0, nh in (BLOCKS[1], BLOCKS[2]):
        hmask, hxy = mask[:, h0 : h0 + nh], pts[:, h0 : h0 + nh]
        tips = hmask[:, _TIPS] & _inside(hxy[:, _TIPS, 0], hxy[:, _TIPS, 1], cx, cy, ax, by)
        knuckles = hmask[:, _KNUCKLES]
        count = knuckles.sum(axis=1)
        with np.errstate(all="ignore"):
            palm = (hxy[:, _KNUCKLES] * knuckles[..., None]).sum(axis=1) / count[:, None]
        palm = np.where((count >= 2)[:, None], palm, hxy[:, 0])  # else the wrist
        palm_seen = (count >= 2) | hmask[:, 0]
        near = (
            palm_seen
            & _inside(palm[:, None, 0], palm[:, None, 1], cx, cy, ax * _NEAR_FACE, by * _NEAR_FACE)[
                :, 0
            ]
        )
        present = hmask.sum(axis=1) >= _MIN_HAND_POINTS
        occ |= has_face & present & (tips.any(axis=1) | near)
    return occ


def _clip_flag(frames: np.ndarray, frame_prop: float, min_run: int) -> bool:
    return bool(frames.mean() >= frame_prop or longest_run(frames) >= min_run)


def occluded(
    X: np.ndarray, mask: np.ndarray, *, vis_thresh: float, frame_prop: float, min_run: int
) -> int:
    """The clip's ``occluded`` flag, 0 or 1 (module doc). X ``[T, 156]``, mask ``[T, 78]``."""
    if len(X) == 0:
        return 0
    hands = hand_over_head_frames(X, mask)
    if hands.any():
        return int(_clip_flag(hands, frame_prop, min_run))
    hidden = mask.sum(axis=1) / NUM_POINTS < vis_thresh
    return int(_clip_flag(hidden, frame_prop, min_run))
