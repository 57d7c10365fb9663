"""The Tune machinery: pruned-trial bookkeeping (no cluster), then real searches on Ray.

The Ray tests share one 2-CPU cluster (the `ray_cluster` fixture) and use the smoke data.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState
from ray.tune import Tuner
from rayhelpers import diverging_space
from rayhelpers import trial_rows as _rows
from rayhelpers import wait_resources_released as _wait_resources_released

from signray.config.search_space import parse_search_space
from signray.layout import ExperimentFiles
from signray.training.checkpoint import load_checkpoint
from signray.tuning.plan import SMOKE
from signray.tuning.retention import CHECKPOINT_PERIOD_ENV
from signray.tuning.searcher import PruningAwareOptunaSearch, suggestions_ahead

ROOT = Path(__file__).resolve().parents[2]


def _searcher(max_t: int = 4) -> PruningAwareOptunaSearch:
    space = parse_search_space(
        {"space": {"lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2}}}, "transformer"
    )
    return PruningAwareOptunaSearch(
        space=dict(space.params), metric="val_gloss_acc", mode="max", seed=0, max_t=max_t
    )


def _result(epoch: int, acc: float) -> dict:
    return {"epoch": epoch, "val_gloss_acc": acc, "training_iteration": epoch}


def _state(searcher, trial_id):
    study = searcher._ot_study
    number = searcher._ot_trials[trial_id].number
    return study.trials[number]


def test_scheduler_stopped_trial_is_pruned_with_its_intermediate_values():
    s = _searcher(max_t=4)
    s.suggest("a")
    s.on_trial_result("a", _result(1, 0.1))
    # Tune hands the result that triggered the STOP straight to on_trial_complete.
    s.on_trial_complete("a", _result(2, 0.2))
    trial = _state(s, "a")
    assert trial.state == TrialState.PRUNED
    assert trial.intermediate_values == {1: 0.1, 2: 0.2}
    assert trial.value == 0.2  # Optuna keeps the last rung's value for pruned trials
    assert s.pruned_trials == {"a"}


def test_trial_that_ran_all_epochs_is_complete():
    s = _searcher(max_t=2)
    s.suggest("a")
    s.on_trial_result("a", _result(1, 0.1))
    s.on_trial_complete("a", _result(2, 0.3))  # ASHA stops every trial at max_t
    assert _state(s, "a").state == TrialState.COMPLETE
    assert _state(s, "a").value == 0.3
    assert _state(s, "a").intermediate_values == {1: 0.1, 2: 0.3}  # every epoch recorded
    s.suggest("b")  # FIFO: the last result arrives normally, then the function returns
    s.on_trial_result("b", _result(1, 0.1))
    s.on_trial_result("b", _result(2, 0.2))
    s.on_trial_complete("b", _result(2, 0.2))
    assert _state(s, "b").state == TrialState.COMPLETE


def test_trial_ending_on_its_own_before_max_t_is_complete():
    s = _searcher(max_t=10)
    s.suggest("a")
    for epoch in (1, 2, 3):
        s.on_trial_result("a", _result(epoch, 0.1 * epoch))
    s.on_trial_complete("a", _result(3, 0.3))  # the loop's own early stop: already seen
    assert _state(s, "a").state == TrialState.COMPLETE
    assert not s.pruned_trials


def test_errored_trial_fails():
    s = _searcher()
    s.suggest("a")
    s.on_trial_result("a", _result(1, 0.1))
    s.on_trial_complete("a", None, error=True)
    assert _state(s, "a").state == TrialState.FAIL


def test_repeated_epochs_after_a_retry_keep_the_first_value():
    s = _searcher(max_t=5)
    s.suggest("a")
    s.on_trial_result("a", _result(1, 0.1))
    s.on_trial_result("a", _result(2, 0.2))
    s.on_trial_result("a", _result(2, 0.25))  # retried from the epoch-1 checkpoint
    s.on_trial_result("a", _result(3, 0.3))
    assert _state(s, "a").intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}


# ---------------------------------------------------------------- real Ray searches (slow)


def _tune(*args) -> int:
    from signray.tune import main

    return main([str(a) for a in args])


def _optuna_states(experiment: Path) -> list[TrialState]:
    (path,) = glob.glob(str(experiment / "searcher-state-*.pkl"))
    with open(path, "rb") as f:
        state = pickle.load(f)
    return [t.state for t in state["_ot_study"].trials]


@pytest.mark.slow
def test_smoke_search_iv3_gru_outputs_pruning_and_retrain(ray_cluster, tmp_path, capsys):
    import ray

    from signray.train import main as train_main

    start = time.perf_counter()
    assert (
        _tune("--model", "iv3_gru", "--smoke-test", "--storage-path", tmp_path, "--name", "smoke")
        == 0
    )
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out
    experiment = tmp_path / "smoke"
    rows = _rows(experiment)
    assert len(rows) == 6
    assert {"lr", "hidden1", "hidden2", "depth", "dropout", "batch_size"} <= set(rows[0])
    statuses = [r["status"] for r in rows]
    assert set(statuses) <= {"TERMINATED", "STOPPED_EARLY"}
    stopped = statuses.count("STOPPED_EARLY")
    assert stopped >= 1, "ASHA stopped no trial"
    epochs = SMOKE["config"]["epochs"]
    assert all(int(r["epochs"]) < epochs for r in rows if r["status"] == "STOPPED_EARLY")
    assert all(int(r["epochs"]) == epochs for r in rows if r["status"] == "TERMINATED")
    # ASHA-stopped trials reached Optuna as PRUNED, the others as COMPLETE.
    states = _optuna_states(experiment)
    assert states.count(TrialState.PRUNED) == stopped
    assert states.count(TrialState.COMPLETE) == 6 - stopped
    _wait_resources_released(ray)

    assert "signray.tune summary" in out and "stopped early by the scheduler" in out
    best = max(rows, key=lambda r: float(r["best_val_gloss_acc"]))
    state = load_checkpoint(experiment / "IV3GRU_best.pt")  # weights_only=True
    assert state.metrics["val_gloss_acc"] == pytest.approx(float(best["best_val_gloss_acc"]))
    assert state.model_name == "iv3_gru"

    # best_config.yaml retrains with the single-run command to the same accuracy class.
    best_config = experiment / "best_config.yaml"
    assert yaml.safe_load(best_config.read_text())["output_dir"] == str(experiment / "retrain")
    assert train_main(["--config", str(best_config)]) == 0
    retrained = load_checkpoint(experiment / "retrain" / "IV3GRU_best.pt")
    assert retrained.best_metric >= float(best["best_val_gloss_acc"]) - 0.1
    print(f"iv3_gru smoke search: {elapsed:.1f}s, {stopped}/6 stopped early")


@pytest.mark.slow
def test_smoke_search_transformer_and_single_run_from_best_config(ray_cluster, tmp_path):
    assert (
        _tune("--model", "transformer", "--smoke-test", "--storage-path", tmp_path, "--name", "tx")
        == 0
    )
    experiment = tmp_path / "tx"
    rows = _rows(experiment)
    assert len(rows) == 6
    assert any(r["status"] == "STOPPED_EARLY" for r in rows), "ASHA stopped no trial"
    assert (experiment / "SignTransformer_best.pt").is_file()
    # --config best_config.yaml without a search space: exactly one trial of that config.
    assert (
        _tune(
            "--config",
            experiment / "best_config.yaml",
            "--epochs",
            2,
            "--storage-path",
            tmp_path,
            "--name",
            "again",
        )
        == 0
    )
    (row,) = _rows(tmp_path / "again")
    assert row["status"] == "TERMINATED" and row["epochs"] == "2"
    assert (tmp_path / "again" / "SignTransformer_best.pt").is_file()


@pytest.mark.slow
def test_two_workers_per_trial_early_stop_frees_placement_groups(ray_cluster, tmp_path):
    import ray

    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "space": {
                    "lr": {"distribution": "choice", "values": [0.005, 0.00001]},
                    "hidden1": 32,
                    "hidden2": 24,
                    "depth": 1,
                    "dropout": 0.0,
                    "batch_size": 16,
                },
                # A good config first, then one that cannot learn: ASHA stops the second.
                "points_to_evaluate": [{"lr": 0.005}, {"lr": 0.00001}],
            }
        )
    )
    assert (
        _tune(
            "--model",
            "iv3_gru",
            "--smoke-test",
            "--search-space",
            space,
            "--num-samples",
            2,
            "--epochs",
            3,
            "--workers-per-trial",
            2,
            "--cpus-per-trial",
            2,
            "--storage-path",
            tmp_path,
            "--name",
            "w2",
        )
        == 0
    )
    experiment = tmp_path / "w2"
    rows = {float(r["lr"]): r for r in _rows(experiment)}
    assert rows[0.005]["status"] == "TERMINATED" and rows[0.005]["epochs"] == "3"
    assert rows[0.00001]["status"] == "STOPPED_EARLY"
    assert len(list((experiment / "train_runs").iterdir())) == 2  # one Train run per trial
    assert load_checkpoint(experiment / "IV3GRU_best.pt").config["ray_workers"] == 2
    _wait_resources_released(ray)


@pytest.mark.slow
def test_resume_after_interrupt_runs_exactly_num_samples(ray_cluster, tmp_path):
    EPOCHS = 40  # noqa: N806  (about 3 s per trial: long enough to interrupt one mid-way)
    args = [
        "--model",
        "iv3_gru",
        "--smoke-test",
        "--num-samples",
        3,
        "--epochs",
        EPOCHS,
        "--trial-scheduler",
        "fifo",
        "--max-concurrent",
        1,
        "--storage-path",
        tmp_path,
        "--name",
        "res",
        "--address",
        ray_cluster,
    ]
    cmd = [sys.executable, "-m", "signray.tune", *map(str, args)]
    experiment = tmp_path / "res"
    # A snapshot a second: the finished trial's results reach the folder with the next one.
    env = {**os.environ, CHECKPOINT_PERIOD_ENV: "1"}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        deadline = time.time() + 240
        while not list((experiment / ExperimentFiles.DONE_DIR).glob("*.json")):
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.time() < deadline, "no trial finished in time"
            time.sleep(0.5)
        time.sleep(1.0)  # let the next trial train a few epochs
        finished = {
            result
            for marker in (experiment / ExperimentFiles.DONE_DIR).glob("*.json")
            for result in experiment.glob(f"*{marker.stem}*/result.json")
        }
        assert finished
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-3000:]
    # Tune copies results to storage with each experiment snapshot (every 10 s) and once more on
    # the way out: the finished trials' files as the interrupted driver left them.
    before = {p: p.read_text() for p in finished}
    assert not re.search(r"^Traceback", out, re.M), out[-3000:]  # the driver's own output
    assert ExperimentFiles(experiment).driver_state.is_file() and Tuner.can_restore(str(experiment))
    # The command it printed, run as printed (with this venv's python), finishes the search.
    printed = re.search(r"^\s*(python -m signray.tune --resume .*)$", out, re.M)
    assert printed and "--name res" in printed.group(1), out[-3000:]
    resume_cmd = [sys.executable, *shlex.split(printed.group(1))[1:]]
    assert resume_cmd[-2:] == ["--address", ray_cluster]
    resumed = subprocess.run(resume_cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    rows = _rows(experiment)
    assert len(rows) == 3 and {r["status"] for r in rows} == {"TERMINATED"}
    assert all(r["epochs"] == str(EPOCHS) for r in rows)
    assert {p: p.read_text() for p in finished} == before  # finished trials did not run again
    for result in experiment.glob("trial_*/result.json"):
        epochs = [json.loads(line)["epoch"] for line in result.read_text().splitlines()]
        # The interrupted trial continues from its latest checkpoint: it may repeat the epoch
        # that was in flight, never start over.
        assert epochs.count(1) == 1 and sorted(set(epochs)) == list(range(1, EPOCHS + 1)), epochs
        assert epochs == sorted(epochs), epochs


@pytest.mark.slow
def test_a_failing_trial_is_retried_reported_and_does_not_stop_the_others(
    ray_cluster, tmp_path, capsys
):
    space = diverging_space(tmp_path)
    assert (
        _tune(
            "--model",
            "transformer",
            "--smoke-test",
            "--search-space",
            space,
            "--num-samples",
            2,
            "--epochs",
            3,
            "--trial-scheduler",
            "fifo",
            "--max-failures",
            1,
            "--storage-path",
            tmp_path,
            "--name",
            "err",
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = {float(r["lr"]): r for r in _rows(tmp_path / "err")}
    assert rows[0.003]["status"] == "TERMINATED" and rows[0.003]["epochs"] == "3"
    bad = rows[10000.0]
    assert bad["status"] == "ERROR"
    assert "NonFiniteLossError: training loss became nan" in bad["error"]
    assert "1 errored" in out and "NonFiniteLossError" in out


@pytest.mark.parametrize("searcher", ["tpe", "gp", "cmaes", "random", "qmc"])
def test_every_searcher_is_an_optuna_sampler_that_suggests_from_the_space(searcher):

    from signray.config.search import SearchOptions
    from signray.tuning.searcher import build_sampler

    opts = SearchOptions(searcher=searcher, num_samples=8)
    sampler = build_sampler(opts, seed=0, concurrent=2)
    expected = {"tpe": "TPESampler", "gp": "GPSampler", "cmaes": "CmaEsSampler",
                "random": "RandomSampler", "qmc": "QMCSampler"}  # fmt: skip
    assert type(sampler).__name__ == expected[searcher]
    space = parse_search_space(
        {
            "space": {
                "lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2},
                "depth": {"distribution": "randint", "low": 1, "high": 3},
            }
        },
        "transformer",
    )
    s = PruningAwareOptunaSearch(
        space=dict(space.params), metric="val_gloss_acc", mode="max", sampler=sampler, max_t=2
    )
    for i in range(4):  # past the model-based samplers' start-up trials
        config = s.suggest(str(i))
        assert 1e-4 <= config["lr"] <= 1e-2 and config["depth"] in (1, 2, 3)
        s.on_trial_complete(str(i), _result(2, 0.1 * i))
    assert _state(s, "3").user_attrs["ray_trial_id"] == "3"


def test_a_trial_is_suggested_ahead_only_where_it_cannot_start_early():
    # The cluster is the limit (with or without a --max-concurrent it cannot exceed): the next
    # trial waits PENDING and starts the moment a slot frees.
    assert suggestions_ahead(workers=1, max_concurrent=2, fits=2) == 1
    assert suggestions_ahead(workers=1, max_concurrent=3, fits=2) == 1
    # --max-concurrent below what fits: a suggestion ahead would start at once, a trial too many.
    assert suggestions_ahead(workers=1, max_concurrent=1, fits=2) == 0
    # Multi-worker trials reserve their workers outside Tune's view.
    assert suggestions_ahead(workers=2, max_concurrent=1, fits=1) == 0


def test_tpe_is_multivariate_and_lies_only_when_trials_run_at_once():
    from signray.config.search import SearchOptions
    from signray.tuning.searcher import build_sampler

    together = build_sampler(SearchOptions(), seed=0, concurrent=2)
    alone = build_sampler(SearchOptions(), seed=0, concurrent=1)
    assert together._multivariate and together._constant_liar
    assert alone._multivariate and not alone._constant_liar


def test_a_trial_the_study_already_finished_keeps_its_verdict():
    s = _searcher(max_t=4)
    s.suggest("a")
    s.on_trial_result("a", _result(1, 0.1))
    s.on_trial_complete("a", _result(2, 0.2))  # pruned at epoch 2
    s._completed_trials.discard("a")  # as restored from a snapshot taken before that
    s.on_trial_result("a", _result(2, 0.5))  # the trial re-runs after the resume
    s.on_trial_complete("a", _result(4, 0.9))
    trial = _state(s, "a")
    assert trial.state == TrialState.PRUNED and trial.value == 0.2


def test_restore_ends_trials_asked_after_the_snapshot(tmp_path):
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    space = parse_search_space(
        {"space": {"lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2}}}, "transformer"
    )

    def searcher():
        return PruningAwareOptunaSearch(
            space=dict(space.params), metric="val_gloss_acc", mode="max", seed=0, max_t=4,
            storage=storage, study_name="exp",
        )  # fmt: skip

    s = searcher()
    s.suggest("a")
    s.save(str(tmp_path / "snapshot.pkl"))  # Tune's periodic snapshot
    s.suggest("b")  # asked after it; then the driver is killed
    restored = searcher()
    restored.restore(str(tmp_path / "snapshot.pkl"))
    states = [t.state for t in optuna.load_study(study_name="exp", storage=storage).trials]
    assert states == [TrialState.RUNNING, TrialState.FAIL]  # a resumes; b will never report
    restored.on_trial_result("a", _result(1, 0.3))
    restored.on_trial_complete("a", _result(4, 0.4))
    assert optuna.load_study(study_name="exp", storage=storage).trials[0].value == 0.4


@pytest.mark.parametrize("ended_on_its_own", [False, True])
def test_a_paused_trial_stopped_by_the_scheduler_is_pruned(ended_on_its_own):
    """HyperBand stops a trial it paused, after results the searcher saw: the trial's done
    marker (its loop returned on its own) tells a scheduler stop from the loop's early stop."""
    space = parse_search_space(
        {"space": {"lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2}}}, "transformer"
    )
    s = PruningAwareOptunaSearch(
        space=dict(space.params), metric="val_gloss_acc", mode="max", seed=0, max_t=4,
        ended_on_its_own=lambda trial_id: ended_on_its_own,
    )  # fmt: skip
    s.suggest("a")
    s.on_trial_result("a", _result(1, 0.1))
    s.on_trial_result("a", _result(2, 0.2))
    s.on_trial_complete("a", _result(2, 0.2))
    expected = TrialState.COMPLETE if ended_on_its_own else TrialState.PRUNED
    assert _state(s, "a").state == expected and _state(s, "a").value == 0.2


def test_a_trial_stopped_while_paused_is_judged_by_its_last_result():
    """Tune completes a trial HyperBand stopped while paused without a result."""
    s = _searcher(max_t=2)
    s.suggest("a")
    s.on_trial_result("a", _result(1, 0.1))
    s.on_trial_result("a", _result(2, 0.3))  # paused at max_t, then stopped
    s.on_trial_complete("a", None)
    assert _state(s, "a").state == TrialState.COMPLETE and _state(s, "a").value == 0.3
