"""Hyperparameter search over signray training runs with Ray Tune: Optuna TPE + ASHA, one trial
per config, in-process or a TorchTrainer for --workers-per-trial > 1 (``python -m signray.tune``).

    python -m signray.tune --model transformer --search-space search_spaces/tx.yaml \\
        --keypoints-train ... --keypoints-val ... --labels-train-csv ... --labels-val-csv ... \\
        --num-gloss 105 --num-cat 10 --epochs 30 --num-samples 32

Everything (flags, config, search space, data) is validated before Ray starts; a problem exits
with code 2 and one message. The experiment folder (``--storage-path``/``--name``) receives Ray
Tune's state, every trial's checkpoints, ``trials.csv``, ``best_config.yaml``,
``{ModelName}_best.pt``, ``evaluation/`` and ``report/``. ``--single-run`` (or ``--config FILE``
without a search space) runs exactly one trial of the config through the same machinery. Ctrl-C
stops cleanly and prints the ``--resume`` command; ``--resume``/``--restore`` continue.
"""

from __future__ import annotations

import argparse
import shlex

from signray.cli import add_cluster_flags, command, command_parser
from signray.config.flags import add_config_flags, add_search_flags
from signray.errors import ConfigError

__all__ = ["build_parser", "main", "run"]

# Set by the search itself for every trial, so not flags here.
_TRIAL_SET_FIELDS = ("output_dir", "resume", "log_csv")


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("signray.tune", __doc__)
    add_config_flags(parser, exclude=_TRIAL_SET_FIELDS)
    s = parser.add_argument_group("search")
    s.add_argument("--search-space", metavar="FILE.yaml", default=None,
                   help="YAML search space (see search_spaces/); with --smoke-test defaults to "
                   "the one shipped for --model")  # fmt: skip
    s.add_argument(
        "--single-run",
        action="store_true",
        help="run exactly one trial of the config (no search space needed)",
    )
    add_search_flags(s)
    e = parser.add_argument_group("experiment")
    e.add_argument("--name", default=None, help="experiment name (default: tune-MODEL-TIMESTAMP)")
    e.add_argument("--storage-path", default="ray_results",
                   help="folder or object-store URI (s3://, gs://, abfs://) holding experiments; "
                   "on a cluster every node must reach it (default: ./ray_results)")  # fmt: skip
    e.add_argument(
        "--resume",
        dest="resume_experiment",
        action="store_true",
        help="continue the interrupted experiment --storage-path/--name",
    )
    e.add_argument(
        "--restore",
        metavar="PATH",
        default=None,
        help="continue the interrupted experiment in this folder or URI",
    )
    e.add_argument(
        "--retry-errored",
        action="store_true",
        help="with --resume/--restore: also run the trials that ended in an error again, from "
        "their latest checkpoints (by default they keep their error)",
    )
    add_cluster_flags(parser)
    return parser


def _resume_command(name: str, storage_path: str, address: str | None) -> str:
    words = ["python", "-m", "signray.tune", "--resume", "--name", name,
             "--storage-path", storage_path]  # fmt: skip
    if address:
        words += ["--address", address]
    return shlex.join(words)  # pasteable even when a path has spaces


def run(args: argparse.Namespace, callbacks: list | None = None, stop=None) -> int | None:
    """The command; `callbacks` and `stop` reach a new search's Tuner (used by benchmarks)."""
    from signray.tuning.plan import plan_new, plan_resume

    resuming = args.resume_experiment or args.restore
    if args.retry_errored and not resuming:
        raise ConfigError(["`--retry-errored` needs --resume or --restore"])
    plan = plan_resume(args) if resuming else plan_new(args)
    from signray.tuning.address import prepare_target

    prepare_target(args.address)  # the cluster answers and accepts us, before data is loaded
    from signray.tuning.driver import run_search  # imports Ray: only once input is valid

    return run_search(
        plan,
        address=args.address,
        dashboard=args.dashboard,
        dashboard_host=args.dashboard_host,
        dashboard_port=args.dashboard_port,
        resume_command=_resume_command(plan.files.name, str(plan.files.root.parent), args.address),
        retry_errored=args.retry_errored,
        callbacks=callbacks,
        stop=stop,
    )


main = command(build_parser, run, __name__)
