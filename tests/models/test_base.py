from __future__ import annotations

import numpy as np
import torch

from signray.data.stats import FrameMoments
from signray.models import build_model
from signray.models.base import InputNorm


def _fit(norm: InputNorm, frames: np.ndarray) -> None:
    stats = FrameMoments.of(frames)
    norm.set_stats(stats.mean, stats.std)


def test_input_norm_standardises_with_training_statistics():
    rng = np.random.default_rng(0)
    frames = (rng.normal(0.5, 0.08, size=(500, 6))).astype(np.float32)
    norm = InputNorm(6)
    _fit(norm, frames)
    out = norm(torch.from_numpy(frames))
    assert torch.allclose(out.mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(out.std(0), torch.ones(6), atol=1e-2)


def test_constant_feature_does_not_divide_by_zero():
    norm = InputNorm(2)
    _fit(norm, np.ones((10, 2), dtype=np.float32))
    assert torch.isfinite(norm(torch.ones(1, 2))).all()


def test_statistics_travel_in_the_checkpoint():
    for name, dim in (("transformer", 12), ("iv3_gru", 20)):
        a = build_model(name, {}, input_dim=dim, num_gloss=5, num_cat=2)
        _fit(a.input_norm, np.arange(3 * dim, dtype=np.float32).reshape(3, dim))
        b = build_model(name, {}, input_dim=dim, num_gloss=5, num_cat=2)
        b.load_checkpoint_state_dict(a.checkpoint_state_dict())
        assert torch.equal(a.input_norm.mean, b.input_norm.mean)
        assert torch.equal(a.input_norm.std, b.input_norm.std)
