"""Trial schedulers whose rungs fit the data: ASHA, HyperBand, PBT or FIFO, counting a trial's
training in samples seen, optimizer steps or epochs (``--budget-unit``).

Why not epochs by default: an epoch of 50 clips at batch 16 is 4 optimizer steps, so ASHA with
a one-epoch grace period judges trials after 4 steps, when most configs are still at chance and
the ranking is noise; on 1,700 clips an epoch is 53 steps. The default grace period is therefore
"one epoch or 50 optimizer steps at the base batch size, whichever is more, and never less than
the learning-rate warm-up": 50 Adam steps take a well-set transformer or GRU off chance on every
dataset we tried, and on FSL-size data it is still one epoch, so nothing changes there.
The budget counts samples seen by default: unlike steps it does not depend on a searched batch
size, so every trial is judged after the same amount of data.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from ray import tune
from ray.tune.schedulers import HyperBandScheduler

from signray.config import TrainConfig
from signray.config.search import SearchOptions
from signray.config.search_space import SearchSpace
from signray.errors import ConfigError, Problem
from signray.layout import BUDGET_ATTRS
from signray.models import arch_fields

__all__ = [
    "MIN_GRACE_STEPS",
    "Budget",
    "build_scheduler",
    "keep_inside_space",
    "pbt_mutations",
    "scheduler_budget",
    "tune_domain",
]

# The least training (optimizer steps at the base batch size) before a trial may be judged.
MIN_GRACE_STEPS = 50


@dataclass(frozen=True)
class Budget:
    """A trial's training budget in the scheduler's unit (the metric `attr` every epoch reports)."""

    unit: str
    attr: str
    per_epoch: float  # units in one epoch at the base batch size
    max_t: int  # units in `epochs` epochs (at the smallest batch size the space can sample)
    grace: int
    interval: int  # PBT's perturbation interval
    notes: tuple[str, ...] = ()

    def epochs(self, units: float) -> float:
        return units / self.per_epoch

    def describe(self) -> str:
        if self.unit == "epochs":
            return f"grace period {self.grace} epoch(s)"
        return f"grace period {self.grace} {self.unit} (~{self.epochs(self.grace):.1f} epochs)"


def _values(space: SearchSpace | None, name: str, base_value) -> list:
    """Every value `name` can take in a trial: the base value, or the space's bounds/choices."""
    dist = space.params.get(name) if space is not None else None
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        return [dist.low, dist.high]
    return [base_value]


