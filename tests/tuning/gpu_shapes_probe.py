"""Run every trial shape on real Ray clusters with simulated GPUs; print what each worker got.

Used by tests/tuning/test_resources.py as ``python gpu_shapes_probe.py OUT_DIR``: a subprocess,
because these clusters declare GPUs the machine does not have (``num_gpus``), and one Python
process joins one cluster at a time. Workers and trials only report what Ray gave them
(`ray.get_gpu_ids()`, assigned resources, CUDA_VISIBLE_DEVICES), so no CUDA is needed.

- cluster A (4 CPUs, 4 GPUs): TorchTrainers of 2 x 1 and 4 x 1 GPUs, reserving what
  `launcher.scaling_config` reserves; four Tune trials of 1 x 1 GPU (`TrialSetup.resources()`).
- cluster B (4 CPUs, 1 GPU): four Tune trials of 1 x 0.25 GPU, each waiting at a barrier until
  all four run: the barrier only opens if they run at the same time on the one card.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import ray
from ray import tune

from signray.config import resolve_config
from signray.config.search import SearchOptions
from signray.tuning.cluster import init_ray
from signray.tuning.launcher import scaling_config
from signray.tuning.searcher import default_max_concurrent
from signray.tuning.trial import TrialSetup

BARRIER_TIMEOUT_S = 180


def _what_ray_gave() -> dict:
    return {
        "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
        "assigned": ray.get_runtime_context().get_assigned_resources(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "pid": os.getpid(),
    }


def _train_worker(config: dict) -> None:
    rank = ray.train.get_context().get_world_rank()
    record = {"rank": rank, **_what_ray_gave()}
    Path(config["out"], f"{config['shape']}_rank{rank}.json").write_text(json.dumps(record))


def _trainer_shape(out: Path, workers: int) -> None:
    from ray.train import RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cfg = resolve_config({"ray_workers": workers, "use_gpu": True, "batch_size": 8})
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"out": str(out), "shape": f"{workers}x1"},
        scaling_config=scaling_config(cfg, cpus_per_worker=1, gpus_per_worker=1),
        torch_config=TorchConfig(backend="gloo"),  # NCCL needs real GPUs; the shape is the point
        run_config=RunConfig(name=f"shape_{workers}x1", storage_path=str(out / "train")),
    )
    trainer.fit()


def _trial(config: dict) -> None:
    out, name = Path(config["out"]), config["name"]
    start = time.time()
    arrived = out / f"{name}_arrived_{config['i']}"
    arrived.touch()
    deadline = start + BARRIER_TIMEOUT_S
    while len(list(out.glob(f"{name}_arrived_*"))) < config["n"] and time.time() < deadline:
        time.sleep(0.1)
    together = len(list(out.glob(f"{name}_arrived_*"))) >= config["n"]
    record = {"i": config["i"], "start": start, "end": time.time(), "together": together}
    record.update(_what_ray_gave())
    (out / f"{name}_trial{config['i']}.json").write_text(json.dumps(record))


def _tune_shape(out: Path, name: str, setup: TrialSetup, n: int) -> None:
    trainable = tune.with_resources(_trial, setup.resources())
    tuner = tune.Tuner(
        trainable,
        param_space={
            "i": tune.grid_search(list(range(n))),
            "out": str(out),
            "name": name,
            "n": n,
        },  # fmt: skip
        run_config=tune.RunConfig(name=name, storage_path=str(out / "tune"), verbose=0),
    )
    tuner.fit()


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    base = resolve_config({})
    init_ray(num_cpus=4, num_gpus=4, dashboard=False, quiet=True)
    _trainer_shape(out, 2)
    _trainer_shape(out, 4)
    one_gpu = TrialSetup(base, str(out), workers=1, cpus_per_trial=1, gpus_per_trial=1)
    _tune_shape(out, "1x1", one_gpu, 4)
    ray.shutdown()

    init_ray(num_cpus=4, num_gpus=1, dashboard=False, quiet=True)
    concurrency = {
        f"{c:g}cpu_{g:g}gpu": default_max_concurrent(
            SearchOptions(workers_per_trial=1, cpus_per_trial=c, gpus_per_trial=g)
        )
        for c, g in ((1, 0.25), (0.5, 0.5), (1, 0))
    }
    (out / "default_max_concurrent.json").write_text(json.dumps(concurrency))
    quarter = TrialSetup(base, str(out), workers=1, cpus_per_trial=1, gpus_per_trial=0.25)
    _tune_shape(out, "1x0.25", quarter, 4)
    ray.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
