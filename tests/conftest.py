"""Shared fixtures: tiny synthetic splits, a written synthetic dataset on disk, a Ray cluster and
an S3-compatible server."""

from __future__ import annotations

import itertools
import os

import pytest

from signray.data import synthetic_splits
from signray.tuning.address import LOOPBACK_ENV

# Every Ray process a test starts (and its subprocesses) stays on 127.0.0.1.
os.environ.setdefault(LOOPBACK_ENV, "0")

TINY = dict(num_gloss=6, num_cat=2, train_per_gloss=4, val_per_gloss=2, min_len=8, max_len=24)


@pytest.fixture(scope="session")
def tiny_keypoints():
    """(train, val) keypoint splits, small enough for a CPU epoch in well under a second."""
    return synthetic_splits(kind="keypoints", seed=0, difficulty="easy", **TINY)


@pytest.fixture(scope="session")
def tiny_features():
    return synthetic_splits(kind="features", seed=0, difficulty="easy", **TINY)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A real tiny training run on files: dataset on disk, 3 epochs of a d_model-32 transformer.

    Returns a namespace with `root` (dataset), `out` (run folder), `best` (checkpoint path),
    `log` (CSV log), `cfg`, and `val` (the loaded val split). Shared by the evaluate, predict and
    report tests so the model is trained once per session.
    """
    import io
    from types import SimpleNamespace

    from signray.config import resolve_config
    from signray.data.synth import write_dataset
    from signray.training.inputs import load_inputs
    from signray.training.loop import train_loop
    from signray.training.reporters import FileReporter

    root = write_dataset(
        tmp_path_factory.mktemp("tiny_data"),
        num_gloss=6,
        num_cat=2,
        train_per_gloss=4,
        val_per_gloss=3,
        seed=3,
        difficulty="easy",
        min_len=8,
        max_len=24,
        features=False,
    )
    out = tmp_path_factory.mktemp("tiny_run")
    cfg = resolve_config(
        {
            "model": "transformer",
            "keypoints_train": str(root / "keypoints_train"),
            "keypoints_val": str(root / "keypoints_val"),
            "labels_train_csv": str(root / "train_labels.csv"),
            "labels_val_csv": str(root / "val_labels.csv"),
            "num_gloss": 6,
            "num_cat": 2,
            "epochs": 3,
            "batch_size": 8,
            "lr": 3e-3,
            "d_model": 32,
            "n_heads": 2,
            "depth": 1,
            "ff_dim": 32,
            "head_hidden": 16,
            "output_dir": str(out),
            "num_threads": 1,
        }
    )
    data = load_inputs(cfg)
    reporter = FileReporter(out, cfg.spec.class_name, total_epochs=cfg.epochs, stream=io.StringIO())
    train_loop(cfg, reporter, data)
    return SimpleNamespace(
        root=root,
        out=out,
        best=reporter.best_path,
        log=reporter.log_path,
        cfg=cfg,
        val=data.val,
    )


@pytest.fixture(scope="session")
def assert_png():
    """`assert_png(path)`: PNG magic bytes, and matplotlib reads it as a sizeable RGB(A) image."""
    from matplotlib.image import imread

    def check(path, min_side: int = 200) -> None:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        image = imread(path)
        assert image.ndim == 3 and min(image.shape[:2]) >= min_side, (path, image.shape)

    return check


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs, dashboard on 127.0.0.1) shared by every Ray test.

    Starting a cluster costs ~5-10 s on 2 cores, so a test starts its own only when the cluster
    is what it checks (its ports, its processes, its shape, its nodes dying: say so in the
    docstring). Everything else runs here:

    - in this process: take the fixture; Ray is initialised, and ``signray.tune.main([...])``
      runs its search on this cluster;
    - a command in a subprocess: ``python -m signray.tune ... --address <the yielded address>``,
      or, for a command line that must stay as written (the README's, a benchmark's), the
      environment ``rayhelpers.joining(address)`` (RAY_ADDRESS, as under ``ray job submit``).

    A test leaves the cluster as it found it (`rayhelpers.wait_resources_released` checks).
    The dashboard stays on: Ray Train frees the placement group of a TorchTrainer that Tune stops
    early through a cleaner that polls the dashboard's State API. Yields the GCS address.
    """
    import ray

    from signray.tuning.cluster import init_ray

    started = not ray.is_initialized()
    if started:
        init_ray(num_cpus=2, dashboard=True, quiet=True)
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """One S3-compatible server (moto, 127.0.0.1) for the session; see tests/s3server.py."""
    from s3server import MotoServer

    server = MotoServer(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


_buckets = itertools.count()


@pytest.fixture
def s3_bucket(s3, monkeypatch):
    """A new, empty bucket on the session's S3 server, with this process's AWS_* variables
    pointing at the server; returns its name."""
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return s3.create_bucket(f"bucket-{os.getpid()}-{next(_buckets)}")
