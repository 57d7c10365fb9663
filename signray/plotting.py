"""Headless matplotlib helpers shared by evaluation and reports.

Figures are built with the object API (`matplotlib.figure.Figure`) and rendered by the Agg canvas,
so nothing here touches pyplot's global state or needs a display, and importing signray never
changes the backend of a user's notebook.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from signray.checkpoint import atomic_write

__all__ = ["new_figure", "save_figure", "plot_confusion", "LOG_SCALE_PARAMS"]

# Searched parameters that are always shown on a log axis (sampled log-uniformly in practice).
LOG_SCALE_PARAMS = frozenset({"lr", "weight_decay"})

DPI = 110


def new_figure(width: float = 7.0, height: float = 4.5) -> Figure:
    """A figure with its own Agg canvas (no pyplot, no display needed)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Render to PNG in memory, then write atomically: a report is never half a PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def plot_confusion(
    matrix: np.ndarray,
    labels: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str,
    axis_name: str,
) -> Path:
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
