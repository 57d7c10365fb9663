"""What the workers of a joined or a local cluster receive: signray's code and the settings trials
read."""

from __future__ import annotations

import os

from rayhelpers import ROOT

from signray.tuning.address import Target
from signray.tuning.cluster import local_worker_env, runtime_env


def test_a_joined_cluster_gets_the_code_and_the_trial_settings(monkeypatch):
    monkeypatch.setenv("TUNE_FUNCTION_THREAD_TIMEOUT_S", "75")  # as set_tune_environment does
    env = runtime_env(Target("10.0.0.5:6379", "--address"), "10.0.0.5:6379")
    assert env["env_vars"]["TUNE_FUNCTION_THREAD_TIMEOUT_S"] == "75"
    assert env["env_vars"]["RAY_ADDRESS"] == "10.0.0.5:6379"
    assert [p.rsplit("/", 1)[-1] for p in env["py_modules"]] == ["signray"]


def test_a_local_clusters_workers_inherit_this_process_path_and_the_trial_settings(monkeypatch):
    monkeypatch.setenv("TUNE_FUNCTION_THREAD_TIMEOUT_S", "75")
    env = local_worker_env("127.0.0.1:6379")
    assert env["RAY_ADDRESS"] == "127.0.0.1:6379" and env["TUNE_FUNCTION_THREAD_TIMEOUT_S"] == "75"
    paths = env["PYTHONPATH"].split(os.pathsep)
    assert paths and all(os.path.isabs(p) for p in paths) and str(ROOT / "tests") in paths
