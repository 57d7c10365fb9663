"""`python -m signray.evaluate` on a real tiny run: files, valid PNGs, numbers that agree."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from signray.analysis.evaluation import confusion_matrix, evaluate_to_dir, read_names
from signray.train import evaluate_checkpoint


def _evaluate(*args):
    return subprocess.run(
        [sys.executable, "-m", "signray.evaluate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def names_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("names") / "gloss_names.csv"
    path.write_text("id,name\n" + "".join(f"{i},SIGN{i}\n" for i in range(6)))
    return path


@pytest.fixture(scope="module")
def cli_eval(tiny_run, names_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "evaluation"
    proc = _evaluate(
        "--checkpoint",
        tiny_run.best,
        "--keypoints-val",
        tiny_run.root / "keypoints_val",
        "--labels-val-csv",
        tiny_run.root / "val_labels.csv",
        "--gloss-names",
        names_csv,
        "--out",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_cli_writes_every_file(cli_eval, assert_png):
    out, proc = cli_eval
    for name in ("metrics.json", "per_gloss.csv", "confused_pairs.csv"):
        assert (out / name).is_file(), name
    assert_png(out / "confusion_gloss.png")
    assert_png(out / "confusion_cat.png")
    assert "gloss accuracy" in proc.stdout


def test_numbers_agree_with_the_checkpoints_own_evaluation(cli_eval, tiny_run):
    out, _ = cli_eval
    metrics = json.loads((out / "metrics.json").read_text())
    reference = evaluate_checkpoint(tiny_run.best, tiny_run.val, batch_size=8)
    assert metrics["count"] == reference["val_count"] == len(tiny_run.val)
    assert metrics["gloss_acc"] == pytest.approx(reference["val_gloss_acc"], abs=1e-9)
    assert metrics["gloss_top5"] == pytest.approx(reference["val_gloss_top5"], abs=1e-9)
    assert metrics["cat_acc"] == pytest.approx(reference["val_cat_acc"], abs=1e-9)
    assert metrics["loss"] == pytest.approx(reference["val_loss"], rel=1e-4)

    with (out / "per_gloss.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["id"]) for r in rows] == list(range(6))
    assert [r["name"] for r in rows] == [f"SIGN{i}" for i in range(6)]
    assert sum(int(r["support"]) for r in rows) == len(tiny_run.val)
    correct = sum(int(r["correct"]) for r in rows)
    assert correct == round(reference["val_gloss_acc"] * len(tiny_run.val))
    for r in rows:
        assert float(r["accuracy"]) == pytest.approx(int(r["correct"]) / int(r["support"]))

    with (out / "confused_pairs.csv").open() as f:
        pairs = list(csv.DictReader(f))
    assert sum(int(p["count"]) for p in pairs) == len(tiny_run.val) - correct
    assert all(p["true_id"] != p["pred_id"] for p in pairs)
    counts = [int(p["count"]) for p in pairs]
    assert counts == sorted(counts, reverse=True)


def test_library_call_matches_and_reads_names(tiny_run, tmp_path):
    metrics = evaluate_to_dir(tiny_run.best, tiny_run.val, tmp_path, gloss_names=list("abcdef"))
    assert (tmp_path / "confusion_gloss.png").is_file()
    rows = list(csv.DictReader((tmp_path / "per_gloss.csv").open()))
    assert rows[2]["name"] == "c"
    assert 0.0 <= metrics["gloss_acc"] <= 1.0


def test_confusion_matrix_counts():
    cm = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_bad_names_csv_reports_every_line(tmp_path):
    path = tmp_path / "names.csv"
    path.write_text("id,name\n0,a\nx,b\n9,c\n0,d\n")
    with pytest.raises(ValueError) as err:
        read_names(path, 3)
    text = str(err.value)
    assert "line 3" in text and "line 4" in text and "line 5" in text


def test_wrong_input_kind_exits_2(tiny_run, tmp_path):
    proc = _evaluate(
        "--checkpoint",
        tiny_run.best,
        "--features-val",
        tiny_run.root / "keypoints_val",
        "--labels-val-csv",
        tiny_run.root / "val_labels.csv",
        "--out",
        tmp_path,
    )
    assert proc.returncode == 2
    assert "--keypoints-val" in proc.stderr and "Traceback" not in proc.stderr
