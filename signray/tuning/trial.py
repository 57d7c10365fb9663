"""The Ray Tune trainable: one trial trains one sampled config with the one training loop.

- ``workers == 1``: the loop runs inside the trial's own process and reports through
  `RayReporter(ray.tune.report, ray.tune.get_checkpoint)`. No TorchTrainer: on a small machine
  its worker group, placement group and health checks cost tens of seconds per trial, and an
  early-stopped trial frees its resources the moment Tune ends the trial's actor.
- ``workers > 1``: the trial is a light driver that runs a Ray Train `TorchTrainer` (DDP over
  sharded data, metrics reduced across ranks in the loop) named after the experiment and the trial
  id, and forwards rank 0's reports to Tune with `TuneReportCallback`. The Train run keeps its own
  best-K checkpoints under ``<experiment>/train_runs/``; a retried or resumed trial reuses the same
  run name, so Ray Train restores it from its latest checkpoint.

One-worker trials run in reused actors (`TuneConfig(reuse_actors=True)`): the next trial starts
in the process of the last, saving a Python start and the torch/signray imports (~4 s on 2
cores). Nothing carries over: the loop seeds every generator and sets every determinism flag
itself, threads are set per trial, and the trial frees what it allocated (GPU memory included)
when it ends.

Data never passes through the driver: trials receive a small `TrialData` and open it where they
run (`signray.tuning.trial_data`): their node's object-store copy, shared zero-copy by every trial
on the node, or, in stream mode, each rank's own shards.

A sampled config that cannot be built fails its trial with the config's own error message; the
other trials carry on.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ray import tune

from signray.config import TrainConfig, resolve_config
from signray.fields import tidy_params
from signray.io import write_text
from signray.layout import ExperimentFiles
from signray.storage import RemotePath
from signray.training.costs import model_costs
from signray.training.device import limit_gpu_memory, release_device_memory
from signray.training.loop import train_loop
from signray.tuning.reporters import RayReporter
from signray.tuning.resources import TrialShape
from signray.tuning.trial_data import TrialData

__all__ = ["TrialSetup", "make_trainable", "trial_config"]


@dataclass(frozen=True)
class TrialSetup:
    """Everything a trial needs besides its sampled values; small and picklable."""

    base: TrainConfig  # the resolved base config, search-space fixed values applied
    experiment_dir: str | RemotePath  # absolute, or an object store (pickled with its endpoint)
    workers: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    keep_checkpoints: int = 2
    worker_failures: int = 0  # Train restarts of a multi-worker trial's worker group
    cost_metrics: tuple[str, ...] = ()  # measured once per trial, reported with every epoch

    @property
    def files(self) -> ExperimentFiles:
        return ExperimentFiles(self.experiment_dir)

    @property
    def shape(self) -> TrialShape:
        return TrialShape(self.workers, self.cpus_per_trial, self.gpus_per_trial)

    @property
    def cpus_per_worker(self) -> float:
        return self.shape.cpus_per_worker

    @property
    def gpus_per_worker(self) -> float:
        """Whole GPUs for DDP workers, the trial's share of one GPU for a one-worker trial."""
        return self.shape.gpus_per_worker

    def with_runtime(self) -> TrialSetup:
        """This setup with the base config's worker count, device and threads filled in."""
        base = self.base
        threads = base.num_threads or max(1, math.floor(self.cpus_per_worker))
        return dataclasses.replace(
            self,
            base=dataclasses.replace(
                base,
                ray_workers=self.workers,
                use_gpu=self.gpus_per_trial > 0,
                num_threads=threads,
                resume=None,
                output_dir=str(self.experiment_dir),
            ),
        )

    def resources(self) -> dict[str, float]:
        """What Tune reserves for one trial (see `TrialShape.trial_resources`)."""
        return self.shape.trial_resources()


def trial_config(sampled: Mapping[str, Any], setup: TrialSetup) -> TrainConfig:
    """The trial's full config: sampled values merged onto the base config, validated."""
    values = tidy_params(sampled)
    return resolve_config(values, setup.base, source=f"the sampled trial config {values}")


def _tune_report(metrics: dict[str, Any], checkpoint=None, *, extra: dict | None = None) -> None:
    if checkpoint is not None:
        checkpoint = tune.Checkpoint.from_directory(checkpoint.path)
    tune.report({**metrics, **(extra or {})}, checkpoint=checkpoint)


def _mark_done(setup: TrialSetup, result_summary: dict[str, Any]) -> None:
    write_text(
        setup.files.done_marker(tune.get_context().get_trial_id()), json.dumps(result_summary)
    )


def _run_trial(config: dict[str, Any], *, setup: TrialSetup, data: TrialData) -> None:
    # One line per saved checkpoint per epoch per trial drowns the trial table.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    cfg = trial_config(config, setup)
    start = time.perf_counter()
    if setup.workers == 1:
        if setup.gpus_per_trial:  # trials sharing a card cannot starve each other
            limit_gpu_memory(setup.shape.gpu_share or 1.0)  # (reused actors: reset each trial)
        splits = data.open()
        costs = model_costs(cfg, splits.val, list(setup.cost_metrics))  # on the trial's device
        reporter = RayReporter(
            functools.partial(_tune_report, extra=costs),
            tune.get_checkpoint,
            total_epochs=cfg.epochs,
            progress=False,
        )
        stopped: SystemExit | None = None
        try:
            result = train_loop(cfg, reporter, splits)
        except SystemExit as stop:  # Tune ended the trial (a scheduler, a stopper) in its report
            # Its traceback holds the loop's frame (model, optimizer, device batches): drop it,
            # or nothing the loop allocated could be freed before the next trial in this actor.
            stopped = stop.with_traceback(None)
        finally:
            del splits, reporter
        release_device_memory()  # the loop's frame is gone: a reused actor starts clean
        if stopped is not None:
            raise stopped
        summary = {"epochs_run": result.epochs_run, "stopped_by_loop": result.stopped_early}
    else:
        from ray.tune.integration.ray_train import TuneReportCallback

        from signray.tuning.launcher import run_torch_trainer

        trial_id = tune.get_context().get_trial_id()
        train_result = run_torch_trainer(
            cfg,
            data,
            storage_path=setup.files.train_runs,
            name=setup.files.train_run_name(trial_id),
            cpus_per_worker=setup.cpus_per_worker,
            gpus_per_worker=setup.gpus_per_worker or None,
            keep_checkpoints=setup.keep_checkpoints,
            max_failures=setup.worker_failures,
            callbacks=[TuneReportCallback()],
            progress=False,
        )
        last = train_result.metrics or {}
        summary = {"epochs_run": int(last.get("epoch", 0)), "stopped_by_loop": None}
    summary["seconds"] = time.perf_counter() - start
    _mark_done(setup, summary)


def make_trainable(setup: TrialSetup, data: TrialData) -> Callable:
    """The Tune trainable with its resources; `data` tells each trial where its data is."""
    setup = setup.with_runtime()
    trainable = tune.with_parameters(_trainable, setup=setup, data=data)
    return tune.with_resources(trainable, setup.resources())


def _trainable(config: dict[str, Any], setup: TrialSetup, data: TrialData) -> None:
    _run_trial(config, setup=setup, data=data)
