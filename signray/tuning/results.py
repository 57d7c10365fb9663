"""What a search leaves in its experiment folder, and the summary it prints.

- ``trials.csv``: one row per trial: id, every searched hyperparameter, status (TERMINATED: trained
  to the end or stopped by its own early stop; STOPPED_EARLY: stopped by the trial scheduler;
  ERROR; UNFINISHED after an interruption), epochs run, best and last val gloss accuracy, val cat
  accuracy and top-5 at the best epoch, wall time, and the error's reason.
- ``best_config.yaml``: the best trial's full flat config, loadable by
  ``python -m signray.train --config best_config.yaml`` (absolute data paths; outputs go to
  ``<experiment>/retrain``).
- ``{ModelName}_best.pt``: the best trial's best checkpoint, copied from the best of its kept
  checkpoints that still exists, in the single-run checkpoint format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from signray.analysis.experiment import Experiment, TrialRun, read_experiment
from signray.config import TrainConfig, resolve_config, save_config
from signray.io import copy_file, write_text
from signray.layout import CHECKPOINT_FILE, METRIC, MODE, ExperimentFiles, Status
from signray.storage import Location, RemotePath, filesystem_and_path
from signray.training.checkpoint import Checkpoint, load_checkpoint

__all__ = [
    "SearchReport",
    "error_reason",
    "find_best_checkpoint",
    "format_summary",
    "quiet_missing_results",
    "read_tune_outcomes",
    "write_outputs",
]


@dataclass
class SearchReport:
    experiment: Experiment
    best: TrialRun | None
    best_config: TrainConfig | None
    best_config_path: Location | None
    best_checkpoint: Location | None
    wall_time_s: float

    @property
    def trials(self) -> list[TrialRun]:
        return self.experiment.trials

    def count(self, status: str) -> int:
        return self.experiment.count(status)


def error_reason(error: BaseException | str | None) -> str:
    """One line saying why a trial failed: the original exception's type and message."""
    if error is None:
        return ""
    if isinstance(error, str):
        text = error
    else:
        cause = error
        seen = set()
        while id(cause) not in seen:
            seen.add(id(cause))
            inner = getattr(cause, "cause", None) or cause.__cause__
            if not isinstance(inner, BaseException):
                break
            cause = inner
        text = f"{type(cause).__name__}: {cause}"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return type(error).__name__
    # Ray's wrapped errors end with "<Type>: message"; keep the message lines after the traceback.
    tail = [ln for ln in lines if not ln.startswith(("File ", "Traceback", "^", "~"))]
    for i, line in enumerate(tail):
        if "Error:" in line or "Exception:" in line:
            return " ".join(tail[i:])[:500]
    return " ".join(tail[-3:])[:500]


@contextlib.contextmanager
def quiet_missing_results() -> Iterator[None]:
    """Mute Ray's warning for trials without results.

    A trial that had not started when the search was interrupted (PENDING at Ctrl-C) has no
    results yet; Ray warns about it with a FileNotFoundError whenever it reads the experiment,
    which reads like a failure. The summary shows such a trial as UNFINISHED instead.
    """
    log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def read_tune_outcomes(
    experiment_dir: str | os.PathLike | RemotePath,
) -> tuple[dict[str, str], dict[str, str]]:
    """(trial id -> Tune's status, trial id -> error reason) from the experiment saved on disk.

    Read back rather than taken from `Tuner.fit()`: after Ctrl-C, Tune stops the live trials in
    memory (they would read TERMINATED) after it saved their true state (RUNNING/PENDING).
    """
    from ray.tune import ExperimentAnalysis

    fs, path = filesystem_and_path(experiment_dir)
    with quiet_missing_results():
        analysis = ExperimentAnalysis(
            path, storage_filesystem=fs, default_metric=METRIC, default_mode=MODE
        )
    statuses, errors = {}, {}
    for trial in analysis.trials:
        statuses[trial.trial_id] = str(trial.status)
        if trial.status == Status.ERROR:
            errors[trial.trial_id] = error_reason(trial.get_pickled_error() or trial.get_error())
    return statuses, errors


