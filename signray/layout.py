"""Every name signray gives a file or folder on disk, the metric it optimises, and its trial
vocabulary. Change a name here and every writer and reader follows.

A *run* is one training (``signray.train --output-dir``); an *experiment* is one search
(``signray.tune``: ``--storage-path``/``--name``). Either folder may be local or an object-store
URI: its files are then `signray.storage.RemotePath`s with the same API.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from signray.storage import Location, RemotePath, as_location

__all__ = [
    "METRIC",
    "MODE",
    "TIME_ATTR",
    "STEPS_ATTR",
    "SAMPLES_ATTR",
    "BUDGET_ATTRS",
    "LATENCY_METRIC",
    "PARAMS_METRIC",
    "CHECKPOINT_FILE",
    "CHECKPOINT_METRICS",
    "EVALUATION_FILES",
    "REPORT_FILES",
    "Status",
    "STATUSES",
    "RunFiles",
    "ExperimentFiles",
    "ExtractionFiles",
    "rank_key",
]

# What every search maximises, and the time axis of its schedulers and plots.
METRIC = "val_gloss_acc"
MODE = "max"
TIME_ATTR = "epoch"
# How much training a run has had (cumulative, every epoch's report): the trial schedulers'
# budget unit (`--budget-unit epochs|steps|samples`).
STEPS_ATTR = "optimizer_steps"
SAMPLES_ATTR = "samples_seen"
BUDGET_ATTRS = {"epochs": TIME_ATTR, "steps": STEPS_ATTR, "samples": SAMPLES_ATTR}
# The optional second objectives (`--objectives`): minimised (signray.training.costs).
LATENCY_METRIC = "latency_ms_per_clip"
PARAMS_METRIC = "num_params"

# The file inside every Ray (Train or Tune) checkpoint folder, and its metrics beside it (read
# without downloading the checkpoint, e.g. to pick the best one on an object store).
CHECKPOINT_FILE = "state.pt"
CHECKPOINT_METRICS = "metrics.json"


class Status:
    """How a trial ended, as trials.csv, the summary and the report say it."""

    TERMINATED = "TERMINATED"  # trained to the end (or stopped by its own early stop)
    STOPPED_EARLY = "STOPPED_EARLY"  # stopped by the trial scheduler before its last epoch
    ERROR = "ERROR"
    UNFINISHED = "UNFINISHED"  # still running or pending when the search was interrupted


STATUSES = (Status.TERMINATED, Status.STOPPED_EARLY, Status.ERROR, Status.UNFINISHED)


def rank_key(best_acc: float | None, cat_acc: float | None) -> tuple[float, float]:
    """The best-trial rule: highest best val gloss accuracy, then val cat accuracy at that epoch.

    Sort descending (``max(..., key=...)``); a trial with no score ranks last.
    """

    def number(value: float | None, missing: float) -> float:
        return missing if value is None or not math.isfinite(value) else float(value)

    return number(best_acc, -math.inf), number(cat_acc, 0.0)


def _in_folder(name: str, doc: str) -> property:
    """A property: ``root / name``, where `name` may use ``{class_name}``."""
    return property(lambda self: self.root / name.format(**vars(self)), doc=doc)


@dataclass(frozen=True)
class RunFiles:
    """The files of one training run in its output folder."""

    root: Location
    class_name: str

    def __init__(self, root: str | os.PathLike[str] | RemotePath, class_name: str) -> None:
        object.__setattr__(self, "root", as_location(root))
        object.__setattr__(self, "class_name", class_name)

    best = _in_folder("{class_name}_best.pt", "the best epoch's checkpoint")
    last = _in_folder("{class_name}_last.pt", "the latest epoch's checkpoint (--resume it)")
    log = _in_folder("{class_name}_log.csv", "one row per epoch")
    config = _in_folder("config.yaml", "the resolved config (--config it)")
    learning_curve = _in_folder("learning_curve.png", "loss and accuracy per epoch")

    @staticmethod
    def evaluation_beside(checkpoint: str | os.PathLike[str] | RemotePath) -> Location:
        """Where `signray.evaluate` writes by default: evaluation/ next to the checkpoint."""
        return as_location(checkpoint).parent / ExperimentFiles.EVALUATION_DIR


# Files `signray.evaluate` writes into its output folder.
EVALUATION_FILES = {
    "metrics": "metrics.json",
    "per_gloss": "per_gloss.csv",
    "confused_pairs": "confused_pairs.csv",
    "confusion_gloss": "confusion_gloss.png",
    "confusion_cat": "confusion_cat.png",
}
# Files of an experiment's report/ folder.
REPORT_FILES = {
    "index": "index.html",
    "curves": "curves.png",
    "best_so_far": "best_so_far.png",
    "params": "params_vs_accuracy.png",
    "importance": "importance.png",
    "importance_csv": "importance.csv",
    "pareto": "pareto_front.png",
}


@dataclass(frozen=True)
class ExperimentFiles:
    """The files of one search in ``STORAGE_PATH/NAME``, beside Ray Tune's own."""

    root: Location

    TRIALS_CSV = "trials.csv"
    BEST_CONFIG = "best_config.yaml"
    EVALUATION_DIR = "evaluation"
    REPORT_DIR = "report"
    # A trial whose training loop returned on its own leaves DONE_DIR/TRIAL_ID.json; a finished
    # trial without it was stopped by the scheduler. It lives in the experiment folder: Tune's
    # trial folder seen from inside a trial is a staging copy that is not synced back.
    DONE_DIR = "trials_done"
    # Ray Train runs of multi-worker trials.
    TRAIN_RUNS_DIR = "train_runs"
    # What `signray.tune --resume` needs to rebuild the search: options, base config, space.
    DRIVER_STATE = "signray_tune.json"
    SPACE_COPY = "search_space.yaml"
    # The search's Optuna study (default --optuna-storage), and the Pareto front of a search
    # with several --objectives.
    OPTUNA_DB = "optuna.db"
    PARETO_CSV = "pareto.csv"
    MLRUNS_DIR = "mlruns"
    # The search's wall time so far and its --time-budget, so that --resume gets what is left.
    TIME_SPENT = "time_spent.json"
    # Folder the best config retrains into (`signray.train --config best_config.yaml`).
    RETRAIN_DIR = "retrain"
    # Sub-folders that are not Tune trial folders.
    NOT_TRIALS = frozenset({EVALUATION_DIR, REPORT_DIR, DONE_DIR, TRAIN_RUNS_DIR, MLRUNS_DIR})

    def __init__(self, root: str | os.PathLike[str] | RemotePath) -> None:
        object.__setattr__(self, "root", as_location(root))

    trials_csv = _in_folder(TRIALS_CSV, "one row per trial")
    best_config = _in_folder(BEST_CONFIG, "the best trial's config (--config it)")
    evaluation = _in_folder(EVALUATION_DIR, "the best checkpoint on the full val split")
    report = _in_folder(REPORT_DIR, "plots and index.html")
    train_runs = _in_folder(TRAIN_RUNS_DIR, "Ray Train runs of multi-worker trials")
    driver_state = _in_folder(DRIVER_STATE, "base config, options and space for --resume")
    space_copy = _in_folder(SPACE_COPY, "the search-space file the search read")
    optuna_db = _in_folder(OPTUNA_DB, "the Optuna study (SQLite) unless --optuna-storage")
    pareto_csv = _in_folder(PARETO_CSV, "the Pareto front's trials (several --objectives)")
    mlruns = _in_folder(MLRUNS_DIR, "the MLflow store (--mlflow)")
    retrain = _in_folder(RETRAIN_DIR, "best_config.yaml's output_dir")
    time_spent = _in_folder(TIME_SPENT, "seconds the search has run, against its --time-budget")

    @property
    def name(self) -> str:
        return self.root.name

    def best_checkpoint(self, class_name: str) -> Location:
        return RunFiles(self.root, class_name).best

    def done_marker(self, trial_id: str) -> Location:
        return self.root / self.DONE_DIR / f"{trial_id}.json"

    def train_run_name(self, trial_id: str) -> str:
        """The Ray Train run of a multi-worker trial: a retried trial reuses it and resumes."""
        return f"{self.name}-{trial_id}"

    @staticmethod
    def trial_dirname(trial_id: str) -> str:
        """Short trial folder names (Tune's default packs every parameter into the name)."""
        return f"trial_{trial_id}"


