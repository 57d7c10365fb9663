"""Shared fixtures: tiny synthetic splits and a written synthetic dataset on disk."""

from __future__ import annotations

import pytest

from signray.data import synthetic_splits

TINY = dict(num_gloss=6, num_cat=2, train_per_gloss=4, val_per_gloss=2, min_len=8, max_len=24)


@pytest.fixture(scope="session")
def tiny_keypoints():
    """(train, val) keypoint splits, small enough for a CPU epoch in well under a second."""
    return synthetic_splits(kind="keypoints", seed=0, difficulty="easy", **TINY)


@pytest.fixture(scope="session")
def tiny_features():
    return synthetic_splits(kind="features", seed=0, difficulty="easy", **TINY)
