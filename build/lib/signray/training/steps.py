"""One epoch of training and one pass of evaluation; both return plain metric dicts."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from signray.errors import NonFiniteLossError
from signray.training.metrics import ClassificationMetrics, all_reduce_sum

__all__ = [
    "LossWeights",
    "ProgressFn",
    "autocast",
    "evaluate",
    "multitask_loss",
    "train_one_epoch",
]


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
    """alpha * CE(gloss) + beta * CE(category)."""
    ls = weights.label_smoothing
    g = F.cross_entropy(gloss_logits.float(), gloss, label_smoothing=ls, reduction=reduction)
    c = F.cross_entropy(cat_logits.float(), cat, label_smoothing=ls, reduction=reduction)
    return weights.gloss * g + weights.cat * c


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """fp16 on CUDA (paired with a GradScaler), bf16 on CPU, or nothing."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    weights: LossWeights,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = False,
    grad_clip: float | None = None,
    epoch: int = 0,
    progress: ProgressFn | None = None,
) -> dict[str, float]:
    """Train for one pass over `loader`; raises NonFiniteLossError instead of reporting NaN.

    `progress`, when given, wraps the batches (a progress bar); it sees every batch, nothing else.
    """
    model.train()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, samples, frames
    start = time.perf_counter()
    batches = progress(loader, epoch) if progress is not None else loader
    for step, batch in enumerate(batches):
        batch = batch.to(device, non_blocking=True)
        with autocast(device, amp):
            gloss_logits, cat_logits = model(batch.x, batch.lengths)
        loss = multitask_loss(gloss_logits, cat_logits, batch.gloss, batch.cat, weights)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                "lower `lr`, set `grad_clip`, or check the input data"
            )
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
        n = len(batch)
        totals[0] += loss.detach().double() * n
        totals[1] += n
        totals[2] += batch.lengths.sum()
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
    amp: bool = False,
) -> dict[str, float]:
    """``val_*`` metrics over the whole split: per-rank sums are summed across ranks."""
    model.eval()
    metrics = ClassificationMetrics(device)
    for batch in loader:
        batch = batch.to(device, non_blocking=True)
        with autocast(device, amp):
            gloss_logits, cat_logits = model(batch.x, batch.lengths)
        loss = multitask_loss(gloss_logits, cat_logits, batch.gloss, batch.cat, weights, "sum")
        metrics.update(gloss_logits, cat_logits, batch.gloss, batch.cat, loss)
    return {f"val_{k}": v for k, v in metrics.compute().items()}
