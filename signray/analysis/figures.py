"""Headless figures: shared helpers, confusion matrices and a single run's learning curve.

Figures are built with the object API (`matplotlib.figure.Figure`) and rendered by the Agg canvas,
so nothing here touches pyplot's global state or needs a display, and importing signray never
changes the backend of a user's notebook.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from signray.errors import DataError
from signray.io import write_bytes
from signray.storage import Location, RemotePath, as_location

__all__ = ["LOG_SCALE_PARAMS", "new_figure", "plot_confusion", "plot_learning_curve", "save_figure"]

# Searched parameters that are always shown on a log axis (sampled log-uniformly in practice).
LOG_SCALE_PARAMS = frozenset({"lr", "weight_decay"})

DPI = 110


def new_figure(width: float = 7.0, height: float = 4.5) -> Figure:
    """A figure with its own Agg canvas (no pyplot, no display needed)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike | RemotePath) -> Location:
    """Render to PNG in memory, then write atomically: a report is never half a PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return write_bytes(path, buf.getvalue())


def plot_confusion(
    matrix: np.ndarray,
    labels: Sequence[str],
    path: str | os.PathLike | RemotePath,
    *,
    title: str,
    axis_name: str,
) -> Location:
    """Row-normalised confusion matrix (each true class sums to 1), counts written when small.

    Rows are normalised so rare and common classes read on one colour scale; with up to 15
    classes every cell also shows its raw count, and tick labels are thinned for large matrices.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    n = matrix.shape[0]
    support = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, support, out=np.zeros(matrix.shape), where=support > 0)
    side = float(np.clip(3.0 + 0.16 * n, 5.0, 16.0))
    fig = new_figure(side + 1.4, side)
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    cbar = fig.colorbar(image, ax=ax, shrink=0.8)
    cbar.set_label("share of the true class")
    step = max(1, int(np.ceil(n / 40)))
    ticks = np.arange(0, n, step)
    names = [labels[i] for i in ticks]
    fontsize = 9 if n <= 20 else 7 if n <= 60 else 6
    rotation = 0 if sum(len(x) for x in names) <= 40 else 90  # upright when labels are short
    ax.set_xticks(ticks, names, rotation=rotation, fontsize=fontsize)
    ax.set_yticks(ticks, names, fontsize=fontsize)
    ax.set_xlabel(f"predicted {axis_name}")
    ax.set_ylabel(f"true {axis_name}")
    ax.set_title(title)
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    dark = rates[i, j] > 0.55
                    ax.text(
                        j,
                        i,
                        str(matrix[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if dark else "black",
                    )
    return save_figure(fig, path)


def plot_learning_curve(
    log_csv: str | os.PathLike | RemotePath,
    out_png: str | os.PathLike | RemotePath,
    *,
    title: str | None = None,
) -> Location:
    """Loss and accuracy vs epoch from a single run's `{ModelName}_log.csv`."""
    log = as_location(log_csv)
    try:
        frame = pd.read_csv(io.BytesIO(log.read_bytes()))
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
