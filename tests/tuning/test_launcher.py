"""The same loop under a 2-worker Ray Train TorchTrainer (DDP, gloo, on the session's cluster)
versus one process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from signray.config import resolve_config
from signray.train import evaluate_checkpoint
from signray.training.checkpoint import load_checkpoint
from signray.training.inputs import load_inputs

pytestmark = pytest.mark.slow

# Dropout off and no bucketing: with the same seed and global batch, the two runs see the same
# global batches, so their losses must agree up to float reduction order.
FLAGS = [
    "--smoke-test",
    "--precision",  # exact comparison: bf16 rounding depends on how the batch is split
    "fp32",
    "--num-gloss",
    "8",
    "--num-cat",
    "2",
    "--batch-size",
    "8",
    "--epochs",
    "2",
    "--dropout",
    "0",
    "--no-bucket",
    "--d-model",
    "32",
    "--n-heads",
    "4",
    "--depth",
    "1",
    "--ff-dim",
    "64",
]


def _train(out, *extra):
    proc = subprocess.run(
        [sys.executable, "-m", "signray.train", *FLAGS, "--output-dir", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return load_checkpoint(out / "SignTransformer_last.pt"), load_checkpoint(
        out / "SignTransformer_best.pt"
    )


def test_two_workers_match_one_process_and_full_val_evaluation(tmp_path, ray_cluster):
    one_last, _ = _train(tmp_path / "one")
    two_last, two_best = _train(
        tmp_path / "two", "--ray-workers", "2", "--storage-path", str(tmp_path / "ray"),
        "--address", ray_cluster,
    )  # fmt: skip
    first_one = one_last.history[0]["train_loss"]
    first_two = two_last.history[0]["train_loss"]
    assert first_two == pytest.approx(first_one, rel=1e-4)

    # Reported val accuracy is over the WHOLE val set, not rank 0's shard.
    cfg = resolve_config({**two_best.config})
    _, val = load_inputs(cfg)
    again = evaluate_checkpoint(tmp_path / "two" / "SignTransformer_best.pt", val, batch_size=8)
    assert two_best.metrics["val_gloss_acc"] == pytest.approx(again["val_gloss_acc"])
    assert two_best.metrics["val_loss"] == pytest.approx(again["val_loss"], rel=1e-5)


def test_a_worker_group_that_cannot_be_placed_fails_instead_of_waiting_forever(
    ray_cluster, tmp_path, monkeypatch
):
    """Past the preflight (say another job took the CPUs), Ray Train v2 retries a worker group
    start that times out without limit by default; the launcher bounds the retries."""
    import threading

    from signray.tuning.launcher import run_torch_trainer
    from signray.tuning.resources import WORKER_GROUP_START_RETRIES
    from signray.tuning.trial_data import TrialData

    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "2")  # each wait (default 60 s)
    cfg = resolve_config({"smoke_test": True, "ray_workers": 2, "batch_size": 8})
    outcome: dict = {}

    def fit() -> None:
        try:  # 2 workers x 2 CPUs on a 2-CPU cluster: the placement group is never ready
            run_torch_trainer(cfg, TrialData("memory", None, None), storage_path=tmp_path,
                              name="unplaceable", cpus_per_worker=2)  # fmt: skip
        except Exception as err:  # noqa: BLE001  (what fit() raised is the result)
            outcome["error"] = str(err)

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    thread.join(timeout=60 + 2 * (WORKER_GROUP_START_RETRIES + 1) * 10)
    assert not thread.is_alive(), "Ray Train is still retrying the worker group start"
    assert "worker group startup timed out" in outcome["error"]
