"""The data of a Ray run reaches trials without passing through the driver.

The driver only checks the data (`check_inputs`, bounded memory) and picks a mode:

- **memory**: one `SplitHolder` actor (`signray.tuning.holder`) per node that can run trial
  workers, pinned to its node,
  reads the splits from the files in bounded parts and ``ray.put``s each part. The holder owns
  the parts, so they live as long as it does (the driver's handle keeps it alive; a plain task's
  objects would die with the task). A trial or DDP rank finds its node's holder by node id and
  ``ray.get``s the parts: zero-copy, read-only views of the node's object store, one copy per
  node shared by all its trials. A node that joined after the start reads another node's copy.
- **stream**: trials receive `ShardStream`s (manifests, no frames); each DDP rank memory-maps
  only its own format-2 shards from storage every node reaches (`signray.data.streaming`).

Either way the training split's normalisation statistics travel with `TrialData`, computed once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from signray.config import TrainConfig
from signray.data import NormStats, PackedParts
from signray.data.streaming import ShardStream
from signray.errors import ConfigError, SignrayError
from signray.storage import Location
from signray.training.inputs import (
    InputsSummary,
    TrainingData,
    choose_data_mode,
    input_paths,
    smoke_spec,
    stream_inputs,
)
from signray.tuning.holder import SPLITS, SplitHolder
from signray.tuning.resources import alive_nodes

__all__ = ["LoadingData", "TrialData", "evaluate_best", "prepare_trial_data", "start_trial_data"]


@dataclass(frozen=True)
class TrialData:
    """What every trial and rank receives instead of the data: small and picklable."""

    mode: str  # "memory" | "stream"
    norm: NormStats | None
    max_frames: int | None
    holders: dict[str, Any] = field(default_factory=dict)  # node id -> SplitHolder handle
    streams: tuple[ShardStream, ShardStream] | None = None
    loads: dict[str, Any] = field(default_factory=dict)  # node id -> its holder's load (a ref)

    def open(self) -> TrainingData:
        """This process's view of the data: its node's object-store copy, or the streams."""
        if self.streams is not None:
            return TrainingData(*self.streams, self.norm)
        node = ray.get_runtime_context().get_node_id()
        # This node's copy first; a node that joined later (or lost its holder) reads another's.
        order = sorted(self.holders, key=lambda n: n != node)
        for i, holder_node in enumerate(order):
            try:
                if holder_node in self.loads:  # loaded, or the reason it could not be
                    ray.get(self.loads[holder_node])
                refs = ray.get(self.holders[holder_node].refs.remote())
                break
            except ray.exceptions.RayActorError:
                if i == len(order) - 1:
                    raise
        train, val = (PackedParts(ray.get(refs[name]), self.max_frames) for name in SPLITS)
        return TrainingData(train, val, self.norm)


def _trial_nodes() -> list[dict]:
    """Alive nodes with CPUs or GPUs: the ones trial workers can run on."""
    return [
        n for n in alive_nodes()
        if n["Resources"].get("CPU", 0) > 0 or n["Resources"].get("GPU", 0) > 0
    ]  # fmt: skip


def _raise_cause(err: ray.exceptions.RayTaskError) -> None:
    """A user error inside an actor or task surfaces as itself (exit 2), not as a traceback."""
    if isinstance(err.cause, SignrayError):
        raise err.cause from None
    raise err


class LoadingData:
    """Trial data whose holders are still loading: `data` can be handed to trials at once (a
    trial's `TrialData.open` waits for its node's load, and gets its error); `wait` waits for
    every load."""

    def __init__(self, data: TrialData, loads: list, start: float) -> None:
        self.data = data
        self._loads = loads
        self._start = start

    def wait(self) -> TrialData:
        """Wait for every holder's load and say how much it holds; a user error raised there
        surfaces as itself."""
        if not self._loads:
            return self.data
        try:
            sizes = ray.get(self._loads)
        except ray.exceptions.RayTaskError as err:
            _raise_cause(err)
        print(
            f"data: {sizes[0] / 2**20:.0f} MiB in the object store of each of {len(sizes)} "
            f"node(s), loaded there in {time.perf_counter() - self._start:.1f}s",
            flush=True,
        )
        self._loads = []
        return self.data


def start_trial_data(cfg: TrainConfig, summary: InputsSummary) -> LoadingData:
    """Choose the data mode for this cluster and start making the data reachable from every
    node: in memory mode, each node's holder starts loading it now."""
    nodes = _trial_nodes()
    if not nodes:
        raise ConfigError(["the Ray cluster has no node with CPUs or GPUs to train on"])
    capacity = min(int(n["Resources"].get("object_store_memory", 0)) for n in nodes)
    mode, why = choose_data_mode(cfg, summary, capacity)
    print(f"data: {mode} mode ({why})", flush=True)
    start = time.perf_counter()
    if mode == "stream":
        data = stream_inputs(cfg, summary)
        trial_data = TrialData(mode, data.norm, cfg.max_frames, streams=(data.train, data.val))
        return LoadingData(trial_data, [], start)
    holders = {
        n["NodeID"]: SplitHolder.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote()
        for n in nodes
    }
    synthetic = smoke_spec(cfg) if cfg.smoke_test else None
    args = ((summary.train, summary.val), input_paths(cfg)[2], cfg.max_frames, synthetic)
    loads = {node: holder.load.remote(*args) for node, holder in holders.items()}
    data = TrialData(mode, summary.train.norm, cfg.max_frames, holders, loads=loads)
    return LoadingData(data, list(loads.values()), start)


def prepare_trial_data(cfg: TrainConfig, summary: InputsSummary) -> TrialData:
    """`start_trial_data`, waiting until the data is in place."""
    return start_trial_data(cfg, summary).wait()


def _evaluate_to_dir(checkpoint: Location, val, out_dir: Location) -> dict[str, Any]:
    """`signray.analysis.evaluation.evaluate_to_dir`, imported when a model is evaluated: it
    draws with matplotlib, which trial and Train worker processes (importing this module) never
    need (~0.6 s of imports each)."""
    from signray.analysis.evaluation import evaluate_to_dir

    return evaluate_to_dir(checkpoint, val, out_dir)


@ray.remote(num_cpus=1)
def _evaluate(data: TrialData, checkpoint: Location, out_dir: Location) -> dict[str, Any]:
    val = data.open().val
    if isinstance(val, ShardStream):
        val = val.open_all(reader="evaluation")
    return _evaluate_to_dir(checkpoint, val, out_dir)


def evaluate_best(data: TrialData, checkpoint: Location, out_dir: Location) -> dict[str, Any]:
    """`evaluate_to_dir` on the whole val split: in this process when this node holds a copy
    (mapped zero-copy from its object store), else in a task on a node that holds or reads it,
    the driver's own when it can (a local experiment folder is only certain to be there)."""
    here = ray.get_runtime_context().get_node_id()
    if data.mode == "memory" and here in data.holders:
        return _evaluate_to_dir(checkpoint, data.open().val, out_dir)
    task = _evaluate.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True))
    try:
        return ray.get(task.remote(data, checkpoint, out_dir))
    except ray.exceptions.RayTaskError as err:
        _raise_cause(err)
        raise