def scheduler_budget(
    opts: SearchOptions, base: TrainConfig, space: SearchSpace | None, n_train: int
) -> Budget:
    """The scheduler's budget for trials of `base` (and `space`) on `n_train` training clips.

    Raises ConfigError (before Ray starts) for a grace period beyond the budget or shorter than
    the learning-rate warm-up.
    """
    unit = opts.budget_unit
    steps_per_epoch = math.ceil(n_train / base.batch_size)
    most_steps = math.ceil(n_train / min(_values(space, "batch_size", base.batch_size)))
    per_epoch = {"epochs": 1, "samples": n_train, "steps": steps_per_epoch}[unit]
    per_epoch_max = {"epochs": 1, "samples": n_train, "steps": most_steps}[unit]
    max_t = int(base.epochs * per_epoch_max)
    warmup = max(_values(space, "warmup_epochs", base.warmup_epochs))
    cosine = "cosine" in _values(space, "scheduler", base.scheduler)
    warmup_units = math.ceil(warmup * per_epoch) if cosine else 0
    min_samples = MIN_GRACE_STEPS * base.batch_size
    min_steps_units = {
        "epochs": math.ceil(min_samples / n_train),
        "samples": min_samples,
        "steps": MIN_GRACE_STEPS,
    }[unit]
    notes: list[str] = []
    problems: list[Problem] = []
    if opts.grace_period is None:
        grace = max(math.ceil(per_epoch), min_steps_units, warmup_units)
        cap = max(1, int(max_t // opts.reduction_factor))
        if grace > cap and opts.trial_scheduler in ("asha", "hyperband"):
            notes.append(
                f"the default grace period ({grace} {unit}: one epoch, {MIN_GRACE_STEPS} optimizer "
                f"steps and the warm-up) is more than --epochs allows for early stopping; using "
                f"{cap} {unit}. Train longer (--epochs) for trials to be judged later"
            )
            grace = cap
    else:
        grace = opts.grace_period
        if opts.trial_scheduler != "fifo" and grace < per_epoch_max:
            # Trials report once per epoch: rungs finer than that are skipped, and ASHA later
            # fills a skipped rung with a later, better-trained score.
            problems.append(
                Problem(
                    f"`--grace-period` {grace} {unit} is less than one epoch ({per_epoch_max:g} "
                    f"{unit}), and trials report once per epoch. Use --grace-period >= "
                    f"{per_epoch_max:g} (or leave it out)",
                    ["grace_period"],
                )
            )
        if opts.trial_scheduler in ("asha", "hyperband") and grace > max_t:
            problems.append(
                Problem(
                    f"`--grace-period` must be <= the budget of one trial ({max_t} {unit}, "
                    f"--epochs {base.epochs}), but got {grace}",
                    ["grace_period"],
                )
            )
    if opts.trial_scheduler != "fifo" and warmup_units and grace < warmup_units:
        problems.append(
            Problem(
                f"`--grace-period` {grace} {unit} is shorter than the lr warm-up "
                f"(--warmup-epochs {warmup} = {warmup_units} {unit}): trials would be judged "
                f"before their learning rate is up. Use --grace-period >= {warmup_units} (or "
                "leave it out), or lower --warmup-epochs",
                ["grace_period", "warmup_epochs"],
            )
        )
    if problems:
        raise ConfigError(problems)
    interval = opts.perturbation_interval or grace
    return Budget(unit, BUDGET_ATTRS[unit], per_epoch, max_t, grace, interval, tuple(notes))


class _GracefulHyperBand(HyperBandScheduler):
    """HyperBand whose most aggressive bracket starts at the grace period, not at 1 unit.

    Ray's HyperBand derives its brackets from `max_t` alone (the smallest starts at
    ``max_t / eta**s_max`` ~ 1 unit); fewer brackets keep every first rung at >= `grace`.
    """

    def __init__(self, *, grace_period: int, **kwargs) -> None:
        super().__init__(**kwargs)
        ratio = max(self._max_t_attr / max(grace_period, 1), 1.0)
        self._s_max_1 = int(math.floor(np.log(ratio) / np.log(self._eta) + 1e-9)) + 1


def tune_domain(dist: BaseDistribution):
    """The Ray Tune domain sampling what an Optuna distribution samples (for PBT's population)."""
    if isinstance(dist, CategoricalDistribution):
        return tune.choice(list(dist.choices))
    if isinstance(dist, IntDistribution):
        if dist.log:
            return tune.lograndint(dist.low, dist.high + 1)
        return tune.qrandint(dist.low, dist.high, dist.step)
    if isinstance(dist, FloatDistribution):
        if dist.log:
            return tune.loguniform(dist.low, dist.high)
        if dist.step is not None:
            return tune.quniform(dist.low, dist.high, dist.step)
        return tune.uniform(dist.low, dist.high)
    raise TypeError(f"no Ray Tune domain for {dist!r}")


def pbt_mutations(space: SearchSpace) -> dict:
    """What PBT may perturb: every searched field except the architecture (a checkpoint's
    weights only fit the architecture they were trained with). Augmentation strengths are
    training fields: a population with them searched learns an augmentation schedule
    (Population Based Augmentation, Ho et al. 2019)."""
    fixed_shape = set(arch_fields(space.model))
    return {n: tune_domain(d) for n, d in space.params.items() if n not in fixed_shape}


def keep_inside_space(config: dict, *, space: SearchSpace) -> dict:
    """PBT's explore step with every numeric value put back inside its distribution.

    Ray's PBT multiplies a continuous value by 0.8 or 1.2 with no bounds: an augmentation
    strength or a label smoothing would leave its range and fail the trial's config. Values are
    clipped to [low, high] and rounded to the distribution's step.
    """
    for name, dist in space.params.items():
        if name not in config or not isinstance(dist, (FloatDistribution, IntDistribution)):
            continue
        value = min(max(config[name], dist.low), dist.high)
        if dist.step is not None:
            value = dist.low + round((value - dist.low) / dist.step) * dist.step
            value = min(value, dist.high)
        config[name] = int(round(value)) if isinstance(dist, IntDistribution) else float(value)
    return config


def build_scheduler(
    opts: SearchOptions,
    budget: Budget | None,
    *,
    space: SearchSpace | None = None,
):
    """The trial scheduler `opts` names, on `budget` (None or FIFO: every trial runs to its end)."""
    kind = "fifo" if opts.single_run or budget is None else opts.trial_scheduler
    if kind == "fifo":
        return tune.schedulers.FIFOScheduler()
    common = dict(time_attr=budget.attr)  # metric and mode come from the TuneConfig
    if kind == "asha":
        return tune.schedulers.ASHAScheduler(
            max_t=budget.max_t,
            grace_period=budget.grace,
            reduction_factor=opts.reduction_factor,
            **common,
        )
    if kind == "hyperband":
        return _GracefulHyperBand(
            grace_period=budget.grace,
            max_t=budget.max_t,
            reduction_factor=opts.reduction_factor,
            **common,
        )
    mutations = pbt_mutations(space) if space is not None else {}
    if not mutations:
        raise ConfigError(
            ["`--trial-scheduler pbt` needs a searched field outside the architecture (lr, ...)"]
        )
    return tune.schedulers.PopulationBasedTraining(
        perturbation_interval=budget.interval,
        hyperparam_mutations=mutations,
        custom_explore_fn=functools.partial(keep_inside_space, space=space),
        synch=False,
        **common,
    )
