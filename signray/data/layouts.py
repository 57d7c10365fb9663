"""Keypoint layouts: which feature of a frame is which body point, for augmentations that must
know (a mirror swaps the left and right hands; a rotation turns (x, y) pairs).

``fsl78`` is the reference extraction's layout (``keypoints_features.py`` of the seed project):
per frame 78 points as ``x1, y1, x2, y2, ...`` (156 features, normalised image coordinates),
in the order

- 25 upper-body pose points: MediaPipe Pose landmarks 0-24, in MediaPipe's order;
- 21 left-hand points, then 21 right-hand points: MediaPipe Hands landmarks 0-20 each;
- 11 face points: FaceMesh landmarks 1, 33, 263, 133, 362, 61, 291, 105, 334, 199, 4.

A point the extraction did not see has its ``mask`` entry False and is read as exactly (0, 0)
(`signray.data.clips.read_clip`); augmentations keep such points at (0, 0), so "missing"
survives every transform.

A run names its layout with ``--keypoint-layout`` (`TrainConfig.keypoint_layout`). Where the
extraction records the layout in a clip's ``meta``, that value is one of `KEYPOINT_LAYOUTS`'s
names and can be passed as the flag.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FSL78", "KEYPOINT_LAYOUTS", "KeypointLayout"]


@dataclass(frozen=True)
class KeypointLayout:
    """Points of (x, y) per frame: their mirror images and their body parts."""

    name: str
    num_points: int
    mirror: tuple[int, ...]  # mirror[i]: the point that i becomes in a horizontal flip
    parts: dict[str, range]  # part -> its points, for dropping a whole part
    centre: tuple[int, int]  # two points whose midpoint is the body centre (the shoulders)

    def __post_init__(self) -> None:
        m = self.mirror
        if sorted(m) != list(range(self.num_points)) or any(m[m[i]] != i for i in range(len(m))):
            raise ValueError(f"layout {self.name}: `mirror` must be an involution of the points")

    @property
    def feature_dim(self) -> int:
        return 2 * self.num_points


def _fsl78() -> KeypointLayout:
    pose, left, right, face = range(0, 25), range(25, 46), range(46, 67), range(67, 78)
    mirror = list(range(78))

    def swap(a: int, b: int) -> None:
        mirror[a], mirror[b] = b, a

    # MediaPipe Pose: eyes (1-3 / 4-6), ears, mouth corners, shoulders, elbows, wrists, pinkies,
    # index fingers, thumbs and hips come in (left, right) pairs; 0 is the nose.
    for a, b in [(1, 4), (2, 5), (3, 6), (7, 8), (9, 10)] + [(i, i + 1) for i in range(11, 25, 2)]:
        swap(pose[a], pose[b])
    for i in range(21):  # the hands swap, landmark by landmark
        swap(left[i], right[i])
    # FaceMesh 33/263 (eye outer corners), 133/362 (inner corners), 61/291 (mouth corners) and
    # 105/334 (brows) are mirror pairs; 1, 199 and 4 lie on the midline.
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]:
        swap(face[a], face[b])
    parts = {"left_hand": left, "right_hand": right, "face": face}
    return KeypointLayout("fsl78", 78, tuple(mirror), parts, centre=(pose[11], pose[12]))


FSL78 = _fsl78()
KEYPOINT_LAYOUTS: dict[str, KeypointLayout] = {FSL78.name: FSL78}
