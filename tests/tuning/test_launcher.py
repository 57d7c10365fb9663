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
