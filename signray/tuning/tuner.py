"""Assemble the Ray Tune experiment (trainable, searcher, scheduler, storage, reporting) for a
new search, or restore an interrupted one.

Ray writes to the same place signray reads: the experiment's own filesystem (local, or the
object store of an ``s3://``/``gs://``/``abfs://`` ``--storage-path``) is passed to Ray as
``storage_filesystem``. Tune keeps every checkpoint; `KeepBestCheckpoints` prunes them safely,
and `RemoveTrainPlacementGroups` frees the worker groups of multi-worker trials Tune stopped.
"""

from __future__ import annotations

import functools
import os

from ray import tune

from signray.config.search import SearchOptions
from signray.config.search_space import SearchSpace
from signray.layout import METRIC, MODE, ExperimentFiles
from signray.storage import filesystem_and_path
from signray.tuning.launcher import set_train_environment
from signray.tuning.placement_groups import RemoveTrainPlacementGroups
from signray.tuning.retention import KeepBestCheckpoints, checkpoint_period_s
from signray.tuning.schedulers import Budget, build_scheduler, tune_domain
from signray.tuning.searcher import build_searcher, default_max_concurrent, suggestions_ahead
from signray.tuning.tracking import tracking_callbacks
from signray.tuning.trial import TrialSetup, make_trainable
from signray.tuning.trial_data import TrialData

__all__ = ["build_tuner", "can_restore", "restore_tuner", "set_tune_environment"]

# Seconds between two prints of the trial table.
REPORT_EVERY_S = 15.0


def _progress_reporter(params: list[str]):
    """The trial table, finished trials sorted by the metric while every one of them has it: a
    stop (a time budget, a stopper) leaves pending trials TERMINATED without a metric, which
    Ray 2.60's sort cannot compare (TypeError that ends the search)."""
    from ray.tune import CLIReporter
    from ray.tune.experiment import Trial

    class Reporter(CLIReporter):
        def report(self, trials, done, *sys_info):
            self._sort_by_metric = all(
                self._metric in t.last_result for t in trials if t.status == Trial.TERMINATED
            )
            super().report(trials, done, *sys_info)

    return Reporter(
        metric_columns={
            "epoch": "epoch",
            "val_gloss_acc": "val_gloss",
            "best_val_gloss_acc": "best_gloss",
            "val_cat_acc": "val_cat",
            "epoch_seconds": "s/epoch",
        },
        parameter_columns=params,
        max_report_frequency=REPORT_EVERY_S,
        sort_by_metric=True,  # metric and mode come from the TuneConfig
        # Ray's default reads the global verbosity when the reporter is built (3 in a fresh
        # process, what an earlier search left otherwise): the table every period, whatever ran.
        print_intermediate_tables=True,
    )


def set_tune_environment() -> None:
    """Tune settings read from the environment; call before Ray starts (workers inherit it)."""
    # A reused actor waits this long for the finished trial's thread before the next trial
    # starts in it (Ray's default, 2 s, is short for a trial that frees its memory or tears
    # down a TorchTrainer; a failed reset errors the next trial). Read by every local worker.
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
    # The classic reporter prints the trial table at a fixed, readable rate; the new output
    # engine prints every trial result. Users can still choose with RAY_AIR_NEW_OUTPUT.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Each trial checkpoints every epoch and keeps its best K, which forces an experiment-state
    # snapshot each time; on short epochs Tune warns about that frequency every few seconds.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    checkpoint_period_s()  # a fixed snapshot period, which checkpoint pruning relies on
    set_train_environment()  # multi-worker trials' TorchTrainers


def _run_config(
    files: ExperimentFiles, opts: SearchOptions, params: list[str], callbacks: list, stop
) -> tune.RunConfig:
    set_tune_environment()
    # PBT copies a better trial's checkpoint of the perturbation time: keep enough that it
    # still exists when the worse trial restores it.
    pbt = bool(params) and opts.trial_scheduler == "pbt"
    filesystem, parent = filesystem_and_path(files.root.parent)
    return tune.RunConfig(
        name=files.name,
        storage_path=parent,
        storage_filesystem=filesystem,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=None,  # KeepBestCheckpoints prunes (see signray.tuning.retention)
            checkpoint_score_attribute=METRIC,
            checkpoint_score_order=MODE,
        ),
        failure_config=tune.FailureConfig(max_failures=opts.max_failures),
        progress_reporter=_progress_reporter(params),
        callbacks=[
            *tracking_callbacks(files.root, mlflow=opts.mlflow),
            KeepBestCheckpoints(files.root, max(opts.keep_checkpoints, 4 if pbt else 1)),
            RemoveTrainPlacementGroups(),
            *callbacks,
        ],
        stop=stop,
        verbose=1,
    )


