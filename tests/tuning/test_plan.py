"""`python -m signray.tune` input checking: every mistake exits 2 with one message, before Ray.

The searches themselves run in tests/launch/test_search.py (slow, real Ray).
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest
import yaml

import signray.tuning.cluster
from signray.layout import ExperimentFiles
from signray.tune import build_parser, main


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Validation must finish before Ray starts: starting it fails these tests."""

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started before the input was validated")

    monkeypatch.setattr(signray.tuning.cluster, "init_ray", refuse)


def _fail(capsys, *args) -> str:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def _space(tmp_path, data) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_parser_has_every_documented_flag():
    flags = {s for a in build_parser()._actions for s in a.option_strings}
    for flag in (
        "--model",
        "--search-space",
        "--num-samples",
        "--max-concurrent",
        "--cpus-per-trial",
        "--gpus-per-trial",
        "--workers-per-trial",
        "--searcher",
        "--trial-scheduler",
        "--grace-period",
        "--reduction-factor",
        "--keep-checkpoints",
        "--max-failures",
        "--worker-failures",
        "--retry-errored",
        "--name",
        "--storage-path",
        "--resume",
        "--restore",
        "--address",
        "--dashboard-host",
        "--dashboard-port",
        "--single-run",
        "--seed",
        "--smoke-test",
        "--epochs",
        "--lr",
        "--scheduler",
        "--d-model",
        "--hidden1",
        "--keypoints-train",
        "--config",
    ):
        assert flag in flags, flag


def test_bad_search_space_lists_every_problem(tmp_path, capsys):
    space = _space(
        tmp_path, {"space": {"lr": {"distribution": "uniform", "low": 1, "high": 0}, "nope": 1}}
    )
    err = _fail(
        capsys,
        "--model",
        "transformer",
        "--search-space",
        space,
        "--smoke-test",
        "--storage-path",
        tmp_path,
    )
    assert "found 2 problems" in err and space in err
    assert "`low < high` must hold" in err and "`nope`: unknown field" in err


def test_search_space_is_required_without_single_run(tmp_path, capsys):
    err = _fail(capsys, "--model", "transformer", "--storage-path", tmp_path)
    assert "--search-space FILE.yaml` is required" in err


def test_options_are_checked_together(tmp_path, capsys):
    err = _fail(
        capsys,
        "--model",
        "transformer",
        "--smoke-test",
        "--epochs",
        3,
        "--grace-period",
        5,
        "--reduction-factor",
        1,
        "--num-samples",
        0,
        "--cpus-per-trial",
        0,
        "--storage-path",
        tmp_path,
    )
    assert "`--grace-period` must be <= --epochs" in err
    assert "`--reduction-factor` must be > 1" in err
    assert "`--num-samples` must be >= 1" in err
    assert "`--cpus-per-trial` must be > 0" in err


def test_batch_sizes_must_split_across_workers(tmp_path, capsys):
    space = _space(
        tmp_path, {"space": {"batch_size": {"distribution": "choice", "values": [16, 30]}}}
    )
    err = _fail(
        capsys,
        "--model",
        "iv3_gru",
        "--search-space",
        space,
        "--smoke-test",
        "--workers-per-trial",
        4,
        "--storage-path",
        tmp_path,
    )
    assert "divisible by `ray_workers`" in err and "batch_size=30, ray_workers=4" in err


def test_bad_config_flag(tmp_path, capsys):
    err = _fail(
        capsys, "--model", "transformer", "--smoke-test", "--lr", -1, "--storage-path", tmp_path
    )
    assert "`lr` must be a positive finite number" in err


def test_missing_data_is_reported_before_ray(tmp_path, capsys):
    err = _fail(
        capsys,
        "--model",
        "transformer",
        "--single-run",
        "--keypoints-train",
        tmp_path / "nope",
        "--storage-path",
        tmp_path,
    )
    assert "is not a folder" in err and "--keypoints-val" in err


def test_model_of_the_space_file_and_flag_must_agree(tmp_path, capsys):
    space = _space(tmp_path, {"model": "iv3_gru", "space": {"lr": 0.01}})
    err = _fail(
        capsys,
        "--model",
        "transformer",
        "--search-space",
        space,
        "--smoke-test",
        "--storage-path",
        tmp_path,
    )
    assert "the file is for model 'iv3_gru'" in err


def test_existing_experiment_needs_resume(tmp_path, capsys):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "tuner.pkl").write_text("x")
    err = _fail(
        capsys, "--model", "iv3_gru", "--smoke-test", "--storage-path", tmp_path, "--name", "exp"
    )
    assert "already exists: add --resume" in err


def test_resume_of_unknown_experiment(tmp_path, capsys):
    err = _fail(capsys, "--resume", "--name", "ghost", "--storage-path", tmp_path)
    assert "not a signray.tune experiment" in err
    assert "--restore" in _fail(capsys, "--restore", tmp_path / "ghost")


def test_resume_needs_a_name(tmp_path, capsys):
    assert "needs the experiment's --name" in _fail(capsys, "--resume", "--storage-path", tmp_path)


