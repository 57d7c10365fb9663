"""Where tensors live: batch sources per device, RNG state, GPU memory caps and clean-up.

The CUDA tests run on a machine with a GPU (skipped elsewhere); benchmarks/gpu_check.py covers
the same paths end to end.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader

from signray.config import resolve_config
from signray.data.device_batches import DeviceBatches
from signray.data.loader import batch_sampler
from signray.errors import ConfigError
from signray.training.device import (
    GPU_PROCESS_RESERVE_BYTES,
    build_batches,
    gpu_memory_cap,
    limit_gpu_memory,
    release_device_memory,
    rng_state,
)
from signray.training.optim import build_optimizer
from signray.training.steps import LossWeights, multitask_loss, train_one_epoch

CPU = torch.device("cpu")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SMALL_TX = {"d_model": 32, "n_heads": 4, "depth": 1, "ff_dim": 64, "head_hidden": 32}


def _cfg(**over):
    return resolve_config({"num_gloss": 6, "num_cat": 2, "batch_size": 8, **SMALL_TX, **over})


def test_cpu_defaults_keep_the_dataloader_unpinned(tiny_keypoints):
    train, val = build_batches(_cfg(), tiny_keypoints, CPU, batch_size=8, rank=0, world_size=1)
    assert isinstance(train, DataLoader) and isinstance(val, DataLoader)
    assert not train.pin_memory and not val.pin_memory
    assert train.batch_sampler.train and not val.batch_sampler.train
    assert rng_state(CPU).keys() == {"torch"}


def test_data_on_gpu_on_a_cpu_run_is_refused(tiny_keypoints):
    cfg = dataclasses.replace(_cfg(), data_on_gpu=True)  # as if validated for a GPU elsewhere
    with pytest.raises(ConfigError, match="`data_on_gpu` is set but this run trains on cpu"):
        build_batches(cfg, tiny_keypoints, CPU, batch_size=8, rank=0, world_size=1)


@cuda
def test_cuda_defaults_pin_or_move_the_data(tiny_keypoints):
    gpu = torch.device("cuda", 0)
    cfg = _cfg(use_gpu=True)
    train, _ = build_batches(cfg, tiny_keypoints, gpu, batch_size=8, rank=0, world_size=1)
    assert isinstance(train, DeviceBatches)  # a tiny split fits
    off = resolve_config({"data_on_gpu": False}, cfg)
    train, _ = build_batches(off, tiny_keypoints, gpu, batch_size=8, rank=0, world_size=1)
    assert isinstance(train, DataLoader) and train.pin_memory
    assert rng_state(gpu).keys() == {"torch", "cuda"}


# Each model the step trains, and the splits it reads.
STEP_MODELS = {
    "transformer": ({}, "tiny_keypoints"),
    "iv3_gru": ({"model": "iv3_gru"}, "tiny_features"),
    "iv3_gru_bidirectional": ({"model": "iv3_gru", "bidirectional": True}, "tiny_features"),
}


def _step_cfg(name: str, **over):
    values, _ = STEP_MODELS[name]
    arch = SMALL_TX if "model" not in values else {}
    return resolve_config({"num_gloss": 6, "num_cat": 2, "batch_size": 8, **arch, **values, **over})


class _HostTraffic(TorchDispatchMode):
    """What would wait for a GPU if `device` were one: reads of device values on the host
    (``.item()``, ``int()``, ``.cpu()``, ``.tolist()``) and blocking copies between the host and
    the device. The meta device stands in for the GPU on a CPU-only machine: it has no values,
    so a host read of one would fail anyway."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = device
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (
            func is torch.ops.aten._local_scalar_dense.default
            and args[0].device.type == self.device
        ):
            self.seen.append("a device value read on the host")
        elif func is torch.ops.aten._to_copy.default and "device" in kwargs:
            crossing = {args[0].device.type, torch.device(kwargs["device"]).type}
            if self.device in crossing and len(crossing) == 2 and not kwargs.get("non_blocking"):
                self.seen.append(f"a blocking copy {args[0].device} -> {kwargs['device']}")
        elif func is torch.ops.aten.copy_.default:
            dst, src = args[0], args[1]
            blocking = not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
            if dst.device != src.device and self.device in (dst.device.type, src.device.type):
                if blocking:
                    self.seen.append(f"a blocking copy {src.device} -> {dst.device}")
        return func(*args, **kwargs)


