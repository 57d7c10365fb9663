"""Plan a search before Ray starts: the base config, the search space, the search options and
the experiment folder, every problem found at once (exit 2), or the saved plan of an experiment
to resume. Imports no Ray.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from signray.config import TrainConfig, config_keys, load_config_file, resolve_config
from signray.config.experiment_state import ExperimentState
from signray.config.flags import config_from_args, search_options_from_args
from signray.config.search import SearchOptions
from signray.config.search_space import SearchSpace, load_search_space
from signray.errors import ConfigError
from signray.fields import flag
from signray.io import copy_file
from signray.layout import ExperimentFiles
from signray.storage import (
    Location,
    RemotePath,
    absolute,
    as_location,
    explain_error,
    writable_problem,
)
from signray.tuning.address import cluster_target
from signray.tuning.resources import TrialShape
from signray.tuning.study import default_storage_url

__all__ = ["DEFAULT_SPACES", "SMOKE", "TunePlan", "packaged_space", "plan_new", "plan_resume"]

# The search spaces shipped inside the package (copies of the top-level search_spaces/).
DEFAULT_SPACES = {"transformer": "tx.yaml", "iv3_gru": "iv3_gru.yaml"}

# --smoke-test: tiny synthetic data (training.inputs.SMOKE_DATA with 20 glosses), 16 epochs, a
# real 6-trial search in which ASHA (rungs at epochs 1, 2, 4, 8) stops trials and TPE models
# after 2 finished trials. Only values the user did not give are filled in.
SMOKE = {
    "config": {"epochs": 16, "num_gloss": 20, "num_cat": 4},
    "search": {
        "num_samples": 6,
        "budget_unit": "epochs",
        "grace_period": 1,
        "reduction_factor": 2.0,
    },
}

_DATA_PATHS = (
    "keypoints_train", "keypoints_val", "features_train", "features_val",
    "labels_train_csv", "labels_val_csv",
)  # fmt: skip


def packaged_space(model: str) -> Path:
    """The search space shipped for `model` inside the installed package."""
    return Path(str(resources.files("signray") / "search_spaces" / DEFAULT_SPACES[model]))


@dataclass
class TunePlan:
    base: TrainConfig  # every trial starts from it (fixed values of the space applied)
    space: SearchSpace | None
    space_file: Location | None
    options: SearchOptions
    files: ExperimentFiles
    resumed: bool

    @property
    def searching(self) -> bool:
        return self.space is not None and not self.options.single_run

    def save(self) -> None:
        """The experiment's own record, so that --resume needs no other flags."""
        self.files.root.mkdir(parents=True, exist_ok=True)
        if self.space_file is not None and self.space_file != self.files.space_copy:
            copy_file(self.space_file, self.files.space_copy)
        distributions = dict(self.space.params) if self.searching else {}
        ExperimentState(self.base, self.options, distributions).save(self.files.driver_state)


def _peek_model(path: str | None) -> str | None:
    """The `model:` a search-space file declares, to default --model from it."""
    try:
        data = yaml.safe_load(as_location(path).read_text()) if path is not None else None
    except (OSError, yaml.YAMLError):
        return None  # load_search_space reports it
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


def _absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """Trials chdir into their own folders and may run on other nodes: paths must be absolute
    (object-store URIs already are)."""
    changes = {
        name: str(absolute(getattr(cfg, name)))
        for name in _DATA_PATHS
        if getattr(cfg, name) is not None
    }
    return dataclasses.replace(cfg, **changes)


def _storage_problem(files: ExperimentFiles, where: str) -> str | None:
    """Whether the experiment folder can be written: in seconds, before any Ray process."""
    return writable_problem(files.root if where == "--restore" else files.root.parent, where)


def _local_only_problems(files: ExperimentFiles, opts: SearchOptions, where: str) -> list[str]:
    """What must stay local when the experiment folder is an object-store URI."""
    if opts.mlflow and isinstance(files.root, RemotePath):
        return [
            f"`--mlflow` keeps its SQLite store in the experiment folder, which must be local, "
            f"but `{where}` is the object-store URI {files.root}; use a local folder with --mlflow"
        ]
    return []


