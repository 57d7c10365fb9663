from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data._utils.pin_memory import pin_memory as loader_pin_memory

from signray.data import (
    Batch,
    BucketBatchSampler,
    ClipDataset,
    PackedSplit,
    build_loader,
    collate_padded,
)


def _split(n: int = 10, dim: int = 3) -> PackedSplit:
    rng = np.random.default_rng(0)
    clips = [rng.random((int(t), dim), dtype=np.float32) + 1.0 for t in rng.integers(1, 9, n)]
    return PackedSplit.from_clips(
        clips, np.arange(n) % 5, np.arange(n) % 2, [f"c{i}" for i in range(n)]
    )


def test_dataset_items_are_views() -> None:
    split = _split()
    x, gloss, cat = ClipDataset(split)[3]
    assert isinstance(x, np.ndarray) and x.dtype == np.float32
    assert np.shares_memory(x, split.frames)
    assert (gloss, cat) == (3, 1)
    assert len(ClipDataset(split)) == 10


def test_read_only_frames_load_without_warnings() -> None:
    # Splits shared through Ray's object store arrive read-only.
    split = _split()
    split.frames.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = list(build_loader(split, batch_size=4, train=True))
    assert sum(len(b) for b in batches) == len(split)


def test_collate_pads_with_zeros_and_masks() -> None:
    items = [
        (torch.ones(3, 2), 4, 1),
        (torch.full((1, 2), 2.0), 0, 0),
        (torch.full((2, 2), 3.0), 2, 1),
    ]
    batch = collate_padded(items)
    assert batch.x.shape == (3, 3, 2) and batch.x.dtype == torch.float32
    assert batch.lengths.tolist() == [3, 1, 2] and batch.lengths.dtype == torch.int64
    assert batch.gloss.tolist() == [4, 0, 2] and batch.cat.tolist() == [1, 0, 1]
    assert torch.equal(batch.x[1, 1:], torch.zeros(2, 2))
    assert torch.equal(batch.x[2, :2], torch.full((2, 2), 3.0))
    assert len(batch) == 3
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.x, batch.x)


def test_build_loader_train_and_eval() -> None:
    split = _split()
    loader = build_loader(split, batch_size=4, train=True, seed=1)
    assert isinstance(loader.batch_sampler, BucketBatchSampler)
    epoch0 = [b.gloss.tolist() for b in loader]
    loader.batch_sampler.set_epoch(1)
    epoch1 = [b.gloss.tolist() for b in loader]
    assert epoch0 != epoch1 and len(epoch0) == len(loader) == 3
    for batch in loader:
        assert isinstance(batch, Batch)
        for row, n in enumerate(batch.lengths.tolist()):
            assert torch.all(batch.x[row, :n] >= 1.0) and torch.all(batch.x[row, n:] == 0)

    names: list[int] = []
    for rank in range(3):
        ev = build_loader(split, batch_size=4, train=False, rank=rank, world_size=3)
        names += [int(g) for b in ev for g in b.gloss]
    assert sorted(names) == sorted(split.gloss.tolist())


def test_loader_with_worker_and_prefetch() -> None:
    split = _split()
    loader = build_loader(
        split, batch_size=5, train=False, num_workers=1, prefetch_factor=2, bucket=False
    )
    batches = list(loader)
    assert sum(len(b) for b in batches) == 10
    assert torch.equal(batches[0].x[0, : split.lengths[0]], torch.from_numpy(split.clip(0)))


def test_pin_memory_hook_pins_every_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    pinned: list[torch.Tensor] = []

    def fake_pin(self: torch.Tensor, *args: object) -> torch.Tensor:
        pinned.append(self)
        return self.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    batch = collate_padded([(torch.ones(2, 2), 1, 0)])
    out = loader_pin_memory(batch)  # what DataLoader(pin_memory=True) calls
    assert isinstance(out, Batch) and len(pinned) == 4
    assert torch.equal(out.x, batch.x) and torch.equal(out.lengths, batch.lengths)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pin_memory_with_cuda() -> None:
    loader = build_loader(_split(), batch_size=4, train=True, pin_memory=True)
    batch = next(iter(loader))
    assert batch.x.is_pinned() and batch.lengths.is_pinned()
    on_gpu = batch.to("cuda", non_blocking=True)
    assert on_gpu.x.is_cuda and on_gpu.lengths.is_cuda
