"""Reporters that hand each epoch's metrics and checkpoint to Ray Train or Ray Tune."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ray
from ray.train import Checkpoint as RayCheckpoint

from signray.layout import CHECKPOINT_FILE
from signray.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from signray.training.reporters import CheckpointFn, format_progress

__all__ = ["RayReporter"]


class RayReporter:
    """Every rank reports (Ray's report is a barrier); only rank 0 attaches a checkpoint.

    A checkpoint Ray restored (after a failure or `--resume`) wins over `fallback_resume`, the
    user's `--resume` file. `report_fn`/`get_checkpoint_fn` are `ray.train.report` and
    `ray.train.get_checkpoint` inside Ray Train workers, `ray.tune.report` and
    `ray.tune.get_checkpoint` inside a Tune trial.
    """

    def __init__(
        self,
        report_fn: Callable[..., None],
        get_checkpoint_fn: Callable[[], RayCheckpoint | None],
        *,
        rank: int = 0,
        total_epochs: int,
        progress: bool = True,
        fallback_resume: str | None = None,
    ) -> None:
        self.report_fn = report_fn
        self.get_checkpoint_fn = get_checkpoint_fn
        self.rank = rank
        self.total_epochs = total_epochs
        self.progress = progress
        self.fallback_resume = fallback_resume
        self._start = time.perf_counter()
        self._reported = 0
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
        self._reported += 1
        # Which Ray node ran this epoch (rank 0's, for Train runs): on a cluster whose nodes
        # share an IP (several per host, or NAT) Tune's own `node_ip`/`hostname` cannot tell.
        metrics = {**metrics, "node_id": self.node_id}
        if self.progress and self.rank == 0:
            elapsed = time.perf_counter() - self._start
            print(
                format_progress(metrics, self.total_epochs, elapsed, self._reported),
                file=sys.stdout,
                flush=True,
            )
        if self.rank != 0:  # rank 0 checkpoints every epoch: a retried trial loses nothing
            self.report_fn(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory(prefix="signray-ckpt-") as folder:
            save_checkpoint(checkpoint(), Path(folder) / CHECKPOINT_FILE)
            self.report_fn(metrics, checkpoint=RayCheckpoint.from_directory(folder))
