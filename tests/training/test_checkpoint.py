"""The checkpoint schema: named fields, safe loads, and format-1 files from before it."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from signray.errors import ConfigError
from signray.training.checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_v1"


def _checkpoint(**changes) -> Checkpoint:
    values = dict(
        model_name="transformer",
        class_name="SignTransformer",
        input_dim=4,
        config={"model": "transformer"},
        model={"w": torch.ones(2)},
        epoch=3,
        best_metric=0.5,
        best_epoch=2,
    )
    return Checkpoint(**{**values, **changes})


def test_round_trip_keeps_every_field(tmp_path):
    ckpt = _checkpoint(history=[{"epoch": 1.0}], rng={"torch": torch.get_rng_state()})
    save_checkpoint(ckpt, tmp_path / "a.pt")
    raw = torch.load(tmp_path / "a.pt", weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["epoch"] == 3
    again = load_checkpoint(tmp_path / "a.pt")
    assert again.epoch == 3 and again.history == [{"epoch": 1.0}]
    assert torch.equal(again.rng["torch"], ckpt.rng["torch"])


@pytest.mark.parametrize("name", ["SignTransformer_best.pt", "IV3GRU_best.pt"])
def test_format_1_checkpoints_from_before_the_restructure_load(name):
    """Written by commit 0a2af39; the rebuilt model gives the logits that version gave."""
    expected = json.loads((LEGACY / "expected.json").read_text())[name]
    model, cfg, ckpt = model_from_checkpoint(LEGACY / name)
    assert cfg.model == expected["model"] and ckpt.epoch == expected["epoch"]
    assert ckpt.best_metric == expected["best_metric"]
    assert ckpt.rng["torch"] is not None  # the old `rng_torch` key
    x = torch.from_numpy(np.random.default_rng(0).random((3, 10, ckpt.input_dim), np.float32))
    with torch.no_grad():
        gloss, cat = model(x, torch.tensor([10, 7, 4]))
    assert torch.allclose(gloss, torch.tensor(expected["gloss_logits"]), atol=1e-5)
    assert torch.allclose(cat, torch.tensor(expected["cat_logits"]), atol=1e-5)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_crafted_pickle_is_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"format": 1, "model": _Evil()}, f)
    with pytest.raises(ConfigError, match="weights_only=True") as info:
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
    assert "weights_only` set to `False`" not in str(info.value)  # no advice to run it anyway


def test_crafted_torch_checkpoint_is_refused_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": 1, "model": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ConfigError, match="unsupported GLOBAL posix.system"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_foreign_file_is_refused(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="not a signray checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_incomplete_checkpoint_names_what_is_missing(tmp_path):
    torch.save({"format": 2, "model": {}, "epoch": 1}, tmp_path / "part.pt")
    with pytest.raises(ConfigError, match="not a complete signray checkpoint: no .*best_metric"):
        load_checkpoint(tmp_path / "part.pt")


def test_format_2_checkpoints_load_without_precision_or_cuda_rng(tmp_path):
    """Format 2 (before `precision` and the CUDA generator state) still loads, as unknown."""
    state = _checkpoint(rng={"torch": torch.get_rng_state()}).to_dict()
    state["format"] = 2
    del state["precision"]
    torch.save(state, tmp_path / "v2.pt")
    again = load_checkpoint(tmp_path / "v2.pt")
    assert again.precision is None and again.rng.keys() == {"torch"}
    assert _checkpoint(precision="bf16").to_dict()["precision"] == "bf16"


def test_legacy_configs_with_amp_off_resolve_to_fp32():
    _, cfg, _ = model_from_checkpoint(LEGACY / "SignTransformer_best.pt")
    assert cfg.precision == "fp32" and cfg.amp is False


def test_to_dict_shares_the_tensors_instead_of_copying_them():
    """A save must not hold a second (on the GPU: a third) copy of every tensor."""
    weights = {"w": torch.ones(1000)}
    moments = {"state": {0: {"exp_avg": torch.zeros(1000)}}, "param_groups": []}
    ckpt = _checkpoint(model=weights, optimizer=moments, rng={"torch": torch.get_rng_state()})
    saved = ckpt.to_dict()
    assert saved["model"]["w"] is weights["w"]
    assert saved["optimizer"]["state"][0]["exp_avg"] is moments["state"][0]["exp_avg"]
    assert saved["rng"]["torch"].data_ptr() == ckpt.rng["torch"].data_ptr()
    assert saved["format"] == CHECKPOINT_FORMAT and saved["epoch"] == ckpt.epoch


def test_format_3_checkpoints_load_without_averaged_weights(tmp_path):
    """Format 3 (before `averaged`, the EMA/SWA weights) loads; inference uses `model`."""
    state = _checkpoint().to_dict()
    state["format"] = 3
    del state["averaged"]
    torch.save(state, tmp_path / "v3.pt")
    again = load_checkpoint(tmp_path / "v3.pt")
    assert again.averaged is None and again.inference_weights is again.model
    averaged = {"kind": "ema", "updates": 4, "model": {"w": torch.zeros(2)}}
    save_checkpoint(_checkpoint(averaged=averaged), tmp_path / "v4.pt")
    assert torch.equal(load_checkpoint(tmp_path / "v4.pt").inference_weights["w"], torch.zeros(2))
