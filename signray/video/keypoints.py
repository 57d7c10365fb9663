"""The reference project's 78 keypoints per frame (layout ``fsl78``) from MediaPipe Holistic, and
its gap interpolation.

``X`` is ``[T, 156]``: 78 points x (x, y), normalised to [0, 1] and clipped, in the order pose
(25 upper-body landmarks), left hand (21), right hand (21), face mesh (11 points); ``mask`` is
``[T, 78]``: a pose point counts when its visibility reaches the confidence threshold, a hand or
face point when MediaPipe returned it. A missing point is (0, 0) with mask False.

MediaPipe is imported only when a `HolisticTracker` is made (the `signray[video]` extra).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "FACEMESH_11",
    "LAYOUT",
    "LAYOUT_ORDER",
    "NUM_POINTS",
    "POSE_UPPER_25",
    "BLOCKS",
    "HolisticTracker",
    "frame_keypoints",
    "interpolate_gaps",
]

LAYOUT = "fsl78"
LAYOUT_ORDER = "pose25,left_hand21,right_hand21,face11"
POSE_UPPER_25 = list(range(25))  # nose, eyes, ears, mouth, shoulders, elbows, wrists, hands, hips
N_HAND = 21
FACEMESH_11 = [1, 33, 263, 133, 362, 61, 291, 105, 334, 199, 4]
# (name, first point, number of points) of each block in X's point order.
BLOCKS = (("pose", 0, 25), ("left_hand", 25, 21), ("right_hand", 46, 21), ("face", 67, 11))
NUM_POINTS = 78


def _points(landmarks, indices: Sequence[int] | None) -> np.ndarray:
    """(n, 3) x, y, visibility of the chosen landmarks (all when `indices` is None)."""
    lms = landmarks.landmark
    chosen = range(len(lms)) if indices is None else indices
    return np.array([(lms[i].x, lms[i].y, lms[i].visibility) for i in chosen], dtype=np.float64)


def frame_keypoints(results, conf_thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """One Holistic result -> ``(xy (78, 2) float32 clipped to [0, 1], mask (78,) bool)``.

    As the reference: pose points count when visibility >= `conf_thresh`; hand and face points
    whenever present (their clipped coordinates are always inside [0, 1]).
    """
    xy = np.zeros((NUM_POINTS, 2), dtype=np.float32)
    mask = np.zeros(NUM_POINTS, dtype=bool)
    sources = (
        (results.pose_landmarks, POSE_UPPER_25),
        (results.left_hand_landmarks, list(range(N_HAND))),
        (results.right_hand_landmarks, list(range(N_HAND))),
        (results.face_landmarks, FACEMESH_11),
    )
    for (_, start, count), (landmarks, indices) in zip(BLOCKS, sources, strict=True):
        if landmarks is None:
            continue
        pts = _points(landmarks, indices)
        xy[start : start + count] = np.clip(pts[:, :2], 0.0, 1.0)
        mask[start : start + count] = pts[:, 2] >= conf_thresh if start == 0 else True
    return xy, mask


def interpolate_gaps(
    X: np.ndarray, mask: np.ndarray, max_gap: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fill each point's missing spans of 1..`max_gap` frames that have a visible frame on both
    sides by linear interpolation, marking them visible (the reference's rule); longer gaps and
    gaps at either end stay missing. X ``[T, 156]``, mask ``[T, 78]``."""
    X, mask = X.copy(), mask.copy()
    points = X.reshape(len(X), -1, 2)  # a view: (T, 78, 2)
    for k in range(mask.shape[1]):
        seen = np.flatnonzero(mask[:, k])
        if len(seen) < 2:
            continue
        for a, b in zip(seen[:-1], seen[1:], strict=True):
            gap = b - a - 1
            if 1 <= gap <= max_gap:
                t = (np.arange(1, gap + 1) / (gap + 1))[:, None]
                points[a + 1 : b, k] = points[a, k] + (points[b, k] - points[a, k]) * t
                mask[a + 1 : b, k] = True
    return X, mask


class HolisticTracker:
    """MediaPipe's legacy Holistic solution (video mode: landmarks tracked and smoothed from frame
    to frame), created once per worker and reset for every new run of frames.

    `segment_person` blacks out the background with MediaPipe's selfie segmentation first, as
    the reference's preprocessing does.
    """

    def __init__(self, conf_thresh: float, segment_person: bool) -> None:
        import mediapipe as mp

        self.conf_thresh = conf_thresh
        self.holistic = mp.solutions.holistic.Holistic(
            model_complexity=1,
            smooth_landmarks=True,
            refine_face_landmarks=True,
            min_detection_confidence=conf_thresh,
            min_tracking_confidence=conf_thresh,
        )
        self.segmenter = (
            mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=1)
            if segment_person
            else None
        )

    def run(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``[n, H, W, 3]`` uint8 RGB, in time order -> ``(X [n, 156], mask [n, 78])``."""
        self.holistic.reset()
        if self.segmenter is not None:
            self.segmenter.reset()
        X = np.zeros((len(frames), 2 * NUM_POINTS), dtype=np.float32)
        mask = np.zeros((len(frames), NUM_POINTS), dtype=bool)
        for i, frame in enumerate(frames):
            rgb = np.ascontiguousarray(frame)
            if self.segmenter is not None:
                person = self.segmenter.process(rgb).segmentation_mask > 0.5
                rgb = np.where(person[..., None], rgb, 0).astype(np.uint8)
            xy, mask[i] = frame_keypoints(self.holistic.process(rgb), self.conf_thresh)
            X[i] = xy.reshape(-1)
        return X, mask

    def close(self) -> None:
        self.holistic.close()
        if self.segmenter is not None:
            self.segmenter.close()
