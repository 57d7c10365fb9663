"""`python -m signray.tune`: distributed hyperparameter search (Optuna + ASHA on Ray Tune).

    python -m signray.tune --model transformer --search-space search_spaces/tx.yaml \\
        --keypoints-train ... --keypoints-val ... --labels-train-csv ... --labels-val-csv ... \\
        --num-gloss 105 --num-cat 10 --epochs 30 --num-samples 32

Everything (flags, config, search space, data) is validated before Ray starts; a problem exits
with code 2 and one message. The experiment folder (``--storage-path``/``--name``) receives Ray
Tune's state, every trial's checkpoints, ``trials.csv``, ``best_config.yaml`` and
``{ModelName}_best.pt``. ``--single-run`` (or ``--config FILE`` without a search space) runs
exactly one trial of the config through the same machinery. Ctrl-C stops cleanly and prints the
``--resume`` command; ``--resume``/``--restore`` continue from the saved state.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from signray.checkpoint import atomic_write_text
from signray.cli import add_config_arguments, config_from_args, user_errors_exit
from signray.config import TrainConfig, config_to_flat, load_config_file, resolve_config
from signray.errors import ConfigError
from signray.inputs import load_inputs
from signray.models import arch_fields, list_models
from signray.search_space import SearchSpace, load_search_space

__all__ = ["main", "build_parser", "SMOKE", "DEFAULT_SPACES", "STATE_FILE"]

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
DEFAULT_SPACES = {"transformer": "tx.yaml", "iv3_gru": "iv3_gru.yaml"}
# Driver state saved in the experiment folder so `--resume` rebuilds the same trainable.
STATE_FILE = "signray_tune.json"
SPACE_COPY = "search_space.yaml"

# --smoke-test: tiny synthetic data (inputs.SMOKE_DATA with 20 glosses), 16 epochs, a real
# 6-trial search in which ASHA (rungs at epochs 1, 2, 4, 8) stops trials and TPE models after 2
# finished trials. Only values the user did not give are filled in.
SMOKE = {
    "config": {"epochs": 16, "num_gloss": 20, "num_cat": 4},
    "search": {"num_samples": 6, "grace_period": 1, "reduction_factor": 2.0},
}

_DATA_PATHS = (
    "keypoints_train", "keypoints_val", "features_train", "features_val",
    "labels_train_csv", "labels_val_csv",
)
_SEARCH_DEFAULTS = {
    "num_samples": 16,
    "max_concurrent": None,
    "cpus_per_trial": 1.0,
    "gpus_per_trial": 0.0,
    "workers_per_trial": None,
    "searcher": "tpe",
    "trial_scheduler": "asha",
    "grace_period": 1,
    "reduction_factor": 2.0,
    "keep_checkpoints": 2,
    "max_failures": 0,
    "mlflow": False,
}


def build_parser() -> argparse.ArgumentParser:
    # "resolve": the tune command's --resume (continue an experiment) replaces the single-run
    # --resume CHECKPOINT flag; trials resume from Tune's own checkpoints.
    parser = argparse.ArgumentParser(
        prog="python -m signray.tune",
        description="Hyperparameter search over signray training runs with Ray Tune: Optuna "
        "TPE + ASHA, one trial per config (in-process, or a TorchTrainer for "
        "--workers-per-trial > 1).",
        conflict_handler="resolve",
    )
    add_config_arguments(parser)
    s = parser.add_argument_group("search")
    s.add_argument("--search-space", metavar="FILE.yaml", default=None,
                   help="YAML search space (see search_spaces/); with --smoke-test defaults to "
                   "the shipped one for --model")
    s.add_argument("--single-run", action="store_true",
                   help="run exactly one trial of the config (no search space needed)")
    s.add_argument("--num-samples", type=int, default=argparse.SUPPRESS,
                   help="number of trials (default: 16; 6 with --smoke-test)")
    s.add_argument("--max-concurrent", type=int, default=argparse.SUPPRESS,
                   help="trials running at once (default: as many as the cluster's CPUs/GPUs fit)")
    s.add_argument("--cpus-per-trial", type=float, default=argparse.SUPPRESS,
                   help="CPUs per trial, shared by its workers; also its torch threads "
                   "(default: 1)")
    s.add_argument("--gpus-per-trial", type=float, default=argparse.SUPPRESS,
                   help="GPUs per trial, fractions allowed, shared by its workers (default: 0)")
    s.add_argument("--workers-per-trial", type=int, default=argparse.SUPPRESS,
                   help="1: the loop runs in the trial; N > 1: a Ray Train TorchTrainer with N "
                   "DDP workers per trial (default: --ray-workers, i.e. 1)")
    s.add_argument("--searcher", choices=("tpe", "random"), default=argparse.SUPPRESS,
                   help="Optuna TPE (default) or Optuna random sampling as the baseline")
    s.add_argument("--trial-scheduler", choices=("asha", "fifo"), default=argparse.SUPPRESS,
                   help="ASHA early stopping (default) or FIFO (every trial runs all epochs)")
    s.add_argument("--grace-period", type=int, default=argparse.SUPPRESS,
                   help="ASHA: epochs every trial runs before it can be stopped (default: 1)")
    s.add_argument("--reduction-factor", type=float, default=argparse.SUPPRESS,
                   help="ASHA: keep the top 1/FACTOR at each rung (default: 2)")
    s.add_argument("--keep-checkpoints", type=int, default=argparse.SUPPRESS,
                   help="best checkpoints kept per trial, by val_gloss_acc (default: 2)")
    s.add_argument("--max-failures", type=int, default=argparse.SUPPRESS,
                   help="retries of a failed trial from its latest checkpoint (default: 0)")
    e = parser.add_argument_group("experiment")
    e.add_argument("--mlflow", action="store_true", default=argparse.SUPPRESS,
                   help="also log every trial to EXPERIMENT/mlruns (needs signray[mlflow])")
    e.add_argument("--name", default=None,
                   help="experiment name (default: tune-MODEL-TIMESTAMP)")
    e.add_argument("--storage-path", default="ray_results",
                   help="folder (shared by all nodes on a cluster) holding experiments "
                   "(default: ./ray_results)")
    e.add_argument("--resume", dest="resume_experiment", action="store_true",
                   help="continue the interrupted experiment --storage-path/--name")
    e.add_argument("--restore", metavar="PATH", default=None,
                   help="continue the interrupted experiment in this folder")
    c = parser.add_argument_group("cluster")
    c.add_argument("--address", default=None,
                   help="join a running Ray cluster (auto|HOST:PORT); default: start one here")
    c.add_argument("--dashboard-host", default="127.0.0.1",
                   help="interface the dashboard binds to (default 127.0.0.1; anything else "
                   "exposes code execution to that network)")
    c.add_argument("--dashboard-port", type=int, default=None, help="default: Ray's (8265)")
    return parser


def _config_keys() -> set[str]:
    keys = {f.name for f in dataclasses.fields(TrainConfig)}
    for model in list_models():
        keys |= set(arch_fields(model))
    return keys


def _search_options(args: argparse.Namespace) -> dict[str, Any]:
    given = {k: getattr(args, k) for k in _SEARCH_DEFAULTS if hasattr(args, k)}
    values = dict(_SEARCH_DEFAULTS)
    if getattr(args, "smoke_test", False):
        values.update(SMOKE["search"])
    values.update(given)
    return values


def _option_problems(o: dict[str, Any], epochs: int) -> list[str]:
    p = []
    for name in ("num_samples", "keep_checkpoints", "grace_period"):
        if o[name] < 1:
            p.append(f"`--{name.replace('_', '-')}` must be >= 1, but got {o[name]}")
    if o["max_concurrent"] is not None and o["max_concurrent"] < 1:
        p.append(f"`--max-concurrent` must be >= 1, but got {o['max_concurrent']}")
    if o["max_failures"] < 0:
        p.append(f"`--max-failures` must be >= 0, but got {o['max_failures']}")
    if not o["cpus_per_trial"] > 0:
        p.append(f"`--cpus-per-trial` must be > 0, but got {o['cpus_per_trial']}")
    if o["gpus_per_trial"] < 0:
        p.append(f"`--gpus-per-trial` must be >= 0, but got {o['gpus_per_trial']}")
    if o["workers_per_trial"] < 1:
        p.append(f"`--workers-per-trial` must be >= 1, but got {o['workers_per_trial']}")
    if not o["reduction_factor"] > 1:
        p.append(f"`--reduction-factor` must be > 1, but got {o['reduction_factor']}")
    if o["trial_scheduler"] == "asha" and o["grace_period"] > epochs:
        p.append(
            f"`--grace-period` must be <= --epochs (ASHA's max_t), but got "
            f"grace_period={o['grace_period']}, epochs={epochs}"
        )
    return p


def _batch_sizes(space: SearchSpace | None, base: TrainConfig) -> list[int]:
    if space is not None and "batch_size" in space.params:
        return [int(v) for v in space.params["batch_size"].representatives()]
    return [base.batch_size]


def _peek_model(path: str | None) -> str | None:
    """The `model:` a search-space file declares, to default --model from it."""
    if path is None or not Path(path).is_file():
        return None
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError:
        return None  # load_search_space reports it
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


def _absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """Trials chdir into their own folders and may run on other nodes: paths must be absolute."""
    changes = {
        name: str(Path(getattr(cfg, name)).expanduser().resolve())
        for name in _DATA_PATHS
        if getattr(cfg, name) is not None
    }
    return dataclasses.replace(cfg, **changes)


@dataclasses.dataclass
class _Plan:
    base: TrainConfig
    space: SearchSpace | None
    space_file: Path | None
    options: dict[str, Any]
    name: str
    storage_path: Path
    resumed: bool

    @property
    def experiment_dir(self) -> Path:
        return self.storage_path / self.name


def _plan_new(args: argparse.Namespace) -> _Plan:
    problems: list[str] = []
    file_values = load_config_file(args.config) if args.config else {}
    if getattr(args, "smoke_test", False):
        for key, value in SMOKE["config"].items():
            if not hasattr(args, key) and key not in file_values:
                setattr(args, key, value)
    space_path = args.search_space
    if not hasattr(args, "model") and "model" not in file_values:
        file_model = _peek_model(space_path)
        if file_model is not None:
            args.model = file_model
    cfg = _absolute_paths(config_from_args(args))
    single = args.single_run or (space_path is None and args.config is not None)
    if space_path is None and not single:
        shipped = SPACES_DIR / DEFAULT_SPACES.get(cfg.model, "")
        if cfg.smoke_test and shipped.is_file():
            space_path = str(shipped)
        else:
            raise ConfigError(
                ["`--search-space FILE.yaml` is required (or --single-run / --config FILE to run "
                 "one config)"]
            )
    space = None
    space_file = None
    if space_path is not None:
        space_file = Path(space_path).resolve()
        space = load_search_space(space_file, cfg.model, cfg)
        cfg = space.apply_fixed(cfg)
    options = _search_options(args)
    if options["workers_per_trial"] is None:
        options["workers_per_trial"] = cfg.ray_workers
    if cfg.use_gpu and not options["gpus_per_trial"]:
        options["gpus_per_trial"] = 1.0
    options["single_run"] = single
    problems += _option_problems(options, cfg.epochs)
    workers = options["workers_per_trial"]
    if workers >= 1:
        bad = [b for b in _batch_sizes(space, cfg) if b % workers]
        if bad:
            problems.append(
                f"`batch_size` is the global batch and must be divisible by --workers-per-trial "
                f"{workers}, but the {'space' if space else 'config'} has batch_size={bad[0]}"
            )
    if options["gpus_per_trial"] > 0 and args.address is None:
        import torch

        if not torch.cuda.is_available():
            problems.append(
                "`--gpus-per-trial` > 0 but this machine has no CUDA GPU (join a GPU cluster "
                "with --address)"
            )
    name = args.name or f"tune-{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    if "/" in name or name in (".", ".."):
        problems.append(f"`--name` must be a plain folder name, but got {name!r}")
    storage = Path(args.storage_path).expanduser().resolve()
    experiment = storage / name
    if problem := _unwritable(storage, "--storage-path"):
        problems.append(problem)
    elif experiment.exists() and any(experiment.iterdir()):
        problems.append(
            f"experiment folder {experiment} already exists: add --resume to continue it, or "
            "choose another --name"
        )
    if problems:
        raise ConfigError(problems)
    return _Plan(cfg, space, space_file, options, name, storage, resumed=False)


def _unwritable(folder: Path, flag: str) -> str | None:
    """Why `folder` cannot be created or written to (asked of its nearest existing ancestor,
    so that checking creates nothing); None when it can."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"`{flag}` {folder} cannot be created: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"`{flag}` {folder} is not writable: {existing} does not allow writing"
    return None


