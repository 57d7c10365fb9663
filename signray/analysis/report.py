"""`write_report`: an experiment's report/ folder (plots, importance.csv, index.html)."""

from __future__ import annotations

import os

from signray.analysis.experiment import Experiment, read_experiment
from signray.analysis.html import report_page
from signray.analysis.importance import param_importances
from signray.analysis.pareto import plot_pareto
from signray.analysis.search_plots import (
    plot_best_so_far,
    plot_curves,
    plot_importance,
    plot_params,
)
from signray.errors import DataError
from signray.io import write_text
from signray.layout import METRIC, REPORT_FILES
from signray.storage import Location, RemotePath

__all__ = ["write_report"]


def write_report(
    experiment: str | os.PathLike[str] | RemotePath | Experiment, *, metric: str = METRIC
) -> Location:
    """Write ``EXPERIMENT/report/``; returns its index.html. Reads the folder unless given one."""
    exp = experiment if isinstance(experiment, Experiment) else read_experiment(experiment)
    best = exp.best(metric)
    if best is None:
        raise DataError([f"no trial in {exp.path} reported {metric!r}"])
    out = exp.files.report
    table = exp.table(metric)
    plot_curves(exp, best, metric, out / REPORT_FILES["curves"])
    plot_best_so_far(exp, metric, out / REPORT_FILES["best_so_far"])
    plot_params(exp, table, metric, out / REPORT_FILES["params"])
    importances, note = param_importances(exp, metric)
    plot_importance(importances, note, out / REPORT_FILES["importance"])
    write_text(
        out / REPORT_FILES["importance_csv"],
        "param,importance\n" + "".join(f"{k},{v:.6f}\n" for k, v in importances.items()),
    )
    costs = exp.state.options.metrics[1:] if exp.state is not None else []
    if costs:
        plot_pareto(table, costs, out / REPORT_FILES["pareto"])
    ranked = table.sort_values(f"best_{metric}", ascending=False, na_position="last")
    page = report_page(exp, best, ranked, metric=metric, importance_note=note, pareto=bool(costs))
    return write_text(out / REPORT_FILES["index"], page)
