"""Config files: safe YAML reading and the resolved config saved next to a run's outputs, local
or at an object-store URI."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from signray.config.train import TrainConfig, config_to_flat
from signray.errors import ConfigError
from signray.io import write_text
from signray.storage import Location, RemotePath, as_location

__all__ = ["load_config_file", "read_yaml", "save_config"]


def read_yaml(path: Location) -> Any:
    """Parse a YAML file with the safe loader; a problem names the file, line and column.

    Tags that build Python objects (``!!python/object/apply:os.system``) are refused, never run.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([f"{path} cannot be read as a YAML text file: {err}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path} line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        tag = re.search(r"constructor for the tag '([^']*)'", problem)
        if tag:
            name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
            problem = (
                f"the tag {name} is not allowed: signray reads plain YAML only (mappings, "
                "lists, strings, numbers, booleans), never Python objects"
            )
        raise ConfigError([f"{where}: not valid YAML: {problem}"]) from None


def load_config_file(path: str | os.PathLike | RemotePath) -> dict[str, Any]:
    """Read a flat YAML config safely (no arbitrary tags)."""
    path = as_location(path)
    if not path.is_file():
        raise ConfigError([f"config file {path} does not exist"])
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            [f"{path} must hold a mapping of field: value, but got {type(data).__name__}"]
        )
    return dict(data)


def save_config(cfg: TrainConfig, path: str | os.PathLike | RemotePath) -> Location:
    """Write the resolved config as YAML, atomically, so it can be passed back via --config."""
    return write_text(path, yaml.safe_dump(config_to_flat(cfg), sort_keys=False))
