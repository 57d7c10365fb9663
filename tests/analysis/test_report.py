"""Experiment reading, reports and learning curves.

The experiment folder is written here in Ray Tune's layout (per-trial ``params.json`` +
``progress.csv`` + ``result.json``, the driver's state and ``trials.csv``, signray's done
markers); the slow test below and tests/tuning/test_tracking.py read folders real Tune runs wrote.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from signray.analysis import param_importances, plot_learning_curve, read_experiment, write_report
from signray.analysis.evaluation import evaluate_to_dir
from signray.analysis.importance import study_from_trials
from signray.config import TrainConfig
from signray.config.experiment_state import ExperimentState
from signray.config.search import SearchOptions
from signray.layout import ExperimentFiles, Status
from signray.report import main

DISTRIBUTIONS = {
    "lr": FloatDistribution(1e-4, 10**-2.5, log=True),
    "weight_decay": FloatDistribution(1e-4, 0.1, log=True),
    "depth": IntDistribution(1, 3),
    "d_model": CategoricalDistribution([32, 64, 128]),
    "pool": CategoricalDistribution(["mean", "cls"]),
}

PNGS = ("curves.png", "best_so_far.png", "params_vs_accuracy.png", "importance.png")


def write_fake_experiment(root, n_trials=8, max_epochs=6, trials_csv=True, seed=0):
    """A Ray-Tune-shaped folder: ASHA stopped some trials at rungs 1 and 2, one errored."""
    rng = np.random.default_rng(seed)
    files = ExperimentFiles(root)
    root.mkdir(parents=True)
    state = ExperimentState(TrainConfig(epochs=max_epochs), SearchOptions(), DISTRIBUTIONS)
    state.save(files.driver_state)
    start = 1_800_000_000
    table = []
    for i in range(n_trials):
        trial_id = f"ab12c_{i:05d}"
        params = {
            "lr": float(10 ** rng.uniform(-4, -2.5)),
            "weight_decay": float(10 ** rng.uniform(-4, -1)),
            "depth": int(rng.integers(1, 4)),
            "d_model": int(rng.choice([32, 64, 128])),
            "pool": str(rng.choice(["mean", "cls"])),
        }
        epochs = max_epochs if i < 4 else (1 if i % 2 else 2)
        quality = 1 - abs(math.log10(params["lr"]) + 3.2)  # best lr near 6e-4
        folder = root / f"train_trial_{trial_id}_{i}_lr={params['lr']:.4g}_2026-01-01_00-00-00"
        folder.mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps(params))
        rows = []
        for e in range(1, epochs + 1):
            acc = float(np.clip(quality * (1 - 0.6**e) + rng.normal(0, 0.02), 0, 1))
            rows.append(
                {
                    "epoch": e,
                    "val_gloss_acc": acc,
                    "val_loss": 2 - acc,
                    "timestamp": start + 20 * i + 7 * e,
                    "time_total_s": 7.0 * e,
                    "training_iteration": e,
                    "trial_id": trial_id,
                    "done": False,
                }
            )
        pd.DataFrame(rows).to_csv(folder / "progress.csv", index=False)
        (folder / "result.json").write_text(
            "".join(json.dumps({**r, "config": params}) + "\n" for r in rows)
        )
        if epochs == max_epochs:
            files.done_marker(trial_id).parent.mkdir(exist_ok=True)
            files.done_marker(trial_id).write_text("{}")
        if i == n_trials - 1:
            (folder / "error.txt").write_text("boom")
        status = "TERMINATED" if epochs == max_epochs else "STOPPED_EARLY"
        table.append(  # the columns of trials.csv
            {
                "trial_id": trial_id,
                **params,
                "status": "ERROR" if i == n_trials - 1 else status,
                "epochs": epochs,
                "best_val_gloss_acc": max(r["val_gloss_acc"] for r in rows),
                "last_val_gloss_acc": rows[-1]["val_gloss_acc"],
                "wall_time_s": 7.0 * epochs,
                "error": "boom" if i == n_trials - 1 else "",
            }
        )
    if trials_csv:
        pd.DataFrame(table).to_csv(root / "trials.csv", index=False)
    (root / "experiment_state-2026-01-01.json").write_text("{}")  # ignored: not a folder
    (root / "train_runs").mkdir()  # ignored: not a trial
    return root


@pytest.mark.parametrize("trials_csv", [True, False])
def test_experiment_is_read_like_ray_wrote_it(tmp_path, trials_csv):
    exp = read_experiment(write_fake_experiment(tmp_path / "exp", trials_csv=trials_csv))
    assert len(exp.trials) == 8
    assert exp.params == ["lr", "weight_decay", "depth", "d_model", "pool"]
    status = [t.status for t in exp.trials]
    assert status[:4] == [Status.TERMINATED] * 4 and status[-1] == Status.ERROR
    assert status[4:7] == [Status.STOPPED_EARLY] * 3
    assert [t.epochs for t in exp.trials][4:6] == [2, 1]
    assert exp.trials[-1].error == ("boom" if trials_csv else "")
    table = exp.table()
    assert list(table.columns[:6]) == ["trial_id", *exp.params]
    assert table["best_val_gloss_acc"].tolist() == [t.best() for t in exp.trials]


def test_report_cli_writes_pngs_and_html(tmp_path, tiny_run, assert_png):
    root = write_fake_experiment(tmp_path / "exp")
    evaluate_to_dir(tiny_run.best, tiny_run.val, root / "evaluation")  # what tune does
    proc = subprocess.run(
        [sys.executable, "-m", "signray.report", str(root)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    report = root / "report"
    for name in PNGS:
        assert_png(report / name)
    page = (report / "index.html").read_text()
    for name in PNGS:
        assert f"src='{name}'" in page
    assert "../evaluation/confusion_gloss.png" in page
    assert page.count("<tr>") >= 8 and "ab12c_00003" in page  # the trials table
    importance = pd.read_csv(report / "importance.csv")
    assert set(importance["param"]) <= {"lr", "weight_decay", "depth", "d_model", "pool"}
    assert importance["importance"].sum() == pytest.approx(1.0, abs=1e-3)


def test_study_is_rebuilt_with_the_distributions_the_search_sampled(tmp_path):
    exp = read_experiment(write_fake_experiment(tmp_path / "exp"))
    study = study_from_trials(exp.trials, exp.distributions)
    assert len(study.trials) == 7  # the errored trial is left out
    assert [t.state.name for t in study.trials].count("PRUNED") == 3
    dists = study.trials[0].distributions
    assert dists == {k: v for k, v in DISTRIBUTIONS.items() if k in dists}
    importances, note = param_importances(exp)
    assert set(importances) <= set(DISTRIBUTIONS) and importances


def test_too_few_trials_degrades_with_a_note(tmp_path, assert_png):
    root = write_fake_experiment(tmp_path / "exp", n_trials=2, trials_csv=False)
    importances, note = param_importances(read_experiment(root))
    assert importances == {} and "Too few trials" in note
    index = write_report(root)
    assert "Too few trials" in index.read_text()
    assert_png(root / "report" / "importance.png")


def test_missing_folder_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_learning_curve_from_a_real_log(tiny_run, tmp_path, assert_png):
    out = plot_learning_curve(tiny_run.log, tmp_path / "curve.png")
    assert_png(out)


@pytest.mark.slow
def test_report_on_a_real_tune_run(tmp_path, assert_png, ray_cluster):
    """The driver's own smoke search (Ray Tune, Optuna, ASHA, on the session's cluster), then the
    report on its folder."""
    tune = subprocess.run(
        [
            sys.executable,
            "-m",
            "signray.tune",
            "--smoke-test",
            "--num-samples",
            "4",
            "--epochs",
            "3",
            "--storage-path",
            str(tmp_path),
            "--name",
            "exp",
            "--address",
            ray_cluster,
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert tune.returncode == 0, tune.stdout[-3000:] + tune.stderr[-3000:]
    root = tmp_path / "exp"
    assert main([str(root)]) == 0
    for name in PNGS:
        assert_png(root / "report" / name)
    exp = read_experiment(root)
    assert len(exp.trials) == 4 and "lr" in exp.params
    assert all(len(t.history) >= 1 for t in exp.trials)
