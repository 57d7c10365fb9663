"""Augmentation of training batches: the `aug_*` fields of `TrainConfig`, applied to a padded
``(B, T, D)`` batch on the device the step runs on, with no Python loop over clips.

What happens to each clip is decided on the host, from the CPU generator: which clips flip,
speed factors, crops, dropped frames and parts, mixing partners and weights. Only per-value
noise is drawn on the device, from the device's generator. Both are the run's own generators,
seeded by `seed_everything` and saved in every checkpoint (`training.device.rng_state`), so a
seeded run is reproducible and a resumed run continues identically. Lengths that change (time
resampling, crop, frame drop) are computed from the host's lengths: a step never waits for the
device. With every strength 0 no `Augmenter` is built and training is unchanged.

Order: time (crop -> speed -> warp -> frame drop, one gather with linear interpolation) ->
space (keypoint layouts: mirror, rotation, scale, shift about the body centre; part drop) ->
feature drop -> noise -> mixup or cutmix (labels of both heads become class probabilities,
which `steps.multitask_loss` takes as targets). Padding stays zero and missing keypoints
(exactly (0, 0), see `signray.data.layouts`) stay missing.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from signray.config import AUGMENTATIONS, TrainConfig
from signray.data.layouts import KEYPOINT_LAYOUTS, KeypointLayout
from signray.data.loader import Batch
from signray.errors import ConfigError, Problem

__all__ = ["Augmenter", "build_augmenter", "layout_problems"]


def layout_problems(cfg: TrainConfig, feature_dim: int) -> list[Problem]:
    """Whether data of `feature_dim` features per frame has `cfg`'s keypoint layout."""
    if cfg.keypoint_layout is None:
        return []
    layout = KEYPOINT_LAYOUTS[cfg.keypoint_layout]
    if feature_dim == layout.feature_dim:
        return []
    return [
        Problem(
            f"`keypoint_layout` {layout.name} has {layout.feature_dim} features per frame "
            f"({layout.num_points} points x (x, y)), but the data has D={feature_dim}",
            ["keypoint_layout"],
        )
    ]


def build_augmenter(
    cfg: TrainConfig, feature_dim: int, feature_std: Tensor | None = None
) -> Augmenter | None:
    """The run's augmenter, or None when every augmentation is off. `feature_std` (D,): the
    training frames' std per feature, the unit of `aug_noise` (default 1)."""
    if problems := layout_problems(cfg, feature_dim):
        raise ConfigError(problems)
    if not any(getattr(cfg, name) for name in AUGMENTATIONS):
        return None
    return Augmenter(cfg, feature_std)


def _uniform(n: int, low: float, high: float) -> Tensor:
    """(n,) float64 uniform in [low, high) from the CPU generator."""
    return low + (high - low) * torch.rand(n, dtype=torch.float64)


def _onehot(labels: Tensor, classes: int) -> Tensor:
    if labels.is_floating_point():  # already probabilities
        return labels
    return F.one_hot(labels, classes).float()


