"""The plots of an experiment's report: learning curves, best-so-far, hyperparameters vs
accuracy, hyperparameter importance."""

from __future__ import annotations

import math
import textwrap
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from signray.analysis.experiment import Experiment, TrialRun
from signray.analysis.figures import LOG_SCALE_PARAMS, new_figure, save_figure
from signray.layout import Status
from signray.storage import Location

__all__ = ["plot_best_so_far", "plot_curves", "plot_importance", "plot_params"]


def _trial_style(status: str) -> dict[str, Any]:
    if status in (Status.STOPPED_EARLY, Status.UNFINISHED):
        return {"linestyle": "--", "alpha": 0.75, "linewidth": 1.2}
    if status == Status.ERROR:
        return {"linestyle": ":", "alpha": 0.75, "linewidth": 1.2}
    return {"linestyle": "-", "alpha": 0.9, "linewidth": 1.6}


def _short(trial_id: str) -> str:
    return trial_id.rsplit("_", 1)[-1] if "_" in trial_id else trial_id


def plot_curves(exp: Experiment, best: TrialRun, metric: str, path: Location) -> Location:
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
        end = "x" if t.status != Status.TERMINATED else "o"
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
    if any(t.status == Status.ERROR for t in exp.trials):
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


def plot_best_so_far(exp: Experiment, metric: str, path: Location) -> Location:
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


def _note_figure(title: str, note: str, path: Location) -> Location:
    fig = new_figure(7.0, 2.4)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, textwrap.fill(note, 70), ha="center", va="center", transform=ax.transAxes)
    return save_figure(fig, path)


def plot_params(exp: Experiment, frame: pd.DataFrame, metric: str, path: Location) -> Location:
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
        stopped = (data["status"] != Status.TERMINATED).to_numpy()
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


def plot_importance(importances: dict[str, float], note: str, path: Location) -> Location:
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
