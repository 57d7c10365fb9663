"""Write EXPERIMENT_DIR/report/: learning curves, best-so-far, hyperparameters vs accuracy,
their importance, and index.html with the trials table (``python -m signray.report``).
"""

from __future__ import annotations

import argparse

from signray.analysis.report import write_report
from signray.cli import command, command_parser
from signray.layout import METRIC

__all__ = ["build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("signray.report", __doc__)
    parser.add_argument("experiment_dir", help="a Ray Tune experiment folder (STORAGE/NAME)")
    parser.add_argument("--metric", default=METRIC, help=f"metric to plot (default: {METRIC})")
    return parser


def run(args: argparse.Namespace) -> None:
    print(f"report: {write_report(args.experiment_dir, metric=args.metric)}", flush=True)


main = command(build_parser, run, __name__)
