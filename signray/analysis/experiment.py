"""The one reader of an experiment folder, behind the tune summary, trials.csv and the report.

It reads only files, local or on an object store (`signray.storage`): Ray Tune's per-trial
folders (``params.json``, ``progress.csv`` or ``result.json``, ``error.txt``, ``checkpoint_*/``),
signray's done markers, the driver's state and ``trials.csv``, so it works without Ray, after a
crash, and on experiments copied from a cluster.
How a trial ended (`signray.layout.Status`) comes, in this order, from Tune's own record when the
tune driver passes it in, from ``trials.csv``, or from the folders alone.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from optuna.distributions import BaseDistribution

from signray.config.experiment_state import ExperimentState
from signray.errors import ConfigError, DataError
from signray.fields import tidy_params
from signray.layout import (
    CHECKPOINT_FILE,
    LATENCY_METRIC,
    METRIC,
    PARAMS_METRIC,
    ExperimentFiles,
    Status,
    rank_key,
)
from signray.storage import Location, RemotePath

__all__ = [
    "COST_COLUMNS",
    "TRIAL_COLUMNS",
    "Experiment",
    "TrialRun",
    "read_experiment",
]

# trials.csv: trial_id, the searched parameters, then these.
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
# Measured per trial when a search has several objectives; columns only when measured.
COST_COLUMNS = (LATENCY_METRIC, PARAMS_METRIC)


def _number(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


@dataclass
class TrialRun:
    """One Tune trial as read from its folder."""

    trial_id: str
    path: Location
    params: dict[str, Any]
    history: pd.DataFrame  # one row per epoch (the latest report of each), sorted by epoch
    status: str = Status.TERMINATED
    error: str = ""

    def _metric(self, metric: str) -> pd.Series:
        h = self.history
        return h[metric].dropna() if metric in h else pd.Series([], dtype=float)

    @property
    def epochs(self) -> int:
        return int(self.history["epoch"].max()) if len(self.history) else 0

    def best_row(self, metric: str = METRIC) -> pd.Series | None:
        values = self._metric(metric)
        return self.history.loc[values.idxmax()] if len(values) else None

    def best(self, metric: str = METRIC) -> float:
        values = self._metric(metric)
        return float(values.max()) if len(values) else math.nan

    def last(self, metric: str = METRIC) -> float:
        values = self._metric(metric)
        return float(values.iloc[-1]) if len(values) else math.nan

    def rank(self, metric: str = METRIC) -> tuple[float, float]:
        """The best-trial rule (`signray.layout.rank_key`) applied to this trial."""
        row = self.best_row(metric)
        if row is None:
            return rank_key(None, None)
        return rank_key(_number(row[metric]), _number(row.get("val_cat_acc")))

    @property
    def wall_time_s(self) -> float | None:
        h = self.history
        return _number(h["time_total_s"].max()) if "time_total_s" in h and len(h) else None

    def row(self, params: list[str], metric: str = METRIC) -> dict[str, Any]:
        """This trial's trials.csv row."""
        best = self.best_row(metric)

        def at_best(name: str) -> float | None:
            return None if best is None else _number(best.get(name))

        return {
            "trial_id": self.trial_id,
            **{p: self.params.get(p) for p in params},
            "status": self.status,
            "epochs": self.epochs,
            f"best_{metric}": None if best is None else _number(best[metric]),
            "best_epoch": None if best is None else int(best["epoch"]),
            f"last_{metric}": _number(self.last(metric)),
            "val_cat_acc": at_best("val_cat_acc"),
            "val_gloss_top5": at_best("val_gloss_top5"),
            **{c: _number(self.last(c)) for c in COST_COLUMNS if c in self.history},
            "wall_time_s": None if self.wall_time_s is None else round(self.wall_time_s, 2),
            "error": self.error,
        }


@dataclass
class Experiment:
    files: ExperimentFiles
    trials: list[TrialRun]
    params: list[str]  # searched hyperparameters
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    state: ExperimentState | None = None

    @property
    def path(self) -> Location:
        return self.files.root

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.trials)

    def best(self, metric: str = METRIC) -> TrialRun | None:
        scored = [t for t in self.trials if not math.isnan(t.best(metric))]
        return max(scored, key=lambda t: t.rank(metric)) if scored else None

    def table(self, metric: str = METRIC) -> pd.DataFrame:
        """One row per trial (the trials.csv columns), in the order Tune created them."""
        columns = ["trial_id", *self.params, *(c.replace(METRIC, metric) for c in TRIAL_COLUMNS)]
        measured = [c for c in COST_COLUMNS if any(c in t.history for t in self.trials)]
        columns[columns.index("wall_time_s") : columns.index("wall_time_s")] = measured
        return pd.DataFrame([t.row(self.params, metric) for t in self.trials], columns=columns)

    def checkpoint_dirs(self, trial: TrialRun) -> list[Location]:
        """Checkpoint folders of `trial` that still exist: Tune's, and its Ray Train run's."""
        train_run = self.files.train_runs / self.files.train_run_name(trial.trial_id)
        found = [*trial.path.glob("checkpoint_*"), *train_run.glob("checkpoint_*")]
        return sorted(p for p in found if (p / CHECKPOINT_FILE).is_file())


