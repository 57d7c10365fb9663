"""What a joined cluster's workers receive: signray's code and the settings trials read."""

from __future__ import annotations

from signray.tuning.address import Target
from signray.tuning.cluster import runtime_env


def test_a_joined_cluster_gets_the_code_and_the_trial_settings(monkeypatch):
    monkeypatch.setenv("TUNE_FUNCTION_THREAD_TIMEOUT_S", "75")  # as set_tune_environment does
    env = runtime_env(Target("10.0.0.5:6379", "--address"), "10.0.0.5:6379")
    assert env["env_vars"]["TUNE_FUNCTION_THREAD_TIMEOUT_S"] == "75"
    assert env["env_vars"]["RAY_ADDRESS"] == "10.0.0.5:6379"
    assert [p.rsplit("/", 1)[-1] for p in env["py_modules"]] == ["signray"]


def test_a_local_cluster_gets_this_process_path():
    env = runtime_env(Target(None, ""), "127.0.0.1:6379")
    assert "py_modules" not in env and env["env_vars"]["PYTHONPATH"]
