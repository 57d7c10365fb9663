"""The video front end on Ray Data: the list of videos is the dataset, and decoding, keypoints
and features are three stages with their own workers, so CPU decoding, CPU keypoints and GPU
features run at the same time on different clips.

- decode: Ray tasks (`signray.video.stages.decode`), each one video, yielding its frames in
  blocks of ``--chunk-frames`` (a clip never sits in memory whole). They reserve no CPU:
  decoding costs a small part of what keypoints cost, and a reserved core would sit idle on
  small machines; ``--decode-workers`` caps how many run at once.
- keypoints: a fixed pool of actors of one CPU each, each holding a MediaPipe Holistic graph.
- features: a fixed pool of actors holding InceptionV3, one GPU each when the cluster has GPUs
  (``--gpus-per-worker``), else on CPUs.

Ray Data streams blocks between the stages with backpressure (a stage that falls behind holds
back the ones before it, within the object store's budget) and shows its progress. The rows come
back to this driver in the order they finish, where `on_row` puts each clip together; failures
travel as error rows, so one bad video never stops the dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray

from signray.config.extract import ExtractConfig
from signray.video.sources import Job
from signray.video.stages import Features, Keypoints, decode, unbatch

__all__ = ["Pools", "cluster_resources", "plan_pools", "run_pipeline"]


@dataclass(frozen=True)
class Pools:
    """How many workers each stage gets, and what each feature worker reserves."""

    decode: int
    keypoints: int
    features: int
    gpus_per_feature_worker: float
    feature_cpus: float

    def describe(self) -> str:
        device = f"{self.gpus_per_feature_worker:g} GPU" if self.gpus_per_feature_worker else "CPU"
        return (
            f"{self.decode} decoding task(s), {self.keypoints} keypoint actor(s) (1 CPU each)"
            + (f", {self.features} feature actor(s) ({device} each)" if self.features else "")
        )


def plan_pools(cfg: ExtractConfig, cpus: float, gpus: float) -> Pools:
    """Stage sizes from the flags, else from the cluster: features get the GPUs (or one CPU
    worker), keypoints the CPUs that are left."""
    per_gpu = cfg.gpus_per_worker if cfg.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    features = 0
    if cfg.features:
        default = max(1, int(gpus // per_gpu)) if per_gpu else 1
        features = cfg.feature_workers or default
    feature_cpus = 1.0 if features and not per_gpu else (0.5 if features else 0.0)
    keypoints = cfg.keypoint_workers or max(1, int(cpus - features * feature_cpus))
    decode = cfg.decode_workers or max(1, int(cpus) // 4)
    return Pools(decode, keypoints, features, per_gpu if features else 0.0, feature_cpus)


def run_pipeline(
    jobs: Sequence[Job],
    cfg: ExtractConfig,
    pools: Pools,
    weights: bytes | None,
    on_row: Callable[[dict[str, Any]], None],
) -> None:
    """Run every job through the three stages; `on_row` gets each finished block (a dict)."""
    items = [{"name": j.name, "source": j.source} for j in jobs]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        decode,
        fn_kwargs={"cfg": cfg},
        batch_size=1,
        compute=ray.data.TaskPoolStrategy(size=pools.decode),
        num_cpus=0,
    )
    ds = ds.map_batches(
        Keypoints,
        fn_constructor_kwargs={"cfg": cfg},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=pools.keypoints),
        num_cpus=1,
    )
    if cfg.features:
        device = "cuda" if pools.gpus_per_feature_worker else "cpu"
        ds = ds.map_batches(
            Features,
            fn_constructor_kwargs={"cfg": cfg, "weights": weights, "device": device},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=pools.features),
            num_cpus=pools.feature_cpus,
            num_gpus=pools.gpus_per_feature_worker or None,
        )
    for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0):
        on_row(unbatch(batch))


def cluster_resources() -> tuple[float, float]:
    """(CPUs, GPUs) of the cluster this driver is connected to."""
    res = ray.cluster_resources()
    return float(res.get("CPU", 0)), float(res.get("GPU", 0))
