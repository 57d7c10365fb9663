"""Where the loop's per-epoch results go. The loop only knows the `Reporter` protocol.

`FileReporter` is the no-Ray implementation: progress on stdout, a CSV log, and
`{ModelName}_best.pt` / `{ModelName}_last.pt`, in a local folder or an object-store URI. The Ray
reporter lives in `signray.tuning`.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TextIO

from signray.io import copy_file, write_text
from signray.layout import RunFiles
from signray.storage import RemotePath, as_location
from signray.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from signray.training.steps import ProgressFn

__all__ = [
    "LOG_COLUMNS",
    "CheckpointFn",
    "FileReporter",
    "ProgressLine",
    "Reporter",
    "batch_progress",
    "format_progress",
]

# Builds this epoch's checkpoint; called only by the rank and epochs that save one.
CheckpointFn = Callable[[], Checkpoint]

LOG_COLUMNS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_gloss_acc",
    "val_gloss_top5",
    "val_cat_acc",
    "lr",
    "epoch_seconds",
    "train_samples_per_s",
)


class Reporter(Protocol):
    """Receives one report per epoch from every rank; decides what to keep."""

    def resume_state(self) -> Checkpoint | None:
        """The checkpoint to continue from, or None for a fresh start."""

    def report(self, metrics: dict[str, float], checkpoint: CheckpointFn, *, is_best: bool) -> None:
        """Called once per epoch on every rank; `checkpoint()` builds the checkpoint lazily."""


class ProgressLine:
    """Prints one line per epoch, with an ETA from the mean epoch time since it was made."""

    def __init__(self, total_epochs: int, stream: TextIO | None = None) -> None:
        self.total_epochs = total_epochs
        self.stream = stream
        self._start = time.perf_counter()
        self._done = 0

    def print(self, metrics: dict[str, float]) -> None:
        self._done += 1
        elapsed = time.perf_counter() - self._start
        line = format_progress(metrics, self.total_epochs, elapsed, self._done)
        print(line, file=self.stream or sys.stdout, flush=True)


def format_progress(metrics: dict[str, float], total_epochs: int, elapsed: float, done: int) -> str:
    """One line per epoch, with an ETA from the mean epoch time so far."""
    epoch = int(metrics["epoch"])
    eta = elapsed / max(done, 1) * (total_epochs - epoch)
    return (
        f"epoch {epoch:>3}/{total_epochs}  train_loss {metrics['train_loss']:.4f}  "
        f"val_loss {metrics['val_loss']:.4f}  val_gloss_acc {metrics['val_gloss_acc']:.4f}  "
        f"top5 {metrics['val_gloss_top5']:.4f}  val_cat_acc {metrics['val_cat_acc']:.4f}  "
        f"lr {metrics['lr']:.2e}  {metrics['epoch_seconds']:.1f}s/epoch  "
        f"{metrics['train_samples_per_s']:.0f} samples/s  ETA {_duration(eta)}"
    )


def batch_progress(
    total_epochs: int, *, enabled: bool | None = None, stream: TextIO | None = None
) -> ProgressFn | None:
    """A tqdm bar over one epoch's batches, with rate and ETA; None when it is off.

    `enabled=None` means on only when `stream` (stderr by default) is a terminal: logs and CI
    output never fill up with bar redraws. The bar clears itself at the end of the epoch, so the
    per-epoch progress line stays the lasting record.
    """
    stream = stream if stream is not None else sys.stderr
    if enabled is None:
        enabled = bool(getattr(stream, "isatty", lambda: False)())
    if not enabled:
        return None
    from tqdm import tqdm

    def wrap(batches: Iterable, epoch: int) -> Iterable:
        return tqdm(
            batches,
            total=len(batches) if hasattr(batches, "__len__") else None,
            desc=f"epoch {epoch + 1}/{total_epochs}",
            unit="batch",
            leave=False,
            file=stream,
            dynamic_ncols=True,
            mininterval=0.5,
        )

    return wrap


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class FileReporter:
    """Checkpoints and CSV log in `output_dir`, a progress line per epoch; rank 0 writes."""

    def __init__(
        self,
        output_dir: str | os.PathLike | RemotePath,
        class_name: str,
        *,
        total_epochs: int,
        log_csv: str | os.PathLike | RemotePath | None = None,
        resume: str | os.PathLike | RemotePath | None = None,
        rank: int = 0,
        stream: TextIO | None = None,
    ) -> None:
        files = RunFiles(output_dir, class_name)
        self.best_path, self.last_path = files.best, files.last
        self.log_path = as_location(log_csv) if log_csv else files.log
        self.resume, self.rank = resume, rank
        self.progress = ProgressLine(total_epochs, stream)

    def resume_state(self) -> Checkpoint | None:
        if self.resume is None:
            if self.rank == 0:
                # A fresh run (e.g. --overwrite) starts a fresh log, not rows after the old run's.
                self.log_path.unlink(missing_ok=True)
            return None
        checkpoint = load_checkpoint(self.resume)
        if self.rank == 0:
            self._truncate_log(checkpoint.epoch)
        return checkpoint

    def _log_rows(self) -> list[dict[str, Any]]:
        try:
            text = self.log_path.read_text()
        except FileNotFoundError:
            return []
        return list(csv.DictReader(io.StringIO(text, newline="")))

    def _truncate_log(self, epoch: int) -> None:
        """Drop log rows after the resumed epoch so the log matches the training history."""
        if self.log_path.is_file():
            self._write_log([r for r in self._log_rows() if int(r["epoch"]) <= epoch])

    def _write_log(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        write_text(self.log_path, buf.getvalue())

    def report(self, metrics: dict[str, float], checkpoint: CheckpointFn, *, is_best: bool) -> None:
        if self.rank != 0:
            return
        save_checkpoint(checkpoint(), self.last_path)
        if is_best:
            copy_file(self.last_path, self.best_path)
        self._append_log(metrics)
        self.progress.print(metrics)

    def _append_log(self, metrics: dict[str, float]) -> None:
        """The log rewritten whole (atomic, and object stores cannot append)."""
        self._write_log([*self._log_rows(), {k: metrics[k] for k in LOG_COLUMNS}])
