"""The extraction's three steps as batch functions over rows of blocks, so that any executor
can run them as separate stages (`signray.tuning.extraction` runs them as Ray Data stages with
their own worker pools) and tests can call them directly.

A row is one block of one clip: ``name``, ``index`` (block number), ``last``, ``error`` (empty,
or why the clip failed: an error row ends its clip), ``info`` (JSON: the video's fps, size and
codec), ``timestamps_ms`` ``(n,)``, and the arrays the next steps need: ``frames``
``(n, S, S, 3)`` uint8 for keypoints and ``feature_frames`` ``(n, 299, 299, 3)`` for features.
`decode` makes the rows; `Keypoints` replaces ``frames`` with ``X`` ``(n, 156)`` and ``mask``
``(n, 78)``; `Features` replaces ``feature_frames`` with ``X2048`` ``(n, 2048)``. A batch holds
one row (each array with a leading axis of 1). A step that fails on a row turns it into an
error row instead of stopping the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from signray.config.extract import ExtractConfig
from signray.video.decode import FEATURE_SIZE, VideoProblem, read_chunks
from signray.video.keypoints import NUM_POINTS

__all__ = ["Features", "Keypoints", "decode", "error_row", "unbatch"]

Batch = dict[str, np.ndarray]


def unbatch(batch: Batch) -> dict[str, Any]:
    """The one row of a batch as plain values and arrays."""
    row = {}
    for key, value in batch.items():
        item = value[0]
        row[key] = item.item() if isinstance(item, np.generic) else item
    return row


def _batch(row: dict[str, Any]) -> Batch:
    return {k: np.asarray([v]) if np.isscalar(v) else np.asarray(v)[None] for k, v in row.items()}


def _empty(cfg: ExtractConfig, stage: str) -> dict[str, np.ndarray]:
    """Zero-frame arrays of every column a row has after `stage`."""
    s = cfg.out_size
    arrays: dict[str, np.ndarray] = {"timestamps_ms": np.zeros(0, np.int64)}
    if stage == "decode":
        arrays["frames"] = np.zeros((0, s, s, 3), np.uint8)
    else:
        arrays["X"] = np.zeros((0, 2 * NUM_POINTS), np.float32)
        arrays["mask"] = np.zeros((0, NUM_POINTS), bool)
    if cfg.features:
        if stage == "features":
            arrays["X2048"] = np.zeros((0, 2048), np.float32)
        else:
            arrays["feature_frames"] = np.zeros((0, FEATURE_SIZE, FEATURE_SIZE, 3), np.uint8)
    return arrays


def error_row(name: str, index: int, reason: str, cfg: ExtractConfig, stage: str) -> Batch:
    """A row that ends clip `name` with `reason`, shaped like the rows after `stage`."""
    row = {"name": name, "index": index, "last": True, "error": reason, "info": "{}"}
    return _batch({**row, **_empty(cfg, stage)})


def decode(batch: Batch, cfg: ExtractConfig) -> Iterator[Batch]:
    """One video (a row with ``name`` and ``source``) -> its blocks, one row each."""
    job = unbatch(batch)
    name, index = job["name"], 0
    try:
        info, chunks = read_chunks(
            job["source"], target_fps=cfg.target_fps, out_size=cfg.out_size,
            chunk_frames=cfg.chunk_frames, features=cfg.features,
        )  # fmt: skip
        text = json.dumps(info.as_meta())
        for chunk in chunks:
            index = chunk.index
            row = {"name": name, "index": index, "last": chunk.last, "error": "", "info": text,
                   "timestamps_ms": chunk.timestamps_ms, "frames": chunk.frames}  # fmt: skip
            if cfg.features:
                row["feature_frames"] = chunk.feature_frames
            yield _batch(row)
            index += 1
    except VideoProblem as err:
        yield error_row(name, index, str(err), cfg, "decode")
    except Exception as err:  # anything else about one video must not stop the others
        yield error_row(name, index, f"cannot decode: {type(err).__name__}: {err}", cfg, "decode")


class _Step:
    """A stateful step: built once per worker, then called on each row."""

    stage = ""
    consumes = ""

    def __init__(self, cfg: ExtractConfig) -> None:
        self.cfg = cfg

    def __call__(self, batch: Batch) -> Batch:
        row = unbatch(batch)
        if row["error"]:
            return error_row(row["name"], row["index"], row["error"], self.cfg, self.stage)
        try:
            produced = self.run(row[self.consumes])
        except Exception as err:  # one bad block fails its clip, not the run
            reason = f"{self.stage} failed: {type(err).__name__}: {err}"
            return error_row(row["name"], row["index"], reason, self.cfg, self.stage)
        row.pop(self.consumes)
        return _batch({**row, **produced})

    def run(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError


class Keypoints(_Step):
    """MediaPipe Holistic over each block, tracking from frame to frame within it."""

    stage, consumes = "keypoints", "frames"

    def __init__(self, cfg: ExtractConfig) -> None:
        from signray.video.keypoints import HolisticTracker

        super().__init__(cfg)
        self.tracker = HolisticTracker(cfg.conf_thresh, cfg.segment_person)

    def run(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        X, mask = self.tracker.run(frames)
        return {"X": X, "mask": mask}


class Features(_Step):
    """InceptionV3 features of each block's frames, on a GPU when the worker has one."""

    stage, consumes = "features", "feature_frames"

    def __init__(self, cfg: ExtractConfig, weights: bytes | None, device: str) -> None:
        from signray.video.features import FeatureExtractor

        super().__init__(cfg)
        self.extract = FeatureExtractor(
            weights, device=device, precision=cfg.precision, batch=cfg.feature_batch
        )

    def run(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        return {"X2048": self.extract(frames)}
