"""`SearchOptions`: everything about a search that is not part of a trial's `TrainConfig`.

One type, from flags (`signray.tune`), from the experiment's saved state (`--resume`) and in the
tuning package; validated here, before Ray starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from signray.errors import ConfigError, Problem
from signray.fields import coerce, field_types, flag, option

__all__ = ["SEARCHERS", "TRIAL_SCHEDULERS", "SearchOptions"]

SEARCHERS = ("tpe", "random")
TRIAL_SCHEDULERS = ("asha", "fifo")


@dataclass(frozen=True)
class SearchOptions:
    """Tune-level knobs of one search (flag names: ``--num-samples`` for `num_samples`, ...)."""

    num_samples: int = option(16, "number of trials (default: 16; 6 with --smoke-test)")
    # what one trial reserves, and how many trials run at once
    max_concurrent: int | None = option(
        None, "trials running at once (default: as many as the cluster's CPUs/GPUs fit)"
    )
    cpus_per_trial: float = option(
        1.0, "CPUs per trial, shared by its workers; also its torch threads"
    )
    gpus_per_trial: float = option(
        0.0,
        "GPUs per trial: below 1 one-worker trials share a GPU (0.25 = 4 per card); "
        "N workers need whole GPUs each (N, 2N, ...)",
    )
    workers_per_trial: int | None = option(
        None,
        "1: train inside the trial; N > 1: N DDP workers (a TorchTrainer) per trial",
    )
    # which configs are tried, and which trials are stopped early
    searcher: str = option("tpe", "Optuna TPE, or Optuna random sampling as the baseline")
    trial_scheduler: str = option(
        "asha", "ASHA early stopping, or FIFO (every trial runs all epochs)"
    )
    grace_period: int = option(1, "ASHA: epochs every trial runs before it can be stopped")
    reduction_factor: float = option(2.0, "ASHA: keep the top 1/FACTOR at each rung")
    # what is kept and retried
    keep_checkpoints: int = option(
        2, "best checkpoints kept per trial, by val_gloss_acc (and its latest, to resume from)"
    )
    max_failures: int = option(0, "retries of a failed trial from its latest checkpoint")
    worker_failures: int = option(
        0,
        "multi-worker trials: restarts of the worker group after a rank dies, from the run's "
        "latest checkpoint, before the trial fails (no Tune-level retry)",
    )
    mlflow: bool = option(
        False, "also log every trial to EXPERIMENT/mlruns (needs signray[mlflow])"
    )
    single_run: bool = option(False, "run exactly one trial of the config (no search space needed)")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SearchOptions:
        """Typed options from flags or a saved state; unknown keys and bad types raise at once."""
        types = field_types(cls)
        known, problems = {}, []
        for key, value in values.items():
            if key not in types:
                problems.append(Problem(f"unknown search option {key!r}", [key]))
                continue
            converted, problem = coerce(key, value, types[key])
            if problem:
                problems.append(problem)
            known[key] = converted
        if problems:
            raise ConfigError(problems)
        return cls(**known)

    def replace(self, **changes: Any) -> SearchOptions:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def problems(self, epochs: int) -> list[Problem]:
        """Every rule these options break for trials of `epochs` epochs, named by flag."""
        p: list[Problem] = []

        def add(text: str, *names: str) -> None:
            p.append(Problem(text, names))

        for name in ("num_samples", "keep_checkpoints", "grace_period"):
            if getattr(self, name) < 1:
                add(f"`{flag(name)}` must be >= 1, but got {getattr(self, name)}", name)
        if self.max_concurrent is not None and self.max_concurrent < 1:
            add(f"`--max-concurrent` must be >= 1, but got {self.max_concurrent}", "max_concurrent")
        for name in ("max_failures", "worker_failures"):
            if getattr(self, name) < 0:
                add(f"`{flag(name)}` must be >= 0, but got {getattr(self, name)}", name)
        if not self.cpus_per_trial > 0:
            add(f"`--cpus-per-trial` must be > 0, but got {self.cpus_per_trial}", "cpus_per_trial")
        if self.gpus_per_trial < 0:
            add(f"`--gpus-per-trial` must be >= 0, but got {self.gpus_per_trial}", "gpus_per_trial")
        if self.workers_per_trial is not None and self.workers_per_trial < 1:
            add(
                f"`--workers-per-trial` must be >= 1, but got {self.workers_per_trial}",
                "workers_per_trial",
            )
        if not self.reduction_factor > 1:
            add(
                f"`--reduction-factor` must be > 1, but got {self.reduction_factor}",
                "reduction_factor",
            )
        if self.searcher not in SEARCHERS:
            add(
                f"`--searcher` must be one of {', '.join(SEARCHERS)}, but got {self.searcher!r}",
                "searcher",
            )
        if self.trial_scheduler not in TRIAL_SCHEDULERS:
            add(
                f"`--trial-scheduler` must be one of {', '.join(TRIAL_SCHEDULERS)}, but got "
                f"{self.trial_scheduler!r}",
                "trial_scheduler",
            )
        if self.trial_scheduler == "asha" and self.grace_period > epochs:
            add(
                f"`--grace-period` must be <= --epochs (ASHA's max_t), but got "
                f"grace_period={self.grace_period}, epochs={epochs}",
                "grace_period",
            )
        return p
