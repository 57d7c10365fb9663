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
from signray.fields import coerce_fields, flag, option, parse_duration
from signray.layout import LATENCY_METRIC, METRIC, MODE, PARAMS_METRIC

__all__ = [
    "BUDGET_UNITS",
    "OBJECTIVES",
    "SEARCHERS",
    "TRIAL_SCHEDULERS",
    "SearchOptions",
]

SEARCHERS = ("tpe", "gp", "cmaes", "random", "qmc")
TRIAL_SCHEDULERS = ("asha", "hyperband", "pbt", "fifo")
BUDGET_UNITS = ("samples", "steps", "epochs")
# `--objectives` names -> (metric every trial reports, direction). The first is always accuracy.
OBJECTIVES = {
    "val_gloss_acc": (METRIC, MODE),
    "latency": (LATENCY_METRIC, "min"),  # signray.training.costs
    "params": (PARAMS_METRIC, "min"),
}
# Samplers that model several objectives at once (CMA-ES optimises one).
_MULTI_OBJECTIVE_SEARCHERS = ("tpe", "gp", "random", "qmc")


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
    searcher: str = option(
        "tpe",
        "Optuna sampler: tpe (multivariate; constant liar when trials run at once), gp "
        "(Gaussian process), cmaes, random (the baseline) or qmc (quasi-random Sobol)",
    )
    trial_scheduler: str = option(
        "asha",
        "asha (early stopping), hyperband (pauses and resumes trials), pbt (population-based "
        "training: perturbs lr/weight decay/... and copies the best trials' weights) or fifo "
        "(every trial runs all epochs; the default with several --objectives)",
    )
    budget_unit: str = option(
        "samples",
        "what the trial scheduler counts a trial's training in: samples (clips seen), steps "
        "(optimizer steps) or epochs",
    )
    grace_period: int | None = option(
        None,
        "training (in --budget-unit) every trial gets before the scheduler may judge it "
        "(default: one epoch or 50 optimizer steps at the base batch size, whichever is more, "
        "and at least the lr warm-up)",
    )
    reduction_factor: float = option(2.0, "ASHA/HyperBand: keep the top 1/FACTOR at each rung")
    perturbation_interval: int | None = option(
        None,
        "PBT: training (in --budget-unit) between two exploit/explore steps (default: "
        "the grace period)",
    )
    objectives: str = option(
        "val_gloss_acc",
        "what the search optimises: val_gloss_acc, or val_gloss_acc,latency (inference ms per "
        "clip) or val_gloss_acc,params (parameter count) for a Pareto front",
    )
    # the Optuna study: where it lives, and what it starts from
    optuna_storage: str | None = option(
        None,
        "Optuna storage URL (sqlite:///FILE.db, postgresql://...) holding the study, named "
        "after the experiment (default: sqlite:///EXPERIMENT/optuna.db); watch it with "
        "`optuna-dashboard URL`",
    )
    warm_start: str | None = option(
        None,
        "an earlier experiment folder or Optuna storage URL (URL#STUDY when it holds several "
        "studies): its finished trials are told to the new study and its best configs run first",
    )
    warm_start_top_k: int = option(
        3, "--warm-start: how many of the earlier best configs run first"
    )
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
    time_budget: str | None = option(
        None,
        "wall time of the whole search (2h, 30m, 90s or seconds; Tune's time_budget_s): then "
        "running trials stop, no new one starts, and the best so far is exported as at a "
        "normal end; a --resume of an interrupted search gets what is left",
    )
    single_run: bool = option(False, "run exactly one trial of the config (no search space needed)")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SearchOptions:
        """Typed options from flags or a saved state; unknown keys and bad types raise at once."""
        known, problems = coerce_fields(cls, values, "search option")
        if problems:
            raise ConfigError(problems)
        return cls(**known)

    def replace(self, **changes: Any) -> SearchOptions:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def time_budget_s(self) -> float | None:
        """`time_budget` in seconds (None: no budget)."""
        return None if self.time_budget is None else parse_duration(self.time_budget)

    @property
    def objective_names(self) -> list[str]:
        return [name.strip() for name in self.objectives.split(",") if name.strip()]

    @property
    def metrics(self) -> list[str]:
        """The metric of every objective (the first is val_gloss_acc)."""
        return [OBJECTIVES[name][0] for name in self.objective_names if name in OBJECTIVES]

    @property
    def modes(self) -> list[str]:
        return [OBJECTIVES[name][1] for name in self.objective_names if name in OBJECTIVES]

    @property
    def multi_objective(self) -> bool:
        return len(self.objective_names) > 1

    def problems(self, epochs: int) -> list[Problem]:
        """Every rule these options break for trials of `epochs` epochs, named by flag."""
        p: list[Problem] = []

        def add(text: str, *names: str) -> None:
            p.append(Problem(text, names))

        for name in ("num_samples", "keep_checkpoints", "warm_start_top_k"):
            if getattr(self, name) < 1:
                add(f"`{flag(name)}` must be >= 1, but got {getattr(self, name)}", name)
        for name in ("grace_period", "perturbation_interval"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                add(f"`{flag(name)}` must be >= 1, but got {getattr(self, name)}", name)
        p += self._choice_problems()
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
        if (
            self.budget_unit == "epochs"
            and self.trial_scheduler in ("asha", "hyperband")
            and self.grace_period is not None
            and self.grace_period > epochs
        ):
            add(
                f"`--grace-period` must be <= --epochs (the scheduler's max_t), but got "
                f"grace_period={self.grace_period}, epochs={epochs}",
                "grace_period",
            )
        if self.time_budget is not None and not (self.time_budget_s or 0) > 0:
            add(
                "`--time-budget` must be a positive duration such as 2h, 30m, 90s or 3600 "
                f"(seconds), but got {self.time_budget!r}",
                "time_budget",
            )
        if self.optuna_storage is not None and "://" not in self.optuna_storage:
            add(
                "`--optuna-storage` must be a database URL such as sqlite:///path/optuna.db or "
                f"postgresql://user@host/db, but got {self.optuna_storage!r}",
                "optuna_storage",
            )
        return p

    def _choice_problems(self) -> list[Problem]:
        """Names outside their choices, and choices that do not go together."""
        p: list[Problem] = []
        for name, choices in (
            ("searcher", SEARCHERS),
            ("trial_scheduler", TRIAL_SCHEDULERS),
            ("budget_unit", BUDGET_UNITS),
        ):
            if getattr(self, name) not in choices:
                p.append(
                    Problem(
                        f"`{flag(name)}` must be one of {', '.join(choices)}, but got "
                        f"{getattr(self, name)!r}",
                        [name],
                    )
                )
        names = self.objective_names
        unknown = [n for n in names if n not in OBJECTIVES]
        if unknown or not names or names[0] != "val_gloss_acc" or len(set(names)) != len(names):
            p.append(
                Problem(
                    "`--objectives` must be val_gloss_acc, optionally followed by latency and/or "
                    f"params (comma-separated, each once), but got {self.objectives!r}",
                    ["objectives"],
                )
            )
        elif self.multi_objective:
            if self.trial_scheduler != "fifo":
                p.append(
                    Problem(
                        "several `--objectives` need `--trial-scheduler fifo` (early stopping "
                        f"ranks trials by one metric), but got {self.trial_scheduler!r}",
                        ["objectives", "trial_scheduler"],
                    )
                )
            if self.searcher not in _MULTI_OBJECTIVE_SEARCHERS:
                p.append(
                    Problem(
                        f"`--searcher {self.searcher}` optimises one objective; with several "
                        f"`--objectives` use one of {', '.join(_MULTI_OBJECTIVE_SEARCHERS)}",
                        ["objectives", "searcher"],
                    )
                )
        if self.trial_scheduler == "pbt" and self.warm_start:
            p.append(
                Problem(
                    "`--warm-start` tells an Optuna study, which `--trial-scheduler pbt` does "
                    "not use (PBT explores by itself); drop one of them",
                    ["warm_start", "trial_scheduler"],
                )
            )
        return p