@pytest.mark.parametrize("name", list(STEP_MODELS))
def test_training_step_reads_nothing_back_from_the_device(request, name):
    """Forward, loss and backward of batches cut on the device: no value comes back to the host
    and nothing is copied to the device with a blocking copy (each would be a stream sync per
    step on a GPU). The GPU test below checks the same with CUDA's own sync detector."""
    splits = request.getfixturevalue(STEP_MODELS[name][1])
    cfg = _step_cfg(name)
    meta = torch.device("meta")
    model = cfg.build_model(splits[0].feature_dim).to(meta)
    _, sampler = batch_sampler(splits[0], batch_size=8, train=True)
    batches = DeviceBatches(splits[0], sampler, meta)
    weights = LossWeights()
    for step, batch in enumerate(batches):
        with _HostTraffic("meta") as traffic:
            batch = batch.to(meta, non_blocking=True)
            gloss, cat = model(batch.x, batch.lengths, batch.host_lengths)
            multitask_loss(gloss, cat, batch.gloss, batch.cat, weights).backward()
        assert traffic.seen == [], f"step {step}: {traffic.seen}"
    assert step >= 2


@cuda
@pytest.mark.parametrize("name", list(STEP_MODELS))
def test_training_step_has_no_per_step_host_sync(request, name):
    splits = request.getfixturevalue(STEP_MODELS[name][1])
    gpu = torch.device("cuda", 0)
    cfg = _step_cfg(name, use_gpu=True, data_on_gpu=True, batch_size=2)
    model = cfg.build_model(splits[0].feature_dim).to(gpu)
    optimizer = build_optimizer(cfg, model)
    train, _ = build_batches(cfg, splits, gpu, batch_size=2, rank=0, world_size=1)
    assert len(train) >= 10
    train_one_epoch(model, train, optimizer, device=gpu, weights=LossWeights())  # warm-up
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_one_epoch(model, train, optimizer, device=gpu, weights=LossWeights())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 3, [str(w.message) for w in syncs]  # end-of-epoch reads only


@pytest.mark.parametrize("total_gib", [16, 80, 141])
@pytest.mark.parametrize("trials", [2, 4, 8])
def test_packed_trials_caps_leave_each_process_its_reserve(total_gib, trials):
    """Caps of N trials sharing a card plus what each process holds outside its cap fit the card."""
    total = total_gib * 2**30
    share = 1 / trials
    cap = gpu_memory_cap(share, total)
    assert trials * (cap * total + GPU_PROCESS_RESERVE_BYTES) <= total
    assert cap == pytest.approx(share - GPU_PROCESS_RESERVE_BYTES / total)
    assert gpu_memory_cap(1.0, total) == 1.0  # a whole card is not capped


def test_a_share_below_the_reserve_is_refused_with_the_flag():
    with pytest.raises(ConfigError, match=r"`--gpus-per-trial 0.05` gives each trial 0.80 GiB"):
        gpu_memory_cap(0.05, 16 * 2**30)


@cuda
def test_release_frees_the_cached_gpu_memory_and_caps_apply():
    a = torch.randn(256, 256, device="cuda")
    a @ a  # a cuBLAS call: its workspace stays in the caching allocator after empty_cache()
    x = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")
    del x, a
    assert torch.cuda.memory_reserved() > 0
    release_device_memory()
    assert torch.cuda.memory_reserved() == 0
    total = torch.cuda.get_device_properties(0).total_memory
    try:
        cap = limit_gpu_memory(0.25)
        assert cap == pytest.approx(gpu_memory_cap(0.25, total))
        with pytest.raises(torch.cuda.OutOfMemoryError):
            torch.empty(int(total * (cap + 0.02)), dtype=torch.uint8, device="cuda")
    finally:
        limit_gpu_memory(1.0)  # later tests in this process get the whole card back
        release_device_memory()
