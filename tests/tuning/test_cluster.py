"""What the workers of a joined or a local cluster receive (signray's code and the settings trials
read), and what a local cluster starts (the dashboard only when asked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from rayhelpers import ROOT, InitCalled, record_ray_init

from signray.tuning.address import Target
from signray.tuning.cluster import local_worker_env, runtime_env


def test_a_joined_cluster_gets_the_code_and_the_trial_settings(monkeypatch):
    from signray.tuning.launcher import POLL_INTERVAL_ENV
    from signray.tuning.tuner import set_tune_environment

    monkeypatch.setenv("TUNE_FUNCTION_THREAD_TIMEOUT_S", "75")  # the user's choice stays
    monkeypatch.delenv(POLL_INTERVAL_ENV, raising=False)
    set_tune_environment()
    env = runtime_env(Target("10.0.0.5:6379", "--address"), "10.0.0.5:6379")
    assert env["env_vars"]["TUNE_FUNCTION_THREAD_TIMEOUT_S"] == "75"
    # Ray Train controllers poll their workers every 0.5 s, not Ray's 2 s
    assert env["env_vars"][POLL_INTERVAL_ENV] == "0.5"
    assert env["env_vars"]["RAY_ADDRESS"] == "10.0.0.5:6379"
    assert [p.rsplit("/", 1)[-1] for p in env["py_modules"]] == ["signray"]


def test_a_local_clusters_workers_inherit_this_process_path_and_the_trial_settings(monkeypatch):
    monkeypatch.setenv("TUNE_FUNCTION_THREAD_TIMEOUT_S", "75")
    env = local_worker_env("127.0.0.1:6379")
    assert env["RAY_ADDRESS"] == "127.0.0.1:6379" and env["TUNE_FUNCTION_THREAD_TIMEOUT_S"] == "75"
    paths = env["PYTHONPATH"].split(os.pathsep)
    assert paths and all(os.path.isabs(p) for p in paths) and str(ROOT / "tests") in paths


def test_no_dashboard_reaches_ray_init_and_the_dashboard_stays_the_default(monkeypatch, tmp_path):
    """What `ray.init` is asked for by the tune and train commands (no Ray started)."""
    from signray.train import main as train_main
    from signray.tune import main as tune_main

    calls = record_ray_init(monkeypatch)
    tune = ["--model", "iv3_gru", "--smoke-test", "--single-run", "--storage-path", str(tmp_path)]
    train = ["--model", "iv3_gru", "--smoke-test", "--ray-workers", "2"]
    for main, args in ((tune_main, [*tune, "--name", "a"]),
                       (train_main, [*train, "--output-dir", str(tmp_path / "t")])):  # fmt: skip
        with pytest.raises(InitCalled):
            main(args)
        assert calls[-1]["include_dashboard"] is True and calls[-1]["address"] == "local"
        with pytest.raises(InitCalled):
            main([*args[:-1], args[-1] + "-off", "--no-dashboard"])
        assert calls[-1]["include_dashboard"] is False
        assert "runtime_env" not in calls[-1]  # a local cluster's workers inherit their setup


_PROCESSES = """
import json, sys
import ray
from signray.tuning.cluster import init_ray
url = init_ray(dashboard=sys.argv[1] == "on", quiet=True, num_cpus=1)
import psutil  # Ray's copy, on sys.path once ray is imported
names = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
print("@@" + json.dumps({"url": url, "modules": sum("ray-dashboard-" in n for n in names)}))
ray.shutdown()
"""


@pytest.mark.slow
@pytest.mark.parametrize("dashboard", ["on", "off"])
def test_a_cluster_without_the_dashboard_starts_none_of_its_processes(dashboard):
    """A cluster of its own: the processes it starts are what is checked."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROCESSES, dashboard],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")]
    started = json.loads(line[2:])
    if dashboard == "on":
        assert started["url"].startswith("http://127.0.0.1:") and started["modules"] >= 3
    else:
        assert started == {"url": None, "modules": 0}
