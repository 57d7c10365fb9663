"""Build and run the Ray Tune experiment: Optuna (TPE or random) + ASHA (or FIFO) over trials.

The searcher, scheduler and resources are assembled here; `signray.tune` parses flags and
validates everything before any of this runs. One metric drives everything: ``val_gloss_acc``,
maximised, with ``epoch`` as the time axis (it stays right when a trial resumes from a Ray Train
checkpoint, unlike Tune's own iteration counter).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from signray.launch.tracking import tracking_callbacks
from signray.launch.trial import TrialSetup, make_trainable
from signray.search_space import SearchSpace, to_tune

__all__ = [
    "METRIC",
    "MODE",
    "TIME_ATTR",
    "SearchOptions",
    "PruningAwareOptunaSearch",
    "build_searcher",
    "build_scheduler",
    "default_max_concurrent",
    "build_tuner",
    "restore_tuner",
]

METRIC = "val_gloss_acc"
MODE = "max"
TIME_ATTR = "epoch"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOptions:
    """Tune-level knobs (everything that is not part of a trial's `TrainConfig`)."""

    name: str
    storage_path: str  # absolute
    num_samples: int = 16
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1
    searcher: str = "tpe"  # tpe | random
    trial_scheduler: str = "asha"  # asha | fifo
    grace_period: int = 1
    reduction_factor: float = 2.0
    keep_checkpoints: int = 2
    max_failures: int = 0
    seed: int = 42
    single_run: bool = False
    mlflow: bool = False
    report_every_s: float = 15.0

    @property
    def experiment_dir(self) -> Path:
        return Path(self.storage_path) / self.name


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


def build_searcher(space: SearchSpace, opts: SearchOptions, max_t: int):
    """Optuna TPE (seeded; startup trials scaled to the budget) or Optuna random sampling."""
    import optuna

    if opts.searcher == "random":
        sampler = optuna.samplers.RandomSampler(seed=opts.seed)
    else:
        # TPE samples at random until it has this many finished trials; a few are enough to
        # start modelling, and with a small budget the default 10 would leave TPE unused.
        startup = min(10, max(2, opts.num_samples // 4))
        sampler = optuna.samplers.TPESampler(seed=opts.seed, n_startup_trials=startup)
    searcher = PruningAwareOptunaSearch(
        points_to_evaluate=[dict(p) for p in space.points_to_evaluate] or None,
        sampler=sampler,
        max_t=max_t,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=opts.max_concurrent or opts.num_samples)


def build_scheduler(opts: SearchOptions, max_t: int):
    if opts.trial_scheduler == "fifo" or opts.single_run:
        return tune.schedulers.FIFOScheduler()
    return tune.schedulers.ASHAScheduler(
        time_attr=TIME_ATTR,
        max_t=max_t,
        grace_period=opts.grace_period,
        reduction_factor=opts.reduction_factor,
    )


def default_max_concurrent(opts: SearchOptions) -> int:
    """How many trials the cluster can run at once, from its CPUs and GPUs.

    Tune accounts for one-worker trials itself; a multi-worker trial's workers are reserved by
    Ray Train, outside Tune's view, so without this limit Tune would start trials whose worker
    groups wait for resources until Train's start-up timeout.
    """
    resources = ray.cluster_resources()
    fits = [math.floor(resources.get("CPU", 0) / opts.cpus_per_trial + 1e-9)]
    if opts.gpus_per_trial:
        fits.append(math.floor(resources.get("GPU", 0) / opts.gpus_per_trial + 1e-9))
    return max(1, min(fits))


def _progress_reporter(space: SearchSpace | None, opts: SearchOptions):
    from ray.tune import CLIReporter

    params = list(space.params) if space is not None and not opts.single_run else []
    return CLIReporter(
        metric_columns={
            "epoch": "epoch",
            "val_gloss_acc": "val_gloss",
            "best_val_gloss_acc": "best_gloss",
            "val_cat_acc": "val_cat",
            "epoch_seconds": "s/epoch",
        },
        parameter_columns=params,
        max_report_frequency=opts.report_every_s,
        sort_by_metric=True,  # metric and mode come from the TuneConfig
    )


def _run_config(space: SearchSpace | None, opts: SearchOptions) -> tune.RunConfig:
    # The classic reporter prints the trial table at a fixed, readable rate; the new output
    # engine prints every trial result. Users can still choose with RAY_AIR_NEW_OUTPUT.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Each trial checkpoints every epoch and keeps its best K, which forces an experiment-state
    # snapshot each time; on short epochs Tune warns about that frequency every few seconds.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    return tune.RunConfig(
        name=opts.name,
        storage_path=opts.storage_path,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=opts.keep_checkpoints,
            checkpoint_score_attribute=METRIC,
            checkpoint_score_order=MODE,
        ),
        failure_config=tune.FailureConfig(max_failures=opts.max_failures),
        progress_reporter=_progress_reporter(space, opts),
        callbacks=tracking_callbacks(opts.experiment_dir, mlflow=opts.mlflow),
        verbose=1,
    )


def trial_name(trial) -> str:
    """Short trial names and folders (Tune's default packs every parameter into the name)."""
    return f"trial_{trial.trial_id}"


def build_tuner(
    space: SearchSpace | None, setup: TrialSetup, data_refs: list, opts: SearchOptions
) -> tune.Tuner:
    """A Tuner for a search (`space` with searched fields) or one trial (`opts.single_run`)."""
    max_t = setup.base.epochs
    trainable = make_trainable(setup, data_refs)
    max_concurrent = opts.max_concurrent or default_max_concurrent(opts)
    if opts.single_run or space is None or not space.params:
        tune_config = tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            num_samples=1,
            scheduler=tune.schedulers.FIFOScheduler(),
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        )
        param_space: dict[str, Any] = {}
    else:
        limited = dataclasses.replace(opts, max_concurrent=max_concurrent)
        tune_config = tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            num_samples=opts.num_samples,
            search_alg=build_searcher(space, limited, max_t),
            scheduler=build_scheduler(opts, max_t),
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        )
        param_space = to_tune(space)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune_config,
        run_config=_run_config(space, opts),
    )


def restore_tuner(path: str | Path, setup: TrialSetup, data_refs: list) -> tune.Tuner:
    """Continue an interrupted experiment: finished trials are kept, unfinished ones resume
    from their latest checkpoints, errored ones resume too (they get their retries again)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    return tune.Tuner.restore(
        str(path),
        trainable=make_trainable(setup, data_refs),
        resume_unfinished=True,
        resume_errored=True,
    )
