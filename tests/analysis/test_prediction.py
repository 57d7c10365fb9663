"""`python -m signray.predict` on a real tiny run: top-1 is the model's argmax; bad clips exit 2."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from signray.analysis.prediction import predict_clips
from signray.training.checkpoint import model_from_checkpoint


def _predict(*args):
    return subprocess.run(
        [sys.executable, "-m", "signray.predict", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def clips(tiny_run):
    return sorted((tiny_run.root / "keypoints_val").glob("*.npz"))[:4]


def _argmax(model, path):
    x = torch.from_numpy(np.load(path, allow_pickle=False)["X"].astype(np.float32))
    with torch.no_grad():
        gloss, cat = model(x[None], torch.tensor([len(x)]))  # (1, G), (1, C)
    return int(gloss.argmax()), int(cat.argmax())


def test_json_top1_is_the_models_argmax(tiny_run, clips):
    proc = _predict("--checkpoint", tiny_run.best, *clips, "--top-k", 3, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    preds = doc["predictions"]
    assert [p["file"] for p in preds] == [str(c) for c in clips]
    model, _, _ = model_from_checkpoint(tiny_run.best)
    for path, pred in zip(clips, preds, strict=True):
        gloss, cat = _argmax(model, path)
        assert pred["top"][0]["id"] == gloss
        assert pred["category"]["id"] == cat
        probs = [t["prob"] for t in pred["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6


def test_text_output_with_names(tiny_run, clips, tmp_path):
    names = tmp_path / "names.csv"
    names.write_text("id,name\n" + "".join(f"{i},SIGN{i}\n" for i in range(6)))
    proc = _predict("--checkpoint", tiny_run.best, clips[0], "--gloss-names", names)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(str(clips[0]))
    assert lines[1].lstrip().startswith("1. gloss ") and "SIGN" in lines[1] and "%" in lines[1]
    assert len([x for x in lines if ". gloss " in x]) == 5
    assert lines[-1].lstrip().startswith("category ")


def test_bad_clips_exit_2_naming_every_file(tiny_run, clips, tmp_path):
    nan = tmp_path / "nan.npz"
    np.savez(nan, X=np.full((5, 156), np.nan, dtype=np.float32))
    wrong_d = tmp_path / "wrong_d.npz"
    np.savez(wrong_d, X=np.zeros((5, 7), dtype=np.float32))
    wrong_key = tmp_path / "wrong_key.npz"
    np.savez(wrong_key, Y=np.zeros((5, 156), dtype=np.float32))
    empty = tmp_path / "empty.npz"
    np.savez(empty, X=np.zeros((0, 156), dtype=np.float32))
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"X": [1, 2, 3]}))
    bad = [nan, wrong_d, wrong_key, empty, pickled, tmp_path / "missing.npz"]
    proc = _predict("--checkpoint", tiny_run.best, clips[0], *bad)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    for path in bad:
        assert str(path) in proc.stderr, path
    assert str(clips[0]) not in proc.stderr
    assert "NaN" in proc.stderr and "D = 7" in proc.stderr and "pickle" in proc.stderr


def test_library_predictions_match_cli_shape(tiny_run, clips):
    preds = predict_clips(tiny_run.best, clips[:2], top_k=100)
    assert len(preds) == 2 and len(preds[0].top) == 6  # k is capped at num_gloss
    assert preds[0].frames == len(np.load(clips[0])["X"])