def _plan_resume(args: argparse.Namespace) -> _Plan:
    if args.restore:
        experiment = Path(args.restore).expanduser().resolve()
    else:
        if not args.name:
            raise ConfigError(["`--resume` needs the experiment's --name (and --storage-path)"])
        experiment = Path(args.storage_path).expanduser().resolve() / args.name
    state_path = experiment / STATE_FILE
    if not state_path.is_file():
        raise ConfigError(
            [f"{experiment} is not a signray.tune experiment that can be resumed (no "
             f"{STATE_FILE}); check --name/--storage-path or --restore"]
        )
    from ray.tune import Tuner

    if not Tuner.can_restore(str(experiment)):
        raise ConfigError([f"{experiment} holds no Ray Tune state to resume from yet"])
    state = json.loads(state_path.read_text())
    given = sorted(k for k in vars(args) if k in _config_keys() or k in _SEARCH_DEFAULTS)
    if given:
        print(
            f"note: --resume continues with the experiment's saved settings; ignoring "
            f"{', '.join('--' + k.replace('_', '-') for k in given)}",
            file=sys.stderr,
        )
    base = resolve_config(state["base"], source=str(state_path))
    space = None
    space_file = experiment / SPACE_COPY
    if state.get("space"):
        space = load_search_space(space_file, base.model, base)
    return _Plan(base, space, space_file if space else None, state["options"],
                 experiment.name, experiment.parent, resumed=True)