class Augmenter:
    """Augments one training batch: ``augmenter(batch on the device, its lengths on the host)``."""

    def __init__(self, cfg: TrainConfig, feature_std: Tensor | None = None) -> None:
        self.cfg = cfg
        # noise per feature: aug_noise x the feature's std (unitless across datasets)
        self.noise = cfg.aug_noise * (feature_std.float() if feature_std is not None else 1.0)
        self.layout: KeypointLayout | None = (
            KEYPOINT_LAYOUTS[cfg.keypoint_layout] if cfg.keypoint_layout else None
        )
        self.num_gloss, self.num_cat = cfg.num_gloss, cfg.num_cat
        self._mirror = torch.tensor(self.layout.mirror) if self.layout is not None else None
        self._beta = {  # the mixing weight's distribution (built once: ~3x the cost of a draw)
            a: torch.distributions.Beta(a, a, validate_args=False)
            for a in {cfg.aug_mixup, cfg.aug_cutmix} - {0.0}
        }

    def __call__(self, batch: Batch, host_lengths: Tensor | None = None) -> Batch:
        """`batch` on the step's device; `host_lengths` its (B,) lengths on the CPU (default:
        the batch's own `host_lengths` where the Batch carries them)."""
        c = self.cfg
        lengths = _host_lengths(batch, host_lengths)
        x, dev_lengths = batch.x, batch.lengths
        present = self._present(x) if self.layout is not None else None  # (B, T, P)
        timeline = self._timeline(lengths)
        if timeline is not None:
            positions, new = timeline
            x, present = _resample(x, lengths, positions, present)
            lengths, dev_lengths = new, _to(new, x.device)
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < dev_lengths[:, None]  # (B, T)
        if self.layout is not None:
            x, present = self._space(x, present, valid)
        elif c.aug_feature_drop:
            keep = torch.rand(x.shape[0], x.shape[2]) >= c.aug_feature_drop  # (B, D)
            x = x * keep.to(x.device, non_blocking=True)[:, None, :]
        if c.aug_noise:
            x = x + self.noise * torch.randn_like(x)
        keep = valid[..., None] if present is None else (valid[..., None] & present)
        if timeline is not None or c.aug_noise or self.layout is not None:
            x = _zero_outside(x, keep, self.layout)
        gloss, cat = batch.gloss, batch.cat
        if c.aug_mixup or c.aug_cutmix:
            x, gloss, cat = self._mix(x, lengths, valid, gloss, cat)
        return _replace(batch, x, dev_lengths, lengths, gloss, cat)

    # --- time ------------------------------------------------------------------------------

    def _timeline(self, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(source position of every new frame (B, T') float64, new lengths (B,) int64), both
        planned on the host (NumPy), or None when no temporal augmentation is on."""
        c = self.cfg
        if not (c.aug_speed or c.aug_time_warp or c.aug_crop or c.aug_frame_drop):
            return None
        r = _rand(4, len(lengths))  # crop, crop start, speed, warp
        last = lengths - 1.0  # (B,) position of each clip's last frame
        keep = 1 - c.aug_crop * r[0]  # share of the clip the crop keeps
        span = keep * last  # source positions the crop covers
        start = r[1] * (last - span)
        speed = 1 + c.aug_speed * (2 * r[2] - 1)
        new = np.rint(keep * lengths / speed).astype(np.int64)  # (B,)
        # Never longer than the batch's longest clip: a slowed-down clip costs no padding, and
        # a batch sized to fit the device's memory still fits.
        new = np.clip(new, 1, lengths.max())
        steps = np.arange(new.max())  # (T',)
        u = np.minimum(steps[None, :] / np.maximum(new - 1, 1)[:, None], 1.0)  # (B, T')
        if c.aug_time_warp:
            # u + a sin(pi u) / pi: fixes both ends, and is increasing for |a| < 1
            a = c.aug_time_warp * (2 * r[3] - 1)
            u = u + a[:, None] * np.sin(np.pi * u) / np.pi
        positions = start[:, None] + u * span[:, None]  # (B, T')
        if c.aug_frame_drop:
            positions, new = _drop_frames(positions, new, c.aug_frame_drop)
        return positions, new

    # --- space (keypoint layouts) ----------------------------------------------------------

    def _present(self, x: Tensor) -> Tensor:
        """(B, T, P) bool: points that were detected (missing ones are exactly (0, 0))."""
        B, T, _ = x.shape
        return (x.reshape(B, T, self.layout.num_points, 2) != 0).any(-1)

    def _space(self, x: Tensor, present: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        c, layout = self.cfg, self.layout
        B, T, _ = x.shape
        pts = x.reshape(B, T, layout.num_points, 2)  # (B, T, P, 2)
        if c.aug_flip:
            flip = (torch.rand(B) < c.aug_flip).to(x.device, non_blocking=True)  # (B,)
            if self._mirror.device != x.device:  # moved once
                self._mirror = self._mirror.to(x.device)
            mirror = self._mirror
            pts = torch.where(flip[:, None, None, None], pts[:, :, mirror], pts)
            present = torch.where(flip[:, None, None], present[:, :, mirror], present)
        else:
            flip = None
        if c.aug_flip or c.aug_rotate or c.aug_scale or c.aug_shift:
            matrix, shift = self._affine(B)
            matrix, shift = (t.to(x.device, non_blocking=True) for t in (matrix, shift))
            if flip is not None:  # mirror x about the centre: negate the first column
                sign = torch.where(flip, -1.0, 1.0)
                matrix = matrix * torch.stack([sign, torch.ones_like(sign)], -1)[:, None, :]
            centre = self._centre(pts, present, valid)  # (B, 2)
            moved = pts - centre[:, None, None, :]
            pts = torch.einsum("btpk,bjk->btpj", moved, matrix) + (centre + shift)[:, None, None]
        drop = torch.zeros(B, layout.num_points, dtype=torch.bool)  # (B, P)
        if c.aug_part_drop:
            parts = torch.rand(B, len(layout.parts)) < c.aug_part_drop
            for i, points in enumerate(layout.parts.values()):
                drop[:, points.start : points.stop] |= parts[:, i : i + 1]
        if c.aug_feature_drop:
            drop |= torch.rand(B, layout.num_points) < c.aug_feature_drop
        if c.aug_part_drop or c.aug_feature_drop:
            present = present & ~drop.to(x.device, non_blocking=True)[:, None, :]
        return pts.reshape(B, T, -1), present

    def _affine(self, n: int) -> tuple[Tensor, Tensor]:
        """(B, 2, 2) rotation times scale, and (B, 2) shifts, float32 on the host."""
        c = self.cfg
        angle = _uniform(n, -c.aug_rotate, c.aug_rotate) * (math.pi / 180)
        scale = _uniform(n, 1 - c.aug_scale, 1 + c.aug_scale)
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        matrix = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        shift = (2 * torch.rand(n, 2, dtype=torch.float64) - 1) * c.aug_shift
        return matrix.float(), shift.float()

    def _centre(self, pts: Tensor, present: Tensor, valid: Tensor) -> Tensor:
        """(B, 2): each clip's mean shoulder midpoint over the frames that have both shoulders;
        (0.5, 0.5), the image centre, for a clip that never has."""
        a, b = self.layout.centre
        ok = (present[:, :, a] & present[:, :, b] & valid).to(pts.dtype)  # (B, T)
        mid = (pts[:, :, a] + pts[:, :, b]) / 2  # (B, T, 2)
        count = ok.sum(1, keepdim=True)  # (B, 1)
        centre = (mid * ok[..., None]).sum(1) / count.clamp(min=1)
        return torch.where(count > 0, centre, torch.full_like(centre, 0.5))

    # --- mixing ----------------------------------------------------------------------------

    def _mix(self, x, lengths, valid, gloss, cat):
        """Mix each clip with a partner of the batch: mixup blends whole clips, cutmix replaces
        a span; the partner is read at the same relative time (resampled to this clip's
        length). Labels of both heads become the same mixture of one-hot vectors."""
        c = self.cfg
        n, t = x.shape[0], x.shape[1]
        cutmix = bool(c.aug_cutmix) and (not c.aug_mixup or _rand(1, 1)[0, 0] < 0.5)
        alpha = c.aug_cutmix if cutmix else c.aug_mixup
        weight = self._beta[alpha].sample((n,)).double().numpy()  # (B,) each clip's own share
        partner = torch.randperm(n).numpy()
        steps = np.arange(t)
        other_len = lengths[partner][:, None]
        source = np.minimum(steps[None, :] * other_len // lengths[:, None], other_len - 1)
        other = x.reshape(n * t, -1)[_to(partner[:, None] * t + source, x.device)]  # (B, T, D)
        if cutmix:
            width = np.rint((1 - weight) * lengths).astype(np.int64)  # (B,) frames replaced
            first = (_rand(1, n)[0] * (lengths - width + 1)).astype(np.int64)
            cut = (steps[None, :] >= first[:, None]) & (steps[None, :] < (first + width)[:, None])
            weight = 1 - width / lengths
            x = torch.where(_to(cut, x.device)[..., None] & valid[..., None], other, x)
        else:
            w = _to(weight.astype(np.float32), x.device)[:, None, None]
            x = torch.where(valid[..., None], w * x + (1 - w) * other, x)
        w = _to(weight.astype(np.float32), x.device)[:, None]
        p = _to(partner, x.device)
        g, k = _onehot(gloss, self.num_gloss), _onehot(cat, self.num_cat)
        return x, w * g + (1 - w) * g[p], w * k + (1 - w) * k[p]


def _rand(*shape: int) -> np.ndarray:
    """Uniform [0, 1) float64 from torch's CPU generator (the run's, saved in checkpoints)."""
    return torch.rand(*shape, dtype=torch.float64).numpy()


def _to(array: np.ndarray, device: torch.device) -> Tensor:
    """A host-planned array on the step's device (an asynchronous copy on CUDA)."""
    return torch.from_numpy(array).to(device, non_blocking=True)


def _drop_frames(positions: np.ndarray, lengths: np.ndarray, p: float):
    """Drop each of a clip's frames with probability `p` (a clip that would lose them all
    keeps its first): the kept positions, in order, and the new lengths."""
    n, t = positions.shape
    valid = np.arange(t)[None, :] < lengths[:, None]  # (B, T')
    keep = valid & (_rand(n, t) >= p)
    keep[:, 0] |= ~keep.any(1)
    order = np.argsort(~keep, axis=1, kind="stable")  # kept frames first, in order
    new = keep.sum(1)
    return np.take_along_axis(positions, order, 1)[:, : new.max()], new


def _resample(
    x: Tensor, lengths: np.ndarray, positions: np.ndarray, present: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """Frames at fractional `positions` (B, T') by linear interpolation between the two
    neighbouring frames (the rows to read are found on the host); a keypoint missing in either
    neighbour takes the nearer one's value."""
    B, T, D = x.shape
    low = np.floor(positions).astype(np.int64)  # (B, T')
    high = np.minimum(low + 1, (lengths - 1)[:, None])
    base = np.arange(B)[:, None] * T
    rows = _to(np.stack([base + low, base + high]), x.device)  # (2, B, T') rows of (B*T, D)
    frac = _to((positions - low).astype(np.float32)[..., None], x.device)  # (B, T', 1)
    flat = x.reshape(B * T, D)
    lo, hi = flat[rows[0]], flat[rows[1]]  # (B, T', D)
    out = torch.lerp(lo, hi, frac)
    if present is None:
        return out, None
    P = present.shape[-1]
    flat_p = present.reshape(B * T, P)
    p_lo, p_hi = flat_p[rows[0]], flat_p[rows[1]]  # (B, T', P)
    nearest = torch.where(frac >= 0.5, hi, lo).view(B, -1, P, 2)
    both = (p_lo & p_hi)[..., None]
    out = torch.where(both, out.view(B, -1, P, 2), nearest).reshape(B, -1, D)
    return out, torch.where(frac >= 0.5, p_hi, p_lo)


def _zero_outside(x: Tensor, keep: Tensor, layout: KeypointLayout | None) -> Tensor:
    """Zero padding frames, and missing points with a layout. `keep` (B, T, 1) or (B, T, P)."""
    if layout is None:
        return torch.where(keep, x, 0.0)
    B, T, _ = x.shape
    pts = x.reshape(B, T, layout.num_points, 2)
    return torch.where(keep[..., None], pts, 0.0).reshape(B, T, -1)


def _host_lengths(batch: Batch, given: Tensor | None) -> np.ndarray:
    """The batch's lengths on the host: given, carried by the batch, or (one device sync) read
    back from the device."""
    lengths = given if given is not None else batch.host_lengths
    if lengths is None:
        lengths = batch.lengths
    return lengths.numpy(force=True)  # a copy only from the device


def _replace(
    batch: Batch, x: Tensor, lengths: Tensor, host: np.ndarray, gloss: Tensor, cat: Tensor
) -> Batch:
    """The augmented batch (the one place that rebuilds a `Batch` here), its new lengths on
    both the device and the host."""
    return dataclasses.replace(
        batch, x=x, lengths=lengths, host_lengths=torch.from_numpy(host), gloss=gloss, cat=cat
    )
