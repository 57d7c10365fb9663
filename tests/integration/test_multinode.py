"""`python -m signray.tune --address ...` on a real two-node Ray cluster on this machine.

The cluster (tests/integration/cluster_node.py) has a head node and a worker node, one CPU each,
both on 127.0.0.1, each with its own raylet, object store and node id; the experiment folder
(``--storage-path``) is the storage both nodes share. Trials report the id of the node they ran
on (``node_id`` in result.json), so placement is asserted from what the trials recorded.

DDP correctness (a 2-worker run's first-epoch loss equals a 1-worker run's, and the reported val
metrics equal a single-process evaluation of the saved checkpoint) is tested in
tests/launch/test_ray_train.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rayhelpers import (
    Driver,
    TwoNodes,
    result_records,
    trial_dirs,
    trial_rows,
    wait_until,
)

from signray.layout import ExperimentFiles
from signray.training.checkpoint import Checkpoint, load_checkpoint

pytestmark = pytest.mark.slow

TINY_TX = [
    "--model",
    "transformer",
    "--smoke-test",
    "--d-model",
    16,
    "--n-heads",
    2,
    "--depth",
    1,
    "--ff-dim",
    32,
    "--head-hidden",
    16,
    "--batch-size",
    8,
]


@pytest.fixture(scope="module")
def two_nodes():
    cluster = TwoNodes()
    try:
        yield cluster
    finally:
        leaked = cluster.shutdown()
    assert not leaked, f"processes outlived the cluster: {leaked}"


def _checkpoints(folder: Path) -> list[Checkpoint]:
    folders = sorted(p for p in folder.glob("checkpoint_*") if p.is_dir())
    return [load_checkpoint(p / "state.pt") for p in folders]


def test_two_worker_trial_spans_both_nodes(two_nodes, tmp_path):
    """DDP across the node boundary: one trial, 2 Ray Train workers, one CPU on each node."""
    driver = Driver(
        *TINY_TX,
        "--single-run",
        "--epochs",
        2,
        "--workers-per-trial",
        2,
        "--cpus-per-trial",
        2,
        "--storage-path",
        tmp_path,
        "--name",
        "ddp",
        "--address",
        two_nodes.address,
        env=two_nodes.env,
    )
    assert driver.wait(timeout=420) == 0, driver.tail()
    experiment = tmp_path / "ddp"
    (row,) = trial_rows(experiment)
    assert row["status"] == "TERMINATED" and row["epochs"] == "2", row

    workers = [a for a in two_nodes.ask("actors")["actors"] if a["class_name"] == "RayTrainWorker"]
    assert {a["node_id"] for a in workers} == {two_nodes.head, two_nodes.worker}, workers

    # Results and checkpoints are complete in the shared storage folder.
    (trial,) = trial_dirs(experiment)
    assert [r["epoch"] for r in result_records(trial)] == [1, 2]
    assert {r["node_id"] for r in result_records(trial)} <= {two_nodes.head, two_nodes.worker}
    (run,) = ExperimentFiles(experiment).train_runs.iterdir()
    saved = _checkpoints(run)
    assert 2 in {s.epoch for s in saved}, [s.epoch for s in saved]
    best = load_checkpoint(experiment / "SignTransformer_best.pt")
    assert best.config["ray_workers"] == 2
    assert best.metrics["val_gloss_acc"] == pytest.approx(float(row["best_val_gloss_acc"]))


def test_trials_use_both_nodes_and_survive_losing_one(two_nodes, tmp_path):
    """Trials run on both nodes; the worker node then dies with a trial on it: that trial is
    retried on the head from its latest checkpoint and the search completes."""
    epochs = 40  # ~4 s of training per trial: a window to catch one mid-run on the worker
    driver = Driver(
        "--model",
        "iv3_gru",
        "--smoke-test",
        "--num-samples",
        4,
        "--epochs",
        epochs,
        "--trial-scheduler",
        "fifo",
        "--max-concurrent",
        2,
        "--max-failures",
        1,
        "--storage-path",
        tmp_path,
        "--name",
        "lose",
        "--address",
        two_nodes.address,
        env=two_nodes.env,
    )
    experiment = tmp_path / "lose"

    def trial_on_worker():
        for trial in trial_dirs(experiment):
            records = result_records(trial)
            if (
                records
                and records[-1]["node_id"] == two_nodes.worker
                and 2 <= records[-1]["epoch"] <= epochs - 10
            ):
                return trial, records[-1]["epoch"]
        return None

    try:
        victim, seen = wait_until(
            trial_on_worker, 300, "a trial training on the worker node", driver, every=0.1
        )
        two_nodes.ask("remove_worker")
        code = driver.wait(timeout=420)
    finally:
        driver.kill()
    assert code == 0, driver.tail()

    rows = trial_rows(experiment)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"TERMINATED"}, rows
    assert all(r["epochs"] == str(epochs) for r in rows), rows
    used = {r["node_id"] for t in trial_dirs(experiment) for r in result_records(t)}
    assert used == {two_nodes.head, two_nodes.worker}

    records = result_records(victim)
    restarts = [i for i, r in enumerate(records) if i and r["iterations_since_restore"] == 1]
    assert len(restarts) == 1, [(r["epoch"], r["iterations_since_restore"]) for r in records]
    before, after = records[restarts[0] - 1], records[restarts[0]]
    assert before["node_id"] == two_nodes.worker and after["node_id"] == two_nodes.head
    assert before["epoch"] >= seen
    # Resumed from the checkpoint of the last epoch it reported, not from scratch.
    assert after["epoch"] == before["epoch"] + 1, (before["epoch"], after["epoch"])
    assert f"resuming from the checkpoint of epoch {before['epoch']}" in driver.output
    assert sorted({r["epoch"] for r in records}) == list(range(1, epochs + 1))

    for trial in trial_dirs(experiment):  # every trial's checkpoints are in the shared folder
        assert epochs in {s.epoch for s in _checkpoints(trial)}, trial
    assert load_checkpoint(experiment / "IV3GRU_best.pt").model_name == "iv3_gru"
