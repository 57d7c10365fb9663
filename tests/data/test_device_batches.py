"""Batches gathered from a split held on the device equal the DataLoader's padded batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from signray.data import PackedParts, PackedSplit, build_loader
from signray.data.device_batches import DeviceBatches
from signray.data.loader import batch_sampler


def _split(n: int = 23, dim: int = 3) -> PackedSplit:
    rng = np.random.default_rng(1)
    clips = [rng.random((int(t), dim), dtype=np.float32) + 1.0 for t in rng.integers(1, 12, n)]
    return PackedSplit.from_clips(
        clips, np.arange(n) % 5, np.arange(n) % 2, [f"c{i}" for i in range(n)]
    )


def _devices():
    return ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize(
    "args",
    [
        dict(train=True, bucket=True, rank=0, world_size=1),
        dict(train=True, bucket=True, rank=1, world_size=2),
        dict(train=True, bucket=False, rank=0, world_size=1),
        dict(train=False, bucket=True, rank=0, world_size=3),
    ],  # fmt: skip
)
def test_same_batches_as_the_dataloader(device, args):
    split = _split()
    split.frames.setflags(write=False)  # as from Ray's object store
    loader = build_loader(split, batch_size=4, seed=7, **args)
    batches = DeviceBatches(
        split, batch_sampler(split, batch_size=4, seed=7, **args)[1], torch.device(device)
    )
    for epoch in (0, 3):
        loader.batch_sampler.set_epoch(epoch)
        batches.batch_sampler.set_epoch(epoch)
        expected, got = list(loader), list(batches)
        assert len(got) == len(expected) == len(batches)
        for a, b in zip(expected, got, strict=True):
            assert b.x.device.type == device and b.lengths.device.type == device
            for name in ("x", "lengths", "gloss", "cat"):
                assert torch.equal(getattr(a, name), getattr(b, name).cpu()), name


@pytest.mark.parametrize("max_frames", [None, 5])
def test_parts_in_float16_cut_to_max_frames_match_the_dataloader(max_frames):
    """Object-store parts (float16 kept as stored) gather the same float32 batches."""
    whole = _split()
    half = len(whole) // 2
    parts = []
    for lo, hi in ((0, half), (half, len(whole))):
        clips = [whole.clip(i).astype(np.float16) for i in range(lo, hi)]
        names = [f"c{i}" for i in range(lo, hi)]
        parts.append(PackedSplit.from_clips(clips, whole.gloss[lo:hi], whole.cat[lo:hi], names))
    split = PackedParts(parts, max_frames)
    args = dict(batch_size=4, seed=3, train=True)
    loader = build_loader(split, **args)
    batches = DeviceBatches(split, batch_sampler(split, **args)[1], torch.device("cpu"))
    assert batches.frames.dtype == torch.float16
    for a, b in zip(loader, batches, strict=True):
        assert b.x.dtype == torch.float32
        for name in ("x", "lengths", "gloss", "cat"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name


class _Copies(TorchDispatchMode):
    """Records the bytes of every copy into a tensor and every concatenation while active."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[int] = []
        self.cats = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.copy_.default:
            self.copies.append(args[0].numel() * args[0].element_size())
        elif func is torch.ops.aten.cat.default:
            self.cats += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("max_frames", [None, 5])
def test_frames_reach_the_device_in_bounded_copies(monkeypatch, max_frames):
    """One destination, filled chunk by chunk: no per-part device copies concatenated there (2x
    the data at setup) and no copy per clip when max_frames cuts some."""
    import signray.data.device_batches as device_batches

    whole = _split(n=60, dim=8)
    half = len(whole) // 2
    parts = [
        PackedSplit.from_clips([whole.clip(i) for i in range(lo, hi)], whole.gloss[lo:hi],
                               whole.cat[lo:hi], [f"c{i}" for i in range(lo, hi)])
        for lo, hi in ((0, half), (half, len(whole)))
    ]  # fmt: skip
    split = PackedParts(parts, max_frames)
    row = split.feature_dim * 4
    monkeypatch.setattr(device_batches, "COPY_CHUNK_BYTES", 16 * row)  # 16 frames per copy
    sampler = batch_sampler(split, batch_size=4, train=False)[1]
    with _Copies() as seen:
        batches = DeviceBatches(split, sampler, torch.device("cpu"))
    total = int(split.lengths.sum())
    assert batches.frames.shape == (total, split.feature_dim)
    assert seen.cats == 0
    most = 16 + (max_frames or 0)  # a chunk of cut clips may overrun by one clip
    assert seen.copies and max(seen.copies) <= most * row
    assert len(seen.copies) <= -(-total // 16) + len(parts) < len(split)
    assert sum(seen.copies) == total * row  # every frame copied once
    loader = build_loader(split, batch_size=4, train=False)
    for a, b in zip(loader, batches, strict=True):
        assert torch.equal(a.x, b.x)
