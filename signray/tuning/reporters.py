"""Reporters that hand each epoch's metrics and checkpoint to Ray Train or Ray Tune."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.train import Checkpoint as RayCheckpoint

from signray.io import write_text
from signray.layout import CHECKPOINT_FILE, CHECKPOINT_METRICS
from signray.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from signray.training.reporters import CheckpointFn, ProgressLine

__all__ = ["RayReporter"]


@dataclass
class RayReporter:
    """Every rank reports (Ray's report is a barrier); only rank 0 attaches a checkpoint.

    A checkpoint Ray restored (after a failure or `--resume`) wins over `fallback_resume`, the
    user's `--resume` file. `report_fn`/`get_checkpoint_fn` are `ray.train.report` and
    `ray.train.get_checkpoint` inside Ray Train workers, `ray.tune.report` and
    `ray.tune.get_checkpoint` inside a Tune trial.
    """

    report_fn: Callable[..., None]
    get_checkpoint_fn: Callable[[], RayCheckpoint | None]
    total_epochs: int
    rank: int = 0
    progress: bool = True  # a line per epoch on rank 0's stdout
    fallback_resume: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)  # reported with every epoch's metrics

    def __post_init__(self) -> None:
        self._line = ProgressLine(self.total_epochs) if self.progress and self.rank == 0 else None
        # Which Ray node ran this epoch (rank 0's, for Train runs): on a cluster whose nodes
        # share an IP (several per host, or NAT) Tune's own `node_ip`/`hostname` cannot tell.
        self.node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""

    def resume_state(self) -> Checkpoint | None:
        checkpoint = self.get_checkpoint_fn()
        if checkpoint is None:
            return load_checkpoint(self.fallback_resume) if self.fallback_resume else None
        with checkpoint.as_directory() as folder:
            state = load_checkpoint(Path(folder) / CHECKPOINT_FILE)
        if self.rank == 0:  # a retried or resumed trial says where it picks up
            print(f"resuming from the checkpoint of epoch {state.epoch}", flush=True)
        return state

    def report(self, metrics: dict[str, float], checkpoint: CheckpointFn, *, is_best: bool) -> None:
        metrics = {**metrics, "node_id": self.node_id, **self.tags}
        if self._line is not None:
            self._line.print(metrics)
        if self.rank != 0:  # rank 0 checkpoints every epoch: a retried trial loses nothing
            self.report_fn(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory(prefix="signray-ckpt-") as folder:
            save_checkpoint(checkpoint(), Path(folder) / CHECKPOINT_FILE)
            write_text(Path(folder) / CHECKPOINT_METRICS, json.dumps(metrics))
            self.report_fn(metrics, checkpoint=RayCheckpoint.from_directory(folder))
