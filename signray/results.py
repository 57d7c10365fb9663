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
import csv
import dataclasses
import io
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signray.checkpoint import atomic_write_text, copy_atomic, load_checkpoint
from signray.config import TrainConfig, resolve_config, save_config

# A trial whose training ends on its own (all epochs, or the loop's early stop) leaves
# EXPERIMENT/trials_done/TRIAL_ID.json; a TERMINATED trial without it was stopped by the scheduler.
# It lives in the experiment folder, not the trial folder: Tune's trial folder seen from inside a
# trial is a local staging copy that is never synced back.
DONE_DIR = "trials_done"


def done_marker(experiment_dir: str | os.PathLike, trial_id: str) -> Path:
    return Path(experiment_dir) / DONE_DIR / f"{trial_id}.json"

__all__ = [
    "TrialRecord",
    "SearchReport",
    "collect_trials",
    "load_results",
    "quiet_missing_results",
    "trial_status",
    "write_trials_csv",
    "find_best_checkpoint",
    "write_outputs",
    "format_summary",
    "error_reason",
    "TRIAL_COLUMNS",
]

TRIAL_COLUMNS = (
    "status",
    "epochs",
    "best_val_gloss_acc",
    "best_epoch",
    "last_val_gloss_acc",
    "val_cat_acc",
    "val_gloss_top5",
    "wall_time_s",
    "error",
)
STATE_FILE = "state.pt"


@dataclass
class TrialRecord:
    trial_id: str
    params: dict[str, Any]
    status: str
    epochs: int = 0
    best_val_gloss_acc: float | None = None
    best_epoch: int | None = None
    last_val_gloss_acc: float | None = None
    val_cat_acc: float | None = None  # at the best epoch
    val_gloss_top5: float | None = None  # at the best epoch
    wall_time_s: float | None = None
    error: str = ""
    path: str | None = None  # the Tune trial folder
    checkpoint_dirs: list[str] = field(default_factory=list)


@dataclass
class SearchReport:
    experiment_dir: Path
    trials: list[TrialRecord]
    best: TrialRecord | None
    best_config: TrainConfig | None
    best_config_path: Path | None
    best_checkpoint: Path | None
    wall_time_s: float
    trials_csv: Path
    param_names: list[str]

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.trials)


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


def trial_status(tune_status: str, done: bool, epochs: int, max_epochs: int) -> str:
    """TERMINATED (trained to the end, or stopped by the loop's own early stop), STOPPED_EARLY
    (stopped by the trial scheduler before its last epoch), ERROR, or UNFINISHED."""
    if tune_status == "ERROR":
        return "ERROR"
    if tune_status == "TERMINATED":
        # ASHA stops a trial at its last epoch too, before the trial function returns; only a
        # trial whose loop returned on its own leaves a done marker.
        return "TERMINATED" if done or epochs >= max_epochs else "STOPPED_EARLY"
    return "UNFINISHED"


def _num(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def load_results(experiment_dir: str | os.PathLike, metric: str = "val_gloss_acc",
                 mode: str = "max"):
    """The experiment's `ResultGrid` as saved on disk.

    Read back rather than taken from `Tuner.fit()`: after Ctrl-C, Tune stops the live trials in
    memory (they would read TERMINATED) after it saved their true state (RUNNING/PENDING).
    """
    from ray.tune import ExperimentAnalysis, ResultGrid

    with quiet_missing_results():
        analysis = ExperimentAnalysis(os.fspath(experiment_dir), default_metric=metric,
                                      default_mode=mode)
        return ResultGrid(analysis)


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


def collect_trials(grid, param_names: Sequence[str], *, experiment_dir: Path,
                   train_runs: Path | None, max_epochs: int) -> list[TrialRecord]:
    """Records from a Tune `ResultGrid` (its trials give the status Tune tracked)."""
    from signray.launch.trial import tidy_sample, train_run_name

    trials = list(grid._experiment_analysis.trials)  # same objects the ResultGrid is built from
    records = []
    for trial, result in zip(trials, grid, strict=True):
        config = tidy_sample(trial.config or {})
        record = TrialRecord(
            trial_id=trial.trial_id,
            params={name: config.get(name) for name in param_names},
            status=str(trial.status),
            path=result.path,
        )
        df = result.metrics_dataframe
        if df is not None and len(df) and "val_gloss_acc" in df:
            df = df.dropna(subset=["val_gloss_acc"])
        if df is not None and len(df) and "val_gloss_acc" in df:
            # A retried trial may repeat epochs; the latest report of each epoch counts.
            if "epoch" in df:
                df = df.drop_duplicates(subset="epoch", keep="last").sort_values("epoch")
            best = df.loc[df["val_gloss_acc"].idxmax()]
            last = df.iloc[-1]
            record.epochs = int(last.get("epoch", len(df)))
            record.best_val_gloss_acc = _num(best["val_gloss_acc"])
            record.best_epoch = int(best.get("epoch", 0))
            record.last_val_gloss_acc = _num(last["val_gloss_acc"])
            record.val_cat_acc = _num(best.get("val_cat_acc"))
            record.val_gloss_top5 = _num(best.get("val_gloss_top5"))
            record.wall_time_s = _num(last.get("time_total_s"))
        done = done_marker(experiment_dir, trial.trial_id).is_file()
        record.status = trial_status(record.status, done, record.epochs, max_epochs)
        if result.error is not None or record.status == "ERROR":
            record.error = error_reason(result.error or getattr(trial, "error_msg", None))
        dirs = []
        for checkpoint, _ in result.best_checkpoints or []:
            dirs.append(checkpoint.path)
        if train_runs is not None:
            run = train_runs / train_run_name(experiment_dir.name, trial.trial_id)
            dirs.extend(str(p) for p in sorted(run.glob("checkpoint_*")))
        record.checkpoint_dirs = dirs
        records.append(record)
    return records


def write_trials_csv(
    records: Iterable[TrialRecord], param_names: Sequence[str], path: Path
) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["trial_id", *param_names, *TRIAL_COLUMNS])
    for r in records:
        values = [r.status, r.epochs, r.best_val_gloss_acc, r.best_epoch, r.last_val_gloss_acc,
                  r.val_cat_acc, r.val_gloss_top5,
                  None if r.wall_time_s is None else round(r.wall_time_s, 2), r.error]
        writer.writerow([r.trial_id, *(r.params.get(n) for n in param_names),
                         *("" if v is None else v for v in values)])
    return atomic_write_text(path, buf.getvalue())