def _save_state(plan: _Plan) -> None:
    plan.experiment_dir.mkdir(parents=True, exist_ok=True)
    if plan.space_file is not None and plan.space_file != plan.experiment_dir / SPACE_COPY:
        shutil.copyfile(plan.space_file, plan.experiment_dir / SPACE_COPY)
    state = {
        "base": config_to_flat(plan.base),
        "space": plan.space is not None,
        "options": plan.options,
    }
    atomic_write_text(plan.experiment_dir / STATE_FILE, json.dumps(state, indent=2))


def _resume_command(plan: _Plan, args: argparse.Namespace) -> str:
    words = ["python", "-m", "signray.tune", "--resume", "--name", plan.name,
             "--storage-path", str(plan.storage_path)]
    if args.address:
        words += ["--address", args.address]
    return shlex.join(words)  # pasteable even when a path has spaces


def _concurrency_warning(o: dict[str, Any]) -> str | None:
    """Multi-worker trials reserve their workers outside Tune: too many at once would wait."""
    if o["workers_per_trial"] == 1 or not o["max_concurrent"]:
        return None
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    fits = int(cpus // o["cpus_per_trial"])
    if o["max_concurrent"] <= fits:
        return None
    return (
        f"WARNING: --max-concurrent {o['max_concurrent']} trials of {o['cpus_per_trial']:g} CPUs "
        f"do not fit this cluster's {cpus:g} CPUs; the extra trials' worker groups will wait "
        "for resources (and may time out)"
    )


def run(args: argparse.Namespace) -> int:
    resuming = args.resume_experiment or args.restore is not None
    plan = _plan_resume(args) if resuming else _plan_new(args)
    train, val = load_inputs(plan.base)  # every data problem surfaces here, before Ray starts
    o = plan.options
    print(
        f"signray.tune: model {plan.base.model}, {len(train)} train / {len(val)} val clips, "
        f"D={train.feature_dim}, {plan.base.epochs} epochs per trial, "
        + ("1 trial (single run)" if o["single_run"] else
           f"{o['num_samples']} trials ({o['searcher']} + {o['trial_scheduler']})")
        + f", {o['workers_per_trial']} worker(s)/trial; experiment {plan.experiment_dir}",
        flush=True,
    )
    if plan.space is not None and not o["single_run"]:
        print("search space:\n  " + plan.space.describe().replace("\n", "\n  "), flush=True)

    import ray

    from signray.launch.cluster import init_ray
    from signray.launch.search import SearchOptions, build_tuner, restore_tuner
    from signray.launch.trial import TRAIN_RUNS_DIR, TrialSetup
    from signray.results import format_summary, quiet_missing_results, write_outputs

    init_ray(args.address, dashboard_host=args.dashboard_host, dashboard_port=args.dashboard_port)
    if opts_fit_warning := _concurrency_warning(o):
        print(opts_fit_warning, file=sys.stderr, flush=True)
    refs = [ray.put(train), ray.put(val)]
    del train, val
    opts = SearchOptions(
        name=plan.name,
        storage_path=str(plan.storage_path),
        num_samples=o["num_samples"],
        max_concurrent=o["max_concurrent"],
        cpus_per_trial=o["cpus_per_trial"],
        gpus_per_trial=o["gpus_per_trial"],
        workers_per_trial=o["workers_per_trial"],
        searcher=o["searcher"],
        trial_scheduler=o["trial_scheduler"],
        grace_period=o["grace_period"],
        reduction_factor=o["reduction_factor"],
        keep_checkpoints=o["keep_checkpoints"],
        max_failures=o["max_failures"],
        seed=plan.base.seed,
        single_run=o["single_run"],
        mlflow=o.get("mlflow", False),
    )
    setup = TrialSetup(
        base=plan.base,
        experiment=plan.name,
        experiment_dir=str(plan.experiment_dir),
        workers=opts.workers_per_trial,
        cpus_per_trial=opts.cpus_per_trial,
        gpus_per_trial=opts.gpus_per_trial,
        keep_checkpoints=opts.keep_checkpoints,
    ).with_runtime()
    if not plan.resumed:
        _save_state(plan)
        tuner = build_tuner(plan.space, setup, refs, opts)
    else:
        tuner = restore_tuner(plan.experiment_dir, setup, refs)
    start = time.perf_counter()
    try:
        with quiet_missing_results():
            tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C skips Tune's final save
        print(f"\ninterrupted; continue with:\n  {_resume_command(plan, args)}", flush=True)
        return 130
    params = list(plan.space.params) if plan.space is not None and not o["single_run"] else []
    report = write_outputs(
        base=setup.base,
        param_names=params,
        experiment_dir=plan.experiment_dir,
        wall_time_s=time.perf_counter() - start,
        train_runs=plan.experiment_dir / TRAIN_RUNS_DIR if opts.workers_per_trial > 1 else None,
    )
    print(format_summary(report), flush=True)
    _write_views(report, plan.experiment_dir, ray.get(refs[1]))
    expected = 1 if o["single_run"] else o["num_samples"]
    if report.count("UNFINISHED") or len(report.trials) < expected:
        print(
            f"\nthe search was interrupted; continue it with:\n  {_resume_command(plan, args)}",
            flush=True,
        )
        return 130
    return 0 if report.count("ERROR") < len(report.trials) else 1


def _write_views(report, experiment_dir: Path, val) -> None:
    """Evaluate the best checkpoint on the full val split and draw the report plots."""
    from signray.evaluate import evaluate_to_dir
    from signray.report import EVALUATION_DIR, write_report

    if report.best_checkpoint is not None:
        evaluate_to_dir(report.best_checkpoint, val, experiment_dir / EVALUATION_DIR)
    index = write_report(experiment_dir)
    print(f"report: {index}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with user_errors_exit():
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
