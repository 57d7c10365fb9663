"""`--time-budget`: Tune's own time budget ends a search like a normal end, and --resume knows."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from signray.layout import ExperimentFiles
from signray.tuning.driver import SearchTime
from signray.tuning.retention import CHECKPOINT_PERIOD_ENV

ROOT = Path(__file__).resolve().parents[2]


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
    budget = 60
    args = ["--smoke-test", "--num-samples", 100, "--epochs", 30, "--time-budget", budget,
            "--storage-path", tmp_path, "--name", "left", "--address", ray_cluster]  # fmt: skip
    cmd = [sys.executable, "-m", "signray.tune", *map(str, args)]
    env = {**os.environ, CHECKPOINT_PERIOD_ENV: "1"}
    files = ExperimentFiles(tmp_path / "left")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)  # fmt: skip
    try:
        deadline = time.time() + 240
        while not list(files.root.glob("trial_*/result.json")):  # the search is under way
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
            time.sleep(0.5)
        time.sleep(20)  # well into the budget
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-3000:]
    first = json.loads(files.time_spent.read_text())["seconds"]
    assert 0 < first < budget
    resume = [sys.executable, "-m", "signray.tune", "--resume", "--storage-path", str(tmp_path),
              "--name", "left", "--address", ray_cluster]  # fmt: skip
    resumed = subprocess.run(resume, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"time budget {budget} spent" in resumed.stdout
    # the resumed search ran for what was left (about budget - first), not the whole budget
    second = float(re.search(r"; wall time ([0-9.]+)s", resumed.stdout).group(1))
    assert budget - first <= second < budget - 10, (first, second)
    assert json.loads(files.time_spent.read_text())["seconds"] >= budget
    assert files.best_checkpoint("SignTransformer").is_file()
