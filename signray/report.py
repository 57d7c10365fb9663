"""`python -m signray.report EXPERIMENT_DIR`: plots and an HTML page for a finished (or running)
search, plus `plot_learning_curve` for a single run's CSV log.

The report reads only files: Ray Tune's per-trial folders (``params.json``, ``progress.csv`` or
``result.json``, and signray's ``signray_trial_done.json``) and the driver's ``trials.csv`` when
present. Hyperparameter importance comes from an Optuna study rebuilt in memory from the trials
table (`study_from_trials`), so the report works without Ray, without the searcher's state, and
on experiments copied from a cluster.

``EXPERIMENT_DIR/report/`` receives:

- ``curves.png``: val gloss accuracy vs epoch for every trial (scheduler-stopped trials dashed,
  so ASHA's early stops are visibly shorter);
- ``best_so_far.png``: best accuracy so far vs wall time since the experiment started;
- ``params_vs_accuracy.png``: each searched hyperparameter vs the trial's best accuracy;
- ``importance.png`` (+ ``importance.csv``): Optuna's parameter importances, or a note saying
  why they could not be computed;
- ``index.html``: all of the above, the best trial, the best checkpoint's evaluation (when
  ``EXPERIMENT_DIR/evaluation/`` exists) and the trials table.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import math
import os
import sys
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from signray.checkpoint import atomic_write_text
from signray.cli import user_errors_exit
from signray.errors import ConfigError, DataError
from signray.plotting import LOG_SCALE_PARAMS, new_figure, save_figure
from signray.results import done_marker

__all__ = [
    "main",
    "build_parser",
    "REPORT_DIR",
    "EVALUATION_DIR",
    "TrialRun",
    "Experiment",
    "load_experiment",
    "trials_frame",
    "study_from_trials",
    "param_importances",
    "write_report",
    "plot_learning_curve",
]

METRIC = "val_gloss_acc"
REPORT_DIR = "report"
# Where the tune driver puts `evaluate_to_dir` output for the best checkpoint; linked if present.
EVALUATION_DIR = "evaluation"
# Fewer usable trials than this and importances are noise; the report says so instead.
MIN_IMPORTANCE_TRIALS = 4
# With fewer trials that ran all epochs, scheduler-stopped trials are ranked too (at the score
# they reached): under ASHA most trials stop early, and they were stopped for doing worse.
MIN_COMPLETE_ONLY = 8
_NOT_TRIALS = {REPORT_DIR, EVALUATION_DIR, "mlruns", "train_runs"}

COMPLETE, STOPPED, ERROR, UNFINISHED = "complete", "stopped early", "error", "unfinished"
# trials.csv statuses (signray.results) -> ours; trials.csv knows Tune's view, so it wins.
_CSV_STATUS = {
    "TERMINATED": COMPLETE,
    "STOPPED_EARLY": STOPPED,
    "ERROR": ERROR,
    "UNFINISHED": UNFINISHED,
}


@dataclass
class TrialRun:
    """One Tune trial as read from its folder."""

    trial_id: str
    path: Path
    params: dict[str, Any]
    history: pd.DataFrame  # one row per reported epoch, sorted by `epoch`
    status: str = COMPLETE

    @property
    def epochs(self) -> int:
        return int(self.history["epoch"].max()) if len(self.history) else 0

    def best(self, metric: str = METRIC) -> float:
        values = self.history[metric].dropna() if metric in self.history else pd.Series([])
        return float(values.max()) if len(values) else math.nan

    def rank(self, metric: str = METRIC) -> tuple[float, float]:
        """The order `signray.results` picks the best trial by: metric, then val cat acc there."""
        if math.isnan(self.best(metric)):
            return (-math.inf, 0.0)
        row = self.history.loc[self.history[metric].idxmax()]
        cat = row.get("val_cat_acc", 0.0)
        return (float(row[metric]), 0.0 if pd.isna(cat) else float(cat))

    def last(self, metric: str = METRIC) -> float:
        values = self.history[metric].dropna() if metric in self.history else pd.Series([])
        return float(values.iloc[-1]) if len(values) else math.nan


@dataclass
class Experiment:
    path: Path
    trials: list[TrialRun]
    params: list[str]  # searched hyperparameters, in the order the trials list them
    table: pd.DataFrame | None = None  # the driver's trials.csv, when present
    notes: list[str] = field(default_factory=list)


def _read_history(folder: Path) -> pd.DataFrame:
    """Per-epoch results from progress.csv, else result.json (one JSON object per line)."""
    frame = pd.DataFrame()
    progress = folder / "progress.csv"
    if progress.is_file() and progress.stat().st_size:
        try:
            frame = pd.read_csv(progress)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            frame = pd.DataFrame()
    result = folder / "result.json"
    if frame.empty and result.is_file():
        rows = []
        for line in result.read_text(errors="replace").splitlines():
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


def _read_params(folder: Path, history: pd.DataFrame) -> dict[str, Any]:
    params_file = folder / "params.json"
    if params_file.is_file():
        try:
            params = json.loads(params_file.read_text())
            if isinstance(params, dict):
                return params
        except json.JSONDecodeError:
            pass
    return {
        c.removeprefix("config/"): history[c].iloc[-1]
        for c in history.columns
        if c.startswith("config/") and len(history)
    }


def _scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str, np.generic)) and not (
        isinstance(value, float) and math.isnan(value)
    )


def load_experiment(experiment_dir: str | os.PathLike) -> Experiment:
    """Read every trial folder (any sub-folder with Ray's progress.csv or result.json)."""
    root = Path(experiment_dir)
    if not root.is_dir():
        raise ConfigError([f"experiment folder {root} does not exist"])
    trials: list[TrialRun] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in _NOT_TRIALS):
        if not ((folder / "progress.csv").is_file() or (folder / "result.json").is_file()):
            continue
        history = _read_history(folder)
        trial_id = folder.name
        if "trial_id" in history and len(history):
            trial_id = str(history["trial_id"].iloc[-1])
        params = {k: v for k, v in _read_params(folder, history).items() if _scalar(v)}
        status = ERROR if (folder / "error.txt").is_file() else COMPLETE
        trials.append(TrialRun(trial_id, folder, params, history, status))
    if not trials:
        raise DataError(
            [
                f"{root} holds no Ray Tune trial folders (sub-folders with progress.csv or "
                "result.json); pass the experiment folder STORAGE_PATH/NAME"
            ]
        )
    # Scheduler stops: shorter than the longest trial and not finished on their own.
    longest = max(t.epochs for t in trials)
    for t in trials:
        finished = done_marker(root, t.trial_id).is_file()
        if t.status == COMPLETE and t.epochs < longest and not finished:
            t.status = STOPPED
    params: list[str] = []
    for t in trials:
        params.extend(k for k in t.params if k not in params)
    table = None
    if (root / "trials.csv").is_file():
        try:
            table = pd.read_csv(root / "trials.csv")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            table = None
    if table is not None and {"trial_id", "status"} <= set(table.columns):
        csv_status = dict(zip(table["trial_id"].astype(str), table["status"], strict=True))
        for t in trials:
            t.status = _CSV_STATUS.get(str(csv_status.get(t.trial_id)), t.status)
    return Experiment(root, trials, params, table)


