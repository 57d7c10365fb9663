"""TensorBoard event files and a local MLflow store from a real 2-trial Ray Tune run."""

from __future__ import annotations

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*noload.*"),  # SQLAlchemy, inside MLflow's store
]


def test_tensorboard_and_mlflow_from_a_tiny_tune_run(
    tmp_path, monkeypatch, assert_png, ray_cluster
):
    mlflow = pytest.importorskip("mlflow")
    from ray import tune

    from signray.analysis.report import write_report
    from signray.tuning.tracking import mlflow_tracking_uri, tracking_callbacks

    def trainable(config):  # defined here so Ray pickles it by value (tests/ is no package)
        for epoch in range(1, 4):
            acc = config["lr"] * epoch
            tune.report({"epoch": epoch, "val_gloss_acc": acc, "val_loss": 1.0 - acc})

    monkeypatch.chdir(tmp_path)  # anything written relative to the CWD would show up here
    exp = tmp_path / "results" / "exp"
    # The session's test cluster: a second ray.init in this process would fail, and a
    # ray.shutdown here would stop the cluster every later Ray test uses.
    tuner = tune.Tuner(
        trainable,
        param_space={"lr": tune.grid_search([0.1, 0.2])},
        tune_config=tune.TuneConfig(metric="val_gloss_acc", mode="max"),
        run_config=tune.RunConfig(
            name="exp",
            storage_path=str(exp.parent),
            callbacks=tracking_callbacks(exp, mlflow=True),
            verbose=0,
        ),
    )
    results = tuner.fit()
    assert not results.errors

    events = sorted(exp.glob("*/events.out.tfevents.*"))
    assert len(events) == 2 and all(e.stat().st_size > 0 for e in events)

    assert (exp / "mlruns" / "mlflow.db").is_file()
    assert not (tmp_path / "mlruns").exists()  # artifacts stay inside the experiment
    client = mlflow.tracking.MlflowClient(tracking_uri=mlflow_tracking_uri(exp))
    experiment = client.get_experiment_by_name("exp")
    assert experiment.artifact_location.startswith((exp / "mlruns").as_uri())
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    assert sorted(r.data.params["lr"] for r in runs) == ["0.1", "0.2"]
    assert sorted(round(r.data.metrics["val_gloss_acc"], 6) for r in runs) == [0.3, 0.6]

    # The report reads the same folder Ray wrote (no trials.csv: this is not signray.tune).
    index = write_report(exp)
    assert index.is_file()
    assert_png(exp / "report" / "curves.png")