def _read_file(path: Location) -> bytes | None:
    """The file's bytes, or None when it is not there (one request on an object store)."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _read_history(folder: Location) -> pd.DataFrame | None:
    """Per-epoch results from progress.csv, else result.json (one JSON object per line); None
    when the folder has neither (not a trial folder)."""
    frame = pd.DataFrame()
    progress = _read_file(folder / "progress.csv")
    if progress:
        try:
            # "417376e7" is no float
            frame = pd.read_csv(io.BytesIO(progress), dtype={"trial_id": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            frame = pd.DataFrame()
    result = _read_file(folder / "result.json") if frame.empty else None
    if progress is None and result is None:
        return None
    if frame.empty and result is not None:
        rows = []
        for line in result.decode(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by a crash
            if isinstance(row, dict):
                rows.append({k: v for k, v in row.items() if not isinstance(v, (dict, list))})
        frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    if "epoch" not in frame:
        frame["epoch"] = frame.get("training_iteration", pd.Series(range(1, len(frame) + 1)))
    frame = frame[pd.to_numeric(frame["epoch"], errors="coerce").notna()].copy()
    frame["epoch"] = frame["epoch"].astype(int)
    # A trial restored from an older checkpoint repeats epochs: the latest report wins.
    return frame.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def _read_params(folder: Location, history: pd.DataFrame) -> dict[str, Any]:
    text = _read_file(folder / "params.json")
    if text is not None:
        try:
            params = json.loads(text)
            if isinstance(params, dict):
                return tidy_params(params)
        except json.JSONDecodeError:
            pass
    return tidy_params(
        {
            c.removeprefix("config/"): history[c].iloc[-1]
            for c in history.columns
            if c.startswith("config/") and len(history)
        }
    )


def _csv_outcomes(files: ExperimentFiles) -> dict[str, tuple[str, str]]:
    """trial id -> (status, error) from trials.csv, which recorded Tune's own view."""
    text = _read_file(files.trials_csv)
    if text is None:
        return {}
    try:
        table = pd.read_csv(io.BytesIO(text), dtype={"trial_id": str, "error": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return {}
    if not {"trial_id", "status"} <= set(table.columns):
        return {}
    errors = table["error"].fillna("") if "error" in table else [""] * len(table)
    rows = zip(table["trial_id"], table["status"], errors, strict=True)
    return {str(i): (str(s), str(e)) for i, s, e in rows if isinstance(s, str)}


def trial_status(tune_status: str, done: bool, epochs: int, max_epochs: int) -> str:
    """A finished Tune trial (TERMINATED) is TERMINATED when its loop returned on its own (done
    marker) or it ran every epoch, else the scheduler stopped it (STOPPED_EARLY)."""
    if tune_status == Status.ERROR:
        return Status.ERROR
    if epochs >= max_epochs > 0:
        # Trained to the end, whatever Tune's last saved state says (HyperBand can leave a
        # trial it paused at its last rung saved as PAUSED after stopping it).
        return Status.TERMINATED
    if tune_status == "TERMINATED":
        return Status.TERMINATED if done or epochs >= max_epochs else Status.STOPPED_EARLY
    return Status.UNFINISHED


def read_experiment(
    path: str | os.PathLike[str] | RemotePath,
    *,
    tune_statuses: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
) -> Experiment:
    """Read every trial folder (any sub-folder with Ray's progress.csv or result.json).

    `tune_statuses` (trial id -> Tune's status: TERMINATED, ERROR, RUNNING, PENDING) and `errors`
    come from the tune driver, which reads them from Ray; without them, trials.csv's statuses are
    used, and failing that the folders decide (error.txt, done markers, epochs run).
    """
    files = ExperimentFiles(path)
    root = files.root
    if not root.is_dir():
        raise ConfigError([f"experiment folder {root} does not exist"])
    state = ExperimentState.load(files.driver_state) if files.driver_state.is_file() else None
    trials: list[TrialRun] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name in ExperimentFiles.NOT_TRIALS:
            continue
        history = _read_history(folder)
        if history is None:
            continue
        trial_id = folder.name.removeprefix("trial_")
        if "trial_id" in history and len(history) and not folder.name.startswith("trial_"):
            trial_id = str(history["trial_id"].iloc[-1])  # a folder Tune named itself
        trials.append(TrialRun(trial_id, folder, _read_params(folder, history), history))
    if not trials:
        raise DataError(
            [
                f"{root} holds no Ray Tune trial folders (sub-folders with progress.csv or "
                "result.json); pass the experiment folder STORAGE_PATH/NAME"
            ]
        )
    max_epochs = state.base.epochs if state else max(t.epochs for t in trials)
    from_csv = {} if tune_statuses is not None else _csv_outcomes(files)
    for t in trials:
        done = files.done_marker(t.trial_id).is_file()
        if tune_statuses is not None:
            t.status = trial_status(tune_statuses.get(t.trial_id, ""), done, t.epochs, max_epochs)
            t.error = (errors or {}).get(t.trial_id, "")
        elif t.trial_id in from_csv:
            t.status, t.error = from_csv[t.trial_id]
        else:
            errored = (t.path / "error.txt").is_file()
            t.status = trial_status(
                Status.ERROR if errored else "TERMINATED", done, t.epochs, max_epochs
            )
    if state is not None:
        distributions = state.distributions
        params = list(distributions) if not state.options.single_run else []
    else:
        distributions, params = {}, []
        for t in trials:
            params.extend(k for k in t.params if k not in params)
    return Experiment(files, trials, params, distributions, state)