def trials_frame(exp: Experiment, metric: str = METRIC) -> pd.DataFrame:
    """One row per trial, best first: id, status, epochs, best/last metric, time, params."""
    rows = []
    for t in exp.trials:
        h = t.history
        best_epoch = (
            int(h.loc[h[metric].idxmax(), "epoch"])
            if metric in h and h[metric].notna().any()
            else None
        )
        rows.append(
            {
                "trial_id": t.trial_id,
                "status": t.status,
                "epochs": t.epochs,
                f"best_{metric}": t.best(metric),
                "best_epoch": best_epoch,
                f"last_{metric}": t.last(metric),
                "time_total_s": float(h["time_total_s"].max()) if "time_total_s" in h else None,
                **{p: t.params.get(p) for p in exp.params},
            }
        )
    frame = pd.DataFrame(rows)
    return frame.sort_values(f"best_{metric}", ascending=False, na_position="last").reset_index(
        drop=True
    )


def _column(table: pd.DataFrame, name: str) -> str | None:
    for candidate in (name, f"config/{name}", f"params_{name}"):
        if candidate in table.columns:
            return candidate
    return None


def _distribution(name: str, values: list[Any]):
    """The Optuna distribution these observed values could have come from."""
    import optuna.distributions as od

    if any(isinstance(v, (str, bool, np.bool_)) for v in values):
        return od.CategoricalDistribution(sorted({str(v) for v in values}))
    numbers = [float(v) for v in values]
    low, high = min(numbers), max(numbers)
    log = low > 0 and (name in LOG_SCALE_PARAMS or high / low >= 100)
    if all(n.is_integer() for n in numbers):
        return od.IntDistribution(int(low), int(high), log=log)
    return od.FloatDistribution(low, high, log=log)


