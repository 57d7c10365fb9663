"""Security defaults that need a running command: the Ray dashboard stays on loopback.

The other defaults are tested with the bad inputs (test_bad_input.py): npz object arrays and
pickled npz refused; a crafted pickle checkpoint refused, never run, by ``signray.train
--resume``, ``signray.evaluate`` and ``signray.predict`` (weights_only=True); ``!!python`` YAML
tags refused in config and search-space files. Unit level: tests/test_checkpoint.py,
tests/data/test_datasets.py, tests/test_config.py, tests/test_search_space.py.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from rayhelpers import (
    Driver,
    InitCalled,
    get_psutil,
    is_loopback,
    record_ray_init,
    trial_rows,
    wait_until,
)

from signray.tune import main as tune_main
from signray.tuning.address import LOOPBACK_ENV
from signray.tuning.cluster import DASHBOARD_WARNING


def _own_processes(ray_tmp: Path, driver_pid: int) -> dict[int, str]:
    """The driver and every process started for its cluster (they inherit its RAY_TMPDIR)."""
    psutil = get_psutil()
    found = {}
    for p in psutil.process_iter():
        try:
            if p.pid == driver_pid or p.environ().get("RAY_TMPDIR") == str(ray_tmp):
                found[p.pid] = p.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.mark.slow
def test_dashboard_and_every_ray_port_listen_on_loopback_only(tmp_path):
    """A search that starts its own cluster: the dashboard, and every port Ray opens, listen on
    127.0.0.1 only, no socket talks to another address, and no process outlives the run."""
    psutil = get_psutil()
    ray_tmp = Path(tempfile.mkdtemp(prefix="srdb-", dir="/tmp"))  # short: unix socket paths
    driver = Driver(
        "--model",
        "iv3_gru",
        "--smoke-test",
        "--single-run",
        "--epochs",
        30,
        "--storage-path",
        tmp_path,
        "--name",
        "dash",
        # The test session's own loopback setting is overridden: signray itself must set it
        # for the cluster it starts, before Ray is imported.
        env={"RAY_TMPDIR": str(ray_tmp), LOOPBACK_ENV: "1"},
    )
    try:
        url = wait_until(
            lambda: re.search(r"Ray dashboard: http://([\d.]+):(\d+)", driver.output),
            180,
            "the dashboard URL",
            driver,
        )
        host, port = url.group(1), int(url.group(2))
        assert host == "127.0.0.1"
        wait_until(
            lambda: list(tmp_path.glob("dash/trial_*/result.json")),
            180,
            "the trial's first epoch",
            driver,
        )
        own = _own_processes(ray_tmp, driver.proc.pid)
        sockets = [c for c in psutil.net_connections(kind="inet") if c.pid in own]
        listening = [c for c in sockets if c.status == psutil.CONN_LISTEN]
        dashboard = [c for c in listening if c.laddr.port == port]
        assert dashboard, f"nothing of this run listens on the dashboard port {port}"
        exposed = [(own[c.pid], c.laddr) for c in listening if not is_loopback(c.laddr.ip)]
        assert not exposed, f"listening beyond loopback: {exposed}"
        remote = [(own[c.pid], c.raddr) for c in sockets if c.raddr and not is_loopback(c.raddr.ip)]
        assert not remote, f"connected beyond loopback: {remote}"
        assert driver.wait(timeout=300) == 0, driver.tail()
    finally:
        driver.kill()
    assert trial_rows(tmp_path / "dash")[0]["status"] == "TERMINATED"
    deadline = time.time() + 30
    while (left := _own_processes(ray_tmp, -1)) and time.time() < deadline:
        time.sleep(1)
    for pid in left:  # ours: killing them keeps the machine clean even when the test fails
        psutil.Process(pid).kill()
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not left, f"Ray processes outlived the driver: {left}"


def test_dashboard_host_defaults_to_loopback_and_a_public_one_warns(monkeypatch, tmp_path, capsys):
    """What `ray.init` is asked for, without starting Ray (nor binding a public address)."""
    calls = record_ray_init(monkeypatch)
    args = ["--model", "iv3_gru", "--smoke-test", "--single-run", "--storage-path", str(tmp_path)]
    with pytest.raises(InitCalled):
        tune_main([*args, "--name", "a"])
    assert calls[-1]["dashboard_host"] == "127.0.0.1" and calls[-1]["address"] == "local"
    assert "WARNING" not in capsys.readouterr().err

    with pytest.raises(InitCalled):
        tune_main([*args, "--name", "b", "--dashboard-host", "0.0.0.0"])
    assert calls[-1]["dashboard_host"] == "0.0.0.0"
    err = capsys.readouterr().err
    assert DASHBOARD_WARNING.format(host="0.0.0.0") in err
    assert "ssh -L 8265:127.0.0.1:8265" in err and "CVE-2023-48022" in err
