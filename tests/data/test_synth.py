from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import pytest

from signray.data import PackedSplit, load_split, synthetic_splits, write_dataset
from signray.data.synth import main
from signray.errors import ConfigError

TINY = {
    "num_gloss": 6,
    "num_cat": 3,
    "train_per_gloss": 3,
    "val_per_gloss": 2,
    "min_len": 8,
    "max_len": 20,
}


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    a = _files(write_dataset(tmp_path / "a", seed=5, feature_dim=32, **TINY))
    b = _files(write_dataset(tmp_path / "b", seed=5, feature_dim=32, **TINY))
    c = _files(write_dataset(tmp_path / "c", seed=6, feature_dim=32, **TINY))
    assert a == b
    assert a.keys() == c.keys()
    differing = [k for k in a if a[k] != c[k]]
    assert len(differing) > 0.9 * len(a)


def test_both_layouts_written_and_loadable(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "d", seed=1, feature_dim=32, **TINY)
    names = {p.name for p in out.iterdir()}
    assert names == {
        "keypoints_train",
        "keypoints_val",
        "features_train",
        "features_val",
        "train_labels.csv",
        "val_labels.csv",
    }
    with np.load(out / "keypoints_train" / "g000_train_000.npz", allow_pickle=False) as f:
        assert f.files == ["X"] and f["X"].dtype == np.float32 and f["X"].shape[1] == 156
    with np.load(out / "features_val" / "g005_val_001.npz", allow_pickle=False) as f:
        assert f.files == ["X2048"] and f["X2048"].dtype == np.float16 and f["X2048"].shape[1] == 32

    with (out / "train_labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["file", "gloss", "cat", "occluded"]
    with_ext = sum(r["file"].endswith(".npz") for r in rows)
    assert with_ext == len(rows) // 2

    kw = {"num_gloss": 6, "num_cat": 3}
    train_kp = load_split(out / "keypoints_train", out / "train_labels.csv", **kw)
    val_ft = load_split(
        out / "features_val", out / "val_labels.csv", keys=("X2048", "X"), split="val", **kw
    )
    mem_train, _ = synthetic_splits(kind="keypoints", seed=1, **TINY)
    _, mem_val = synthetic_splits(kind="features", seed=1, feature_dim=32, **TINY)
    for loaded, mem in ((train_kp, mem_train), (val_ft, mem_val)):
        for field in ("frames", "offsets", "gloss", "cat", "names"):
            assert np.array_equal(getattr(loaded, field), getattr(mem, field)), field


def test_class_balance_and_lengths() -> None:
    train, val = synthetic_splits(seed=2, **TINY)
    assert np.bincount(train.gloss).tolist() == [3] * 6
    assert np.bincount(val.gloss).tolist() == [2] * 6
    gloss_cat = {int(g): int(c) for g, c in zip(train.gloss, train.cat, strict=True)}
    assert sorted(np.bincount(list(gloss_cat.values())).tolist()) == [2, 2, 2]
    for split in (train, val):
        assert split.lengths.min() >= 8 and split.lengths.max() <= 20
        assert split.feature_dim == 156
        assert split.frames.min() >= 0.0 and split.frames.max() <= 1.0


def test_lengths_span_the_range() -> None:
    train, _ = synthetic_splits(
        seed=0, num_gloss=10, num_cat=2, train_per_gloss=20, val_per_gloss=1
    )
    assert train.lengths.min() < 25 and train.lengths.max() > 110


def _resample(clip: np.ndarray, frames: int = 12) -> np.ndarray:
    return clip[np.linspace(0, len(clip) - 1, frames).round().astype(int)].ravel()


def _class_means(split: PackedSplit) -> np.ndarray:
    """Each gloss's mean clip, resampled to a fixed length: a crude template."""
    x = np.stack([_resample(split.clip(i)) for i in range(len(split))])
    return np.stack([x[split.gloss == g].mean(0) for g in range(int(split.gloss.max()) + 1)])


@functools.cache
def _template_matching(difficulty: str) -> tuple[float, float, float]:
    """Nearest-class-mean accuracy, share of its errors inside the true category, and the mean
    distance between same-category class means relative to different-category ones."""
    g = 20
    kw = {"num_gloss": g, "num_cat": 4, "train_per_gloss": 4, "val_per_gloss": 3}
    train, val = synthetic_splits(seed=0, difficulty=difficulty, **kw)
    means = _class_means(train)
    cat_of = np.array([train.cat[train.gloss == i][0] for i in range(g)])
    x = np.stack([_resample(val.clip(i)) for i in range(len(val))])
    pred = np.argmin(np.linalg.norm(means[None] - x[:, None], axis=-1), axis=1)
    wrong = pred != val.gloss
    within = float(np.mean(cat_of[pred[wrong]] == val.cat[wrong])) if wrong.any() else 1.0
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    same = cat_of[:, None] == cat_of[None]
    ratio = dist[same & ~np.eye(g, dtype=bool)].mean() / dist[~same].mean()
    return float(np.mean(~wrong)), within, float(ratio)


def test_learnable_and_harder_when_asked() -> None:
    easy, medium, hard = (_template_matching(d)[0] for d in ("easy", "medium", "hard"))
    assert easy > 0.9  # learnable: even a template matcher does well
    assert easy > medium + 0.2 and medium > hard + 0.1  # difficulty means something
    assert hard > 1 / 20 + 0.1  # but not noise


@pytest.mark.parametrize("difficulty", ["medium", "hard"])
def test_same_category_glosses_are_confusable(difficulty: str) -> None:
    _, within, ratio = _template_matching(difficulty)
    assert within > 0.5  # chance would be 3 of 19 wrong glosses, about 0.16
    assert ratio < 0.85


def test_cli_without_features(tmp_path: Path) -> None:
    args = ["--out", str(tmp_path / "s"), "--num-gloss", "4", "--num-cat", "2"]
    args += ["--train-per-gloss", "2", "--val-per-gloss", "1", "--no-features"]
    args += ["--difficulty", "hard", "--min-len", "5", "--max-len", "9"]
    assert main(args) == 0
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert names == ["keypoints_train", "keypoints_val", "train_labels.csv", "val_labels.csv"]
    assert len(list((tmp_path / "s" / "keypoints_train").iterdir())) == 8


def test_invalid_arguments(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        synthetic_splits(num_gloss=2, num_cat=3, min_len=10, max_len=5, difficulty="x")
    text = str(err.value)
    assert "num_cat <= num_gloss" in text and "min_len <= max_len" in text and "'x'" in text
    with pytest.raises(SystemExit) as exit_info:
        main(["--output-dir", str(tmp_path / "z"), "--min-len", "0"])
    assert exit_info.value.code == 2
    assert "min_len must be an integer >= 1" in capsys.readouterr().err
