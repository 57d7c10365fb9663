"""A search whose experiment and data live on an S3-compatible server (moto, 127.0.0.1): run,
interrupted with Ctrl-C, resumed, then evaluated and used for prediction from the bucket.

Unreachable stores, missing buckets and missing credentials (exit 2 before Ray starts) are in
tests/tuning/test_plan.py; losing the cluster's head with the experiment on S3 is in
test_cluster_jobs.py. Budget: about 3 minutes on a 2-core CI machine.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import signal

import pytest
import yaml
from rayhelpers import ROOT, Driver, saved_statuses, wait_until

from signray.data.pack import main as pack
from signray.data.synth import write_dataset
from signray.evaluate import main as evaluate
from signray.predict import main as predict
from signray.storage import RemotePath
from signray.training.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

EPOCHS = 20  # a trial takes a few seconds: long enough to interrupt one mid-way
TINY = {"num_gloss": 6, "num_cat": 2, "train_per_gloss": 4, "val_per_gloss": 2,
        "min_len": 8, "max_len": 24}  # fmt: skip


def _upload_data(s3, bucket: str, tmp_path) -> None:
    """Today's (v1) shard folders, and the per-clip val folder, in the bucket under data/."""
    local = write_dataset(tmp_path / "data", seed=1, difficulty="easy", features=False, **TINY)
    for split in ("train", "val"):
        args = ["--src", local / f"keypoints_{split}", "--labels", local / f"{split}_labels.csv",
                "--output-dir", local / f"packed_{split}", "--num-shards", 2,
                "--num-gloss", TINY["num_gloss"], "--num-cat", TINY["num_cat"]]  # fmt: skip
        assert pack([str(a) for a in args]) == 0
    s3.upload_dir(local, bucket, "data")


def test_search_on_object_storage_survives_ctrl_c_and_is_used_from_the_bucket(
    s3, s3_bucket, tmp_path, capsys
):
    _upload_data(s3, s3_bucket, tmp_path)
    data = f"s3://{s3_bucket}/data"
    storage = f"s3://{s3_bucket}/exps"
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "space": {"lr": {"distribution": "choice", "values": [0.003, 0.001, 0.0003]}},
                "points_to_evaluate": [{"lr": 0.003}, {"lr": 0.001}, {"lr": 0.0003}],
            }
        )
    )
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = [
        "--model", "transformer", "--search-space", space, "--num-samples", 3,
        "--epochs", EPOCHS, "--trial-scheduler", "fifo", "--max-concurrent", 1,
        "--keypoints-train", f"{data}/packed_train", "--keypoints-val", f"{data}/packed_val",
        "--num-gloss", TINY["num_gloss"], "--num-cat", TINY["num_cat"],
        "--d-model", 16, "--n-heads", 2, "--depth", 1, "--ff-dim", 32, "--head-hidden", 16,
        "--batch-size", 8, "--storage-path", storage, "--name", "exp",
    ]  # fmt: skip
    experiment = RemotePath(f"{storage}/exp")
    driver = Driver(*args, cwd=cwd)  # its own local cluster; AWS_* from this environment

    def finished_and_one_running():
        done = {t for t, s in saved_statuses(experiment).items() if s == "TERMINATED"}
        running = [
            t
            for t in experiment.glob("trial_*")
            if t.name.removeprefix("trial_") not in done and list(t.glob("checkpoint_*"))
        ]
        return done if done and running else None

    try:
        done = wait_until(finished_and_one_running, 300, "a finished trial", driver, every=0.5)
        driver.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert driver.wait(timeout=180) == 130, driver.tail()
    finally:
        driver.kill()
    printed = re.search(r"^\s*python -m signray.tune (--resume .*)$", driver.output, re.M)
    assert printed and f"--storage-path {storage}" in printed.group(1), driver.tail()

    def objects(trial_id: str) -> dict[str, tuple[str, object]]:
        found = {}
        for prefix in (f"exps/exp/trial_{trial_id}/", f"exps/exp/trials_done/{trial_id}"):
            listing = s3.client().list_objects_v2(Bucket=s3_bucket, Prefix=prefix)
            found.update({o["Key"]: (o["ETag"], o["LastModified"]) for o in listing["Contents"]})
        return found

    before = {t: objects(t) for t in done}
    resumed = Driver(*shlex.split(printed.group(1)), cwd=cwd)
    assert resumed.wait(timeout=300) == 0, resumed.tail()

    # Everything is in the bucket, nothing became a local "s3:" folder.
    keys = set(s3.keys(s3_bucket, "exps/exp/"))
    for name in ("trials.csv", "best_config.yaml", "SignTransformer_best.pt",
                 "evaluation/metrics.json", "evaluation/confusion_gloss.png",
                 "report/index.html", "report/curves.png"):  # fmt: skip
        assert f"exps/exp/{name}" in keys, name
    assert not any(cwd.iterdir()) and not (ROOT / "s3:").exists()
    rows = list(csv.DictReader(s3.read(s3_bucket, "exps/exp/trials.csv").decode().splitlines()))
    assert len(rows) == 3 and {r["status"] for r in rows} == {"TERMINATED"}, rows
    assert all(r["epochs"] == str(EPOCHS) for r in rows)
    # Finished trials did not run again: same bytes; their checkpoints and done marker, written
    # by the trial itself, not even rewritten.
    for trial_id, keys_before in before.items():
        after = objects(trial_id)
        assert {k: e for k, (e, _) in keys_before.items()} == {k: e for k, (e, _) in after.items()}
        own = [k for k in keys_before if "/checkpoint_" in k or "/trials_done/" in k]
        assert own and all(keys_before[k] == after[k] for k in own)
    best_config = yaml.safe_load(s3.read(s3_bucket, "exps/exp/best_config.yaml"))
    assert best_config["keypoints_train"] == f"{data}/packed_train"  # data read from the bucket
    assert best_config["output_dir"] == f"{storage}/exp/retrain"

    # evaluate and predict read the checkpoint (and the data) from the bucket.
    best = f"{storage}/exp/SignTransformer_best.pt"
    assert load_checkpoint(best).metrics["val_gloss_acc"] == pytest.approx(
        max(float(r["best_val_gloss_acc"]) for r in rows)
    )
    assert evaluate(["--checkpoint", best, "--keypoints-val", f"{data}/packed_val",
                     "--output-dir", f"s3://{s3_bucket}/eval"]) == 0  # fmt: skip
    metrics = json.loads(s3.read(s3_bucket, "eval/metrics.json"))
    assert metrics["checkpoint"] == best and metrics["count"] == 12
    clip = f"{data}/keypoints_val/g000_val_000.npz"
    capsys.readouterr()
    assert predict(["--checkpoint", best, clip, "--json"]) == 0
    (prediction,) = json.loads(capsys.readouterr().out)["predictions"]
    assert prediction["file"] == clip and len(prediction["top"]) == 5