def find_best_checkpoint(
    exp: Experiment, trial: TrialRun
) -> tuple[Location | None, Checkpoint | None]:
    """The kept checkpoint of `trial` with the highest val gloss accuracy that still exists."""
    best: tuple[float, Location, Checkpoint] | None = None
    for folder in exp.checkpoint_dirs(trial):
        path = folder / CHECKPOINT_FILE
        ckpt = load_checkpoint(path)
        score = ckpt.metrics.get(METRIC)
        # A stopped multi-worker trial's workers may save an epoch or two after Tune's last
        # record of it; export only what the trial table reports.
        if score is None or ckpt.epoch > max(trial.epochs, 1):
            continue
        if best is None or score > best[0]:
            best = (score, path, ckpt)
    return (best[1], best[2]) if best else (None, None)


def write_outputs(
    experiment_dir: str | os.PathLike | RemotePath, *, base: TrainConfig, wall_time_s: float
) -> SearchReport:
    """Write trials.csv, best_config.yaml and {ModelName}_best.pt; return what was written."""
    statuses, errors = read_tune_outcomes(experiment_dir)
    exp = read_experiment(experiment_dir, tune_statuses=statuses, errors=errors)
    files: ExperimentFiles = exp.files
    write_text(files.trials_csv, exp.table().to_csv(index=False))
    best = exp.best()
    best_cfg = best_cfg_path = best_ckpt = None
    if best is not None:
        sampled = {k: v for k, v in best.params.items() if k in exp.params}
        best_cfg = dataclasses.replace(
            resolve_config(sampled, base),
            output_dir=str(files.retrain),
            resume=None,
            log_csv=None,
        )
        best_cfg_path = save_config(best_cfg, files.best_config)
        source, _ = find_best_checkpoint(exp, best)
        if source is not None:
            best_ckpt = copy_file(source, files.best_checkpoint(base.spec.class_name))
    return SearchReport(exp, best, best_cfg, best_cfg_path, best_ckpt, wall_time_s)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def format_summary(report: SearchReport) -> str:
    lines = ["", "=" * 72, "signray.tune summary", "=" * 72]
    n = len(report.trials)
    unfinished = report.count(Status.UNFINISHED)
    lines.append(
        f"trials: {n} ({report.count(Status.TERMINATED)} completed, "
        f"{report.count(Status.STOPPED_EARLY)} stopped early by the scheduler, "
        f"{report.count(Status.ERROR)} errored"
        + (f", {unfinished} unfinished" if unfinished else "")
        + f"); wall time {report.wall_time_s:.1f}s"
    )
    best = report.best
    if best is None:
        lines.append("no trial reported a result")
    else:
        row = best.row(report.experiment.params)
        lines.append(
            f"best trial {best.trial_id} ({best.status}, {best.epochs} epochs): {METRIC} "
            f"{_fmt(row[f'best_{METRIC}'])} at epoch {row['best_epoch']}, val_cat_acc "
            f"{_fmt(row['val_cat_acc'])}, top5 {_fmt(row['val_gloss_top5'])}"
        )
        if report.experiment.params:
            lines.append("best hyperparameters:")
            lines.extend(f"  {k}: {best.params.get(k)}" for k in report.experiment.params)
    errored = [t for t in report.trials if t.status == Status.ERROR]
    if errored:
        lines.append("errored trials:")
        lines.extend(f"  {t.trial_id}: {t.error or 'unknown error'}" for t in errored)
    files = report.experiment.files
    lines.append(f"experiment folder: {files.root}")
    lines.append(f"  trials table:    {files.trials_csv}")
    if report.best_config_path:
        lines.append(f"  best config:     {report.best_config_path}")
        lines.append(
            f"    retrain with: python -m signray.train --config {report.best_config_path}"
        )
    if report.best_checkpoint:
        lines.append(f"  best checkpoint: {report.best_checkpoint}")
    elif best is not None:
        lines.append("  best checkpoint: none of the best trial's checkpoints still exists")
    return "\n".join(lines)