def _param_value(dist, value: Any) -> Any:
    import optuna.distributions as od

    if isinstance(dist, od.CategoricalDistribution):
        return str(value)
    if isinstance(dist, od.IntDistribution):
        return int(round(float(value)))
    return float(value)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Silence Optuna's INFO lines ("A new study created in memory") without changing them
    for the rest of the process."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def study_from_trials(
    table: pd.DataFrame,
    params: Sequence[str],
    value_column: str,
    *,
    status_column: str | None = "status",
    stopped_as_complete: bool = False,
):
    """An in-memory Optuna study with one trial per table row (`create_trial` + `add_trial`).

    Only parameters that vary are kept (a constant has no importance). Rows whose status says
    "stopped early" become PRUNED trials, which Optuna's importance evaluators skip, unless
    `stopped_as_complete`. Rows with an error or no value are left out.
    """
    import optuna

    cols = {p: _column(table, p) for p in params}
    usable = table[[c for c in cols.values() if c is not None]].notna().all(axis=1)
    usable &= pd.to_numeric(table[value_column], errors="coerce").notna()
    rows = table[usable]
    varying = [p for p, c in cols.items() if c is not None and rows[c].astype(str).nunique() > 1]
    dists = {p: _distribution(p, rows[cols[p]].tolist()) for p in varying}
    with _quiet_optuna():
        study = optuna.create_study(direction="maximize")
    for _, row in rows.iterrows():
        status = str(row.get(status_column, COMPLETE)) if status_column else COMPLETE
        if status == ERROR:
            continue
        value = float(row[value_column])
        pruned = status in (STOPPED, UNFINISHED) and not stopped_as_complete
        study.add_trial(
            optuna.trial.create_trial(
                params={p: _param_value(dists[p], row[cols[p]]) for p in varying},
                distributions=dists,
                value=None if pruned else value,
                intermediate_values={0: value} if pruned else None,
                state=(
                    optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE
                ),
            )
        )
    return study


def _importance_table(exp: Experiment, metric: str) -> tuple[pd.DataFrame, str, str, str]:
    """(table, value column, status column, source): trials.csv when it has every searched
    parameter and the metric, else the table built from the trial folders.

    Status always comes from the folders (signray's done-marker), joined on trial_id.
    """
    status = {t.trial_id: t.status for t in exp.trials}
    t = exp.table
    if t is not None and exp.params and all(_column(t, p) for p in exp.params):
        value_col = next((c for c in (f"best_{metric}", metric) if c in t), None)
        if value_col is not None:
            t = t.copy()
            ids = t["trial_id"].astype(str) if "trial_id" in t else pd.Series([""] * len(t))
            t["_status"] = [status.get(i, COMPLETE) for i in ids]
            return t, value_col, "_status", "trials.csv"
    return trials_frame(exp, metric), f"best_{metric}", "status", "the trial folders"


