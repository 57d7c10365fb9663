"""Run the one training loop under a Ray Train `TorchTrainer`: DDP over sharded data.

Each worker opens the run's `TrialData` where it runs: its node's object-store copy (every worker
on a node maps the same one) or, in stream mode, only its own shards. Rank 0 attaches
checkpoints; Ray keeps the best `keep_checkpoints`. `max_failures` (``--worker-failures``) lets
Train restart a worker group that lost a rank from the run's latest checkpoint; a worker group
that cannot be placed fails the run after `WORKER_GROUP_START_RETRIES` retries. Every epoch's
metrics carry the worker group's placement group id (`signray.tuning.placement_groups`), so a
driver can free it if the run is killed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from signray.config import TrainConfig
from signray.errors import ConfigError
from signray.io import copy_file
from signray.layout import CHECKPOINT_FILE, METRIC, MODE, RunFiles
from signray.storage import Location, RemotePath, filesystem_and_path
from signray.training.device import release_device_memory
from signray.training.loop import train_loop
from signray.tuning.placement_groups import PG_METRIC, current_placement_group_id
from signray.tuning.reporters import RayReporter
from signray.tuning.resources import WORKER_GROUP_START_RETRIES, TrialShape
from signray.tuning.trial_data import TrialData

__all__ = [
    "POLL_INTERVAL_ENV",
    "export_checkpoints",
    "run_torch_trainer",
    "scaling_config",
    "set_train_environment",
]

# How often a Train controller polls its workers: it sees a report, a worker group that has
# started, or the end of the run only then. Ray's default, 2 s, made a 3-epoch two-worker run
# take 18.5 s to fit on 2 cores, 0.5 s made it 13 s (measured with `signray.tune --single-run
# --workers-per-trial 2 --epochs 3 --smoke-test --model iv3_gru`); a poll is one cheap call
# per worker. Read by each controller when it starts.
POLL_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
POLL_INTERVAL_S = 0.5


def set_train_environment() -> None:
    """Ray Train settings read from the environment (unless the user set them); call before
    Ray starts: the cluster's workers inherit them (`signray.tuning.cluster`)."""
    os.environ.setdefault(POLL_INTERVAL_ENV, str(POLL_INTERVAL_S))


def _train_worker(config: dict[str, Any]) -> None:
    import ray.train.torch

    cfg: TrainConfig = config["cfg"]
    data: TrialData = config["data"]
    reporter = RayReporter(
        ray.train.report,
        ray.train.get_checkpoint,
        rank=ray.train.get_context().get_world_rank(),
        total_epochs=cfg.epochs,
        progress=config["progress"],
        fallback_resume=cfg.resume,
        tags={PG_METRIC: current_placement_group_id()},
    )
    try:
        train_loop(cfg, reporter, data.open(), device=ray.train.torch.get_device())
    finally:
        release_device_memory()


def scaling_config(
    cfg: TrainConfig, cpus_per_worker: float = 1, gpus_per_worker: float | None = None
) -> ScalingConfig:
    """`cfg.ray_workers` workers, each with `cpus_per_worker` CPUs and, with `use_gpu`, one whole
    GPU (`gpus_per_worker`); a fraction (NCCL needs one card per rank) or more than one (a rank
    trains on one) is refused."""
    shape = TrialShape.for_config(cfg, cpus_per_worker, gpus_per_worker)
    if problems := shape.problems():
        raise ConfigError(problems)
    return ScalingConfig(
        num_workers=cfg.ray_workers,
        use_gpu=cfg.use_gpu,
        resources_per_worker=shape.worker_resources(),
    )


def run_torch_trainer(
    cfg: TrainConfig,
    data: TrialData,
    *,
    storage_path: str | os.PathLike | RemotePath,
    name: str,
    cpus_per_worker: float = 1,
    gpus_per_worker: float | None = None,
    keep_checkpoints: int = 2,
    max_failures: int = 0,
    callbacks: list | None = None,
    progress: bool = True,
) -> ray.train.Result:
    """Fit `cfg` on `cfg.ray_workers` workers, each opening `data` where it runs."""
    filesystem, path = filesystem_and_path(storage_path)
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"cfg": cfg, "data": data, "progress": progress},
        scaling_config=scaling_config(cfg, cpus_per_worker, gpus_per_worker),
        run_config=RunConfig(
            name=name,
            storage_path=path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(
                num_to_keep=keep_checkpoints,
                checkpoint_score_attribute=METRIC,
                checkpoint_score_order=MODE,
            ),
            failure_config=FailureConfig(
                max_failures=max_failures, controller_failure_limit=WORKER_GROUP_START_RETRIES
            ),
            callbacks=callbacks,
        ),
    )
    return trainer.fit()


def export_checkpoints(
    result: ray.train.Result, output_dir: str | os.PathLike | RemotePath, class_name: str
) -> tuple[Location | None, Location | None]:
    """Copy the run's best and latest checkpoints to `{ModelName}_best.pt` / `_last.pt`."""
    files = RunFiles(output_dir, class_name)
    exported: list[Location | None] = []
    for checkpoint, target in (
        (result.get_best_checkpoint(METRIC, MODE) if result.best_checkpoints else None, files.best),
        (result.checkpoint, files.last),
    ):
        if checkpoint is None:
            exported.append(None)
            continue
        with checkpoint.as_directory() as folder:
            exported.append(copy_file(Path(folder) / CHECKPOINT_FILE, target))
    return exported[0], exported[1]
