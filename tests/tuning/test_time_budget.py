"""`--time-budget`: Tune's own time budget ends a search like a normal end, and --resume knows."""

from __future__ import annotations

import csv
import json
import re
import signal
import time

import pytest
from rayhelpers import Driver, wait_until

from signray.layout import ExperimentFiles
from signray.tuning.driver import SearchTime


def test_the_search_time_adds_up_across_runs(tmp_path):
    files = ExperimentFiles(tmp_path)
    assert SearchTime.load(files, 100.0).seconds == 0  # a new search
    SearchTime(100.0).add(30.5).save(files)
    clock = SearchTime.load(files, 100.0)
    assert clock.seconds == 30.5 and not clock.spent
    assert clock.add(69.5).spent
    assert not SearchTime(None).add(1e9).spent  # no budget


def _tune(*args) -> int:
    from signray.tune import main

    return main([str(a) for a in args])


@pytest.mark.slow
def test_a_search_stops_at_its_budget_exports_its_best_and_resumes(ray_cluster, tmp_path, capsys):
    budget = 20
    common = ["--storage-path", tmp_path, "--name", "budget", "--address", ray_cluster]
    # far more work than the budget allows: 60 trials of 40 epochs
    code = _tune("--smoke-test", "--num-samples", 60, "--epochs", 40,
                 "--time-budget", f"{budget}s", *common)  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    files = ExperimentFiles(tmp_path / "budget")
    spent = json.loads(files.time_spent.read_text())
    assert spent["budget_s"] == budget
    assert budget <= spent["seconds"] < budget + 60  # generous: a loaded machine, no timing test
    assert f"time budget {budget}s spent" in out
    # exported exactly as after a normal end
    assert files.best_config.is_file() and files.best_checkpoint("SignTransformer").is_file()
    assert (files.evaluation / "metrics.json").is_file()
    assert (files.report / "index.html").is_file()
    with files.trials_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert 0 < len(rows) < 60
    assert all(r["status"] in ("TERMINATED", "STOPPED_EARLY") for r in rows)
    trial_dirs = sorted(p.name for p in files.root.glob("trial_*"))
    # --resume: the budget is spent, nothing runs again, the outputs are there
    code = _tune("--resume", *common)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "has spent its --time-budget 20s" in out
    assert sorted(p.name for p in files.root.glob("trial_*")) == trial_dirs
    assert files.best_checkpoint("SignTransformer").is_file()


@pytest.mark.slow
def test_an_interrupted_budgeted_search_resumes_with_what_is_left(ray_cluster, tmp_path):
    budget = 40
    common = ["--storage-path", tmp_path, "--name", "left", "--address", ray_cluster]
    files = ExperimentFiles(tmp_path / "left")
    driver = Driver("--smoke-test", "--num-samples", 100, "--epochs", 30,
                    "--time-budget", budget, *common)  # fmt: skip
    try:
        wait_until(lambda: list(files.root.glob("trial_*/result.json")), 240,
                   "the first trial's results", driver)  # fmt: skip
        time.sleep(12)  # well into the budget
        driver.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert driver.wait(120) == 130, driver.tail()
    finally:
        driver.kill()
    first = json.loads(files.time_spent.read_text())["seconds"]
    assert 0 < first < budget
    resumed = Driver("--resume", *common)
    assert resumed.wait(600) == 0, resumed.tail()
    assert f"time budget {budget} spent" in resumed.output
    # the resumed search ran for what was left (about budget - first), not the whole budget
    second = float(re.search(r"; wall time ([0-9.]+)s", resumed.output).group(1))
    assert budget - first <= second < budget - 10, (first, second)
    assert json.loads(files.time_spent.read_text())["seconds"] >= budget
    assert files.best_checkpoint("SignTransformer").is_file()