def param_importances(exp: Experiment, metric: str = METRIC) -> tuple[dict[str, float], str]:
    """(importances, note). Empty importances with a note when they cannot be trusted."""
    import optuna

    table, value_col, status_col, source = _importance_table(exp, metric)
    if not exp.params:
        return {}, "No searched hyperparameters were found (single-config run)."
    study = study_from_trials(table, exp.params, value_col, status_column=status_col)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    note = f"{len(complete)} complete trials from {source}"
    if len(complete) < MIN_COMPLETE_ONLY:
        pruned = len(study.get_trials(states=(optuna.trial.TrialState.PRUNED,)))
        if len(complete) + pruned < MIN_IMPORTANCE_TRIALS:
            return {}, (
                f"Too few trials for hyperparameter importance: {len(complete) + pruned} usable "
                f"(at least {MIN_IMPORTANCE_TRIALS} needed). Run more trials (--num-samples)."
            )
        if pruned:
            study = study_from_trials(
                table, exp.params, value_col, status_column=status_col, stopped_as_complete=True
            )
            note = (
                f"{len(complete) + pruned} trials from {source}, including {pruned} stopped "
                "early by the scheduler (scored by their best accuracy before the stop)"
            )
        note += f"; with under {MIN_COMPLETE_ONLY} full trials, treat it as a rough guide"
    if not study.trials or not study.trials[0].distributions:
        return {}, "Every searched hyperparameter had one value in all trials: nothing to rank."
    try:
        with warnings.catch_warnings(), _quiet_optuna():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as err:
        return {}, f"Optuna could not compute importances: {err}"
    return dict(importances), f"optuna.importance.get_param_importances on {note}."


# ---------------------------------------------------------------- plots


def _trial_style(status: str) -> dict[str, Any]:
    if status in (STOPPED, UNFINISHED):
        return {"linestyle": "--", "alpha": 0.75, "linewidth": 1.2}
    if status == ERROR:
        return {"linestyle": ":", "alpha": 0.75, "linewidth": 1.2}
    return {"linestyle": "-", "alpha": 0.9, "linewidth": 1.6}


def _short(trial_id: str) -> str:
    return trial_id.rsplit("_", 1)[-1] if "_" in trial_id else trial_id


