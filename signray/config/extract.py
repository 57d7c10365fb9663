"""`ExtractConfig`: how `signray.extract` turns videos into clips. Every field is a flag; the
fields that change what is written make up the settings an output folder was made with (a
re-run with other settings is refused unless ``--overwrite``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from signray.config.train import PRECISIONS
from signray.errors import ConfigError, Problem
from signray.fields import coerce_fields, flag, option

__all__ = ["ExtractConfig", "OUTPUT_FIELDS"]

# Fields that change the files written: the settings an output folder records.
OUTPUT_FIELDS = (
    "target_fps", "out_size", "conf_thresh", "max_gap", "segment_person", "chunk_frames",
    "occ_vis_thresh", "occ_frame_prop", "occ_min_run", "features", "precision",
)  # fmt: skip


@dataclass(frozen=True)
class ExtractConfig:
    """Sampling, keypoint, occlusion and feature settings, and the size of each stage's pool."""

    target_fps: float = option(30.0, "frames sampled per second of video")
    out_size: int = option(256, "frames are resized to OUT_SIZE x OUT_SIZE for keypoints")
    conf_thresh: float = option(
        0.5, "MediaPipe detection/tracking confidence, and the visibility a pose point needs"
    )
    max_gap: int = option(5, "interpolate a point's missing spans of at most this many frames")
    segment_person: bool = option(
        True, "black out the background (MediaPipe selfie segmentation) before keypoints"
    )
    chunk_frames: int = option(
        128,
        "frames per block between stages (bounds memory); keypoint tracking restarts at each "
        "block, so clips up to this long are tracked exactly as the reference does",
    )
    occ_vis_thresh: float = option(
        0.6, "occlusion: a frame is occluded when fewer than this fraction of points are visible"
    )
    occ_frame_prop: float = option(
        0.4, "occlusion: a clip is occluded when at least this fraction of frames are"
    )
    occ_min_run: int = option(15, "occlusion: ... or when this many frames in a row are")
    features: bool = option(False, "also write InceptionV3 features X2048 [T, 2048]")
    backbone_weights: str | None = option(
        None, "torchvision's ImageNet InceptionV3 state dict (inception_v3_google-*.pth)"
    )
    random_backbone: bool = option(
        False, "features from a randomly initialised backbone (tests only: meaningless features)"
    )
    precision: str = option(
        "auto", "feature precision: auto (bf16/fp16 on GPUs, fp32 on CPUs), fp32, bf16, fp16"
    )
    feature_batch: int = option(32, "frames per backbone call")
    decode_workers: int | None = option(None, "decoding tasks at once (default: Ray decides)")
    keypoint_workers: int | None = option(
        None, "keypoint actors, one CPU each (default: the cluster's CPUs)"
    )
    feature_workers: int | None = option(
        None, "feature actors (default: one per GPU, or one on CPUs)"
    )
    gpus_per_worker: float | None = option(
        None, "GPUs per feature actor (default: 1 when the cluster has GPUs, else 0)"
    )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ExtractConfig:
        """A validated config from flags; every problem is reported at once, named by flag."""
        known, problems = coerce_fields(cls, values, "extraction setting")
        if problems:
            raise ConfigError(problems)
        cfg = cls(**known)
        problems = cfg.problems()
        if problems:
            raise ConfigError(problems)
        return cfg

    def problems(self) -> list[Problem]:
        def bad(name: str, expected: str) -> Problem:
            return Problem(
                f"`{flag(name)}` is {getattr(self, name)!r} (expected {expected})", [name]
            )

        out = [bad(n, "a positive number") for n in ("target_fps",) if not self.target_fps > 0]
        positive = ("out_size", "chunk_frames", "occ_min_run", "feature_batch")
        out += [bad(n, "a positive integer") for n in positive if getattr(self, n) < 1]
        out += [bad("max_gap", "an integer >= 0")] if self.max_gap < 0 else []
        fractions = ("conf_thresh", "occ_vis_thresh", "occ_frame_prop")
        out += [bad(n, "a number in [0, 1]") for n in fractions if not 0 <= getattr(self, n) <= 1]
        for name in ("decode_workers", "keypoint_workers", "feature_workers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                out.append(bad(name, "a positive integer"))
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            out.append(bad("gpus_per_worker", "a number >= 0"))
        if self.precision not in PRECISIONS:
            out.append(bad("precision", f"one of {', '.join(PRECISIONS)}"))
        if self.features and not self.backbone_weights and not self.random_backbone:
            out.append(
                Problem(
                    "`--features` needs `--backbone-weights FILE`: torchvision's ImageNet "
                    "InceptionV3 weights (IMAGENET1K_V1, inception_v3_google-0cc3c7bd.pth) are "
                    "never downloaded here. Get them on a machine with internet access from "
                    "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth (or "
                    "run torchvision.models.inception_v3(weights='IMAGENET1K_V1') there and copy "
                    "the file from ~/.cache/torch/hub/checkpoints/)",
                    ["features", "backbone_weights"],
                )
            )
        if self.backbone_weights and self.random_backbone:
            out.append(
                Problem(
                    "`--backbone-weights` and `--random-backbone` exclude each other",
                    ["backbone_weights", "random_backbone"],
                )
            )
        return out

    def settings(self, backbone: str | None) -> dict[str, Any]:
        """What the outputs depend on: the output fields plus the backbone's identity."""
        values = {name: getattr(self, name) for name in OUTPUT_FIELDS}
        if not self.features:
            values.pop("precision")
        return {**values, "backbone": backbone if self.features else None}

    @staticmethod
    def fingerprint(settings: Mapping[str, Any]) -> str:
        text = json.dumps(dict(settings), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
