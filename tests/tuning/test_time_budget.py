"""`--time-budget`: Tune's own time budget ends a search like a normal end, and --resume knows."""

from __future__ import annotations

import csv
import json

import pytest

from signray.layout import ExperimentFiles


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
