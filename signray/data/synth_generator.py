"""FSL-like synthetic data: learnable, not trivial, deterministic for a seed.

Each gloss is a smooth trajectory of 78 keypoints (25 pose, 21 per hand, 11 face; x, y in
[0, 1]) made of a category prototype plus a smaller gloss-specific part, both low-frequency
Fourier curves, so glosses of one category are genuinely confusable. Each clip adds time warping,
a speed change, a per-signer style, scale/offset jitter, Gaussian noise, dropped frames and, at
times, an occluded hand (set to 0 like a missed detection). Features are a fixed random projection
of the keypoint frames through a ReLU plus noise, standing in for InceptionV3 2048-d features.

`signray.data.synth` writes these clips as files (``python -m signray.data.synth``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from signray.data.layouts import FSL78
from signray.data.packed import PackedSplit
from signray.errors import ConfigError
from signray.fields import option

__all__ = [
    "DIFFICULTIES",
    "NUM_POINTS",
    "Difficulty",
    "SynthSpec",
    "generate",
    "feature_stream",
    "synthetic_splits",
]

NUM_POINTS = FSL78.num_points  # the reference's layout: pose, left hand, right hand, face
KEYPOINT_DIM = FSL78.feature_dim
_HARMONICS = 4
_LEFT, _RIGHT, _FACE = (FSL78.parts[p] for p in ("left_hand", "right_hand", "face"))


@dataclass(frozen=True)
class Difficulty:
    """Knobs of one difficulty level; larger values make glosses harder to tell apart."""

    gloss_scale: float  # gloss-specific motion relative to the category prototype
    style: float  # per-clip deviation of the performed sign, relative to a category part
    warp: float  # time-warp strength in [0, 1)
    crop: float  # fraction of the sign that may be cut at either end
    scale_jitter: float  # signer size: scale ~ U(1 - j, 1 + j)
    offset_jitter: float  # signer position: offset ~ N(0, j)
    noise: float  # keypoint noise std
    drop: float  # fraction of frames dropped at most
    occlusion: float  # probability that a hand is missing for part of the clip
    feature_noise: float  # std of the noise added before the feature ReLU


DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty(0.9, 0.15, 0.15, 0.03, 0.05, 0.015, 0.004, 0.05, 0.0, 0.1),
    "medium": Difficulty(0.5, 0.45, 0.3, 0.06, 0.08, 0.03, 0.008, 0.1, 0.1, 0.2),
    "hard": Difficulty(0.4, 0.6, 0.45, 0.1, 0.12, 0.05, 0.015, 0.15, 0.2, 0.3),
}

Kind = Literal["keypoints", "features"]


def _rest_pose() -> np.ndarray:
    """A fixed upper-body layout, ``(78, 2)``: who signs matters less than how they move."""
    pts = np.zeros((NUM_POINTS, 2))
    ring = np.linspace(0, 2 * np.pi, 11, endpoint=False)
    pts[0:11] = np.c_[0.5 + 0.05 * np.cos(ring), 0.2 + 0.06 * np.sin(ring)]  # head outline
    pts[11:25] = [
        [0.36, 0.38], [0.64, 0.38],  # shoulders
        [0.30, 0.56], [0.70, 0.56],  # elbows
        [0.38, 0.70], [0.62, 0.70],  # wrists
        [0.39, 0.73], [0.61, 0.73], [0.37, 0.74], [0.63, 0.74],  # hand ends
        [0.40, 0.72], [0.60, 0.72],  # thumbs
        [0.42, 0.92], [0.58, 0.92],  # hips
    ]  # fmt: skip
    finger_angles = np.linspace(-0.9, 0.9, 5)
    for hand, wrist, side in ((_LEFT, (0.38, 0.70), -1.0), (_RIGHT, (0.62, 0.70), 1.0)):
        start = hand.start
        pts[start] = wrist
        for f, angle in enumerate(finger_angles):
            for j in range(4):
                r = 0.012 * (j + 1.5)
                pts[start + 1 + 4 * f + j] = (
                    wrist[0] + side * r * np.sin(angle + 0.3),
                    wrist[1] - r * np.cos(angle),
                )
    eye_mouth = np.linspace(0, 2 * np.pi, 11, endpoint=False)
    pts[67:78] = np.c_[0.5 + 0.025 * np.cos(eye_mouth), 0.21 + 0.02 * np.sin(eye_mouth)]
    return pts


def _latent_basis(rest: np.ndarray) -> np.ndarray:
    """Linear map ``(18, 156)`` from motion latents to keypoint displacements.

    Latents per harmonic: 3 trajectories (left arm, right arm, body) x (x, y), 5 finger curls
    per hand and 2 mouth shapes. Signs vary in these few directions, as real signs vary in
    location, movement, handshape and mouthing, rather than in 156 independent ones.
    """
    basis = np.zeros((_LATENTS, NUM_POINTS, 2))
    group = np.zeros((NUM_POINTS, 3))  # left arm, right arm, body
    group[:, 2] = 0.15
    for side, hand, elbow, arm_points in (
        (0, _LEFT, 13, (15, 17, 19, 21)),
        (1, _RIGHT, 14, (16, 18, 20, 22)),
    ):
        group[list(hand), side] = 1.0
        group[list(arm_points), side] = 1.0
        group[elbow, side] = 0.5
    for g in range(3):
        basis[2 * g, :, 0] = group[:, g]
        basis[2 * g + 1, :, 1] = group[:, g]
    for side, hand in enumerate((_LEFT, _RIGHT)):
        wrist = rest[hand.start]
        for finger in range(5):
            row = 6 + 5 * side + finger
            for joint in range(4):
                p = hand.start + 1 + 4 * finger + joint
                toward_wrist = wrist - rest[p]
                basis[row, p] = 0.6 * (joint + 1) / 4 * toward_wrist  # curl folds to the palm
    mouth = rest[_FACE.start : _FACE.stop] - rest[_FACE.start : _FACE.stop].mean(axis=0)
    basis[16, _FACE.start : _FACE.stop, 1] = 0.4 * mouth[:, 1] + 0.004  # open
    basis[17, _FACE.start : _FACE.stop, 0] = 0.4 * mouth[:, 0]  # widen
    return basis.reshape(_LATENTS, KEYPOINT_DIM)


_LATENTS = 18
# Latent std: static (location, handshape, mouth) and first harmonic; later ones decay as 1/k.
_LATENT_STATIC = np.array([0.05] * 6 + [0.6] * 10 + [0.5] * 2)
_LATENT_MOTION = np.array([0.08] * 6 + [0.4] * 10 + [0.4] * 2)


def _random_motion(rng: np.random.Generator) -> np.ndarray:
    """Latent Fourier coefficients ``(K + 1, 18)``: a static row, then one per sin(pi k t)."""
    decay = 1.0 / np.arange(1, _HARMONICS + 1)
    z = np.empty((_HARMONICS + 1, _LATENTS))
    z[0] = rng.normal(0.0, _LATENT_STATIC)
    z[1:] = rng.normal(0.0, 1.0, (_HARMONICS, _LATENTS)) * _LATENT_MOTION * decay[:, None]
    return z


@dataclass(frozen=True)
class _World:
    """Everything shared by all clips of one seed: labels, prototypes and the feature map."""

    rest: np.ndarray  # (156,)
    basis: np.ndarray  # (18, 156) latent -> keypoints
    gloss_cat: np.ndarray  # (G,) category of each gloss
    cat_motion: np.ndarray  # (C, K + 1, 18)
    gloss_motion: np.ndarray  # (G, K + 1, 18), before scaling by difficulty
    projection: np.ndarray  # (156, F) float32
    bias: np.ndarray  # (F,) float32


def _make_world(rng: np.random.Generator, num_gloss: int, num_cat: int, feature_dim: int) -> _World:
    gloss_cat = rng.permutation(np.arange(num_gloss) % num_cat)
    cat_motion = np.stack([_random_motion(rng) for _ in range(num_cat)])
    gloss_motion = np.stack([_random_motion(rng) for _ in range(num_gloss)])
    projection = (rng.standard_normal((KEYPOINT_DIM, feature_dim)) / np.sqrt(KEYPOINT_DIM)).astype(
        np.float32
    )
    bias = rng.normal(-0.2, 0.5, feature_dim).astype(np.float32)
    rest = _rest_pose()
    return _World(
        rest.reshape(-1), _latent_basis(rest), gloss_cat, cat_motion, gloss_motion, projection, bias
    )


def _make_clip(
    rng: np.random.Generator,
    world: _World,
    gloss: int,
    diff: Difficulty,
    min_len: int,
    max_len: int,
) -> tuple[np.ndarray, bool]:
    """One performed sign, ``(T, 156)`` float32 in [0, 1], and whether a hand was occluded."""
    length = int(rng.integers(min_len, max_len + 1))
    # Randomly dropped frames: sample more frames than kept, then drop some.
    raw = int(np.ceil(length / (1.0 - rng.uniform(0.0, diff.drop))))
    keep = np.sort(rng.choice(raw, size=length, replace=False))

    # Time warp w(u) = u + a sin(2 pi u) / (2 pi) is monotone for |a| < 1; crop both ends.
    u = np.linspace(0.0, 1.0, raw)[keep]
    a = rng.uniform(-diff.warp, diff.warp)
    u = u + a * np.sin(2 * np.pi * u) / (2 * np.pi)
    start, end = rng.uniform(0, diff.crop), 1.0 - rng.uniform(0, diff.crop)
    t = start + (end - start) * u
    basis = np.ones((length, _HARMONICS + 1))  # (T, K + 1)
    basis[:, 1:] = np.sin(np.pi * np.outer(t, np.arange(1, _HARMONICS + 1)))

    gloss_part = diff.gloss_scale * world.gloss_motion[gloss]
    style = diff.style * _random_motion(rng)  # how this signer performs it this time
    amplitude = rng.uniform(0.85, 1.15)
    latents = amplitude * (world.cat_motion[world.gloss_cat[gloss]] + gloss_part + style)
    frames = world.rest + basis @ latents @ world.basis  # (T, K + 1) (K + 1, 18) (18, 156)

    pts = frames.reshape(length, NUM_POINTS, 2)
    center = np.array([0.5, 0.55])
    scale = rng.uniform(1 - diff.scale_jitter, 1 + diff.scale_jitter)
    pts = center + scale * (pts - center) + rng.normal(0, diff.offset_jitter, 2)
    pts = pts + rng.normal(0, diff.noise, pts.shape)
    pts = np.clip(pts, 0.0, 1.0)
    occluded = bool(rng.random() < diff.occlusion)
    if occluded:
        hand = _LEFT if rng.random() < 0.5 else _RIGHT
        span = min(length, int(rng.integers(max(1, length // 5), max(2, length // 2) + 1)))
        first = int(rng.integers(0, length - span + 1))
        pts[first : first + span, hand.start : hand.stop] = 0.0
    return pts.reshape(length, KEYPOINT_DIM).astype(np.float32), occluded


def _features(
    rng: np.random.Generator, world: _World, keypoints: np.ndarray, diff: Difficulty
) -> np.ndarray:
    """InceptionV3-like ``(T, F)`` features, rounded through float16 exactly as stored on disk."""
    z = ((keypoints - 0.5) / 0.2) @ world.projection  # (T, F)
    z += world.bias
    # Uniform noise from raw bytes (std = feature_noise): several times cheaper than Gaussian.
    noise = np.frombuffer(rng.bytes(z.size), dtype=np.uint8).reshape(z.shape)
    step = np.float32(diff.feature_noise * np.sqrt(12.0) / 256.0)
    z += (noise - np.float32(127.5)) * step
    np.maximum(z, 0.0, out=z)
    return z.astype(np.float16)


@dataclass(frozen=True)
class SynthClip:
    name: str
    gloss: int
    cat: int
    occluded: bool
    keypoints: np.ndarray


@dataclass(frozen=True)
class SynthSpec:
    """The size and shape of a synthetic dataset; the same spec gives the same clips."""

    num_gloss: int = option(105, "number of glosses")
    num_cat: int = option(10, "number of categories (<= glosses)")
    train_per_gloss: int = option(16, "training clips per gloss")
    val_per_gloss: int = option(4, "validation clips per gloss")
    seed: int = option(0, "seed of the generator: the same seed gives the same files")
    difficulty: str = option("medium", "how confusable glosses are: easy, medium or hard")
    # clip lengths in frames, and the width of the stand-in InceptionV3 features
    min_len: int = option(16, "shortest clip, in frames")
    max_len: int = option(120, "longest clip, in frames")
    feature_dim: int = option(2048, "width of the stand-in InceptionV3 features")

    def problems(self) -> list[str]:
        problems = []
        for name in ("num_gloss", "num_cat", "train_per_gloss", "val_per_gloss", "min_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be an integer >= 1, but got {value!r}")
        if not isinstance(self.feature_dim, int) or self.feature_dim < 1:
            problems.append(f"feature_dim must be an integer >= 1, but got {self.feature_dim!r}")
        n_gloss, n_cat = self.num_gloss, self.num_cat
        if isinstance(n_gloss, int) and isinstance(n_cat, int) and n_cat > n_gloss:
            problems.append(f"`num_cat <= num_gloss` must hold, but got {n_cat=}, {n_gloss=}")
        lo, hi = self.min_len, self.max_len
        if not isinstance(hi, int) or (isinstance(lo, int) and hi < lo):
            problems.append(f"`min_len <= max_len` must hold, but got min_len={lo}, max_len={hi}")
        if self.difficulty not in DIFFICULTIES:
            problems.append(
                f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {self.difficulty!r}"
            )
        return problems


def generate(
    spec: SynthSpec,
) -> tuple[_World, dict[str, tuple[list[SynthClip], np.random.Generator]]]:
    """The world and every clip of `spec`, per split, with each split's feature RNG."""
    problems = spec.problems()
    if problems:
        raise ConfigError(problems)
    diff = DIFFICULTIES[spec.difficulty]
    world_ss, train_ss, val_ss, train_feat_ss, val_feat_ss = np.random.SeedSequence(
        spec.seed
    ).spawn(5)
    world = _make_world(np.random.default_rng(world_ss), spec.num_gloss, spec.num_cat,
                        spec.feature_dim)  # fmt: skip
    splits: dict[str, tuple[list[SynthClip], np.random.Generator]] = {}
    for split, per_gloss, ss, feat_ss in (
        ("train", spec.train_per_gloss, train_ss, train_feat_ss),
        ("val", spec.val_per_gloss, val_ss, val_feat_ss),
    ):
        rng = np.random.default_rng(ss)
        clips = []
        for gloss in range(spec.num_gloss):
            for i in range(per_gloss):
                kp, occluded = _make_clip(rng, world, gloss, diff, spec.min_len, spec.max_len)
                cat = int(world.gloss_cat[gloss])
                clips.append(SynthClip(f"g{gloss:03d}_{split}_{i:03d}", gloss, cat, occluded, kp))
        splits[split] = (clips, np.random.default_rng(feat_ss))
    return world, splits