def plan_new(args: argparse.Namespace) -> TunePlan:
    """Validate a new search from the tune command's flags; every problem at once."""
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
    if getattr(args, "gpus_per_trial", 0) > 0 and not hasattr(args, "use_gpu"):
        args.use_gpu = True  # trials given GPUs train on them (`TrialSetup.with_runtime`)
    cfg = _absolute_paths(config_from_args(args))
    smoke = dict(SMOKE["search"]) if cfg.smoke_test else None
    if smoke and hasattr(args, "budget_unit"):  # the smoke grace period is in epochs
        smoke.pop("grace_period")
    options = search_options_from_args(args, smoke)
    single = args.single_run or (space_path is None and args.config is not None)
    workers = cfg.ray_workers if options.workers_per_trial is None else options.workers_per_trial
    options = options.replace(single_run=single, workers_per_trial=workers)
    if options.multi_objective and not hasattr(args, "trial_scheduler"):
        options = options.replace(trial_scheduler="fifo")  # early stopping ranks one metric
    problems: list[str] = list(options.problems(cfg.epochs))
    if options.multi_objective and workers > 1:
        problems.append(
            "several `--objectives` are measured inside one-worker trials; use "
            "--workers-per-trial 1"
        )
    if workers >= 1:
        # Every trial runs on `workers` ranks: the config and every batch size the space can
        # sample must split over them (TrainConfig's own rule, checked with the space).
        cfg = resolve_config({"ray_workers": workers}, cfg, source="--workers-per-trial")
    if space_path is None and not single:
        if not cfg.smoke_test:
            raise ConfigError(
                "`--search-space FILE.yaml` is required (or --single-run / --config FILE to "
                "run one config)"
            )
        space_path = str(packaged_space(cfg.model))
    space = space_file = None
    if space_path is not None:
        space_file = absolute(space_path)
        space = load_search_space(space_file, cfg.model, cfg)
        cfg = space.apply_fixed(cfg)
    if cfg.use_gpu and not options.gpus_per_trial:
        options = options.replace(gpus_per_trial=float(max(workers, 1)))  # one per worker
    shape = TrialShape.from_options(options)
    shape_problems = shape.problems()
    problems += shape_problems
    if options.gpus_per_trial > 0 and cluster_target(args.address).local and not shape_problems:
        problems += shape.local_gpu_problems()
    name = args.name or f"tune-{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    if "/" in name or name in (".", ".."):
        problems.append(f"`--name` must be a plain folder name, but got {name!r}")
    files = ExperimentFiles(absolute(args.storage_path) / name)
    if problem := _storage_problem(files, "--storage-path"):
        problems.append(problem)
    elif files.root.exists() and any(files.root.iterdir()):
        problems.append(
            f"experiment folder {files.root} already exists: add --resume to continue it, or "
            "choose another --name"
        )
    problems.extend(_local_only_problems(files, options, "--storage-path"))
    if problems:
        raise ConfigError(problems)
    if space is not None and not single and options.optuna_storage is None:
        # Saved with the plan, so --resume and --warm-start find the study.
        options = options.replace(optuna_storage=default_storage_url(files))
    return TunePlan(cfg, space, space_file, options, files, resumed=False)


def plan_resume(args: argparse.Namespace) -> TunePlan:
    """The saved plan of the experiment --storage-path/--name (or --restore PATH)."""
    if args.restore:
        files = ExperimentFiles(absolute(args.restore))
    else:
        if not args.name:
            raise ConfigError(["`--resume` needs the experiment's --name (and --storage-path)"])
        files = ExperimentFiles(absolute(args.storage_path) / args.name)
    where = "--restore" if args.restore else "--storage-path"
    if problem := _storage_problem(files, where):
        raise ConfigError([problem])
    try:
        saved = files.driver_state.is_file()
    except OSError as err:
        raise ConfigError([f"`{where}` {files.root}: {explain_error(err, files.root)}"]) from None
    if not saved:
        raise ConfigError(
            f"{files.root} is not a signray.tune experiment that can be resumed (no "
            f"{files.DRIVER_STATE}); check --name/--storage-path or --restore"
        )
    state = ExperimentState.load(files.driver_state)
    if problems := _local_only_problems(files, state.options, where):
        raise ConfigError(problems)
    given = sorted(
        k
        for k, v in vars(args).items()
        if (k in config_keys() or k in state.options.as_dict()) and (k != "single_run" or v)
    )  # --single-run is the one such flag argparse always sets
    if given:
        print(
            f"note: --resume continues with the experiment's saved settings; ignoring "
            f"{', '.join(flag(k) for k in given)}",
            file=sys.stderr,
        )
    space = None
    if files.space_copy.is_file():
        space = load_search_space(files.space_copy, state.base.model, state.base)
    return TunePlan(
        state.base, space, files.space_copy if space else None, state.options, files, True
    )
