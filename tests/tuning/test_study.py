"""The search's Optuna study in a database and warm starts (no cluster: real SQLite files)."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from signray.config import resolve_config
from signray.config.experiment_state import ExperimentState
from signray.config.search import SearchOptions
from signray.errors import ConfigError
from signray.layout import ExperimentFiles
from signray.tuning.study import (
    check_new_study,
    create_study,
    default_storage_url,
    load_warm_source,
    open_storage,
    warm_start,
)

OLD = {
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "depth": IntDistribution(1, 4),
    "pool": CategoricalDistribution(["mean", "max"]),
}
NEW = {
    "lr": FloatDistribution(1e-4, 1e-2, log=True),  # narrower: lr 0.05 is outside
    "depth": IntDistribution(1, 4),
    "dropout": FloatDistribution(0.0, 0.3),  # new field
}


def _old_study(tmp_path, name="old"):
    """An earlier experiment folder whose study has complete, pruned and failed trials."""
    files = ExperimentFiles(tmp_path / name)
    files.root.mkdir(parents=True)
    url = default_storage_url(files)
    base = resolve_config({"num_gloss": 4, "num_cat": 2})
    ExperimentState(base, SearchOptions(optuna_storage=url), OLD).save(files.driver_state)
    study = create_study(open_storage(url), name, ["max"])
    trials = [
        ({"lr": 0.05, "depth": 3, "pool": "max"}, TrialState.COMPLETE, 0.9),  # best, lr outside
        ({"lr": 3e-3, "depth": 2, "pool": "mean"}, TrialState.COMPLETE, 0.7),
        ({"lr": 1e-3, "depth": 1, "pool": "mean"}, TrialState.COMPLETE, 0.5),
        ({"lr": 2e-4, "depth": 4, "pool": "max"}, TrialState.PRUNED, None),
        ({"lr": 5e-4, "depth": 1, "pool": "max"}, TrialState.FAIL, None),
    ]
    for params, state, value in trials:
        study.add_trial(
            create_trial(
                params=params,
                distributions=OLD,
                state=state,
                value=value,
                intermediate_values={1: 0.2} if state != TrialState.FAIL else {},
            )
        )
    return files


def test_default_storage_is_a_sqlite_file_in_the_experiment(tmp_path):
    import sqlite3

    files = ExperimentFiles(tmp_path / "exp")
    assert default_storage_url(files) == f"sqlite:///{tmp_path / 'exp' / 'optuna.db'}"
    create_study(open_storage(default_storage_url(files)), "exp", ["max"])
    with sqlite3.connect(files.optuna_db) as db:  # write-ahead log: fast writes, free readers
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_new_search_never_records_into_an_existing_study(tmp_path):
    files = _old_study(tmp_path)
    storage = open_storage(default_storage_url(files))
    with pytest.raises(ConfigError, match="already has a study named 'old'.*--resume"):
        check_new_study(storage, "old")


def test_bad_storage_url_names_the_flag(tmp_path):
    with pytest.raises(ConfigError, match="`--optuna-storage` nosuchdb://x cannot be opened"):
        open_storage("nosuchdb://x")


def test_warm_start_tells_finished_trials_and_enqueues_the_best_first(tmp_path):
    files = _old_study(tmp_path)
    new_url = f"sqlite:///{tmp_path / 'new.db'}"
    study = create_study(open_storage(new_url), "new", ["max"])
    report = warm_start(study, load_warm_source(str(files.root)), NEW, top_k=2)
    # Every finished trial (COMPLETE and PRUNED; not FAIL) is told, without fields the new
    # space does not search, and without values outside the new distributions.
    told = [t for t in study.trials if t.state != TrialState.WAITING]
    assert report.told == len(told) == 4
    assert [t.state for t in told].count(TrialState.PRUNED) == 1
    assert all("pool" not in t.params for t in told)
    assert "lr" not in told[0].params and told[0].params["depth"] == 3
    assert told[1].params == {"lr": 3e-3, "depth": 2} and told[1].value == 0.7
    notes = "\n".join(report.notes)
    assert "fields the new space does not search (left out): pool (4 trials)" in notes
    assert "values outside the new space's distributions" in notes and "lr (1 trials)" in notes
    assert "lr=0.05 is outside the new space; runs with 0.01" in notes
    # The best two configs, moved into the new space, are what the sampler hands out first.
    assert report.enqueued == [{"lr": 0.01, "depth": 3}, {"lr": 3e-3, "depth": 2}]
    first, second = study.ask(NEW), study.ask(NEW)
    assert (first.params["lr"], first.params["depth"]) == (0.01, 3)
    assert (second.params["lr"], second.params["depth"]) == (3e-3, 2)
    assert "dropout" in first.params  # the new field is sampled
    assert "warm start from" in report.describe() and "2 best config(s) run first" in (
        report.describe()
    )


def test_warm_start_from_a_storage_url_needs_the_study_named_when_several(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    storage = open_storage(url)
    create_study(storage, "a", ["max"])
    create_study(storage, "b", ["max"])
    with pytest.raises(ConfigError, match=r"holds 2 studies \(a, b\): name one as URL#STUDY"):
        load_warm_source(url)
    study, _ = load_warm_source(url + "#b")
    assert study.study_name == "b"
    with pytest.raises(ConfigError, match="has no study 'c'"):
        load_warm_source(url + "#c")


def test_warm_start_source_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="neither a signray.tune experiment folder"):
        load_warm_source(str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="no study database"):
        load_warm_source(f"sqlite:///{tmp_path / 'missing.db'}")


def test_warm_start_into_a_multi_objective_study_only_enqueues(tmp_path):
    files = _old_study(tmp_path)
    study = create_study(open_storage(f"sqlite:///{tmp_path / 'mo.db'}"), "mo", ["max", "min"])
    report = warm_start(study, load_warm_source(str(files.root)), NEW, top_k=1)
    assert report.told == 0 and len(report.enqueued) == 1
    assert "its trials are not told" in "\n".join(report.notes)
    assert [t.state for t in study.trials] == [TrialState.WAITING]


def test_remote_experiments_of_one_name_keep_separate_local_studies(monkeypatch, tmp_path):
    """SQLite needs a local file: an experiment on object storage gets one in the cache, named
    after the experiment and its URI, so `exp` in two buckets never shares a study."""
    from signray.layout import ExperimentFiles
    from signray.tuning import study

    monkeypatch.setattr(study, "LOCAL_STUDY_DIR", tmp_path / "cache")
    one = study.default_storage_url(ExperimentFiles("s3://bucket-a/runs/exp"))
    two = study.default_storage_url(ExperimentFiles("s3://bucket-b/runs/exp"))
    assert one != two and one == study.default_storage_url(
        ExperimentFiles("s3://bucket-a/runs/exp")
    )
    assert one.startswith(f"sqlite:///{tmp_path / 'cache'}/exp-")
    local = study.default_storage_url(ExperimentFiles(tmp_path / "exp"))
    assert local == f"sqlite:///{tmp_path / 'exp' / ExperimentFiles.OPTUNA_DB}"
