"""Which Tune checkpoints a trial keeps: its best `keep` by val_gloss_acc and its latest.

Tune can prune them itself (``CheckpointConfig(num_to_keep=K)``), but it deletes a checkpoint as
soon as it falls out of the best K, while the experiment snapshot on storage (written every
``TUNE_GLOBAL_CHECKPOINT_S``, in the background) may still name it as the trial's latest: a
driver killed in that window leaves an experiment whose ``--resume`` fails that trial with
"Could not recover from checkpoint as it does not exist on storage anymore" (measured on S3, and
the same race exists on a local disk). So Tune keeps everything, and this driver-side callback
deletes a checkpoint only when it is neither among the best nor the latest *and* a newer one has
been the latest for `grace_s`, long enough for snapshots to have moved past it; at the end of a
finished search, when Tune's final snapshot is written, the rest goes too. Checkpoints left by an
earlier, interrupted driver are found by listing the trial's folder when the trial ends.

Multi-worker trials keep their checkpoints in their Ray Train run, which saves its own snapshot
before it deletes anything; Train prunes those.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

from ray import tune

from signray.io import remove_tree
from signray.layout import CHECKPOINT_METRICS, METRIC, ExperimentFiles
from signray.storage import Location

__all__ = ["CHECKPOINT_PERIOD_ENV", "KeepBestCheckpoints", "checkpoint_period_s"]

logger = logging.getLogger(__name__)

CHECKPOINT_PERIOD_ENV = "TUNE_GLOBAL_CHECKPOINT_S"
# Seconds between experiment snapshots unless the user chose (Tune's "auto" grows with the
# snapshot's cost); the grace period is a few of them.
DEFAULT_PERIOD_S = 10.0
GRACE_PERIODS = 6


def checkpoint_period_s() -> float:
    """Pin Tune's snapshot period (unless set) and return it."""
    os.environ.setdefault(CHECKPOINT_PERIOD_ENV, str(int(DEFAULT_PERIOD_S)))
    try:
        return max(float(os.environ[CHECKPOINT_PERIOD_ENV]), DEFAULT_PERIOD_S)
    except ValueError:  # "auto": at least 10 s, more when snapshots are slow
        return 3 * DEFAULT_PERIOD_S


@dataclass
class _Saved:
    name: str  # checkpoint_000003
    score: float
    superseded_at: float | None = None  # monotonic time a newer checkpoint arrived


class KeepBestCheckpoints(tune.Callback):
    """Delete superseded checkpoints outside each trial's best `keep` (see the module doc)."""

    def __init__(self, experiment_dir: str | os.PathLike | Location, keep: int) -> None:
        self.files = ExperimentFiles(experiment_dir)
        self.keep = keep
        self.grace_s = GRACE_PERIODS * checkpoint_period_s()
        self._saved: dict[str, list[_Saved]] = {}
        self._listed: set[str] = set()
        # Trials with a superseded checkpoint outside their best: the only ones a step visits,
        # so the driver's work per step does not grow with the trials that have finished.
        self.pending: set[str] = set()

    def __getstate__(self) -> dict:
        # Pickled into the experiment (tuner.pkl): a restored driver starts with no records.
        return {**self.__dict__, "_saved": {}, "_listed": set(), "pending": set()}

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        score = _score((trial.last_result or {}).get(METRIC))
        self._add(trial.trial_id, os.path.basename(checkpoint.path.rstrip("/")), score)
        self._prune(time.monotonic())

    def on_step_end(self, iteration, trials, **info) -> None:
        self._prune(time.monotonic())

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._list_earlier(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._list_earlier(trial.trial_id)

    def on_experiment_end(self, trials, **info) -> None:
        # Called after Tune's final, waited-for snapshot. When every trial has ended, no resume
        # can restore anything but a trial's latest checkpoint: the grace period is over.
        finished = all(t.status in ("TERMINATED", "ERROR") for t in trials)
        self._prune(float("inf") if finished else time.monotonic())

    def _add(self, trial_id: str, name: str, score: float, *, superseded: bool = False) -> None:
        saved = self._saved.setdefault(trial_id, [])
        if any(s.name == name for s in saved):
            return
        now = time.monotonic()
        if not superseded:
            for s in saved:
                s.superseded_at = s.superseded_at or now
        saved.append(_Saved(name, score, now if superseded else None))
        saved.sort(key=lambda s: s.name)  # Tune numbers them: the last is the latest
        self.pending.add(trial_id)

    def _list_earlier(self, trial_id: str) -> None:
        """Add the trial's checkpoints this driver did not see being written (an earlier,
        interrupted driver's), with their scores from the metrics they carry."""
        if trial_id in self._listed:
            return
        self._listed.add(trial_id)
        folder = self.files.root / ExperimentFiles.trial_dirname(trial_id)
        try:
            for path in folder.glob("checkpoint_*"):
                self._add(trial_id, path.name, _stored_score(path), superseded=True)
        except OSError as err:
            logger.warning("cannot list the checkpoints of trial %s: %s", trial_id, err)

    def _prune(self, now: float) -> None:
        for trial_id in list(self.pending):
            saved = self._saved[trial_id]
            best = sorted(saved, key=lambda s: s.score, reverse=True)[: self.keep]
            keep = {s.name for s in best} | {saved[-1].name}
            if all(s.name in keep for s in saved):
                self.pending.discard(trial_id)  # until its next checkpoint
                continue
            for s in list(saved):
                due = s.superseded_at is not None and now - s.superseded_at >= self.grace_s
                if s.name in keep or not due:
                    continue
                folder = self.files.root / ExperimentFiles.trial_dirname(trial_id) / s.name
                try:
                    remove_tree(folder)
                except FileNotFoundError:
                    pass
                except OSError as err:  # try again at the next step
                    logger.warning("cannot delete checkpoint %s: %s", folder, err)
                    continue
                saved.remove(s)


def _score(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("-inf")
    return number if number == number else float("-inf")  # NaN ranks last


def _stored_score(checkpoint_dir: Location) -> float:
    try:
        return _score(json.loads((checkpoint_dir / CHECKPOINT_METRICS).read_text()).get(METRIC))
    except (OSError, ValueError, AttributeError):
        return float("-inf")
