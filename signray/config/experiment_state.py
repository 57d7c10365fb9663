"""What `signray.tune` saves beside Ray's own state, so that ``--resume`` and the report need no
flags: the base config, the search options and the searched distributions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution

from signray.config.search import SearchOptions
from signray.config.train import TrainConfig, config_to_flat, resolve_config
from signray.errors import ConfigError
from signray.io import read_text, write_text
from signray.storage import Location, RemotePath

__all__ = ["ExperimentState"]


@dataclass(frozen=True)
class ExperimentState:
    base: TrainConfig  # every trial starts from it (search-space fixed values applied)
    options: SearchOptions
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)  # {} single run

    def save(self, path: str | os.PathLike[str] | RemotePath) -> Location:
        state = {
            "base": config_to_flat(self.base),
            "options": self.options.as_dict(),
            "distributions": {k: distribution_to_json(d) for k, d in self.distributions.items()},
        }
        return write_text(path, json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str] | RemotePath) -> ExperimentState:
        try:
            state = json.loads(read_text(path))
            base = resolve_config(state["base"], source=str(path))
            options = SearchOptions.from_mapping(state["options"])
            dists = {k: json_to_distribution(v) for k, v in state.get("distributions", {}).items()}
        except (OSError, ValueError, KeyError, TypeError) as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError([f"{path} cannot be read as a signray.tune state: {err}"]) from None
        return cls(base, options, dists)
