"""The training step: a non-finite loss is caught on the device, reported with its epoch and
step, within `NONFINITE_CHECK_EVERY` steps."""

from __future__ import annotations

import pytest
import torch

from signray.config import resolve_config
from signray.data import collate_padded
from signray.errors import NonFiniteLossError
from signray.training.optim import build_optimizer
from signray.training.steps import NONFINITE_CHECK_EVERY, LossWeights, train_one_epoch

SMALL_TX = {"d_model": 16, "n_heads": 2, "depth": 1, "ff_dim": 16, "head_hidden": 8}


def _batch(poison: bool = False):
    rng = torch.Generator().manual_seed(0)
    clips = [torch.rand(5, 4, generator=rng).numpy() for _ in range(3)]
    if poison:
        clips[1][2, 0] = float("nan")
    return collate_padded([(c, i % 3, i % 2) for i, c in enumerate(clips)])


def _model():
    cfg = resolve_config({"num_gloss": 3, "num_cat": 2, **SMALL_TX})
    model = cfg.build_model(4)
    return model, build_optimizer(cfg, model)


def _counting(batches, seen):
    for b in batches:
        seen.append(b)
        yield b


@pytest.mark.parametrize("bad_step", [1, 3])
def test_first_non_finite_step_is_reported_at_the_end_of_a_short_epoch(bad_step):
    model, optimizer = _model()
    batches = [_batch(poison=i == bad_step - 1) for i in range(5)]
    seen: list = []
    with pytest.raises(NonFiniteLossError) as info:
        train_one_epoch(model, _counting(batches, seen), optimizer, device=torch.device("cpu"),
                        weights=LossWeights(), epoch=2)  # fmt: skip
    text = str(info.value)
    assert f"training loss became nan at epoch 3, step {bad_step};" in text
    assert "lower `lr`" in text
    assert len(seen) == 5  # no host read per step: the epoch ran to its end


def test_a_long_epoch_stops_at_the_next_check():
    model, optimizer = _model()
    batches = [_batch(poison=i == 1) for i in range(NONFINITE_CHECK_EVERY * 3)]
    seen: list = []
    with pytest.raises(NonFiniteLossError, match="at epoch 1, step 2;"):
        train_one_epoch(model, _counting(batches, seen), optimizer, device=torch.device("cpu"),
                        weights=LossWeights())  # fmt: skip
    assert len(seen) == NONFINITE_CHECK_EVERY


def test_finite_epoch_counts_samples_and_frames():
    model, optimizer = _model()
    m = train_one_epoch(model, [_batch() for _ in range(4)], optimizer,
                        device=torch.device("cpu"), weights=LossWeights())  # fmt: skip
    assert m["train_samples"] == 12 and m["train_frames"] == 60 and m["train_loss"] > 0
