"""A config's data: checked without loading (what a Ray driver does), the data mode chosen, loaded
or streamed in one process, and the training statistics handed to the model, not recomputed."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest

from signray.config import resolve_config
from signray.data import PackedParts, PackedSplit, ShardStream, load_split
from signray.data.synth import write_dataset
from signray.errors import ConfigError, DataError
from signray.train import evaluate_checkpoint
from signray.training.checkpoint import load_checkpoint
from signray.training.inputs import (
    MEMORY_SHARE,
    TrainingData,
    check_inputs,
    choose_data_mode,
    load_inputs,
)
from signray.training.loop import train_loop
from signray.training.reporters import FileReporter

SPEC = dict(num_gloss=6, num_cat=2, train_per_gloss=6, val_per_gloss=3, min_len=8, max_len=24,
            seed=1, difficulty="easy", features=False)  # fmt: skip


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """The same keypoint clips as per-clip files and as format-2 shards (3 per split)."""
    root = tmp_path_factory.mktemp("inputs")
    return {
        "clips": write_dataset(root / "clips", **SPEC),
        "shards": write_dataset(root / "shards", num_shards=3, **SPEC),
    }


def _cfg(root: Path, tmp_path: Path, **over):
    values = {
        "keypoints_train": str(root / "keypoints_train"),
        "keypoints_val": str(root / "keypoints_val"),
        "labels_train_csv": str(root / "train_labels.csv"),
        "labels_val_csv": str(root / "val_labels.csv"),
        "num_gloss": 6, "num_cat": 2, "epochs": 2, "batch_size": 6, "lr": 3e-3, "d_model": 16,
        "n_heads": 2, "depth": 1, "ff_dim": 32, "head_hidden": 16, "num_threads": 1,
        "output_dir": str(tmp_path), **over,
    }  # fmt: skip
    return resolve_config(values)


def test_check_keeps_no_frames_and_agrees_with_loading(datasets, tmp_path) -> None:
    for kind, root in datasets.items():
        cfg = _cfg(root, tmp_path)
        summary = check_inputs(cfg)
        data = load_inputs(dataclasses.replace(cfg, data_mode="memory"))
        assert summary.train.kind == ("clips" if kind == "clips" else "shards-v2")
        assert len(summary.train) == len(data.train) == 36 and len(summary.val) == 18
        assert summary.train.lengths.tolist() == data.train.lengths.tolist()
        assert summary.nbytes == 4 * 156 * (data.train.num_frames + data.val.num_frames)
        assert summary.streamable == (kind == "shards")
        frames = np.concatenate([data.train.clip(i) for i in range(len(data.train))])
        assert np.allclose(summary.train.norm.mean, frames.mean(0))
        assert np.allclose(data.norm.std, frames.std(0))
    assert isinstance(load_inputs(_cfg(datasets["shards"], tmp_path)).train, PackedParts)


def test_stream_mode_needs_format_2_shards_for_every_worker(datasets, tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        check_inputs(_cfg(datasets["clips"], tmp_path, data_mode="stream"))
    text = str(err.value)
    assert "`--data-mode stream` reads format-2 shard folders" in text
    assert "keypoints_train is a per-clip folder" in text and "keypoints_val is a per-clip" in text
    assert "python -m signray.data.pack" in text
    with pytest.raises(ConfigError, match="has 3 shard\\(s\\) but training streams it on 4 ranks"):
        check_inputs(_cfg(datasets["shards"], tmp_path, data_mode="stream", ray_workers=4,
                          batch_size=8))  # fmt: skip
    with pytest.raises(ConfigError, match="--smoke-test data is built in memory"):
        check_inputs(resolve_config({"smoke_test": True, "data_mode": "stream"}))
    with pytest.raises(ConfigError, match="`data_mode` must be one of auto, memory, stream"):
        _cfg(datasets["shards"], tmp_path, data_mode="disk")


def test_data_problems_of_both_splits_at_once(datasets, tmp_path) -> None:
    cfg = _cfg(datasets["shards"], tmp_path, num_gloss=3)
    with pytest.raises(DataError) as err:
        check_inputs(cfg)
    assert "[train]" in str(err.value) and "[val]" in str(err.value)
    assert "gloss id(s) out of range" in str(err.value)


def test_auto_mode_by_size(datasets, tmp_path) -> None:
    shards = check_inputs(_cfg(datasets["shards"], tmp_path))
    clips = check_inputs(_cfg(datasets["clips"], tmp_path))
    roomy, tight = shards.nbytes / MEMORY_SHARE + 1, shards.nbytes
    cfg = _cfg(datasets["shards"], tmp_path)
    assert choose_data_mode(cfg, shards, roomy)[0] == "memory"
    mode, why = choose_data_mode(cfg, shards, tight)
    assert mode == "stream" and why.startswith("auto:") and "exceed" in why
    mode, why = choose_data_mode(_cfg(datasets["clips"], tmp_path), clips, tight)
    assert mode == "memory" and "only format-2 shards" in why
    many = _cfg(datasets["shards"], tmp_path, ray_workers=6)
    assert choose_data_mode(many, shards, tight)[0] == "memory"  # 3 shards cannot feed 6 ranks
    explicit = _cfg(datasets["shards"], tmp_path, data_mode="stream")
    assert choose_data_mode(explicit, shards, roomy) == ("stream", "--data-mode stream")


def _train(cfg, data):
    reporter = FileReporter(cfg.output_dir, cfg.spec.class_name, total_epochs=cfg.epochs,
                            stream=io.StringIO())  # fmt: skip
    train_loop(cfg, reporter, data)
    return Path(cfg.output_dir) / "SignTransformer_best.pt"


def test_streamed_training_reports_what_memory_evaluation_measures(datasets, tmp_path) -> None:
    cfg = _cfg(datasets["shards"], tmp_path, data_mode="stream")
    data = load_inputs(cfg)
    assert isinstance(data.train, ShardStream) and isinstance(data.val, ShardStream)
    best = _train(cfg, data)
    val = load_split(datasets["clips"] / "keypoints_val", datasets["clips"] / "val_labels.csv",
                     num_gloss=6, num_cat=2)  # fmt: skip
    again = evaluate_checkpoint(best, val, batch_size=6)
    saved = load_checkpoint(best).metrics
    assert saved["val_gloss_acc"] == again["val_gloss_acc"] and again["val_count"] == 18
    assert saved["val_loss"] == pytest.approx(again["val_loss"], rel=1e-5)


def test_loop_uses_the_given_statistics_without_a_pass(datasets, tmp_path, monkeypatch) -> None:
    cfg = _cfg(datasets["clips"], tmp_path, epochs=1)
    data = load_inputs(cfg)
    given = data.norm.__class__(np.full(156, 0.25), np.full(156, 2.0), 1)

    def no_pass(self):
        raise AssertionError("the loop went over the training frames")

    monkeypatch.setattr(PackedSplit, "norm_stats", no_pass)
    best = _train(cfg, TrainingData(data.train, data.val, given))
    model = load_checkpoint(best).model
    assert np.allclose(model["input_norm.mean"].numpy(), 0.25)
    assert np.allclose(model["input_norm.std"].numpy(), 2.0)
