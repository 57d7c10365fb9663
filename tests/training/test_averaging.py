from __future__ import annotations

import pytest
import torch

from signray.config import resolve_config
from signray.models import SignTransformer, TransformerConfig
from signray.training.averaging import WeightAverage, build_average
from signray.training.checkpoint import load_checkpoint, model_from_checkpoint
from signray.training.device import build_batches
from signray.training.loop import train_loop
from signray.training.reporters import FileReporter
from signray.training.steps import LossWeights, evaluate

SMALL_TX = {"d_model": 32, "n_heads": 4, "depth": 1, "ff_dim": 64, "head_hidden": 32}


def _model() -> SignTransformer:
    return SignTransformer(4, 3, 2, TransformerConfig(d_model=8, n_heads=2, depth=1, ff_dim=8))


def _set(model, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def _first(module) -> float:
    return float(next(module.parameters()).detach().flatten()[0])


def test_ema_follows_every_step_with_its_decay():
    model = _model()
    ema = WeightAverage(model, "ema", 0.9, first_epoch=0)
    assert ema.module is model  # nothing averaged yet: validate the trained weights
    for value in (1.0, 2.0, 4.0):
        _set(model, value)
        ema.after_step()
    ema.after_epoch(0)  # epochs do not update an EMA
    # the first update copies, then 0.9 * average + 0.1 * weights
    assert _first(ema.module) == pytest.approx(0.9 * (0.9 * 1 + 0.1 * 2) + 0.1 * 4)
    assert ema.updates == 3 and ema.module is not model


def test_swa_averages_the_last_epochs_equally():
    model = _model()
    swa = build_average(resolve_config({"epochs": 4, "swa_epochs": 2}), model)
    for epoch, value in enumerate((1.0, 2.0, 3.0, 5.0)):
        _set(model, value)
        swa.after_step()  # steps do not update SWA
        swa.after_epoch(epoch)
        assert (swa.module is model) == (epoch < 2)
    assert _first(swa.module) == pytest.approx((3.0 + 5.0) / 2)


def test_ema_weights_are_the_ones_validated_and_saved(tmp_path, tiny_keypoints):
    cfg = resolve_config(dict(num_gloss=6, num_cat=2, batch_size=8, epochs=3, lr=3e-3,
                              ema_decay=0.9, output_dir=str(tmp_path), **SMALL_TX))  # fmt: skip
    reporter = FileReporter(tmp_path, "SignTransformer", total_epochs=3)
    result = train_loop(cfg, reporter, tiny_keypoints)
    last = load_checkpoint(tmp_path / "SignTransformer_last.pt")
    assert last.averaged["kind"] == "ema" and last.averaged["updates"] == 3 * 3  # 24 clips / 8
    _, val_batches = build_batches(cfg, tiny_keypoints, torch.device("cpu"), batch_size=8,
                                   rank=0, world_size=1)  # fmt: skip
    weights = LossWeights(cfg.gloss_weight, cfg.cat_weight, cfg.label_smoothing)
    model, _, _ = model_from_checkpoint(tmp_path / "SignTransformer_last.pt")
    averaged = evaluate(model, val_batches, device=torch.device("cpu"), weights=weights)
    assert averaged["val_loss"] == pytest.approx(result.history[-1]["val_loss"], rel=1e-6)
    model.load_checkpoint_state_dict(last.model)  # the trained weights validate differently
    trained = evaluate(model, val_batches, device=torch.device("cpu"), weights=weights)
    assert trained["val_loss"] != pytest.approx(averaged["val_loss"], rel=1e-6)


def test_a_resumed_run_continues_its_average(tmp_path, tiny_keypoints):
    def run(name, epochs, resume=None):
        cfg = resolve_config(dict(num_gloss=6, num_cat=2, batch_size=8, epochs=epochs,
                                  ema_decay=0.8, output_dir=str(tmp_path / name),
                                  **SMALL_TX))  # fmt: skip
        reporter = FileReporter(tmp_path / name, "SignTransformer", total_epochs=epochs,
                                resume=resume)  # fmt: skip
        return train_loop(cfg, reporter, tiny_keypoints)

    straight = run("a", 4)
    run("b", 2)
    resumed = run("b", 4, resume=tmp_path / "b" / "SignTransformer_last.pt")
    assert resumed.history[-1]["val_loss"] == straight.history[-1]["val_loss"]
    a, b = (load_checkpoint(tmp_path / n / "SignTransformer_last.pt").averaged for n in "ab")
    assert a["updates"] == b["updates"] == 4 * 3
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
