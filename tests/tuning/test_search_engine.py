"""The search engine on a real Ray cluster (slow): reused actors, the Optuna study in SQLite
(states and values, resume, warm start, the dashboard), PBT and several objectives."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from rayhelpers import result_records, trial_dirs
from rayhelpers import trial_rows as _rows

from signray.layout import ExperimentFiles
from signray.tuning.searcher import RAY_TRIAL_ID_ATTR

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SMALL = {"d_model": 32, "n_heads": 2, "depth": 1, "ff_dim": 32, "dropout": 0.0}


def _tune(*args) -> int:
    from signray.tune import main

    return main([str(a) for a in args])


def _space(tmp_path: Path, space: dict, points: list[dict] | None = None) -> Path:
    path = tmp_path / f"space-{len(list(tmp_path.glob('space-*')))}.yaml"
    path.write_text(yaml.safe_dump({"space": space, "points_to_evaluate": points or []}))
    return path


def _study(experiment: Path) -> optuna.Study:
    files = ExperimentFiles(experiment)
    return optuna.load_study(study_name=files.name, storage=f"sqlite:///{files.optuna_db}")


def _by_trial_id(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    return {
        t.user_attrs[RAY_TRIAL_ID_ATTR]: t
        for t in study.trials
        if RAY_TRIAL_ID_ATTR in t.user_attrs
    }


def _history(experiment: Path) -> dict[str, list[dict]]:
    return {d.name.removeprefix("trial_"): result_records(d) for d in trial_dirs(experiment)}


def test_reused_actor_gives_the_same_metrics_as_a_fresh_one(ray_cluster, tmp_path):
    """Config A in a fresh actor, then B (deterministic kernels, another lr), then A again in
    the same, reused actor: A's two runs must agree to the last bit."""
    a = {"lr": 0.003, "deterministic": False}
    b = {"lr": 0.0003, "deterministic": True}
    space = _space(
        tmp_path,
        {
            "lr": {"distribution": "choice", "values": [0.003, 0.0003]},
            "deterministic": {"distribution": "choice", "values": [False, True]},
            **SMALL,
        },
        [a, b, a],
    )
    args = ["--model", "transformer", "--smoke-test", "--search-space", space,
            "--num-samples", 3, "--epochs", 3, "--trial-scheduler", "fifo",
            "--max-concurrent", 1, "--storage-path", tmp_path, "--name", "reuse"]  # fmt: skip
    assert _tune(*args) == 0
    experiment = tmp_path / "reuse"
    order = [t.user_attrs[RAY_TRIAL_ID_ATTR] for t in _study(experiment).trials]
    runs = [_history(experiment)[trial_id] for trial_id in order]
    assert len({r[0]["pid"] for r in runs}) == 1, "Tune did not reuse the actor"
    assert runs[0][0]["config"] == runs[2][0]["config"] == a
    keys = ("train_loss", "val_loss", "val_gloss_acc", "val_cat_acc", "samples_seen")
    first = [{k: r[k] for k in keys} for r in runs[0]]
    again = [{k: r[k] for k in keys} for r in runs[2]]
    assert first == again
    assert [r["train_loss"] for r in runs[1]] != [r["train_loss"] for r in runs[0]]


