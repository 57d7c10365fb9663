"""Where tensors live: batch sources per device, RNG state, GPU memory caps and clean-up.

The CUDA tests run on a machine with a GPU (skipped elsewhere); benchmarks/gpu_check.py covers
the same paths end to end.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from torch.utils.data import DataLoader

from signray.config import resolve_config
from signray.data.device_batches import DeviceBatches
from signray.errors import ConfigError
from signray.training.device import (
    build_batches,
    limit_gpu_memory,
    release_device_memory,
    rng_state,
)
from signray.training.optim import build_optimizer
from signray.training.steps import LossWeights, train_one_epoch

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


@cuda
def test_training_step_has_no_per_step_host_sync(tiny_keypoints):
    gpu = torch.device("cuda", 0)
    cfg = _cfg(use_gpu=True, data_on_gpu=True, batch_size=2)
    model = cfg.build_model(tiny_keypoints[0].feature_dim).to(gpu)
    optimizer = build_optimizer(cfg, model)
    train, _ = build_batches(cfg, tiny_keypoints, gpu, batch_size=2, rank=0, world_size=1)
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


@cuda
def test_release_frees_the_cached_gpu_memory_and_caps_apply():
    x = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")
    del x
    assert torch.cuda.memory_reserved() > 0
    release_device_memory()
    assert torch.cuda.memory_reserved() == 0
    limit_gpu_memory(0.01)
    total = torch.cuda.get_device_properties(0).total_memory
    with pytest.raises(torch.cuda.OutOfMemoryError):
        torch.empty(int(total * 0.05), dtype=torch.uint8, device="cuda")
    torch.cuda.set_per_process_memory_fraction(1.0)