def _plot_curves(exp: Experiment, best: TrialRun, metric: str, path: Path) -> Path:
    fig = new_figure(8.0, 4.8)
    ax = fig.add_subplot()
    colors = _colors(len(exp.trials))
    label_each = len(exp.trials) <= 12
    for color, t in zip(colors, exp.trials, strict=True):
        h = t.history.dropna(subset=[metric]) if metric in t.history else t.history.iloc[:0]
        if h.empty:
            continue
        style = _trial_style(t.status)
        if t is best:
            style = {**style, "linewidth": 3.0, "alpha": 1.0, "zorder": 5}
        label = f"{_short(t.trial_id)} ({t.best(metric):.3f})" if label_each else None
        ax.plot(h["epoch"], h[metric], color=color, label=label, **style)
        end = "x" if t.status != COMPLETE else "o"
        ax.plot(h["epoch"].iloc[-1], h[metric].iloc[-1], end, color=color, markersize=6)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"Validation gloss accuracy per trial ({len(exp.trials)} trials)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], color="gray", linestyle="-", marker="o", label="ran all epochs"),
        Line2D([], [], color="gray", linestyle="--", marker="x", label="stopped early"),
        Line2D([], [], color="gray", linewidth=3.0, label=f"best: {_short(best.trial_id)}"),
    ]
    if any(t.status == ERROR for t in exp.trials):
        handles.insert(2, Line2D([], [], color="gray", linestyle=":", marker="x", label="error"))
    first = ax.legend(handles=handles, loc="best", fontsize=8)
    if label_each:
        ax.add_artist(first)
        ax.legend(
            title="trial (best acc)",
            fontsize=7,
            title_fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            borderaxespad=0,
        )
    return save_figure(fig, path)


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"]
    if n <= 20:
        return [cmap(i % cmap.N) for i in range(n)]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def _plot_best_so_far(exp: Experiment, metric: str, path: Path) -> Path:
    events = []
    wall = all("timestamp" in t.history for t in exp.trials)
    for t in exp.trials:
        h = t.history.dropna(subset=[metric]) if metric in t.history else t.history.iloc[:0]
        if h.empty:
            continue
        if wall and "time_total_s" in h:
            # Ray's timestamps are whole seconds; time_total_s is exact. Each row bounds the
            # trial's start from below by (timestamp - total); the largest bound is the closest.
            total = h["time_total_s"].astype(float)
            start = float((h["timestamp"].astype(float) - total).max())
            times = start + total
        elif wall:
            start, times = float(h["timestamp"].iloc[0]), h["timestamp"].astype(float)
        else:
            start, times = 0.0, h.get("time_total_s", h["epoch"]).astype(float)
        events.extend((float(x), start, float(v)) for x, v in zip(times, h[metric], strict=True))
    fig = new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    if events:
        origin = min(s for _, s, _ in events) if wall else 0.0
        events.sort()
        x = np.array([e[0] - origin for e in events])
        y = np.array([e[2] for e in events])
        scale, unit = (60.0, "min") if x.max() > 600 else (1.0, "s")
        ax.scatter(x / scale, y, s=12, color="0.65", label="one epoch of one trial", zorder=2)
        ax.step(
            x / scale,
            np.maximum.accumulate(y),
            where="post",
            color="C3",
            linewidth=2.2,
            label="best so far",
            zorder=3,
        )
        ax.set_xlabel(
            f"wall time since the experiment started ({unit})" if wall else f"trial time ({unit})"
        )
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"Best {metric.replace('_', ' ')} so far: {y.max():.3f}")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _log_axis(ax, low: float, high: float) -> None:
    """Log x axis with short labels (1e-04, 2e-04, 5e-04 when the range is under two decades)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    subs = (1.0,) if high / low >= 100 else (1.0, 2.0, 5.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _note_figure(title: str, note: str, path: Path) -> Path:
    fig = new_figure(7.0, 2.4)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, textwrap.fill(note, 70), ha="center", va="center", transform=ax.transAxes)
    return save_figure(fig, path)


def _plot_params(exp: Experiment, frame: pd.DataFrame, metric: str, path: Path) -> Path:
    title = "Searched hyperparameters vs the trial's best accuracy"
    if not exp.params:
        return _note_figure(title, "No hyperparameters were searched (single-config run).", path)
    params = exp.params
    ncols = min(3, len(params))
    nrows = math.ceil(len(params) / ncols)
    fig = new_figure(3.6 * ncols + 0.4, 3.0 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    y_col = f"best_{metric}"
    best_i = frame[y_col].idxmax() if frame[y_col].notna().any() else None
    for ax, name in zip(axes.flat, params, strict=False):
        if name not in frame:
            continue
        data = frame[[name, y_col, "status"]].dropna(subset=[name, y_col])
        values = data[name].tolist()
        categorical = any(isinstance(v, (str, bool, np.bool_)) for v in values)
        if categorical:
            cats = sorted({str(v) for v in values})
            rng = np.random.default_rng(0)
            x = np.array([cats.index(str(v)) for v in values]) + rng.uniform(
                -0.12, 0.12, len(values)
            )
            ax.set_xticks(range(len(cats)), cats)
            ax.set_xlim(-0.5, len(cats) - 0.5)
        else:
            x = np.array([float(v) for v in values])
            if len(x) and x.min() > 0 and (name in LOG_SCALE_PARAMS or x.max() / x.min() >= 100):
                _log_axis(ax, float(x.min()), float(x.max()))
            elif len(x) and np.all(x == np.round(x)) and len(set(x)) <= 8:
                ax.set_xticks(sorted(set(x)), [str(int(v)) for v in sorted(set(x))])
        stopped = (data["status"] != COMPLETE).to_numpy()
        y = data[y_col].to_numpy(dtype=float)
        ax.scatter(x[~stopped], y[~stopped], s=28, color="C0", label="ran all epochs", zorder=3)
        ax.scatter(
            x[stopped],
            y[stopped],
            s=28,
            facecolors="none",
            edgecolors="C1",
            label="stopped early",
            zorder=3,
        )
        if best_i is not None and best_i in data.index:
            pos = data.index.get_loc(best_i)
            ax.scatter(x[pos], y[pos], s=160, marker="*", color="C3", label="best", zorder=4)
        ax.set_title(name, fontsize=10)
        top = float(np.nanmax(frame[y_col])) if frame[y_col].notna().any() else 1.0
        ax.set_ylim(bottom=0, top=min(1.02, max(top * 1.15, 0.05)))
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes.flat[len(params) :]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(f"best {metric.replace('_', ' ')}", fontsize=9)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def _plot_importance(importances: dict[str, float], note: str, path: Path) -> Path:
    if not importances:
        return _note_figure("Hyperparameter importance", note, path)
    fig = new_figure(6.5, 0.9 + 0.45 * max(len(importances), 3))
    ax = fig.add_subplot()
    names = list(importances)[::-1]
    values = [importances[n] for n in names]
    bars = ax.barh(names, values, color="C0")
    ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=3)
    ax.set_xlim(0, max(values) * 1.18 if max(values) > 0 else 1)
    ax.set_xlabel(f"importance (sums to 1)\n\n{textwrap.fill(note, 95)}", fontsize=8)
    ax.set_title("Hyperparameter importance", fontsize=11)
    return save_figure(fig, path)


def plot_learning_curve(
    log_csv: str | os.PathLike, out_png: str | os.PathLike, *, title: str | None = None
) -> Path:
    """Loss and accuracy vs epoch from a single run's `{ModelName}_log.csv`."""
    log = Path(log_csv)
    try:
        frame = pd.read_csv(log)
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise DataError([f"training log {log} cannot be read: {err}"]) from None
    if frame.empty or "epoch" not in frame:
        raise DataError([f"training log {log} has no epoch rows"])
    # A log that restarts at a lower epoch holds an older run first: plot the latest run only.
    restarts = np.flatnonzero(np.diff(frame["epoch"].to_numpy()) <= 0)
    if len(restarts):
        frame = frame.iloc[restarts[-1] + 1 :].reset_index(drop=True)
    fig = new_figure(10.0, 4.0)
    loss_ax, acc_ax = fig.subplots(1, 2)
    marker = "o" if len(frame) <= 30 else None
    for col, label in (("train_loss", "train loss"), ("val_loss", "val loss")):
        if col in frame:
            loss_ax.plot(frame["epoch"], frame[col], marker=marker, markersize=3, label=label)
    for col, label in (
        ("val_gloss_acc", "val gloss acc"),
        ("val_gloss_top5", "val gloss top-5"),
        ("val_cat_acc", "val category acc"),
    ):
        if col in frame:
            acc_ax.plot(frame["epoch"], frame[col], marker=marker, markersize=3, label=label)
    if "val_gloss_acc" in frame and frame["val_gloss_acc"].notna().any():
        best = frame.loc[frame["val_gloss_acc"].idxmax()]
        acc_ax.axvline(best["epoch"], color="0.5", linestyle=":", linewidth=1)
        acc_ax.annotate(
            f"best {best['val_gloss_acc']:.3f}\n(epoch {int(best['epoch'])})",
            (best["epoch"], best["val_gloss_acc"]),
            xytext=(6, 8),
            textcoords="offset points",
            fontsize=8,
            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8, "lw": 0},
        )
    for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    acc_ax.set_ylim(0, 1.02)
    fig.suptitle(title or f"Learning curve: {log.stem.removesuffix('_log')}")
    return save_figure(fig, out_png)


