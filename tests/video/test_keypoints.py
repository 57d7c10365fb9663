"""Keypoints from the real MediaPipe Holistic model on a real photograph of a person, and the
reference's gap interpolation."""

from __future__ import annotations

import numpy as np
import pytest
from videohelpers import HEIGHT, WIDTH, frame

from signray.video.decode import read_chunks
from signray.video.keypoints import BLOCKS, HolisticTracker, interpolate_gaps


@pytest.fixture(scope="module")
def tracker():
    tracker = HolisticTracker(conf_thresh=0.5, segment_person=True)
    yield tracker
    tracker.close()


def test_mediapipe_finds_the_person_inside_their_box(person_video, tracker):
    _, chunks = read_chunks(person_video, target_fps=30, out_size=256, chunk_frames=24,
                            features=False)  # fmt: skip
    (chunk,) = list(chunks)
    X, mask = tracker.run(chunk.frames)
    assert X.shape == (24, 156) and X.dtype == np.float32 and mask.shape == (24, 78)
    pose, face = BLOCKS[0], BLOCKS[3]
    seen_pose = mask[:, pose[1] : pose[1] + pose[2]].any(axis=1)
    seen_face = mask[:, face[1] : face[1] + face[2]].any(axis=1)
    assert seen_pose.mean() >= 0.8 and seen_face.mean() >= 0.8
    pts = X.reshape(24, 78, 2)
    body = np.r_[pose[1] : pose[1] + pose[2], face[1] : face[1] + face[2]]
    inside = []
    for t in range(24):
        x0, y0, x1, y1 = frame(t, 24)[1]
        visible = pts[t, body][mask[t, body]]
        # Normalised coordinates survive the square resize; allow a few pixels of slack.
        inside += list(
            (visible[:, 0] >= x0 / WIDTH - 0.03)
            & (visible[:, 0] <= x1 / WIDTH + 0.03)
            & (visible[:, 1] >= y0 / HEIGHT - 0.03)
        )
    assert len(inside) > 24 * 20 and np.mean(inside) >= 0.95
    # The person moves right: so does the nose (pose point 0).
    nose = pts[mask[:, 0], 0, 0]
    assert nose[-1] - nose[0] > 0.2


def test_an_empty_scene_has_no_keypoints(tracker):
    blank = np.full((5, 256, 256, 3), 90, dtype=np.uint8)
    X, mask = tracker.run(blank)
    assert not mask.any() and not X.any()


def test_interpolation_fills_short_gaps_only():
    T = 12
    X = np.zeros((T, 156), np.float32)
    mask = np.zeros((T, 78), bool)
    X[:, 0] = np.arange(T)  # point 0's x grows by 1 per frame
    mask[[0, 3, 11], 0] = True  # a gap of 2 frames, then one of 7
    mask[[5], 1] = True  # a single sighting: nothing to interpolate
    filled, new_mask = interpolate_gaps(X * mask.repeat(2, axis=1), mask, max_gap=5)
    assert new_mask[:, 0].tolist() == [True] * 4 + [False] * 7 + [True]
    np.testing.assert_allclose(filled[:4, 0], [0, 1, 2, 3])
    assert new_mask[:, 1].sum() == 1
    assert filled[4:11, 0].tolist() == [0] * 7
