"""Assemble the Ray Tune experiment (trainable, searcher, scheduler, storage, reporting) for a
new search, or restore an interrupted one.

Ray writes to the same place signray reads: the experiment's own filesystem (local, or the
object store of an ``s3://``/``gs://``/``abfs://`` ``--storage-path``) is passed to Ray as
``storage_filesystem``. Tune keeps every checkpoint; `KeepBestCheckpoints` prunes them safely,
and `RemoveTrainPlacementGroups` frees the worker groups of multi-worker trials Tune stopped.
"""

from __future__ import annotations

import os

from ray import tune

from signray.config.search import SearchOptions
from signray.config.search_space import SearchSpace
from signray.layout import METRIC, MODE, ExperimentFiles
from signray.storage import filesystem_and_path
from signray.tuning.placement_groups import RemoveTrainPlacementGroups
from signray.tuning.retention import KeepBestCheckpoints, checkpoint_period_s
from signray.tuning.searcher import build_scheduler, build_searcher, default_max_concurrent
from signray.tuning.tracking import tracking_callbacks
from signray.tuning.trial import TrialSetup, make_trainable
from signray.tuning.trial_data import TrialData

__all__ = ["build_tuner", "can_restore", "restore_tuner"]

# Seconds between two prints of the trial table.
REPORT_EVERY_S = 15.0


def _progress_reporter(params: list[str]):
    from ray.tune import CLIReporter

    return CLIReporter(
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
    )


def _quiet_tune_output() -> None:
    # The classic reporter prints the trial table at a fixed, readable rate; the new output
    # engine prints every trial result. Users can still choose with RAY_AIR_NEW_OUTPUT.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Each trial checkpoints every epoch and keeps its best K, which forces an experiment-state
    # snapshot each time; on short epochs Tune warns about that frequency every few seconds.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    checkpoint_period_s()  # a fixed snapshot period, which checkpoint pruning relies on


def _run_config(files: ExperimentFiles, opts: SearchOptions, params: list[str]) -> tune.RunConfig:
    _quiet_tune_output()
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
            KeepBestCheckpoints(files.root, opts.keep_checkpoints),
            RemoveTrainPlacementGroups(),
        ],
        verbose=1,
    )


def _trial_name(trial) -> str:
    return ExperimentFiles.trial_dirname(trial.trial_id)


def build_tuner(
    space: SearchSpace | None, setup: TrialSetup, data: TrialData, opts: SearchOptions
) -> tune.Tuner:
    """A Tuner for a search (`space` with searched fields) or one trial (`opts.single_run`)."""
    max_t = setup.base.epochs
    searching = not opts.single_run and space is not None and bool(space.params)
    common = dict(metric=METRIC, mode=MODE, trial_name_creator=_trial_name,
                  trial_dirname_creator=_trial_name)  # fmt: skip
    if searching:
        limited = opts.replace(max_concurrent=opts.max_concurrent or default_max_concurrent(opts))
        tune_config = tune.TuneConfig(
            num_samples=opts.num_samples,
            search_alg=build_searcher(space, limited, max_t=max_t, seed=setup.base.seed),
            scheduler=build_scheduler(opts, max_t),
            **common,
        )
    else:
        tune_config = tune.TuneConfig(
            num_samples=1, scheduler=tune.schedulers.FIFOScheduler(), **common
        )
    params = list(space.params) if searching else []
    return tune.Tuner(
        make_trainable(setup, data),
        tune_config=tune_config,
        run_config=_run_config(setup.files, opts, params),
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
    latest checkpoints with their retries again."""
    _quiet_tune_output()
    filesystem, path = filesystem_and_path(files.root)
    return tune.Tuner.restore(
        path,
        trainable=make_trainable(setup, data),
        resume_unfinished=True,
        resume_errored=retry_errored,
        storage_filesystem=filesystem,
    )
