"""Run the one training loop under a Ray Train `TorchTrainer`: DDP over sharded data.

The driver validates and loads the data once and puts it in the object store; every worker on a
node maps the same copy. Rank 0 attaches checkpoints; Ray keeps the best `keep_checkpoints`.
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
from signray.data import PackedSplit
from signray.errors import ConfigError
from signray.io import copy_file
from signray.layout import CHECKPOINT_FILE, METRIC, MODE, RunFiles
from signray.training.device import release_device_memory
from signray.training.loop import train_loop
from signray.tuning.reporters import RayReporter
from signray.tuning.resources import TrialShape

__all__ = ["export_checkpoints", "run_torch_trainer", "scaling_config"]


def _train_worker(config: dict[str, Any]) -> None:
    import ray.train.torch

    cfg: TrainConfig = config["cfg"]
    train, val = ray.get(config["data"])
    reporter = RayReporter(
        ray.train.report,
        ray.train.get_checkpoint,
        rank=ray.train.get_context().get_world_rank(),
        total_epochs=cfg.epochs,
        progress=config["progress"],
        fallback_resume=cfg.resume,
    )
    try:
        train_loop(cfg, reporter, (train, val), device=ray.train.torch.get_device())
    finally:
        release_device_memory()


def scaling_config(
    cfg: TrainConfig, cpus_per_worker: float = 1, gpus_per_worker: float | None = None
) -> ScalingConfig:
    """`cfg.ray_workers` workers, each with `cpus_per_worker` CPUs and, with `use_gpu`, whole GPUs
    (`gpus_per_worker`, default 1); a fraction is refused (NCCL needs one card per rank)."""
    gpus = (gpus_per_worker or 1) * cfg.ray_workers if cfg.use_gpu else 0
    shape = TrialShape(cfg.ray_workers, cpus_per_worker * cfg.ray_workers, gpus)
    if problems := shape.problems():
        raise ConfigError(problems)
    return ScalingConfig(
        num_workers=cfg.ray_workers,
        use_gpu=cfg.use_gpu,
        resources_per_worker=shape.worker_resources(),
    )


def run_torch_trainer(
    cfg: TrainConfig,
    data: tuple[PackedSplit, PackedSplit] | list,
    *,
    storage_path: str | os.PathLike,
    name: str,
    cpus_per_worker: float = 1,
    gpus_per_worker: float | None = None,
    keep_checkpoints: int = 2,
    max_failures: int = 0,
    callbacks: list | None = None,
    progress: bool = True,
) -> ray.train.Result:
    """Fit `cfg` on `cfg.ray_workers` workers; `data` may be the splits or their object refs."""
    refs = data if isinstance(data, list) else [ray.put(split) for split in data]
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"cfg": cfg, "data": refs, "progress": progress},
        scaling_config=scaling_config(cfg, cpus_per_worker, gpus_per_worker),
        run_config=RunConfig(
            name=name,
            storage_path=str(Path(storage_path).resolve()),
            checkpoint_config=CheckpointConfig(
                num_to_keep=keep_checkpoints,
                checkpoint_score_attribute=METRIC,
                checkpoint_score_order=MODE,
            ),
            failure_config=FailureConfig(max_failures=max_failures),
            callbacks=callbacks,
        ),
    )
    return trainer.fit()


def export_checkpoints(
    result: ray.train.Result, output_dir: str | os.PathLike, class_name: str
) -> tuple[Path | None, Path | None]:
    """Copy the run's best and latest checkpoints to `{ModelName}_best.pt` / `_last.pt`."""
    files = RunFiles(output_dir, class_name)
    exported: list[Path | None] = []
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
