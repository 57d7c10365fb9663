"""Command-line flags for every `TrainConfig` and architecture field, and the user-error exit.

Flags are generated from the dataclasses, so a new config field is a new flag with no extra code.
Only flags the user actually gives override the config file (defaults -> --config -> CLI).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from typing import Any

from signray.config import TrainConfig, load_config_file, resolve_config
from signray.engine import NonFiniteLossError
from signray.errors import EXIT_USAGE, SignrayError
from signray.models import arch_fields, list_models

__all__ = ["add_config_arguments", "config_from_args", "user_errors_exit", "SMOKE_EPOCHS"]

SMOKE_EPOCHS = 2

_HELP = {
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


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _arg_type(f: dataclasses.Field):
    kind = str(f.type).replace(" | None", "")
    return {"int": int, "float": float, "str": str}.get(kind, str)


def _add_field(group, name: str, f: dataclasses.Field) -> None:
    help_text = _HELP.get(name, name.replace("_", " "))
    if str(f.type).startswith("bool"):
        group.add_argument(
            _flag(name),
            dest=name,
            action=argparse.BooleanOptionalAction,
            default=argparse.SUPPRESS,
            help=help_text,
        )
        return
    default = f.default if f.default is not dataclasses.MISSING else None
    group.add_argument(
        _flag(name),
        dest=name,
        type=_arg_type(f),
        default=argparse.SUPPRESS,
        metavar=name.upper(),
        help=f"{help_text} (default: {default})",
    )


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE.yaml",
        default=None,
        help="YAML file of config fields (flat); flags given on the command line win",
    )
    run = parser.add_argument_group("training")
    for f in dataclasses.fields(TrainConfig):
        if f.name != "arch":
            _add_field(run, f.name, f)
    arch = parser.add_argument_group("model architecture (fields of the chosen --model)")
    seen: set[str] = set()
    for model in list_models():
        for name, f in arch_fields(model).items():
            if name not in seen:
                seen.add(name)
                _add_field(arch, name, f)


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """defaults -> --config file -> flags that were given, validated once."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for model in list_models():
        known |= set(arch_fields(model))
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if k in known}
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


@contextlib.contextmanager
def user_errors_exit() -> Iterator[None]:
    """Turn input errors into one clear message on stderr and exit code 2, no traceback.

    A diverged run (NaN/Inf loss) is not an input error but gets the same clear message, exit 1.
    """
    try:
        yield
    except SignrayError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except NonFiniteLossError as err:
        print(f"error: training diverged: {err}", file=sys.stderr)
        raise SystemExit(1) from None
