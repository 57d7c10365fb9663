"""`python -m signray.report EXPERIMENT_DIR`: plots and an HTML page for a finished (or running)
search: learning curves, best-so-far, hyperparameters vs accuracy, importance, the trials table.
See `signray.analysis.report`."""

from __future__ import annotations

import argparse
import sys

from signray.analysis.report import write_report
from signray.cli import run_command
from signray.layout import METRIC

__all__ = ["build_parser", "main"]


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

    def body() -> int:
        print(f"report: {write_report(args.experiment_dir, metric=args.metric)}", flush=True)
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