def test_study_states_and_values_match_trials_csv_and_the_dashboard_shows_them(
    ray_cluster, tmp_path
):
    assert _tune("--model", "transformer", "--smoke-test", "--num-samples", 6,
                 "--storage-path", tmp_path, "--name", "study") == 0  # fmt: skip
    experiment = tmp_path / "study"
    rows = {r["trial_id"]: r for r in _rows(experiment)}
    trials = _by_trial_id(_study(experiment))
    assert set(trials) == set(rows) and len(_study(experiment).trials) == 6
    expected = {"TERMINATED": TrialState.COMPLETE, "STOPPED_EARLY": TrialState.PRUNED}
    assert any(r["status"] == "STOPPED_EARLY" for r in rows.values()), "ASHA stopped none"
    for trial_id, row in rows.items():
        trial = trials[trial_id]
        assert trial.state == expected[row["status"]], trial_id
        assert trial.value == pytest.approx(float(row["last_val_gloss_acc"]))
        epochs = int(row["epochs"])
        assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))
        assert max(trial.intermediate_values.values()) == pytest.approx(
            float(row["best_val_gloss_acc"])
        )
    # optuna-dashboard reads the same study over HTTP (127.0.0.1 only).
    port = 18000 + int(time.time()) % 1000
    url = f"sqlite:///{ExperimentFiles(experiment).optuna_db}"
    dashboard = subprocess.Popen(
        [str(Path(sys.executable).with_name("optuna-dashboard")), url, "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline, studies = time.time() + 60, None
        while studies is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as r:
                    studies = json.loads(r.read())["study_summaries"]
            except OSError:
                assert dashboard.poll() is None and time.time() < deadline
                time.sleep(0.5)
        (summary,) = studies
        assert summary["study_name"] == "study"
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0"
        ) as r:
            shown = json.loads(r.read())["trials"]
        assert sorted(t["state"] for t in shown) == sorted(
            "Complete" if r["status"] == "TERMINATED" else "Pruned" for r in rows.values()
        )
    finally:
        dashboard.send_signal(signal.SIGTERM)
        dashboard.wait(timeout=30)


def test_resume_continues_the_study_without_duplicates(ray_cluster, tmp_path):
    args = ["--model", "iv3_gru", "--smoke-test", "--num-samples", 3, "--epochs", 40,
            "--trial-scheduler", "fifo", "--max-concurrent", 1, "--storage-path", tmp_path,
            "--name", "res", "--address", ray_cluster]  # fmt: skip
    experiment = tmp_path / "res"
    proc = subprocess.Popen(
        [sys.executable, "-m", "signray.tune", *map(str, args)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 240
        while not list((experiment / ExperimentFiles.DONE_DIR).glob("*.json")):
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.time() < deadline, "no trial finished in time"
            time.sleep(0.5)
        time.sleep(1.0)  # the second trial is running
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-3000:]
    before = _study(experiment).trials
    assert TrialState.RUNNING in [t.state for t in before] or len(before) < 3
    resumed = subprocess.run(
        [sys.executable, "-m", "signray.tune", "--resume", "--name", "res", "--storage-path",
         str(tmp_path), "--address", ray_cluster],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    study = _study(experiment)
    rows = _rows(experiment)
    assert len(rows) == 3 and len(study.trials) == 3
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert set(_by_trial_id(study)) == {r["trial_id"] for r in rows}
    # The trial interrupted mid-way kept its Optuna trial: one value per epoch, none missing.
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == list(range(1, 41))


def test_warm_start_runs_the_earlier_best_config_first(ray_cluster, tmp_path, capsys):
    space = {
        "lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2},
        "weight_decay": {"distribution": "loguniform", "low": 1e-5, "high": 1e-2},
        **SMALL,
    }
    common = ["--model", "transformer", "--smoke-test", "--epochs", 2,
              "--trial-scheduler", "fifo", "--storage-path", tmp_path]  # fmt: skip
    assert _tune(*common, "--search-space", _space(tmp_path, space), "--num-samples", 3,
                 "--name", "first") == 0  # fmt: skip
    earlier = [t for t in _study(tmp_path / "first").trials if t.state == TrialState.COMPLETE]
    best = max(earlier, key=lambda t: t.value)
    # The new space drops weight_decay and adds label_smoothing.
    new_space = {k: v for k, v in space.items() if k != "weight_decay"}
    new_space["label_smoothing"] = {"distribution": "uniform", "low": 0.0, "high": 0.2}
    capsys.readouterr()
    assert _tune(*common, "--search-space", _space(tmp_path, new_space), "--num-samples", 2,
                 "--warm-start", tmp_path / "first", "--warm-start-top-k", 1,
                 "--name", "second") == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "warm start from" in out and "3 finished trial(s) told" in out
    assert "weight_decay (3 trials)" in out
    study = _study(tmp_path / "second")
    told = [t for t in study.trials if "warm_start_from" in t.user_attrs]
    assert len(told) == 3 and all("weight_decay" not in t.params for t in told)
    ran = [t for t in study.trials if RAY_TRIAL_ID_ATTR in t.user_attrs]
    assert ran[0].params["lr"] == pytest.approx(best.params["lr"])  # the earlier best, first
    rows = {r["trial_id"]: r for r in _rows(tmp_path / "second")}
    assert float(rows[ran[0].user_attrs[RAY_TRIAL_ID_ATTR]]["lr"]) == pytest.approx(
        best.params["lr"]
    )


def test_pbt_exploit_trains_with_the_perturbed_lr(ray_cluster, tmp_path):
    # 4 trials side by side (0.5 CPU each), long enough (60 short epochs) to overlap: PBT ranks
    # the trials running at each perturbation (every 5 epochs) and the worst exploits the best.
    space = _space(
        tmp_path,
        {"lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2}, "scheduler": "none",
         **SMALL},
    )  # fmt: skip
    args = ["--model", "transformer", "--smoke-test", "--search-space", space,
            "--trial-scheduler", "pbt", "--budget-unit", "epochs",
            "--perturbation-interval", 5, "--num-samples", 4, "--epochs", 60,
            "--cpus-per-trial", 0.5, "--storage-path", tmp_path, "--name", "pbt"]  # fmt: skip
    assert _tune(*args) == 0
    perturbed = 0
    for records in _history(tmp_path / "pbt").values():
        lrs = [r["config"]["lr"] for r in records]
        perturbed += len(set(lrs)) > 1
        # The lr the optimizer trained each epoch with is the trial's config of that epoch.
        assert [r["lr"] for r in records] == pytest.approx(lrs)
    assert perturbed >= 1, "PBT perturbed no trial"


def test_two_objectives_write_the_pareto_front(ray_cluster, tmp_path, capsys):
    assert _tune("--model", "transformer", "--smoke-test", "--num-samples", 4, "--epochs", 2,
                 "--objectives", "val_gloss_acc,params", "--storage-path", tmp_path,
                 "--name", "mo") == 0  # fmt: skip
    out = capsys.readouterr().out
    experiment = ExperimentFiles(tmp_path / "mo")
    rows = _rows(experiment.root)
    assert all(r["status"] == "TERMINATED" for r in rows)  # FIFO: no early stops
    assert all(float(r["num_params"]) > 0 for r in rows)
    front = experiment.pareto_csv.read_text().splitlines()
    assert front[0].startswith("trial_id,") and "num_params" in front[0]
    assert "Pareto front (" in out and str(experiment.pareto_csv) in out
    study = _study(experiment.root)
    assert len(study.directions) == 2
    assert {t.user_attrs[RAY_TRIAL_ID_ATTR] for t in study.best_trials} == {
        line.split(",")[0] for line in front[1:]
    }
    assert (experiment.report / "pareto_front.png").is_file()


def test_hyperband_on_samples_runs_and_records_its_stops(ray_cluster, tmp_path):
    args = ["--model", "transformer", "--smoke-test", "--trial-scheduler", "hyperband",
            "--budget-unit", "samples", "--num-samples", 6, "--epochs", 8,
            "--storage-path", tmp_path, "--name", "hb"]  # fmt: skip
    assert _tune(*args) == 0
    rows = _rows(tmp_path / "hb")
    assert len(rows) == 6 and {r["status"] for r in rows} <= {"TERMINATED", "STOPPED_EARLY"}
    trials = _by_trial_id(_study(tmp_path / "hb"))
    for row in rows:
        expected = TrialState.PRUNED if row["status"] == "STOPPED_EARLY" else TrialState.COMPLETE
        assert trials[row["trial_id"]].state == expected
