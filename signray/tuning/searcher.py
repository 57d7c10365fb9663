"""The searcher and the trial scheduler: Optuna (TPE or random) over the search space's own
Optuna distributions, and ASHA (or FIFO) on ``epoch``, maximising ``val_gloss_acc``.

`epoch` is the time axis: it stays right when a trial resumes from a checkpoint, unlike Tune's
own iteration counter.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import tune
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from signray.config.search import SearchOptions
from signray.config.search_space import SearchSpace
from signray.layout import METRIC, MODE, TIME_ATTR
from signray.tuning.resources import TrialShape, cluster_nodes

__all__ = [
    "PruningAwareOptunaSearch",
    "build_scheduler",
    "build_searcher",
    "default_max_concurrent",
]

logger = logging.getLogger(__name__)


class PruningAwareOptunaSearch(OptunaSearch):
    """`OptunaSearch` that tells Optuna which trials the scheduler stopped early: PRUNED.

    Ray's `OptunaSearch` runs Optuna with a `NopPruner` and reports every finished trial as
    COMPLETE with its last result. A trial ASHA stopped at epoch 1 would then enter TPE's model
    as a *final* score, as if its config could do no better than one epoch's accuracy; TPE would
    rank fast starters above configs that learn slowly but end higher, and it would treat the
    stopped config as fully explored. Optuna has a state for exactly this case, PRUNED, and TPE
    handles it: pruned trials are ranked behind complete ones by how far they got and then by
    their last intermediate value (``optuna.samplers.TPESampler``), which is what an early stop
    means.

    How a scheduler stop is recognised, without coupling to the scheduler: when a trial's result
    leads to a STOP decision, Tune does not pass that result to the searcher's `on_trial_result`
    but goes straight to `on_trial_complete` with it (``TuneController._process_trial_result``).
    So a completion whose ``epoch`` is newer than the last result the searcher saw, and below
    `max_t`, is a trial stopped before its last epoch. A trial whose training ends on its own
    (all epochs; or the loop's own ``early_stop``, after a result the searcher already saw), or
    that ASHA stops at `max_t`, stays COMPLETE. That final result is reported as an intermediate
    value first, so the pruned trial carries its last rung's score. Errors stay FAIL.
    """

    def __init__(self, *args: Any, max_t: int, time_attr: str = TIME_ATTR, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._max_t = max_t
        self._time_attr = time_attr
        self._last_step: dict[str, int] = {}
        self.pruned_trials: set[str] = set()

    def _step(self, result: dict) -> int | None:
        step = result.get(self._time_attr)
        return None if step is None else int(step)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list) or trial_id in self._completed_trials:
            return super().on_trial_result(trial_id, result)
        step = self._step(result)
        if step is None or self.metric not in result:
            return
        # A trial retried from an older checkpoint repeats epochs; Optuna keeps the first value.
        if step > self._last_step.get(trial_id, 0):
            self._ot_trials[trial_id].report(result[self.metric], step)
        self._last_step[trial_id] = max(step, self._last_step.get(trial_id, 0))

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        step = self._step(result) if result else None
        stopped_early = (
            not error
            and result is not None
            and step is not None
            and self.metric in result
            and step < self._max_t
            and step > self._last_step.get(trial_id, 0)
            and trial_id not in self._completed_trials
            and trial_id in self._ot_trials
        )
        if not stopped_early:
            return super().on_trial_complete(trial_id, result=result, error=error)
        from optuna.trial import TrialState

        ot_trial = self._ot_trials[trial_id]
        ot_trial.report(result[self.metric], step)
        try:
            self._ot_study.tell(ot_trial, None, state=TrialState.PRUNED)
        except Exception as exc:  # same tolerance as the parent (e.g. a NaN metric)
            logger.warning(exc)
        self.pruned_trials.add(trial_id)
        self._completed_trials.add(trial_id)


def build_searcher(space: SearchSpace, opts: SearchOptions, *, max_t: int, seed: int):
    """Optuna TPE (seeded; startup trials scaled to the budget) or Optuna random sampling,
    sampling the space's Optuna distributions directly, at most `opts.max_concurrent` at once."""
    import optuna

    if opts.searcher == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        # TPE samples at random until it has this many finished trials; a few are enough to
        # start modelling, and with a small budget the default 10 would leave TPE unused.
        startup = min(10, max(2, opts.num_samples // 4))
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    searcher = PruningAwareOptunaSearch(
        space=dict(space.params),
        metric=METRIC,
        mode=MODE,
        points_to_evaluate=[dict(p) for p in space.points_to_evaluate] or None,
        sampler=sampler,
        max_t=max_t,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=opts.max_concurrent or opts.num_samples)


def build_scheduler(opts: SearchOptions, max_t: int):
    """ASHA on `epoch` (`--grace-period`, `--reduction-factor`), or FIFO."""
    if opts.trial_scheduler == "fifo" or opts.single_run:
        return tune.schedulers.FIFOScheduler()
    return tune.schedulers.ASHAScheduler(
        time_attr=TIME_ATTR,
        max_t=max_t,
        grace_period=opts.grace_period,
        reduction_factor=opts.reduction_factor,
    )


def default_max_concurrent(opts: SearchOptions) -> int:
    """How many trials the cluster can run at once, from its nodes' CPUs and GPUs (with GPUs
    asked for, the GPUs usually decide: 4 trials per card at --gpus-per-trial 0.25).

    Tune accounts for one-worker trials itself; a multi-worker trial's workers are reserved by
    Ray Train, outside Tune's view, so without this limit Tune would start trials whose worker
    groups wait for resources until Train's start-up timeout.
    """
    return max(1, TrialShape.from_options(opts).trials_that_fit(cluster_nodes()))