def _ended_on_its_own(experiment_dir: str, trial_id: str) -> bool:
    """The trial's loop returned on its own (it left its done marker); picklable by reference."""
    return ExperimentFiles(experiment_dir).done_marker(trial_id).is_file()


def _trial_name(trial) -> str:
    return ExperimentFiles.trial_dirname(trial.trial_id)


def build_tuner(
    space: SearchSpace | None,
    setup: TrialSetup,
    data: TrialData,
    opts: SearchOptions,
    *,
    budget: Budget | None = None,
    storage=None,
    study_name: str | None = None,
    callbacks: list | None = None,
    stop: tune.Stopper | dict | None = None,
) -> tune.Tuner:
    """A Tuner for a search (`space` with searched fields) or one trial (`opts.single_run`).

    The scheduler counts training in `budget` (FIFO without one); the searcher records into the
    Optuna study `study_name` of `storage` (see `signray.tuning.study`). `callbacks` and `stop`
    go to the RunConfig (the benchmarks' clocks and budget stoppers). One-worker trials reuse
    their actors: the next trial starts in the finished trial's process, which the trainable
    resets (`signray.tuning.trial`), instead of a new Python process importing torch.
    """
    max_t = setup.base.epochs
    searching = not opts.single_run and space is not None and bool(space.params)
    # HyperBand pauses and resumes trials in step; with reused actors it can stall (Ray
    # #37605, #39157; /work/notes measured a hang), so its trials get their own processes.
    reuse = setup.workers == 1 and not (searching and opts.trial_scheduler == "hyperband")
    common = dict(metric=METRIC, mode=MODE, trial_name_creator=_trial_name,
                  trial_dirname_creator=_trial_name, reuse_actors=reuse,
                  time_budget_s=opts.time_budget_s)  # fmt: skip
    param_space = None
    if searching and opts.trial_scheduler == "pbt":
        # PBT explores by itself (no Optuna): it samples the population from the space and
        # perturbs it; the space's points_to_evaluate start the population.
        from ray.tune.search import BasicVariantGenerator

        param_space = {name: tune_domain(d) for name, d in space.params.items()}
        points = [dict(p) for p in space.points_to_evaluate] or None
        tune_config = tune.TuneConfig(
            num_samples=opts.num_samples,
            search_alg=BasicVariantGenerator(
                points_to_evaluate=points, random_state=setup.base.seed
            ),
            scheduler=build_scheduler(opts, budget, space=space),
            max_concurrent_trials=opts.max_concurrent,
            **common,
        )
    elif searching:
        fits = default_max_concurrent(opts)
        limited = opts.replace(max_concurrent=opts.max_concurrent or fits)
        ahead = suggestions_ahead(setup.workers, limited.max_concurrent, fits)
        searcher = build_searcher(
            space, limited, max_t=max_t, seed=setup.base.seed, storage=storage,
            study_name=study_name, ahead=ahead,
            ended_on_its_own=functools.partial(_ended_on_its_own, str(setup.files.root)),
        )  # fmt: skip
        tune_config = tune.TuneConfig(
            num_samples=opts.num_samples,
            search_alg=searcher,
            scheduler=build_scheduler(opts, budget, space=space),
            **common,
        )
    else:
        tune_config = tune.TuneConfig(
            num_samples=1, scheduler=tune.schedulers.FIFOScheduler(), **common
        )
    params = list(space.params) if searching else []
    return tune.Tuner(
        make_trainable(setup, data),
        param_space=param_space,
        tune_config=tune_config,
        run_config=_run_config(setup.files, opts, params, callbacks or [], stop),
    )


def can_restore(files: ExperimentFiles) -> bool:
    filesystem, path = filesystem_and_path(files.root)
    return tune.Tuner.can_restore(path, storage_filesystem=filesystem)


def restore_tuner(
    files: ExperimentFiles, setup: TrialSetup, data: TrialData, *, retry_errored: bool = False
) -> tune.Tuner:
    """Continue an interrupted experiment: finished trials are kept, unfinished ones resume
    from their latest checkpoints. Errored trials keep their error (it may be deterministic: a
    NaN loss, a config that cannot be built) unless `retry_errored`: then they resume from their
    latest checkpoints with their retries again. A time budget continues with what is left of
    it (Tune restores its own budget clock)."""
    set_tune_environment()
    filesystem, path = filesystem_and_path(files.root)
    return tune.Tuner.restore(
        path,
        trainable=make_trainable(setup, data),
        resume_unfinished=True,
        resume_errored=retry_errored,
        storage_filesystem=filesystem,
    )
