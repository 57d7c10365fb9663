"""Training without Ray: inputs, one epoch's steps, metrics, the loop, checkpoints, reporters.

`train_loop` is the one per-worker loop every mode runs (a plain process, a Ray Train worker, a
Ray Tune trial); Ray reaches it only through a `Reporter` and `torch.distributed`.
"""

from __future__ import annotations

from signray.training.checkpoint import (
    Checkpoint,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from signray.training.inputs import load_inputs
from signray.training.loop import LoopResult, train_loop
from signray.training.metrics import ClassificationMetrics
from signray.training.reporters import FileReporter, Reporter

__all__ = [
    "Checkpoint",
    "ClassificationMetrics",
    "FileReporter",
    "LoopResult",
    "Reporter",
    "load_checkpoint",
    "load_inputs",
    "model_from_checkpoint",
    "save_checkpoint",
    "train_loop",
]