def test_gpus_without_cuda(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    err = _fail(
        capsys,
        "--model",
        "iv3_gru",
        "--smoke-test",
        "--gpus-per-trial",
        0.5,
        "--storage-path",
        tmp_path,
    )
    assert "no CUDA GPU" in err


def test_gpus_per_trial_implies_use_gpu_so_data_on_gpu_is_accepted(tmp_path):
    """Trials given GPUs train on them; --data-on-gpu needs no --use-gpu next to the share."""
    from signray.tuning.plan import plan_new

    argv = ["--smoke-test", "--gpus-per-trial", "0.25", "--data-on-gpu", "--storage-path",
            str(tmp_path), "--name", "x", "--address", "127.0.0.1:1"]  # fmt: skip
    plan = plan_new(build_parser().parse_args(argv))  # a joined cluster: no local GPU check
    assert plan.base.use_gpu and plan.base.data_on_gpu
    assert plan.options.gpus_per_trial == 0.25


def test_saved_state_round_trip(tmp_path, monkeypatch):
    """What a run saves for --resume rebuilds the same base config and options."""
    from signray.tuning.plan import plan_new, plan_resume

    args = build_parser().parse_args(
        [
            "--model",
            "iv3_gru",
            "--smoke-test",
            "--storage-path",
            str(tmp_path),
            "--name",
            "x",
            "--num-samples",
            "3",
            "--lr",
            "0.002",
        ]
    )
    plan = plan_new(args)
    plan.save()
    saved = json.loads(ExperimentFiles(tmp_path / "x").driver_state.read_text())
    assert saved["options"]["num_samples"] == 3 and saved["base"]["lr"] == 0.002
    assert set(saved["distributions"]) == set(plan.space.params)
    resumed = plan_resume(
        build_parser().parse_args(["--resume", "--name", "x", "--storage-path", str(tmp_path)])
    )
    assert resumed.base == plan.base
    assert resumed.options == plan.options
    assert resumed.space.params == plan.space.params


# ------------------------------------------------- object-store experiments (a real S3 server)


def _smoke_on(storage: str, *extra) -> list:
    return ["--model", "iv3_gru", "--smoke-test", "--storage-path", storage, "--name", "e", *extra]


def test_bad_object_stores_exit_2_in_seconds_before_ray(
    s3, s3_bucket, tmp_path, monkeypatch, capsys
):
    """Unreachable store, missing bucket, no credentials: one clear message each, exit 2,
    before Ray starts (the autouse fixture fails any init_ray); the seconds it took printed."""
    from s3server import MotoServer, free_port

    def timed_fail(*args) -> str:
        start = time.perf_counter()
        err = _fail(capsys, *args)
        print(
            f"exit 2 after {time.perf_counter() - start:.2f}s: {err.strip()}", file=sys.__stdout__
        )
        return err

    err = timed_fail(*_smoke_on("s3://no-such-bucket/exps"))
    assert f"bucket 'no-such-bucket' does not exist at {s3.endpoint}" in err
    # Nobody listens on the port; then a server that accepts connections and never answers.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    err = timed_fail(*_smoke_on(f"s3://{s3_bucket}-refused/exps"))
    assert "`--storage-path` s3://" in err and "cannot reach the object store at http://" in err
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        err = timed_fail(*_smoke_on(f"s3://{s3_bucket}-silent/exps"))
    assert "cannot reach the object store" in err and "Timeout was reached" in err
    locked = MotoServer(tmp_path, open_actions=1)  # checks credentials after the first request
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", locked.endpoint)
        locked.create_bucket("locked-plan")
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))
        err = timed_fail(*_smoke_on("s3://locked-plan/exps"))
        assert "no AWS credentials were found" in err
        err = timed_fail("--resume", "--name", "e", "--storage-path", "s3://locked-plan/exps")
        assert "no AWS credentials were found" in err
    finally:
        locked.stop()


def test_object_store_experiment_plans_saves_and_resumes(s3_bucket, capsys):
    """A new experiment in a bucket: planned, its state saved there, read back by --resume;
    nothing appears locally; --mlflow (a local SQLite store) is refused there."""
    from signray.tuning.plan import plan_new, plan_resume

    storage = f"s3://{s3_bucket}/exps"
    plan = plan_new(build_parser().parse_args([str(a) for a in _smoke_on(storage)]))
    assert str(plan.files.root) == f"{storage}/e"
    plan.save()
    resumed = plan_resume(
        build_parser().parse_args(["--resume", "--name", "e", "--storage-path", storage])
    )
    assert resumed.base == plan.base and resumed.space.params == plan.space.params
    assert str(resumed.space_file) == f"{storage}/e/search_space.yaml"
    assert "already exists: add --resume" in _fail(capsys, *_smoke_on(storage))
    assert not Path("s3:").exists()
    err = _fail(capsys, *_smoke_on(storage, "--name", "m", "--mlflow"))
    assert "`--mlflow` keeps its SQLite store in the experiment folder, which must be local" in err


def test_retry_errored_needs_resume(tmp_path, capsys):
    err = _fail(capsys, *_smoke_on(str(tmp_path), "--retry-errored"))
    assert "`--retry-errored` needs --resume or --restore" in err


def test_smoke_test_grace_period_follows_the_budget_unit(tmp_path):
    from signray.tuning.plan import plan_new

    def options(*extra):
        args = build_parser().parse_args(
            ["--smoke-test", "--storage-path", str(tmp_path), "--name", "x", *extra]
        )
        return plan_new(args).options

    smoke = options()
    assert (smoke.budget_unit, smoke.grace_period) == ("epochs", 1)
    samples = options("--budget-unit", "samples")  # the smoke grace (1 epoch) does not apply
    assert (samples.budget_unit, samples.grace_period) == ("samples", None)
    assert samples.optuna_storage == f"sqlite:///{tmp_path / 'x' / 'optuna.db'}"


@pytest.mark.parametrize("budget", ["2x", "-5", "0", "soon"])
def test_time_budget_must_be_a_positive_duration(tmp_path, capsys, budget):
    err = _fail(capsys, "--smoke-test", "--time-budget", budget, "--storage-path", tmp_path)
    assert "`--time-budget` must be a positive duration such as 2h, 30m, 90s or 3600" in err
    assert repr(budget) in err
