"""Flags for every `TrainConfig`, architecture and search-option field, and the one function
that layers defaults -> ``--config`` file -> given flags into a validated `TrainConfig`.

Only flags the user actually gives override the config file. Help texts live with the fields
(`signray.fields.option`).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from signray.cli import add_dataclass_flags, given_values
from signray.config.files import load_config_file
from signray.config.search import BUDGET_UNITS, SEARCHERS, TRIAL_SCHEDULERS, SearchOptions
from signray.config.train import DATA_MODES, TrainConfig, config_keys, resolve_config
from signray.models import get_model_spec, list_models

__all__ = [
    "SMOKE_EPOCHS",
    "add_config_flags",
    "add_search_flags",
    "config_from_args",
    "search_options_from_args",
]

SMOKE_EPOCHS = 2


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
        choices={"data_mode": DATA_MODES},
        exclude=exclude | {"arch"},
    )
    arch = parser.add_argument_group("model architecture (fields of the chosen --model)")
    for model in list_models():
        add_dataclass_flags(arch, get_model_spec(model).config_cls, exclude=exclude, seen=seen)


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
        choices={
            "searcher": SEARCHERS,
            "trial_scheduler": TRIAL_SCHEDULERS,
            "budget_unit": BUDGET_UNITS,
        },
        exclude={"single_run"},
    )


def search_options_from_args(
    args: argparse.Namespace, defaults: dict[str, Any] | None = None
) -> SearchOptions:
    """Options from the flags given, on top of `defaults` (e.g. the smoke test's)."""
    return SearchOptions.from_mapping({**(defaults or {}), **given_values(args, SearchOptions)})
