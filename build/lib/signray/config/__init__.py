"""Typed configuration: `TrainConfig` for one run, search spaces and search options for Tune.

Defaults -> YAML file -> command-line flags, validated in one place (`resolve_config`); every
problem is reported at once, naming the file, field and rule.
"""

from __future__ import annotations

from signray.config import files, train
from signray.config.files import *  # noqa: F403  (the package's API is its modules')
from signray.config.train import *  # noqa: F403

__all__ = [*train.__all__, *files.__all__]
