"""`python -m signray.train` end to end, as a user runs it: real files, real subprocesses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from signray.data.synth import write_dataset
from signray.storage import RemotePath
from signray.training.checkpoint import load_checkpoint


def _train(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "signray.train", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsl")
    write_dataset(
        root,
        num_gloss=8,
        num_cat=2,
        train_per_gloss=6,
        val_per_gloss=3,
        seed=1,
        difficulty="easy",
        min_len=8,
        max_len=32,
    )
    return root


def _data_flags(root, kind="keypoints"):
    return [
        f"--{kind}-train",
        root / f"{kind}_train",
        f"--{kind}-val",
        root / f"{kind}_val",
        "--labels-train-csv",
        root / "train_labels.csv",
        "--labels-val-csv",
        root / "val_labels.csv",
        "--num-gloss",
        8,
        "--num-cat",
        2,
    ]


def test_smoke_test_writes_and_reloads_checkpoint(tmp_path):
    proc = _train("--smoke-test", "--output-dir", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "smoke test: reloaded SignTransformer_best.pt" in proc.stdout
    assert (tmp_path / "out" / "SignTransformer_best.pt").is_file()
    assert (tmp_path / "out" / "config.yaml").is_file()


def test_trains_from_files_above_chance(tmp_path, dataset):
    out = tmp_path / "run"
    proc = _train(
        *_data_flags(dataset),
        "--epochs",
        20,
        "--batch-size",
        16,
        "--lr",
        3e-3,
        "--d-model",
        64,
        "--n-heads",
        4,
        "--depth",
        2,
        "--ff-dim",
        128,
        "--output-dir",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    best = load_checkpoint(out / "SignTransformer_best.pt")
    assert best.best_metric >= 0.5  # chance is 1/8
    assert "ETA" in proc.stdout and "best val_gloss_acc" in proc.stdout


def test_existing_checkpoints_are_not_overwritten(tmp_path, dataset):
    out = tmp_path / "run"
    out.mkdir()
    (out / "SignTransformer_best.pt").write_bytes(b"precious")
    proc = _train(*_data_flags(dataset), "--epochs", 1, "--output-dir", out)
    assert proc.returncode == 2
    assert "--resume" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "SignTransformer_best.pt").read_bytes() == b"precious"


def test_bad_labels_exit_2_with_all_problems(tmp_path, dataset):
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "file,gloss,cat\nnope,1,0\n"
        + (dataset / "train_labels.csv").read_text().splitlines()[1]
        + "\nclip,x,0\n"
    )
    flags = _data_flags(dataset)
    flags[flags.index("--labels-train-csv") + 1] = bad
    proc = _train(*flags, "--output-dir", tmp_path / "o")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "line 2" in proc.stderr and "line 4" in proc.stderr


def test_config_file_and_cli_precedence(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 1\nlr: 0.5\nd_model: 32\nn_heads: 4\ndepth: 1\nff_dim: 32\n")
    proc = _train("--smoke-test", "--config", cfg, "--lr", "0.002", "--output-dir", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    saved = (tmp_path / "o" / "config.yaml").read_text()
    assert "lr: 0.002" in saved and "epochs: 1" in saved and "d_model: 32" in saved


def test_diverging_run_says_why_without_traceback(tmp_path):
    proc = _train("--smoke-test", "--lr", "1e30", "--grad-clip", "0", "--output-dir", tmp_path)
    assert proc.returncode == 1
    assert "training diverged" in proc.stderr and "lower `lr`" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ray_run_flags_are_checked_before_ray_and_train_writes_to_object_stores(
    tmp_path, s3_bucket
):
    """`--worker-failures` shares the search's rule; an unreachable cluster or a bad value exits 2
    before any Ray process; a run writes its outputs straight into a bucket."""
    bad = _train("--smoke-test", "--ray-workers", 2, "--worker-failures", -1,
                 "--output-dir", tmp_path / "a")  # fmt: skip
    assert bad.returncode == 2 and "`--worker-failures` must be >= 0, but got -1" in bad.stderr
    nobody = _train("--smoke-test", "--ray-workers", 2, "--address", "127.0.0.1:1",
                    "--output-dir", tmp_path / "b")  # fmt: skip
    assert nobody.returncode == 2 and "no Ray cluster answers at 127.0.0.1:1" in nobody.stderr
    out = f"s3://{s3_bucket}/runs/tx"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = _train("--smoke-test", "--epochs", 2, "--output-dir", out, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_checkpoint(f"{out}/SignTransformer_best.pt").model_name == "transformer"
    assert load_checkpoint(f"{out}/SignTransformer_last.pt").epoch == 2
    log = RemotePath(f"{out}/SignTransformer_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,") and len(log) == 3
    assert RemotePath(f"{out}/learning_curve.png").is_file() and not any(cwd.iterdir())


def test_ddp_on_gpus_this_machine_lacks_exits_2_before_ray(tmp_path):
    """A local cluster gets this machine's GPUs: two GPU workers without two GPUs never start."""
    import torch

    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has the GPUs")
    proc = _train("--smoke-test", "--ray-workers", 2, "--use-gpu", "--output-dir", tmp_path / "o",
                  "--storage-path", tmp_path / "ray")  # fmt: skip
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (
        "a training run needs 2 workers x (1 CPU, 1 GPU) but this machine has no CUDA"
        in proc.stderr
    )
    assert "leave out --use-gpu" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "ray").exists()


@pytest.mark.slow
def test_ddp_on_gpus_the_joined_cluster_lacks_exits_2_at_once(ray_cluster, tmp_path):
    """`ray_cluster` declares 2 CPUs and no GPU: the same preflight as `signray.tune`'s says so
    instead of Ray Train waiting for two GPU workers."""
    proc = _train("--smoke-test", "--ray-workers", 2, "--use-gpu", "--address", ray_cluster,
                  "--output-dir", tmp_path / "o", "--storage-path", tmp_path / "ray")  # fmt: skip
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (
        f"the cluster at {ray_cluster} cannot run one training run: a training run needs 2 "
        "workers x (1 CPU, 1 GPU) (each worker on one node), but the cluster has 2 CPUs and 0 "
        "GPUs on 1 node(s); join a cluster with GPUs, or leave out --use-gpu"
    ) in proc.stderr
    assert "Traceback" not in proc.stderr