@dataclass(frozen=True)
class ExtractionFiles:
    """What `signray.extract --output-dir OUT` writes: per-clip files under ``clips/`` (the
    layout signray trains on, with ``labels.csv``), optional shard folders, the settings the
    folder was made with and the videos that failed."""

    root: Location

    CLIPS_DIR = "clips"
    LABELS_CSV = "labels.csv"
    FAILURES_CSV = "failures.csv"
    SETTINGS = "extract.json"
    KEYPOINT_SHARDS = "shards/keypoints"
    FEATURE_SHARDS = "shards/features"

    def __init__(self, root: str | os.PathLike[str] | RemotePath) -> None:
        object.__setattr__(self, "root", as_location(root))

    clips = _in_folder(CLIPS_DIR, "one .npz per clip, in the videos' sub-folders")
    labels_csv = _in_folder(LABELS_CSV, "file,gloss,cat,occluded of every extracted clip")
    failures_csv = _in_folder(FAILURES_CSV, "file,reason of every video that failed")
    settings = _in_folder(SETTINGS, "the settings and versions the clips were made with")
    keypoint_shards = _in_folder(KEYPOINT_SHARDS, "format-2 shards of X (--num-shards)")
    feature_shards = _in_folder(FEATURE_SHARDS, "format-2 shards of X2048 (--num-shards)")

    def clip(self, name: str) -> Location:
        return self.clips / f"{name}.npz"
