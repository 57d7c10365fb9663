"""The one implementation of signray's metrics, used by the loop's validation and by `evaluate`.

Sums (loss, correct top-1, correct top-k, correct category, count) are accumulated on the
device, summed across DDP ranks, and only then turned into rates, so metrics describe the whole
split, not one rank's shard. Names carry no prefix here (``gloss_acc``); the loop reports them as
``val_gloss_acc``.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

__all__ = ["TOP_K", "ClassificationMetrics", "all_reduce_sum"]

TOP_K = 5


def all_reduce_sum(sums: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (a no-op outside torch.distributed); returns `sums`."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    return sums


class ClassificationMetrics:
    """Accumulates gloss and category predictions batch by batch."""

    def __init__(self, device: torch.device | str = "cpu", top_k: int = TOP_K) -> None:
        self.top_k = top_k
        self._sums = torch.zeros(5, dtype=torch.float64, device=device)

    def update(
        self,
        gloss_logits: torch.Tensor,  # (B, G)
        cat_logits: torch.Tensor,  # (B, C)
        gloss: torch.Tensor,  # (B,)
        cat: torch.Tensor,  # (B,)
        loss_sum: torch.Tensor,  # () summed over the batch
    ) -> None:
        k = min(self.top_k, gloss_logits.shape[1])
        topk = gloss_logits.topk(k, dim=1).indices  # (B, k)
        self._sums += torch.stack(
            [
                loss_sum.double(),
                (gloss_logits.argmax(dim=1) == gloss).sum().double(),
                (topk == gloss[:, None]).any(dim=1).sum().double(),
                (cat_logits.argmax(dim=1) == cat).sum().double(),
                # a fill on the device; torch.tensor(n, device=cuda) would copy and sync
                torch.full((), len(gloss), dtype=torch.float64, device=self._sums.device),
            ]
        )

    def compute(self, *, distributed: bool = True) -> dict[str, float]:
        """``loss, gloss_acc, gloss_top{k}, cat_acc, count`` over everything seen (all ranks)."""
        sums = self._sums.clone()
        if distributed:
            all_reduce_sum(sums)
        loss, top1, topk, cat_ok, count = sums.tolist()
        if count == 0:
            rates = {"loss": math.nan, "gloss_acc": 0.0, f"gloss_top{self.top_k}": 0.0}
            return {**rates, "cat_acc": 0.0, "count": 0}
        return {
            "loss": loss / count,
            "gloss_acc": top1 / count,
            f"gloss_top{self.top_k}": topk / count,
            "cat_acc": cat_ok / count,
            "count": int(count),
        }
