"""Data the reference project produced trains as it is: labels CSVs written on Windows (CRLF,
clips in sub-folders named with backslashes, ``0\\0.npz``), ``.npz`` files with the extra keys
``mask``, ``timestamps_ms`` and ``meta``, and the ``--kp-key``/``--feature-key`` flags."""

from __future__ import annotations

import json

import numpy as np
import pytest

from signray.data.clips import ClipProblem, read_clip
from signray.data.labels import read_labels
from signray.errors import DataError
from signray.train import main as train_main

GLOSSES, PER_GLOSS = 3, 3


def _reference_split(root, split: str, kp_key: str) -> None:
    """Clips as the reference's preprocess.py writes them, in its sub-folder ``0``, and a labels
    CSV as Windows writes it."""
    rng = np.random.default_rng(0 if split == "train" else 1)
    lines = ["file,gloss,cat,occluded"]
    for g in range(GLOSSES):
        for i in range(PER_GLOSS):
            t = int(rng.integers(6, 12))
            name = f"g{g}_{split}_{i}"
            arrays = {
                kp_key: (rng.random((t, 156)) * 0.1 + g * 0.3).astype(np.float32),
                "X2048": (rng.random((t, 2048)) + g).astype(np.float32),
                "mask": np.ones((t, 78), dtype=bool),
                "timestamps_ms": np.arange(t, dtype=np.int64) * 33,
                "meta": np.array(json.dumps({"video": f"{name}.mp4", "target_fps": 30})),
            }
            folder = root / split / "0"
            folder.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(folder / f"{name}.npz", **arrays)
            lines.append(f"0\\{name}.npz,{g},{g % 2},0")
    (root / f"{split}_labels.csv").write_bytes("\r\n".join(lines).encode() + b"\r\n")


@pytest.fixture(scope="module")
def reference_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    for split in ("train", "val"):
        _reference_split(root, split, kp_key="keypoints")
    return root


def test_windows_paths_name_clips_in_subfolders(reference_data):
    rows = read_labels(reference_data / "train_labels.csv", num_gloss=None, num_cat=None)
    assert rows[0].name == "0/g0_train_0"
    assert all((reference_data / "train" / f"{r.name}.npz").is_file() for r in rows)


def test_a_clip_outside_the_data_folder_is_refused(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("file,gloss,cat\r\n..\\secret.npz,0,0\r\n")
    with pytest.raises(DataError, match="leaves the data folder"):
        read_labels(csv, num_gloss=None, num_cat=None)


def test_points_the_mask_marks_unseen_are_read_as_missing(tmp_path):
    """A point with mask False reads as exactly (0, 0), the value augmentations keep missing;
    the features in the same file are left alone."""
    rng = np.random.default_rng(0)
    X = rng.random((5, 156)).astype(np.float32) + 0.1
    features = rng.random((5, 2048)).astype(np.float32)
    seen = np.ones((5, 78), dtype=bool)
    seen[1, 3] = seen[4, 77] = False
    path = tmp_path / "clip.npz"
    np.savez(path, X=X, X2048=features, mask=seen)

    arr, _ = read_clip(path, ["X"], None)
    assert arr[1, 6:8].tolist() == [0, 0] and arr[4, 154:].tolist() == [0, 0]
    kept = np.repeat(seen, 2, axis=1)
    assert np.array_equal(arr[kept], X[kept]) and (arr[~kept] == 0).all()
    assert np.array_equal(read_clip(path, ["X2048"], None)[0], features)

    np.savez(path, X=X, mask=seen[:4])
    with pytest.raises(ClipProblem, match=r"clip.npz: key 'mask' has 4 frames but 'X' has 5"):
        read_clip(path, ["X"], None)
    np.savez(path, X=X, mask=seen.reshape(-1))
    with pytest.raises(ClipProblem, match=r"key 'mask' has shape \(390,\)"):
        read_clip(path, ["X"], None)


@pytest.mark.parametrize(
    ("model", "flags"),
    [
        ("transformer", ["--kp-key", "keypoints", "--d-model", "32", "--n-heads", "4"]),
        ("iv3_gru", ["--feature-key", "X2048"]),
    ],
)
def test_reference_data_trains(reference_data, tmp_path, model, flags):
    kind = "keypoints" if model == "transformer" else "features"
    code = train_main([
        "--model", model, *flags, "--epochs", "1", "--batch-size", "4",
        f"--{kind}-train", str(reference_data / "train"),
        f"--{kind}-val", str(reference_data / "val"),
        "--labels-train-csv", str(reference_data / "train_labels.csv"),
        "--labels-val-csv", str(reference_data / "val_labels.csv"),
        "--num-gloss", str(GLOSSES), "--num-cat", "2", "--output-dir", str(tmp_path / "run"),
    ])  # fmt: skip
    assert code == 0
    assert any((tmp_path / "run").glob("*_best.pt"))
