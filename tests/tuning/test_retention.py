"""Which checkpoints a trial keeps, on real folders: the best K by val_gloss_acc and the latest,
and only once snapshots had time to move past a checkpoint (the search tests run it on Ray)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from ray import tune

from signray.layout import CHECKPOINT_METRICS, ExperimentFiles
from signray.tuning.retention import KeepBestCheckpoints


def _trial(files: ExperimentFiles, trial_id: str, scores: list[float]) -> SimpleNamespace:
    """A trial folder with one checkpoint per score (what Tune and the reporter write)."""
    folder = files.root / ExperimentFiles.trial_dirname(trial_id)
    for i, score in enumerate(scores):
        checkpoint = folder / f"checkpoint_{i:06d}"
        checkpoint.mkdir(parents=True)
        (checkpoint / CHECKPOINT_METRICS).write_text(json.dumps({"val_gloss_acc": score}))
    return SimpleNamespace(trial_id=trial_id, status="RUNNING", last_result={})


def _report(keeper, trial, index: int, score: float) -> None:
    trial.last_result = {"val_gloss_acc": score}
    path = (
        keeper.files.root
        / ExperimentFiles.trial_dirname(trial.trial_id)
        / f"checkpoint_{index:06d}"
    )
    keeper.on_checkpoint(0, [trial], trial, tune.Checkpoint.from_directory(str(path)))


def _left(files: ExperimentFiles, trial_id: str) -> list[str]:
    folder = files.root / ExperimentFiles.trial_dirname(trial_id)
    return sorted(p.name for p in folder.glob("checkpoint_*"))


def test_the_best_and_the_latest_stay_the_rest_go_after_the_grace_period(tmp_path):
    files = ExperimentFiles(tmp_path)
    scores = [0.1, 0.5, 0.3, 0.4, 0.2]
    trial = _trial(files, "a", scores)
    keeper = KeepBestCheckpoints(tmp_path, keep=2)
    for i, score in enumerate(scores):
        _report(keeper, trial, i, score)
    assert len(_left(files, "a")) == 5  # superseded moments ago: a snapshot may still name them
    keeper.grace_s = 0.0
    keeper.on_step_end(0, [trial])
    # best two (0.5, 0.4) and the latest (0.2, which a resume would continue from)
    assert _left(files, "a") == ["checkpoint_000001", "checkpoint_000003", "checkpoint_000004"]


def test_a_finished_search_prunes_at_once_including_an_earlier_drivers_checkpoints(tmp_path):
    files = ExperimentFiles(tmp_path)
    trial = _trial(files, "b", [0.9, 0.1, 0.2, 0.3])  # 0-1 written before an interruption
    keeper = KeepBestCheckpoints(tmp_path, keep=1)
    _report(keeper, trial, 2, 0.2)
    _report(keeper, trial, 3, 0.3)
    keeper.on_trial_complete(0, [trial], trial)  # lists the folder: finds 0 and 1
    trial.status = "TERMINATED"
    keeper.on_experiment_end([trial])  # after Tune's final snapshot
    assert _left(files, "b") == ["checkpoint_000000", "checkpoint_000003"]  # best, latest


def test_an_interrupted_search_keeps_what_a_resume_may_need(tmp_path):
    files = ExperimentFiles(tmp_path)
    trial = _trial(files, "c", [0.1, 0.2, 0.3])
    keeper = KeepBestCheckpoints(tmp_path, keep=1)
    for i, score in enumerate([0.1, 0.2, 0.3]):
        _report(keeper, trial, i, score)
    keeper.on_experiment_end([trial])  # still RUNNING: Ctrl-C
    assert len(_left(files, "c")) == 3


def test_a_step_visits_only_trials_that_still_have_checkpoints_to_delete(tmp_path):
    """The driver's work per step does not grow with the number of finished trials."""
    files = ExperimentFiles(tmp_path)
    keeper = KeepBestCheckpoints(tmp_path, keep=1)
    trials = [_trial(files, f"t{i}", [0.1, 0.2]) for i in range(20)]
    for trial in trials:
        _report(keeper, trial, 0, 0.1)
        _report(keeper, trial, 1, 0.2)
    assert keeper.pending == {t.trial_id for t in trials}  # within the grace period
    keeper.grace_s = 0.0
    keeper.on_step_end(0, trials)  # deletes each trial's superseded checkpoint_000000
    keeper.on_step_end(0, trials)  # sees nothing left to delete: the trials leave the set
    assert keeper.pending == set()
    assert all(_left(files, t.trial_id) == ["checkpoint_000001"] for t in trials)
    _report(keeper, trials[3], 1, 0.2)  # already known: nothing new to prune
    (folder := files.root / ExperimentFiles.trial_dirname("t3") / "checkpoint_000002").mkdir()
    (folder / CHECKPOINT_METRICS).write_text(json.dumps({"val_gloss_acc": 0.3}))
    _report(keeper, trials[3], 2, 0.3)  # a new checkpoint supersedes the best: visited again
    assert keeper.pending == {"t3"}
    keeper.on_step_end(0, trials)
    assert _left(files, "t3") == ["checkpoint_000002"]
