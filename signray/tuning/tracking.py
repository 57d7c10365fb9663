"""Experiment tracking for the tune driver: TensorBoard event files and an optional MLflow store.

TensorBoard: Ray Tune already adds its `TBXLoggerCallback` on its own whenever tensorboardX
imports (``ray/tune/utils/callback.py``: `_create_default_callbacks` appends CSV, JSON and TBX
logger callbacks unless ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``). It writes
``events.out.tfevents.*`` into every trial folder, scalars tagged ``ray/tune/<metric>``. We pass
it explicitly anyway, so event files do not depend on that environment variable, and Ray then
does not add a second one.

MLflow: Ray's `MLflowLoggerCallback` logs every trial as a run (params = the trial's config,
metrics per epoch) from the driver. The store lives in ``EXPERIMENT_DIR/mlruns/``. MLflow 3
refuses its old file store (``file://.../mlruns``) unless ``MLFLOW_ALLOW_FILE_STORE=true``, so
the default backend is SQLite, ``mlruns/mlflow.db``, with run artifacts under
``mlruns/artifacts`` (set here, because MLflow's default artifact root is ``./mlruns`` relative
to whatever the current folder is). View it with
``mlflow ui --backend-store-uri sqlite:///EXPERIMENT_DIR/mlruns/mlflow.db``.
"""

from __future__ import annotations

import os
from pathlib import Path

from signray.errors import ConfigError
from signray.storage import RemotePath, require_local

__all__ = ["tracking_callbacks", "mlflow_tracking_uri", "MLRUNS_DIR"]

MLRUNS_DIR = "mlruns"


def mlflow_tracking_uri(experiment_dir: str | os.PathLike) -> str:
    """The SQLite tracking URI inside `experiment_dir/mlruns/`."""
    return f"sqlite:///{(Path(experiment_dir).resolve() / MLRUNS_DIR / 'mlflow.db').as_posix()}"


def _prepare_mlflow(experiment_dir: Path, experiment_name: str, tracking_uri: str) -> None:
    """Create the store and the experiment with its artifacts inside mlruns/, not in the CWD."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError(
            ["`--mlflow` needs the mlflow package: pip install 'signray[mlflow]'"]
        ) from None
    mlruns = experiment_dir.resolve() / MLRUNS_DIR
    mlruns.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=tracking_uri)
    if client.get_experiment_by_name(experiment_name) is None:
        client.create_experiment(experiment_name, artifact_location=(mlruns / "artifacts").as_uri())


def tracking_callbacks(
    experiment_dir: str | os.PathLike | RemotePath,
    mlflow: bool = False,
    *,
    experiment_name: str | None = None,
    tracking_uri: str | None = None,
) -> list:
    """Ray Tune callbacks for `tune.RunConfig(callbacks=...)`: TensorBoard, plus MLflow if asked.

    `experiment_dir` is the Tune experiment folder (storage_path/name); the MLflow experiment is
    named after it unless `experiment_name` is given. `tracking_uri` overrides the local store
    (e.g. a tracking server ``http://...``).
    """
    from ray.tune.logger import TBXLoggerCallback

    callbacks: list = []
    try:
        callbacks.append(TBXLoggerCallback())
    except ImportError:
        raise ConfigError(
            ["TensorBoard logging needs tensorboardX: pip install tensorboardX"]
        ) from None
    if mlflow:
        folder = require_local(experiment_dir, "the experiment folder of --mlflow")
        name = experiment_name or folder.name
        uri = tracking_uri or mlflow_tracking_uri(folder)
        if tracking_uri is None:
            _prepare_mlflow(folder, name, uri)
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(
            MLflowLoggerCallback(
                tracking_uri=uri, experiment_name=name, tags={"signray.experiment": name}
            )
        )
    return callbacks