def find_best_checkpoint(record: TrialRecord) -> tuple[Path | None, dict | None]:
    """The kept checkpoint of `record` with the highest val gloss accuracy that still exists."""
    best: tuple[float, Path, dict] | None = None
    for folder in record.checkpoint_dirs:
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            continue
        state = load_checkpoint(path)
        score = _num(state.get("metrics", {}).get("val_gloss_acc"))
        # A stopped multi-worker trial's workers may save an epoch or two after Tune's last
        # record of it; export only what the trial table reports.
        if score is None or int(state.get("epoch", 0)) > max(record.epochs, 1):
            continue
        if best is None or score > best[0]:
            best = (score, path, state)
    return (best[1], best[2]) if best else (None, None)


def _rank(record: TrialRecord) -> tuple:
    return (record.best_val_gloss_acc if record.best_val_gloss_acc is not None else -1.0,
            record.val_cat_acc or 0.0)


def write_outputs(
    grid=None,
    *,
    base: TrainConfig,
    param_names: Sequence[str],
    experiment_dir: Path,
    wall_time_s: float,
    train_runs: Path | None,
) -> SearchReport:
    """Write trials.csv, best_config.yaml and {ModelName}_best.pt; return what was written."""
    experiment_dir = Path(experiment_dir)
    grid = grid if grid is not None else load_results(experiment_dir)
    records = collect_trials(grid, param_names, experiment_dir=experiment_dir,
                             train_runs=train_runs, max_epochs=base.epochs)
    trials_csv = write_trials_csv(records, param_names, experiment_dir / "trials.csv")
    scored = [r for r in records if r.best_val_gloss_acc is not None]
    best = max(scored, key=_rank) if scored else None
    best_cfg = best_cfg_path = best_ckpt = None
    if best is not None:
        sampled = {k: v for k, v in best.params.items() if v is not None}
        best_cfg = resolve_config(sampled, base)
        best_cfg = dataclasses.replace(
            best_cfg, output_dir=os.fspath(experiment_dir / "retrain"), resume=None, log_csv=None
        )
        best_cfg_path = save_config(best_cfg, experiment_dir / "best_config.yaml")
        source, _ = find_best_checkpoint(best)
        if source is not None:
            best_ckpt = copy_atomic(source, experiment_dir / f"{base.spec.class_name}_best.pt")
    return SearchReport(
        experiment_dir=experiment_dir,
        trials=records,
        best=best,
        best_config=best_cfg,
        best_config_path=best_cfg_path,
        best_checkpoint=best_ckpt,
        wall_time_s=wall_time_s,
        trials_csv=trials_csv,
        param_names=list(param_names),
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def format_summary(report: SearchReport) -> str:
    lines = ["", "=" * 72, "signray.tune summary", "=" * 72]
    n = len(report.trials)
    lines.append(
        f"trials: {n} ({report.count('TERMINATED')} completed, "
        f"{report.count('STOPPED_EARLY')} stopped early by the scheduler, "
        f"{report.count('ERROR')} errored"
        + (f", {report.count('UNFINISHED')} unfinished" if report.count("UNFINISHED") else "")
        + f"); wall time {report.wall_time_s:.1f}s"
    )
    best = report.best
    if best is None:
        lines.append("no trial reported a result")
    else:
        lines.append(
            f"best trial {best.trial_id} ({best.status}, {best.epochs} epochs): val_gloss_acc "
            f"{_fmt(best.best_val_gloss_acc)} at epoch {best.best_epoch}, val_cat_acc "
            f"{_fmt(best.val_cat_acc)}, top5 {_fmt(best.val_gloss_top5)}"
        )
        if best.params:
            lines.append("best hyperparameters:")
            lines.extend(f"  {k}: {v}" for k, v in best.params.items())
    errored = [t for t in report.trials if t.status == "ERROR"]
    if errored:
        lines.append("errored trials:")
        lines.extend(f"  {t.trial_id}: {t.error or 'unknown error'}" for t in errored)
    lines.append(f"experiment folder: {report.experiment_dir}")
    lines.append(f"  trials table:    {report.trials_csv}")
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
