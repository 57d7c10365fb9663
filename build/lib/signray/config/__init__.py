"""Typed configuration: `TrainConfig` for one run, search spaces and search options for Tune.

Defaults -> YAML file -> command-line flags, validated in one place (`resolve_config`); every
problem is reported at once, naming the file, field and rule.
"""

from __future__ import annotations

from signray.config.files import load_config_file, read_yaml, save_config
from signray.config.train import (
    SCHEDULERS,
    TRAIN_FIELDS,
    TrainConfig,
    config_keys,
    config_to_flat,
    resolve_config,
)

__all__ = [
    "SCHEDULERS",
    "TRAIN_FIELDS",
    "TrainConfig",
    "config_keys",
    "config_to_flat",
    "load_config_file",
    "read_yaml",
    "resolve_config",
    "save_config",
]
