"""One epoch of training and one pass of evaluation; both return plain metric dicts.

The training step never waits for the device: the loss, sample and frame counts accumulate in
device tensors, and a non-finite loss is flagged on the device too (with the first bad step).
The host reads them every `NONFINITE_CHECK_EVERY` steps and at the end of the epoch, so a
diverged run stops within that many steps with the same message, and a CUDA stream runs ahead
of Python in between.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from signray.errors import NonFiniteLossError
from signray.training.augment import Augmenter
from signray.training.averaging import WeightAverage
from signray.training.metrics import ClassificationMetrics, all_reduce_sum
from signray.training.precision import FP32, Precision

__all__ = [
    "NONFINITE_CHECK_EVERY",
    "LossWeights",
    "ProgressFn",
    "evaluate",
    "multitask_loss",
    "train_one_epoch",
]

# Steps between two host reads of the device-side non-finite flag (one sync each).
NONFINITE_CHECK_EVERY = 50


# Wraps one epoch's batches for display, e.g. a tqdm bar: (batches, epoch index) -> batches.
ProgressFn = Callable[[Iterable, int], Iterable]


@dataclass(frozen=True)
class LossWeights:
    gloss: float = 0.5
    cat: float = 0.5
    label_smoothing: float = 0.0


def multitask_loss(
    gloss_logits: torch.Tensor,
    cat_logits: torch.Tensor,
    gloss: torch.Tensor,
    cat: torch.Tensor,
    weights: LossWeights,
    reduction: str = "mean",
) -> torch.Tensor:
    """alpha * CE(gloss) + beta * CE(category).

    Targets are class ids (B,) or, from mixup/cutmix (`training.augment`), class probabilities
    (B, classes); cross-entropy takes either, label smoothing included.
    """
    ls = weights.label_smoothing
    g = F.cross_entropy(gloss_logits.float(), gloss, label_smoothing=ls, reduction=reduction)
    c = F.cross_entropy(cat_logits.float(), cat, label_smoothing=ls, reduction=reduction)
    return weights.gloss * g + weights.cat * c


class _NonFinite:
    """First non-finite loss of an epoch, recorded on the device: (step, value), step -1 if none."""

    def __init__(self, device: torch.device) -> None:
        self.first = torch.full((2,), -1.0, dtype=torch.float64, device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach()) & (self.first[0] < 0)
        here = torch.stack([torch.full_like(self.first[0], step), loss.detach().double()])
        self.first = torch.where(bad, here, self.first)

    def check(self, epoch: int) -> None:
        """Raise if any rank saw a non-finite loss (all ranks stop together: no DDP hang)."""
        ranks_bad = (self.first[:1] >= 0).double()
        all_reduce_sum(ranks_bad)
        if not ranks_bad.item():  # the one host sync
            return
        step, value = self.first.tolist()
        where = (
            f"became {value} at epoch {epoch + 1}, step {int(step) + 1}"
            if step >= 0
            else f"became non-finite on another DDP rank in epoch {epoch + 1}"
        )
        raise NonFiniteLossError(
            f"training loss {where}; lower `lr`, set `grad_clip`, or check the input data"
        )


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    weights: LossWeights,
    scaler: torch.amp.GradScaler | None = None,
    precision: Precision = FP32,
    grad_clip: float | None = None,
    epoch: int = 0,
    progress: ProgressFn | None = None,
    augment: Augmenter | None = None,
    average: WeightAverage | None = None,
) -> dict[str, float]:
    """Train for one pass over `loader`; raises NonFiniteLossError instead of reporting NaN.

    `progress`, when given, wraps the batches (a progress bar); it sees every batch, nothing else.
    `augment` changes each training batch on the device; `average` (EMA) follows every step.
    """
    model.train()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, samples, frames
    nonfinite = _NonFinite(device)
    start = time.perf_counter()
    batches = progress(loader, epoch) if progress is not None else loader
    for step, batch in enumerate(batches):
        batch = batch.to(device, non_blocking=True)
        if augment is not None:
            batch = augment(batch)  # new lengths on the device and the host alike
        with precision.autocast():
            gloss_logits, cat_logits = model(batch.x, batch.lengths, batch.host_lengths)
        loss = multitask_loss(gloss_logits, cat_logits, batch.gloss, batch.cat, weights)
        nonfinite.update(loss, step)
        if (step + 1) % NONFINITE_CHECK_EVERY == 0:
            nonfinite.check(epoch)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if average is not None:
            average.after_step()
        n = len(batch)
        totals[0] += loss.detach().double() * n
        totals[1] += n
        totals[2] += batch.lengths.sum()
    nonfinite.check(epoch)  # waits for the device, so `seconds` includes its queued work
    seconds = time.perf_counter() - start
    all_reduce_sum(totals)
    loss_sum, samples, frames = totals.tolist()
    return {
        "train_loss": loss_sum / max(samples, 1),
        "train_samples": samples,
        "train_frames": frames,
        "train_seconds": seconds,
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: torch.device,
    weights: LossWeights,
) -> dict[str, float]:
    """``val_*`` metrics over the whole split: per-rank sums are summed across ranks.

    Always in fp32, whatever precision trained the model: the metrics that rank trials and pick
    the best checkpoint are then computed alike for every trial, and `signray.evaluate`
    reproduces them (a reduced-precision forward also depends on how clips are batched).
    """
    model.eval()
    metrics = ClassificationMetrics(device)
    for batch in loader:
        batch = batch.to(device, non_blocking=True)
        gloss_logits, cat_logits = model(batch.x, batch.lengths, batch.host_lengths)
        loss = multitask_loss(gloss_logits, cat_logits, batch.gloss, batch.cat, weights, "sum")
        metrics.update(gloss_logits, cat_logits, batch.gloss, batch.cat, loss)
    return {f"val_{k}": v for k, v in metrics.compute().items()}
