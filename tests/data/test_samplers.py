from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from signray.data import BucketBatchSampler

LENGTHS = np.random.default_rng(0).integers(16, 121, size=103)


def _batches(**kw: object) -> list[list[int]]:
    kw.setdefault("batch_size", 8)
    return list(BucketBatchSampler(LENGTHS, **kw))  # type: ignore[arg-type]


def _flat(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("bucket", [True, False])
def test_train_rank_shards_cover_everything(world_size: int, bucket: bool) -> None:
    per_rank = [
        _flat(_batches(rank=r, world_size=world_size, bucket=bucket)) for r in range(world_size)
    ]
    union = Counter(i for part in per_rank for i in part)
    assert set(union) == set(range(len(LENGTHS)))
    padded = -len(LENGTHS) % world_size
    assert sum(union.values()) == len(LENGTHS) + padded  # only the padding repeats
    assert len({len(part) for part in per_rank}) == 1


@pytest.mark.parametrize("world_size", [1, 2, 4, 5])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("batch_size", [1, 8, 32])
def test_equal_batch_counts_across_ranks(world_size: int, drop_last: bool, batch_size: int) -> None:
    counts = set()
    for rank in range(world_size):
        sampler = BucketBatchSampler(
            LENGTHS, batch_size, rank=rank, world_size=world_size, drop_last=drop_last
        )
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(1 <= len(b) <= batch_size for b in batches)
        if drop_last:
            assert all(len(b) == batch_size for b in batches)
        counts.add(len(batches))
    assert len(counts) == 1


def test_tiny_split_still_gives_every_rank_a_batch() -> None:
    for rank in range(4):
        assert list(BucketBatchSampler([5, 6], 4, rank=rank, world_size=4)) != []


def test_set_epoch_reshuffles_deterministically() -> None:
    sampler = BucketBatchSampler(LENGTHS, 8, seed=3)
    epoch0 = list(sampler)
    assert list(sampler) == epoch0
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0 and sorted(_flat(epoch1)) == sorted(_flat(epoch0))
    assert list(BucketBatchSampler(LENGTHS, 8, seed=4)) != epoch0


def test_no_shuffle_is_deterministic_order() -> None:
    plain = _batches(shuffle=False, bucket=False)
    assert _flat(plain) == list(range(len(LENGTHS)))
    sampler = BucketBatchSampler(LENGTHS, 8, shuffle=False)
    first = list(sampler)
    sampler.set_epoch(5)
    assert list(sampler) == first


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("bucket", [True, False])
def test_eval_covers_each_clip_exactly_once(world_size: int, bucket: bool) -> None:
    seen: list[int] = []
    for rank in range(world_size):
        sampler = BucketBatchSampler(
            LENGTHS, 8, rank=rank, world_size=world_size, train=False, bucket=bucket
        )
        batches = list(sampler)
        assert len(batches) == len(sampler)
        flat = _flat(batches)
        if bucket:
            assert list(LENGTHS[flat]) == sorted(LENGTHS[flat], reverse=True)
        seen += flat
    assert sorted(seen) == list(range(len(LENGTHS)))


def _padding(batches: list[list[int]]) -> int:
    return sum(int(LENGTHS[b].max()) * len(b) - int(LENGTHS[b].sum()) for b in batches)


def test_bucketing_reduces_padding() -> None:
    bucketed = _padding(_batches(batch_size=4, bucket=True))
    plain = _padding(_batches(batch_size=4, bucket=False))
    assert bucketed < 0.25 * plain, (bucketed, plain)


def test_bucketed_batches_are_shuffled_between_epochs() -> None:
    sampler = BucketBatchSampler(LENGTHS, 4)
    first = [min(LENGTHS[b]) for b in sampler]
    assert first != sorted(first)  # not simply short-to-long


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="rank < world_size"):
        BucketBatchSampler(LENGTHS, 8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        BucketBatchSampler(LENGTHS, 0)
