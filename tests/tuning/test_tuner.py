"""The search's Tuner pieces (the table prints the session's folder: Ray is initialised)."""

from __future__ import annotations

import pytest
from ray.train._internal.storage import StorageContext
from ray.tune.experiment import Trial
from ray.tune.utils import log as tune_log

from signray.tuning.tuner import _progress_reporter


def _trial(lr: float, result: dict, folder) -> Trial:
    storage = StorageContext(str(folder), "search", trial_dir_name=f"trial_{lr}")
    trial = Trial("fn", config={"lr": lr}, stub=True, storage=storage)
    trial.set_status(Trial.TERMINATED)
    if result:
        trial.update_last_result({**result, "config": {"lr": lr}})  # as Tune's results carry it
    return trial


@pytest.fixture
def search_verbosity(monkeypatch):
    """The verbosity a search runs at (the Tuner's `verbose=1`), whatever an earlier test in this
    process left in Ray's global (a Tune run with the new output engine sets it to 0)."""
    monkeypatch.setattr(tune_log, "verbosity", tune_log.Verbosity.V1_EXPERIMENT)


@pytest.mark.slow
def test_the_table_survives_finished_trials_that_never_reported(
    ray_cluster, search_verbosity, capsys, tmp_path
):
    """A stop (time budget, stopper) ends pending trials with no metric: Ray's own sort raised
    a TypeError there and ended the search. With a metric on every trial, the best comes first."""
    reporter = _progress_reporter(["lr"])
    reporter.setup(start_time=0, total_samples=3, metric="val_gloss_acc", mode="max")
    trials = [_trial(0.1, {"val_gloss_acc": 0.5}, tmp_path), _trial(0.2, {}, tmp_path)]
    reporter.report([*trials, _trial(0.3, {}, tmp_path)], True)
    assert "TERMINATED" in capsys.readouterr().out

    scored = [_trial(lr, {"val_gloss_acc": acc}, tmp_path) for lr, acc in ((0.1, 0.2), (0.2, 0.7))]
    reporter.report(scored, True)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| fn_")]
    assert "0.7" in rows[0] and "0.2" in rows[1], rows
