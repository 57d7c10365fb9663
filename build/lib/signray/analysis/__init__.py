"""Looking at results, without Ray: evaluation of a checkpoint, the one experiment reader,
hyperparameter importance, plots and the HTML report."""

from __future__ import annotations

from signray.analysis.evaluation import evaluate_to_dir, read_names, run_model
from signray.analysis.experiment import Experiment, TrialRun, read_experiment
from signray.analysis.figures import plot_learning_curve
from signray.analysis.importance import param_importances
from signray.analysis.report import write_report

__all__ = [
    "Experiment",
    "TrialRun",
    "evaluate_to_dir",
    "param_importances",
    "plot_learning_curve",
    "read_experiment",
    "read_names",
    "run_model",
    "write_report",
]