# ---------------------------------------------------------------- HTML


def _table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4g}", na_rep="")


def _with_folder_columns(table: pd.DataFrame, exp: Experiment) -> pd.DataFrame:
    """trials.csv plus what only the folders know: epochs run and how the trial ended."""
    if "trial_id" not in table:
        return table
    by_id = {t.trial_id: t for t in exp.trials}
    ids = table["trial_id"].astype(str)
    table = table.copy()
    for name, get in (("epochs", lambda t: t.epochs), ("status", lambda t: t.status)):
        if name not in table:
            table.insert(1, name, [get(by_id[i]) if i in by_id else None for i in ids])
    return table


def _evaluation_html(exp: Experiment, report: Path) -> str:
    folder = exp.path / EVALUATION_DIR
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        return ""
    try:
        m = json.loads(metrics_file.read_text())
    except json.JSONDecodeError:
        return ""
    rel = os.path.relpath(folder, report)
    keys = [k for k in m if k.startswith(("gloss_", "cat_", "loss", "count"))]
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(m[k]))}</td></tr>" for k in keys
    )
    images = "".join(
        f'<img src="{html.escape(rel)}/{name}" alt="{name}">'
        for name in ("confusion_gloss.png", "confusion_cat.png")
        if (folder / name).is_file()
    )
    links = " ".join(
        f'<a href="{html.escape(rel)}/{name}">{name}</a>'
        for name in ("per_gloss.csv", "confused_pairs.csv", "metrics.json")
        if (folder / name).is_file()
    )
    checkpoint = html.escape(str(m.get("checkpoint", "")))
    return (
        f"<h2>Best checkpoint on the validation split</h2><p>{checkpoint}</p>"
        f"<table class='kv'>{rows}</table><p>{links}</p>{images}"
    )


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0;display:block}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} .kv th{text-align:left} .note{color:#555;font-size:13px}
"""


def write_report(experiment_dir: str | os.PathLike, *, metric: str = METRIC) -> Path:
    """Write `EXPERIMENT_DIR/report/` (PNGs, importance.csv, index.html); returns index.html."""
    exp = load_experiment(experiment_dir)
    report = exp.path / REPORT_DIR
    report.mkdir(parents=True, exist_ok=True)
    frame = trials_frame(exp, metric)
    scored = [t for t in exp.trials if not math.isnan(t.best(metric))]
    if not scored:
        raise DataError([f"no trial in {exp.path} reported {metric!r}"])
    best = max(scored, key=lambda t: t.rank(metric))
    _plot_curves(exp, best, metric, report / "curves.png")
    _plot_best_so_far(exp, metric, report / "best_so_far.png")
    _plot_params(exp, frame, metric, report / "params_vs_accuracy.png")
    importances, note = param_importances(exp, metric)
    _plot_importance(importances, note, report / "importance.png")
    atomic_write_text(
        report / "importance.csv",
        "param,importance\n" + "".join(f"{k},{v:.6f}\n" for k, v in importances.items()),
    )
    counts = frame["status"].value_counts().to_dict()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    best_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in {
            **best.params,
            f"best {metric}": best.best(metric),
            "epochs": best.epochs,
        }.items()
    )
    table = frame if exp.table is None else _with_folder_columns(exp.table, exp)
    source = "trials.csv" if exp.table is not None else "trial folders"
    figures = [
        ("Learning curves", "curves.png", "Dashed lines ending in x: trials stopped early."),
        ("Best so far", "best_so_far.png", ""),
        (
            "Hyperparameters vs accuracy",
            "params_vs_accuracy.png",
            "Hollow markers: trials stopped early (scored by their best epoch before the stop).",
        ),
        ("Hyperparameter importance", "importance.png", note),
    ]
    body = "".join(
        f"<h2>{title}</h2><img src='{name}' alt='{name}'><p class='note'>{html.escape(text)}</p>"
        for title, name, text in figures
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>signray report: {html.escape(exp.path.name)}</title>
<style>{_CSS}</style></head><body>
<h1>Experiment {html.escape(exp.path.name)}</h1>
<p>{len(exp.trials)} trials ({html.escape(summary)}); metric {html.escape(metric)}, maximised.
Folder: {html.escape(str(exp.path))}</p>
<h2>Best trial: {html.escape(best.trial_id)}</h2><table class="kv">{best_rows}</table>
{_evaluation_html(exp, report)}
{body}
<h2>Trials ({source})</h2>{_table_html(table)}
</body></html>
"""
    return atomic_write_text(report / "index.html", page)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m signray.report",
        description="Write EXPERIMENT_DIR/report/: learning curves, best-so-far, hyperparameter "
        "plots and importance, and index.html with the trials table.",
    )
    parser.add_argument("experiment_dir", help="a Ray Tune experiment folder (STORAGE/NAME)")
    parser.add_argument("--metric", default=METRIC, help=f"metric to plot (default: {METRIC})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with user_errors_exit():
        index = write_report(args.experiment_dir, metric=args.metric)
    print(f"report: {index}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
