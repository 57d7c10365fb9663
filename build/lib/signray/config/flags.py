"""Flags for every `TrainConfig`, architecture and search-option field, and the one function
that layers defaults -> ``--config`` file -> given flags into a validated `TrainConfig`.

Only flags the user actually gives override the config file.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from signray.cli import add_dataclass_flags, given_values
from signray.config.files import load_config_file
from signray.config.search import SEARCHERS, TRIAL_SCHEDULERS, SearchOptions
from signray.config.train import TrainConfig, config_keys, resolve_config
from signray.models import get_model_spec, list_models

__all__ = [
    "SMOKE_EPOCHS",
    "add_config_flags",
    "add_search_flags",
    "config_from_args",
    "search_options_from_args",
]

SMOKE_EPOCHS = 2

_CONFIG_HELP = {
    "model": f"model to train: {', '.join(list_models())}",
    "keypoints_train": "folder of per-clip keypoint .npz files (or a packed shard folder)",
    "keypoints_val": "validation keypoints folder (per-clip or packed)",
    "features_train": "folder of per-clip InceptionV3 feature .npz files (or packed)",
    "features_val": "validation features folder (per-clip or packed)",
    "labels_train_csv": "labels CSV with columns file,gloss,cat (0-based ids)",
    "labels_val_csv": "validation labels CSV",
    "kp_key": "npz key holding keypoints [T, D]",
    "feature_key": "npz key holding features [T, 2048]; falls back to X",
    "max_frames": "uniformly subsample clips longer than this many frames",
    "bucket": "batch clips of similar length together (less padding)",
    "batch_size": "global batch size (split across Ray workers)",
    "grad_clip": "clip the gradient norm to this value (0 = off)",
    "amp": "mixed precision: fp16 + GradScaler on CUDA, bf16 autocast on CPU",
    "scheduler": "LR schedule: plateau (on val gloss acc), cosine, none",
    "warmup_epochs": "linear warmup epochs before cosine decay",
    "early_stop": "stop after this many epochs without val gloss acc improvement (0 = off)",
    "output_dir": "where checkpoints, the CSV log and the resolved config go",
    "resume": "checkpoint (*_last.pt) to continue from, up to --epochs in total",
    "log_csv": "CSV log path (default: OUTPUT_DIR/{ModelName}_log.csv)",
    "num_threads": "torch intra-op threads for this process",
    "ray_workers": "1 trains in this process; N > 1 runs DDP under a Ray Train TorchTrainer",
    "smoke_test": "train on tiny built-in synthetic data (no files needed)",
    "pretrained_backbone": "iv3_gru backbone: load ImageNet weights (never downloaded)",
}


_SEARCH_HELP = {
    "num_samples": "number of trials (default: 16; 6 with --smoke-test)",
    "max_concurrent": "trials running at once (default: as many as the cluster's CPUs/GPUs fit)",
    "cpus_per_trial": "CPUs per trial, shared by its workers; also its torch threads",
    "gpus_per_trial": "GPUs per trial, fractions allowed, shared by its workers",
    "workers_per_trial": "1: the loop runs in the trial; N > 1: a Ray Train TorchTrainer with N "
    "DDP workers per trial (default: --ray-workers, i.e. 1)",
    "searcher": "Optuna TPE, or Optuna random sampling as the baseline",
    "trial_scheduler": "ASHA early stopping, or FIFO (every trial runs all epochs)",
    "grace_period": "ASHA: epochs every trial runs before it can be stopped",
    "reduction_factor": "ASHA: keep the top 1/FACTOR at each rung",
    "keep_checkpoints": "best checkpoints kept per trial, by val_gloss_acc",
    "max_failures": "retries of a failed trial from its latest checkpoint",
    "mlflow": "also log every trial to EXPERIMENT/mlruns (needs signray[mlflow])",
}


def add_config_flags(parser: argparse.ArgumentParser, *, exclude: Iterable[str] = ()) -> None:
    """``--config FILE.yaml`` plus a flag per config and architecture field (except `exclude`)."""
    parser.add_argument(
        "--config",
        metavar="FILE.yaml",
        default=None,
        help="YAML file of config fields (flat); flags given on the command line win",
    )
    seen: set[str] = set()
    exclude = set(exclude)
    add_dataclass_flags(
        parser.add_argument_group("training"),
        TrainConfig,
        help=_CONFIG_HELP,
        exclude=exclude | {"arch"},
    )
    arch = parser.add_argument_group("model architecture (fields of the chosen --model)")
    for model in list_models():
        add_dataclass_flags(
            arch, get_model_spec(model).config_cls, help=_CONFIG_HELP, exclude=exclude, seen=seen
        )


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """defaults -> --config file -> flags that were given, validated once."""
    keys = config_keys()
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if k in keys}
    cfg = base or TrainConfig()
    file_values = load_config_file(args.config) if args.config else {}
    if file_values:
        if "model" in given:
            file_values["model"] = given["model"]
        cfg = resolve_config(file_values, cfg, source=args.config)
    smoke = given.get("smoke_test", cfg.smoke_test)
    if smoke and "epochs" not in given and "epochs" not in file_values:
        given["epochs"] = SMOKE_EPOCHS
    return resolve_config(given, cfg, source="command-line flags")


def add_search_flags(group: argparse._ActionsContainer) -> None:
    """A flag per `SearchOptions` field (``--num-samples``, ``--searcher``, ...)."""
    add_dataclass_flags(
        group,
        SearchOptions,
        help=_SEARCH_HELP,
        choices={"searcher": SEARCHERS, "trial_scheduler": TRIAL_SCHEDULERS},
        exclude={"single_run"},
    )


def search_options_from_args(
    args: argparse.Namespace, defaults: dict[str, Any] | None = None
) -> SearchOptions:
    """Options from the flags given, on top of `defaults` (e.g. the smoke test's)."""
    return SearchOptions.from_mapping({**(defaults or {}), **given_values(args, SearchOptions)})
