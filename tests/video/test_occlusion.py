"""The reference's occlusion flag: a hand over the head, else too few visible points."""

from __future__ import annotations

import numpy as np

from signray.video.occlusion import hand_over_head_frames, longest_run, occluded

RULE = dict(vis_thresh=0.6, frame_prop=0.4, min_run=15)


def _clip(T: int, *, hand_on_face: np.ndarray | None = None, hands: bool = True):
    """Face points around (0.5, 0.3); the right hand at (0.8, 0.8) or on the face."""
    X = np.zeros((T, 78, 2), np.float32)
    mask = np.ones((T, 78), bool)
    mask[:, 25:67] = hands
    X[:, 67:78] = np.c_[np.linspace(0.45, 0.55, 11), np.linspace(0.25, 0.35, 11)]
    X[:, 46:67] = (0.8, 0.8)
    if hand_on_face is not None:
        X[hand_on_face, 46:67] = (0.5, 0.3)
    return X.reshape(T, 156), mask


def test_longest_run():
    assert longest_run(np.array([1, 1, 0, 1, 1, 1, 0], bool)) == 3
    assert longest_run(np.zeros(4, bool)) == 0


def test_a_hand_over_the_face_in_enough_frames_is_occluded():
    on_face = np.zeros(30, bool)
    on_face[:13] = True  # 43% of the frames
    X, mask = _clip(30, hand_on_face=on_face)
    assert hand_over_head_frames(X, mask).tolist() == on_face.tolist()
    assert occluded(X, mask, **RULE) == 1
    on_face[:] = False
    on_face[5:10] = True  # 17% and a run of 5: not occluded
    X, mask = _clip(30, hand_on_face=on_face)
    assert occluded(X, mask, **RULE) == 0


def test_a_long_run_of_hand_over_face_is_occluded():
    on_face = np.zeros(100, bool)
    on_face[20:36] = True  # 16% of the frames, but 16 in a row
    X, mask = _clip(100, hand_on_face=on_face)
    assert occluded(X, mask, **RULE) == 1


def test_without_hands_over_the_face_visibility_decides():
    X, mask = _clip(30)
    assert occluded(X, mask, **RULE) == 0
    X, mask = _clip(30, hands=False)  # pose and face only: 46% of the points visible
    assert occluded(X, mask, **RULE) == 1
