"""The Pareto front of a search with several objectives (``--objectives val_gloss_acc,latency``
or ``,params``): the trials no other trial beats on every objective at once.

Accuracy is each trial's best val gloss accuracy (its best checkpoint); latency and parameter
count are measured once per trial (`signray.training.costs`). Writes ``pareto.csv`` (the front,
best accuracy first) and draws ``report/pareto_front.png``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from signray.analysis.experiment import Experiment
from signray.analysis.figures import new_figure, save_figure
from signray.io import write_text
from signray.layout import LATENCY_METRIC, METRIC, PARAMS_METRIC, Status

__all__ = ["COST_LABELS", "format_front", "pareto_front", "plot_pareto", "write_pareto"]

COST_LABELS = {LATENCY_METRIC: "inference latency, ms per clip", PARAMS_METRIC: "parameters"}
ACCURACY = f"best_{METRIC}"


def pareto_front(table: pd.DataFrame, costs: list[str]) -> pd.DataFrame:
    """Rows of `table` (trials.csv columns) not dominated on (accuracy up, every cost down);
    finished trials only, best accuracy first."""
    done = table[table["status"].isin([Status.TERMINATED, Status.STOPPED_EARLY])]
    done = done.dropna(subset=[ACCURACY, *costs])

    def dominated(i) -> bool:
        row = done.loc[i]
        no_worse = (done[ACCURACY] >= row[ACCURACY]) & (done[costs] <= row[costs]).all(axis=1)
        better = (done[ACCURACY] > row[ACCURACY]) | (done[costs] < row[costs]).any(axis=1)
        return bool((no_worse & better).any())

    front = done.loc[[i for i in done.index if not dominated(i)]]
    return front.sort_values([ACCURACY, *costs], ascending=[False] + [True] * len(costs))


def write_pareto(exp: Experiment, costs: list[str]) -> tuple[Path, pd.DataFrame]:
    """``EXPERIMENT/pareto.csv``: the front's trials with their hyperparameters."""
    front = pareto_front(exp.table(), costs)
    columns = ["trial_id", *exp.params, ACCURACY, *costs, "status", "epochs"]
    path = write_text(exp.files.pareto_csv, front[columns].to_csv(index=False))
    return path, front


def format_front(front: pd.DataFrame, costs: list[str]) -> str:
    """Summary lines: one per trial on the front."""
    lines = [f"Pareto front ({len(front)} trials: {METRIC} up, {', '.join(costs)} down):"]
    for _, row in front.iterrows():
        parts = [f"{ACCURACY} {row[ACCURACY]:.4f}"]
        parts += [f"{c} {row[c]:.4g}" for c in costs]
        lines.append(f"  {row['trial_id']}: " + ", ".join(parts))
    return "\n".join(lines)


def plot_pareto(table: pd.DataFrame, costs: list[str], path: str | os.PathLike) -> Path:
    """Accuracy against each cost; every trial a dot, the front joined by a step line."""
    fig = new_figure(6.0 * len(costs), 4.5)
    front = pareto_front(table, costs)
    for i, cost in enumerate(costs, start=1):
        ax = fig.add_subplot(1, len(costs), i)
        scored = table.dropna(subset=[ACCURACY, cost])
        ax.scatter(scored[cost], scored[ACCURACY], color="0.6", label="trial")
        on_front = front.sort_values(cost)
        ax.step(on_front[cost], on_front[ACCURACY], where="post", color="C3", linewidth=1.5)
        ax.scatter(on_front[cost], on_front[ACCURACY], color="C3", zorder=5, label="Pareto front")
        for _, row in on_front.iterrows():
            ax.annotate(str(row["trial_id"])[-4:], (row[cost], row[ACCURACY]), fontsize=7)
        if cost == PARAMS_METRIC:
            ax.set_xscale("log")
        ax.set_xlabel(COST_LABELS.get(cost, cost) + " (lower is better)")
        ax.set_ylabel("best val gloss accuracy")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Pareto front: {len(front)} of {len(table)} trials")
    return save_figure(fig, path)
