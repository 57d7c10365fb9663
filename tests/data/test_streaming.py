"""Stream mode: shards dealt to ranks, equal steps on every rank, shard-local orders with length
bucketing, validation covering the split exactly once, and each rank opening only its shards."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from datahelpers import clip

from signray.data import PackedSplit, build_loader, pack_split, scan_split
from signray.data.samplers import ShardBatchSampler
from signray.data.shards import SHARD_LOG_ENV
from signray.data.streaming import OPEN_SHARDS, ShardStream, assign_shards

NUM_CLIPS = 37


@pytest.fixture
def stream(tmp_path: Path) -> ShardStream:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 30, NUM_CLIPS)
    clips = [clip(int(n), dim=4, seed=i).astype(np.float16) for i, n in enumerate(lengths)]
    split = PackedSplit.from_clips(
        clips, np.arange(NUM_CLIPS) % 5, np.arange(NUM_CLIPS) % 2,
        [f"c{i:02d}" for i in range(NUM_CLIPS)],
    )  # fmt: skip
    out = pack_split(split, tmp_path / "packed", 5)
    index = scan_split(out, num_gloss=5, num_cat=2)
    return ShardStream.from_index(index, None, "train")


def test_assignment_balances_clips_and_covers_every_shard_once() -> None:
    ranks = assign_shards([10, 3, 8, 8, 2, 9], 3)
    # Largest first, each to the emptiest rank: 10, 9, 8 to ranks 0, 1, 2; 8 to rank 2 (8 is
    # the least), 3 to rank 1 (9), 2 to rank 0 (10): loads 12, 12, 16 (no split does better).
    assert ranks == [[0, 4], [1, 5], [2, 3]]
    assert assign_shards([10, 3, 8, 8, 2, 9], 3) == ranks  # the same on every rank
    assert assign_shards([4, 4], 3)[2] == []


def _rank_batches(stream: ShardStream, rank: int, world: int, *, train: bool, epoch: int = 0):
    dataset = stream.for_rank(rank, world)
    sampler = ShardBatchSampler(
        dataset.sizes, dataset.lengths, 4, seed=1, rank=rank, train=train,
        epoch_clips=stream.epoch_clips(world) if train else None,
    )  # fmt: skip
    sampler.set_epoch(epoch)
    return dataset, sampler, list(sampler)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_rank_takes_the_same_number_of_steps(stream: ShardStream, world: int) -> None:
    steps = {len(_rank_batches(stream, r, world, train=True)[2]) for r in range(world)}
    assert steps == {math.ceil(stream.epoch_clips(world) / 4)}
    for r in range(world):
        dataset, sampler, batches = _rank_batches(stream, r, world, train=True)
        assert len(sampler) == len(batches)
        seen = {i for b in batches for i in b}
        assert seen == set(range(len(dataset)))  # every clip of the rank, some repeated


def test_validation_covers_the_split_exactly_once(stream: ShardStream) -> None:
    names = []
    for r in range(3):
        dataset, _, batches = _rank_batches(stream, r, 3, train=False)
        names += [str(dataset.names[i]) for b in batches for i in b]
    assert sorted(names) == [f"c{i:02d}" for i in range(NUM_CLIPS)]


def test_epochs_reshuffle_within_shards_and_bucket_by_length(stream: ShardStream) -> None:
    dataset, _, first = _rank_batches(stream, 0, 1, train=True, epoch=0)
    _, _, second = _rank_batches(stream, 0, 1, train=True, epoch=1)
    assert first != second
    assert sorted(i for b in first for i in b) == sorted(i for b in second for i in b)
    spread = np.mean([np.ptp(dataset.lengths[b]) for b in first])
    random = np.mean([np.ptp(dataset.lengths[np.random.default_rng(3).permutation(37)[:4]])
                      for _ in range(50)])  # fmt: skip
    assert spread < random / 2, (spread, random)


def test_loader_reads_only_the_ranks_shards(stream: ShardStream, tmp_path, monkeypatch) -> None:
    log = tmp_path / "log"
    log.mkdir()
    monkeypatch.setenv(SHARD_LOG_ENV, str(log))
    loaders = [build_loader(stream, batch_size=4, train=True, rank=r, world_size=2)
               for r in range(2)]  # fmt: skip
    batches = [list(loader) for loader in loaders]
    assert len(batches[0]) == len(batches[1])
    batch = max(batches[0], key=len)
    assert str(batch.x.dtype) == "torch.float32"
    assert batch.x.shape[0] == 4 and int(batch.lengths.max()) == batch.x.shape[1]
    records = [json.loads(line) for f in log.iterdir() for line in f.read_text().splitlines()]
    for r, shards in enumerate(stream.assignment(2)):
        opened = {rec["shard"] for rec in records if rec["reader"] == f"rank {r}/2"}
        assert opened == {stream.manifest["shards"][s]["name"] for s in shards}


def test_frames_are_mapped_lazily_and_few_at_a_time(stream: ShardStream) -> None:
    dataset = stream.for_rank(0, 1)
    assert len(dataset._open) == 0
    for i in range(len(dataset)):
        frames, _, _ = dataset[i]
        assert frames.dtype == np.float16 and not frames.flags.writeable
        assert len(dataset._open) <= OPEN_SHARDS
    copy = pickle.loads(pickle.dumps(dataset))  # as a DataLoader worker receives it
    assert len(copy._open) == 0 and np.array_equal(copy[5][0], dataset[5][0])


def test_max_frames_and_workers(stream: ShardStream) -> None:
    capped = ShardStream(stream.folder, stream.manifest, max_frames=5)
    loader = build_loader(capped, batch_size=8, train=False, num_workers=1)
    assert max(int(b.lengths.max()) for b in loader) == 5
    assert sum(len(b) for b in loader) == NUM_CLIPS


def test_too_few_shards_is_explained(stream: ShardStream) -> None:
    assert stream.too_few_shards(5) is None
    assert "has 5 shard(s) but training streams it on 6 ranks" in stream.too_few_shards(6)
