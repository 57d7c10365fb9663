"""Averages of a model's weights, validated instead of the trained weights: an exponential
moving average updated after every optimizer step (`ema_decay`), or stochastic weight averaging,
an equal average of the weights at the end of each of the last `swa_epochs` epochs.

Both are `torch.optim.swa_utils.AveragedModel`. Its number of updates is also counted on the
host, so choosing which model to validate never waits for the device. A checkpoint saves the
average (`Checkpoint.averaged`) next to the trained weights: training resumes from both, and a
model rebuilt from the checkpoint for evaluation or prediction gets the weights that were
validated (`Checkpoint.inference_weights`).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from signray.config import TrainConfig

__all__ = ["WeightAverage", "build_average"]


def build_average(cfg: TrainConfig, model: nn.Module) -> WeightAverage | None:
    """The run's weight average, or None without `ema_decay` or `swa_epochs`."""
    if cfg.ema_decay:
        return WeightAverage(model, "ema", cfg.ema_decay, first_epoch=0)
    if cfg.swa_epochs:
        return WeightAverage(model, "swa", 0.0, first_epoch=cfg.epochs - cfg.swa_epochs)
    return None


class WeightAverage:
    """The averaged copy of `model` and when it is updated."""

    def __init__(self, model: nn.Module, kind: str, decay: float, *, first_epoch: int) -> None:
        self.model, self.kind, self.first_epoch = model, kind, first_epoch
        fn = get_ema_multi_avg_fn(decay) if kind == "ema" else None
        # Buffers (the input statistics) are copied once; they do not change while training.
        self.averaged = AveragedModel(model, multi_avg_fn=fn)
        self.updates = 0  # the host's count of AveragedModel.n_averaged

    def after_step(self) -> None:
        if self.kind == "ema":
            self._update()

    def after_epoch(self, epoch: int) -> None:
        """`epoch` (0-based) has ended: SWA takes in the weights of its last epochs."""
        if self.kind == "swa" and epoch >= self.first_epoch:
            self._update()

    def _update(self) -> None:
        self.averaged.update_parameters(self.model)
        self.updates += 1

    @property
    def module(self) -> nn.Module:
        """What to validate: the average once it has been updated, else the trained model."""
        return self.averaged.module if self.updates else self.model

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "updates": self.updates,
            "model": self.averaged.module.checkpoint_state_dict() if self.updates else None,
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue the average saved in a checkpoint (None or another kind: start afresh)."""
        if not state or state.get("kind") != self.kind or not state.get("updates"):
            return
        self.averaged.module.load_checkpoint_state_dict(state["model"])
        self.updates = int(state["updates"])
        self.averaged.n_averaged.fill_(self.updates)
