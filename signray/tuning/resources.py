"""What one trial reserves (its shape: N workers x CPUs and GPUs), the rules a shape must follow,
and whether a cluster can run it. Importing this module starts nothing: the plan checks shapes
before Ray starts, and the driver compares the plan with the cluster it joined.

Rules:

- N > 1 (DDP, a TorchTrainer per trial): every worker gets one whole GPU. Ray Train gives each
  worker ``gpus_per_trial / N``; half a GPU each would put two ranks on one card, which NCCL
  refuses ("Duplicate GPU detected"), and two each would leave one idle (a rank trains on one).
- N == 1: a fraction below 1 lets several trials share a card (``0.25`` = 4 trials per GPU); each
  trial then caps its memory at that share (`training.device.limit_gpu_memory`). More than one
  GPU is refused: one process trains on one device.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from signray.config import TrainConfig
from signray.config.search import SearchOptions
from signray.errors import ConfigError, Problem

__all__ = [
    "DRIVER_MEMORY_BYTES",
    "WORKER_GROUP_START_RETRIES",
    "TrialShape",
    "alive_nodes",
    "check_cluster_fits",
    "cluster_nodes",
]

# A multi-worker trial's own process only waits on `TorchTrainer.fit()`; it reserves no CPU (its
# workers do, in their own placement group) and this much logical memory instead, because a
# Tune trial must request some resource.
DRIVER_MEMORY_BYTES = 256 * 1024**2
_EPS = 1e-9
# Ray Train waits RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S (60 s) for a worker group's placement
# group, then retries; the retries count as controller failures, which Train v2 allows without
# limit by default (`FailureConfig.controller_failure_limit=-1`,
# `v2/_internal/execution/failure_handling/default.py`). The launcher's TorchTrainers fail after
# this many retries (5 minutes in all at the default timeout) instead of never.
WORKER_GROUP_START_RETRIES = 4

Resources = Mapping[str, float]

# The flags that set a shape's GPUs and its sizes, in the search and in a single DDP run.
_SHAPE_FLAGS = {
    "trial": (
        "--gpus-per-trial/--use-gpu",
        "--cpus-per-trial/--gpus-per-trial/--workers-per-trial",
    ),
    "training run": ("--use-gpu", "--ray-workers/--cpus-per-worker"),
}


@dataclass(frozen=True)
class TrialShape:
    """N workers sharing `cpus_per_trial` CPUs and `gpus_per_trial` GPUs."""

    workers: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0

    @classmethod
    def from_options(cls, o: SearchOptions) -> TrialShape:
        return cls(o.workers_per_trial or 1, o.cpus_per_trial, o.gpus_per_trial)

    @classmethod
    def for_config(
        cls, cfg: TrainConfig, cpus_per_worker: float = 1, gpus_per_worker: float | None = None
    ) -> TrialShape:
        """The workers a TorchTrainer of `cfg` reserves: `cfg.ray_workers` x (`cpus_per_worker`
        CPUs and, with `use_gpu`, `gpus_per_worker` GPUs, default 1)."""
        gpus = (gpus_per_worker or 1) * cfg.ray_workers if cfg.use_gpu else 0
        return cls(cfg.ray_workers, cpus_per_worker * cfg.ray_workers, gpus)

    @property
    def cpus_per_worker(self) -> float:
        return self.cpus_per_trial / self.workers

    @property
    def gpus_per_worker(self) -> float:
        return self.gpus_per_trial / self.workers

    @property
    def gpu_share(self) -> float | None:
        """The share of one card a GPU-sharing (one-worker, fractional) trial may use."""
        return self.gpus_per_trial if 0 < self.gpus_per_trial < 1 else None

    def describe(self) -> str:
        """``2 workers x (1 CPU, 1 GPU)``."""
        gpus = f", {self.gpus_per_worker:g} GPU" if self.gpus_per_trial else ""
        one = f"{self.cpus_per_worker:g} CPU{gpus}"
        return one if self.workers == 1 else f"{self.workers} workers x ({one})"

    def problems(self) -> list[Problem]:
        """Why this shape would fail or waste GPUs (flag names and the fix in each message)."""
        n, g = self.workers, self.gpus_per_trial
        fields = ("gpus_per_trial", "workers_per_trial")
        if n > 1 and g > 0 and abs(g / n - round(g / n)) > _EPS:
            return [
                Problem(
                    f"`--gpus-per-trial {g:g}` with `--workers-per-trial {n}` gives each DDP "
                    f"worker {g / n:g} GPU, but DDP workers need whole GPUs (two ranks on one "
                    f"card fail in NCCL: 'Duplicate GPU detected'). Use --gpus-per-trial "
                    f"{n * max(1, math.floor(g / n)):g} ({max(1, math.floor(g / n))} per worker), "
                    "or --workers-per-trial 1 to share GPUs between one-worker trials",
                    fields,
                )
            ]
        if n > 1 and g / n > 1 + _EPS:
            return [
                Problem(
                    f"`--gpus-per-trial {g:g}` with `--workers-per-trial {n}` gives each DDP "
                    f"worker {g / n:g} GPUs, but a worker trains on one GPU and the others "
                    f"would sit reserved and idle. Use --gpus-per-trial {n} (one per worker), or "
                    f"--workers-per-trial {math.ceil(g)} --gpus-per-trial {math.ceil(g)} to "
                    f"train on all {math.ceil(g)}",
                    fields,
                )
            ]
        if n == 1 and g > 1:
            return [
                Problem(
                    f"`--gpus-per-trial {g:g}` with one worker per trial would reserve {g:g} GPUs "
                    f"and train on one. Use --workers-per-trial {math.ceil(g)} --gpus-per-trial "
                    f"{math.ceil(g)} for DDP over {math.ceil(g)} GPUs, or --gpus-per-trial 1 "
                    "(or a fraction, to share a GPU between trials)",
                    fields,
                )
            ]
        return []

    def local_gpu_problems(self, what: str = "trial") -> list[Problem]:
        """Whether this machine has the GPUs one `what` needs (the cluster started here uses
        them); checked before Ray starts."""
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count >= math.ceil(self.gpus_per_trial - _EPS):
            return []
        has = "no CUDA GPU" if not count else f"{count} CUDA GPU(s)"
        return [
            Problem(
                f"a {what} needs {self.describe()} but this machine has {has} (join a GPU "
                f"cluster with --address or RAY_ADDRESS, or leave out {_SHAPE_FLAGS[what][0]})",
                ("gpus_per_trial",),
            )
        ]

    def trial_resources(self) -> dict[str, float]:
        """What Tune reserves for one trial (a multi-worker trial's workers reserve their own)."""
        if self.workers == 1:
            return {"CPU": self.cpus_per_trial, "GPU": self.gpus_per_trial}
        return {"CPU": 0, "GPU": 0, "memory": DRIVER_MEMORY_BYTES}

    def worker_resources(self) -> dict[str, float]:
        """What each Ray Train worker reserves."""
        out = {"CPU": self.cpus_per_worker}
        if self.gpus_per_trial:
            out["GPU"] = self.gpus_per_worker
        return out

    def trials_that_fit(self, nodes: Sequence[Resources]) -> int:
        """How many trials the nodes run at once; every worker must fit on one node."""
        need = self.worker_resources()
        workers = 0
        for node in nodes:
            workers += min(
                math.floor(node.get(name, 0.0) / amount + _EPS)
                for name, amount in need.items()
                if amount > 0
            )
        return workers // self.workers

    def cluster_problems(
        self, nodes: Sequence[Resources], where: str, what: str = "trial"
    ) -> list[Problem]:
        """Why the cluster `where` cannot run even one `what` ("trial" of a search, or "run" of
        `signray.train`: "training run") of this shape (empty: it can)."""
        if self.trials_that_fit(nodes) >= 1:
            return []
        total = {k: sum(n.get(k, 0.0) for n in nodes) for k in ("CPU", "GPU")}
        largest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
        has = f"{total['CPU']:g} CPUs and {total['GPU']:g} GPUs on {len(nodes)} node(s)"
        if len(nodes) > 1:
            has += (
                f"; the largest node has {largest.get('CPU', 0):g} CPUs and "
                f"{largest.get('GPU', 0):g} GPUs"
            )
        gpu_flags, sizes = _SHAPE_FLAGS[what]
        fix = (
            f"join a cluster with GPUs, or leave out {gpu_flags}"
            if self.gpus_per_trial and not total["GPU"]
            else f"lower {sizes}"
        )
        return [
            Problem(
                f"the cluster at {where} cannot run one {what}: a {what} needs "
                f"{self.describe()} (each worker on one node), but the cluster has {has}; {fix}",
                ("cpus_per_trial", "gpus_per_trial", "workers_per_trial"),
            )
        ]

    def concurrency_warning(self, max_concurrent: int | None, nodes: Sequence[Resources]) -> str:
        """A warning when --max-concurrent multi-worker trials do not fit ('' when they do).

        Tune queues one-worker trials itself; a multi-worker trial's workers are reserved by
        Ray Train, outside Tune's view, and wait for them until the launcher's bounded
        start-up retries (`WORKER_GROUP_START_RETRIES`) run out.
        """
        if self.workers == 1 or not max_concurrent:
            return ""
        fits = self.trials_that_fit(nodes)
        if max_concurrent <= fits:
            return ""
        cpus = sum(n.get("CPU", 0.0) for n in nodes)
        gpus = sum(n.get("GPU", 0.0) for n in nodes)
        return (
            f"WARNING: --max-concurrent {max_concurrent} trials of {self.describe()} do not fit "
            f"this cluster's {cpus:g} CPUs and {gpus:g} GPUs (room for {fits} at once); the "
            "extra trials' worker groups will wait for resources, and fail after "
            f"{WORKER_GROUP_START_RETRIES + 1} worker-group start timeouts (60 s each by default)"
        )


def check_cluster_fits(
    shape: TrialShape, address: str | None, max_concurrent: int | None = None, what: str = "trial"
) -> None:
    """Exit 2 (`ConfigError`) before anything is scheduled when the connected cluster cannot run
    one `what` of `shape`: Tune would leave it PENDING forever, and Ray Train would wait for its
    worker group. Warns when `max_concurrent` multi-worker trials do not fit at once."""
    nodes = cluster_nodes()
    if problems := shape.cluster_problems(nodes, address or "this machine", what):
        raise ConfigError(problems)
    if warning := shape.concurrency_warning(max_concurrent, nodes):
        print(warning, file=sys.stderr, flush=True)


def alive_nodes() -> list[dict]:
    """Every alive node of the connected Ray cluster, as `ray.nodes()` describes it."""
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def cluster_nodes() -> list[dict[str, float]]:
    """The total resources of every alive node of the connected Ray cluster."""
    return [dict(node["Resources"]) for node in alive_nodes()]