def feature_stream(
    clips: list[SynthClip], rng: np.random.Generator, world: _World, diff: Difficulty
) -> Iterator[np.ndarray]:
    """Features clip by clip, computed in chunks of ~8k frames: one big GEMM beats many small."""
    chunk: list[SynthClip] = []
    frames = 0
    for i, clip in enumerate(clips):
        chunk.append(clip)
        frames += len(clip.keypoints)
        if frames >= 8192 or i == len(clips) - 1:
            feats = _features(rng, world, np.concatenate([c.keypoints for c in chunk]), diff)
            ends = np.cumsum([len(c.keypoints) for c in chunk])
            yield from np.split(feats, ends[:-1])
            chunk, frames = [], 0


def synthetic_splits(*, kind: Kind = "keypoints", **spec: Any) -> tuple[PackedSplit, PackedSplit]:
    """In-memory ``(train, val)`` splits of `SynthSpec(**spec)`; ``write_dataset`` writes them."""
    if kind not in ("keypoints", "features"):
        raise ConfigError(f"kind must be 'keypoints' or 'features', but got {kind!r}")
    synth = SynthSpec(**spec)
    world, splits = generate(synth)
    packed = []
    for clips, feat_rng in splits.values():
        if kind == "features":
            arrays: Sequence[np.ndarray] = list(
                feature_stream(clips, feat_rng, world, DIFFICULTIES[synth.difficulty])
            )
        else:
            arrays = [c.keypoints for c in clips]
        names = [c.name for c in clips]
        packed.append(
            PackedSplit.from_clips(arrays, [c.gloss for c in clips], [c.cat for c in clips], names)
        )
    return packed[0], packed[1]
