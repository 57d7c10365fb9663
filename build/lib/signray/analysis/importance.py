"""Hyperparameter importance: an in-memory Optuna study rebuilt from the experiment's trials,
with the distributions the search really sampled from (saved in the experiment's state).

Works without Ray and without the searcher's own state, on experiments copied from a cluster.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator

from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from signray.analysis.experiment import Experiment, TrialRun
from signray.config.distributions import contains
from signray.layout import METRIC, Status

__all__ = ["MIN_COMPLETE_ONLY", "MIN_IMPORTANCE_TRIALS", "param_importances", "study_from_trials"]

# Fewer usable trials than this and importances are noise; the report says so instead.
MIN_IMPORTANCE_TRIALS = 4
# With fewer trials that ran all epochs, scheduler-stopped trials are ranked too (at the score
# they reached): under ASHA most trials stop early, and they were stopped for doing worse.
MIN_COMPLETE_ONLY = 8


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Silence Optuna's INFO lines without changing them for the rest of the process."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _value(dist: BaseDistribution, value):
    if isinstance(dist, CategoricalDistribution):
        return next(c for c in dist.choices if contains(CategoricalDistribution([c]), value))
    return int(round(float(value))) if isinstance(dist, IntDistribution) else float(value)


def study_from_trials(
    trials: list[TrialRun],
    distributions: dict[str, BaseDistribution],
    *,
    metric: str = METRIC,
    stopped_as_complete: bool = False,
):
    """An in-memory Optuna study with one trial per scored trial (`create_trial` + `add_trial`).

    Only parameters that vary are kept (a constant has no importance). Trials the scheduler
    stopped (or left unfinished) become PRUNED, which Optuna's importance evaluators skip, unless
    `stopped_as_complete`. Errored trials, unscored ones and values outside the space are left out.
    """
    import optuna

    usable = [
        t
        for t in trials
        if t.status != Status.ERROR
        and not math.isnan(t.best(metric))
        and all(contains(d, t.params.get(p)) for p, d in distributions.items())
    ]
    varying = {
        p: d for p, d in distributions.items() if len({str(t.params[p]) for t in usable}) > 1
    }
    with _quiet_optuna():
        study = optuna.create_study(direction="maximize")
    for t in usable:
        value = t.best(metric)
        pruned = t.status in (Status.STOPPED_EARLY, Status.UNFINISHED) and not stopped_as_complete
        study.add_trial(
            optuna.trial.create_trial(
                params={p: _value(d, t.params[p]) for p, d in varying.items()},
                distributions=varying,
                value=None if pruned else value,
                intermediate_values={0: value} if pruned else None,
                state=optuna.trial.TrialState.PRUNED
                if pruned
                else optuna.trial.TrialState.COMPLETE,
            )
        )
    return study


def param_importances(exp: Experiment, metric: str = METRIC) -> tuple[dict[str, float], str]:
    """(importances, note). Empty importances with a note when they cannot be trusted."""
    import optuna

    if not exp.params:
        return {}, "No searched hyperparameters were found (single-config run)."
    if not exp.distributions:
        return {}, (
            f"The experiment records no search space ({exp.files.DRIVER_STATE} is missing), so "
            "importances cannot be computed."
        )
    study = study_from_trials(exp.trials, exp.distributions, metric=metric)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    note = f"{len(complete)} complete trials"
    if len(complete) < MIN_COMPLETE_ONLY:
        pruned = len(study.get_trials(states=(optuna.trial.TrialState.PRUNED,)))
        if len(complete) + pruned < MIN_IMPORTANCE_TRIALS:
            return {}, (
                f"Too few trials for hyperparameter importance: {len(complete) + pruned} usable "
                f"(at least {MIN_IMPORTANCE_TRIALS} needed). Run more trials (--num-samples)."
            )
        if pruned:
            study = study_from_trials(
                exp.trials, exp.distributions, metric=metric, stopped_as_complete=True
            )
            note = (
                f"{len(complete) + pruned} trials, including {pruned} stopped early by the "
                "scheduler (scored by their best accuracy before the stop)"
            )
        note += f"; with under {MIN_COMPLETE_ONLY} full trials, treat it as a rough guide"
    if not study.trials or not study.trials[0].distributions:
        return {}, "Every searched hyperparameter had one value in all trials: nothing to rank."
    try:
        with warnings.catch_warnings(), _quiet_optuna():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as err:
        return {}, f"Optuna could not compute importances: {err}"
    return dict(importances), f"optuna.importance.get_param_importances on {note}."
