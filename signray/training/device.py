"""Where a run's tensors live: the device, how batches reach it, RNG state per device, GPU memory
caps for trials that share a card, and cleaning up when a trial ends.

Defaults follow the device: on CUDA, batches come from page-locked memory with non-blocking
copies, and the packed splits move into GPU memory when they fit; on the CPU, nothing changes.
"""

from __future__ import annotations

import gc
from typing import Any

import torch
import torch.distributed as dist

from signray.config import TrainConfig
from signray.data import Split, build_loader
from signray.data.device_batches import DeviceBatches
from signray.data.loader import batch_sampler
from signray.data.streaming import ShardStream
from signray.errors import ConfigError
from signray.training.optim import set_cuda_environment

__all__ = [
    "DATA_ON_GPU_SHARE",
    "GPU_PROCESS_RESERVE_BYTES",
    "build_batches",
    "data_fits_on_device",
    "gpu_memory_cap",
    "limit_gpu_memory",
    "peak_memory_mb",
    "release_device_memory",
    "restore_rng_state",
    "rng_state",
    "select_device",
]

# The packed splits go to the GPU by default only if they take at most this share of the memory
# the process may use (the card, or its share of it): the rest is for the model's activations.
DATA_ON_GPU_SHARE = 0.25
# What a process sharing a card uses there outside the caching allocator, and so outside its
# cap: the CUDA context and the kernels and library handles (cuDNN, cuBLAS) loaded into it, about
# 0.5 GiB on recent cards; the rest is margin for fragmentation. cuBLAS workspaces come from the
# caching allocator and count inside the cap.
GPU_PROCESS_RESERVE_BYTES = 2**30
_memory_fraction = 1.0  # set by limit_gpu_memory


def select_device(cfg: TrainConfig) -> torch.device:
    """The current CUDA device with `use_gpu` (Ray sets CUDA_VISIBLE_DEVICES), else the CPU."""
    if cfg.use_gpu:
        set_cuda_environment()  # before this process's first cuBLAS call
        if not torch.cuda.is_available():
            raise ConfigError(["`use_gpu` is set but CUDA is not available on this machine"])
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gpu_memory_cap(share: float, total_bytes: int) -> float:
    """The fraction of a card of `total_bytes` that a process given `share` of it may allocate:
    its share less `GPU_PROCESS_RESERVE_BYTES`, so that the caps and the memory every process
    needs outside its cap together fit the card (4 trials at 0.25 of an 80 GB card: 4 caps of
    18.9 GB). A whole card (`share` 1) is not capped."""
    if share >= 1:
        return 1.0
    cap = share - GPU_PROCESS_RESERVE_BYTES / total_bytes
    if cap <= 0:
        raise ConfigError(
            [
                f"`--gpus-per-trial {share:g}` gives each trial {share * total_bytes / 2**30:.2f} "
                f"GiB of this {total_bytes / 2**30:.1f} GiB GPU, no more than the "
                f"{GPU_PROCESS_RESERVE_BYTES / 2**30:g} GiB a CUDA process needs outside its "
                "memory cap; use a larger --gpus-per-trial"
            ]
        )
    return cap


def limit_gpu_memory(share: float, device: torch.device | None = None) -> float | None:
    """Cap this process's CUDA allocations for its `share` of the card (`gpu_memory_cap`), so that
    trials sharing it cannot starve each other: an allocation past the cap raises CUDA
    out-of-memory in this trial only. 1 lifts the cap. Returns the fraction set (None without
    CUDA)."""
    global _memory_fraction
    if not (0 < share <= 1 and torch.cuda.is_available()):
        return None
    total = torch.cuda.get_device_properties(device or torch.cuda.current_device()).total_memory
    fraction = gpu_memory_cap(share, total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    _memory_fraction = fraction
    return fraction


def data_fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether `nbytes` of packed data fit in DATA_ON_GPU_SHARE of this process's GPU memory."""
    if device.type != "cuda":
        return False
    total = torch.cuda.get_device_properties(device).total_memory
    return nbytes <= DATA_ON_GPU_SHARE * _memory_fraction * total


def build_batches(
    cfg: TrainConfig,
    splits: tuple[Split | ShardStream, Split | ShardStream],
    device: torch.device,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
) -> tuple[Any, Any]:
    """(train batches, val batches) for one rank: gathered on the GPU (`data_on_gpu`), or a
    DataLoader with pinned memory (`pin_memory`, on by default with CUDA)."""
    train, val = splits
    on_gpu = cfg.data_on_gpu
    streamed = isinstance(train, ShardStream)
    if on_gpu and streamed:
        raise ConfigError(["`data_on_gpu` needs the data in memory, but it is streamed from its "
                           "shards (`--data-mode stream`)"])  # fmt: skip
    if on_gpu is None:
        on_gpu = not streamed and data_fits_on_device(train.nbytes + val.nbytes, device)
    elif on_gpu and device.type != "cuda":
        raise ConfigError([f"`data_on_gpu` is set but this run trains on {device}"])
    sampling = dict(bucket=cfg.bucket, seed=cfg.seed, rank=rank, world_size=world_size)
    out = []
    for split, is_train in ((train, True), (val, False)):
        if on_gpu:
            _, sampler = batch_sampler(split, batch_size=batch_size, train=is_train, **sampling)
            out.append(DeviceBatches(split, sampler, device))
            continue
        pin = cfg.pin_memory if cfg.pin_memory is not None else device.type == "cuda"
        out.append(
            build_loader(
                split,
                batch_size=batch_size,
                train=is_train,
                num_workers=cfg.num_workers,
                pin_memory=pin,
                prefetch_factor=cfg.prefetch_factor,
                **sampling,
            )
        )
    return out[0], out[1]


def rng_state(device: torch.device) -> dict[str, Any]:
    """The generator states a resumed run needs to continue identically: the CPU's and the
    GPU's and, under torch.distributed, every rank's own (``"ranks"``, by rank; the top-level
    states are rank 0's). A collective: every rank calls it."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        ranks: list[dict[str, Any] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(ranks, dict(state))
        state["ranks"] = ranks
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device, rank: int = 0) -> None:
    """Restore this rank's own generator states from `rng_state`'s. A checkpoint without them
    (one process, or fewer ranks) leaves a rank other than 0 with its fresh seed (seed + rank)."""
    ranks = state.get("ranks") or []
    if rank < len(ranks):
        state = ranks[rank]
    elif rank > 0:
        return
    if state.get("torch") is not None:
        torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak GPU memory allocated by tensors of this process so far (None on the CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def release_device_memory() -> None:
    """Free what a finished run left behind, so the next run in this process (a reused Ray actor)
    starts clean: unreachable tensors, cuBLAS workspaces (cached per stream in the allocator;
    `empty_cache` keeps them), the CUDA caching allocator's blocks, the peak counter."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch._C._cuda_clearCublasWorkspaces()  # what torch's own leak checks call
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
