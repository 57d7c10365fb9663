"""Helpers shared by the Ray integration tests (tests/tuning, tests/integration, ...); the shared
cluster itself is the `ray_cluster` fixture (tests/conftest.py), whose docstring says how a test
runs on it.

Importable as ``rayhelpers`` from any test module: pytest puts ``tests/`` on ``sys.path`` for
``tests/conftest.py``.
"""

from __future__ import annotations

import csv
import importlib
import ipaddress
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from signray.tuning.address import LOOPBACK_ENV
from signray.tuning.retention import CHECKPOINT_PERIOD_ENV

ROOT = Path(__file__).resolve().parents[1]
TUNE = [sys.executable, "-m", "signray.tune"]
NODE_SCRIPT = ROOT / "tests" / "integration" / "cluster_node.py"


def get_psutil():
    """psutil: Ray ships it in ray/thirdparty_files and puts it on sys.path on import."""
    import ray  # noqa: F401

    return importlib.import_module("psutil")


def trial_rows(experiment: Path) -> list[dict]:
    """The rows of an experiment's trials.csv."""
    with (experiment / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def result_records(trial_dir: Path) -> list[dict]:
    """Every result Tune recorded for a trial (its result.json), in order."""
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            break
    return records


def saved_statuses(experiment) -> dict[str, str]:
    """Trial id -> status in the newest experiment state Tune saved to storage (a local folder
    or a `signray.storage.RemotePath`)."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except (OSError, json.JSONDecodeError):  # being replaced right now
        return {}
    return {
        state["trial_id"]: state["status"]
        for state in (json.loads(s) for s, _ in data["trial_data"])
    }


def trial_dirs(experiment: Path) -> list[Path]:
    return sorted(p for p in experiment.glob("trial_*") if p.is_dir())


def state_address(ray) -> str:
    """The connected cluster's address, for the State API (`ray.util.state.list_*`).

    Without one, the State API guesses from RAY_ADDRESS, /tmp/ray/ray_current_cluster or `ps`,
    and on a machine running other Ray clusters it fails ("multiple active Ray instances") or
    asks the wrong cluster.
    """
    return ray.get_runtime_context().gcs_address


def wait_resources_released(ray, timeout: float = 60.0) -> None:
    """Every placement group removed and every CPU free again on the connected cluster."""
    from ray.util.state import list_placement_groups

    total = ray.cluster_resources()["CPU"]
    deadline = time.time() + timeout
    while True:
        live = list_placement_groups(
            address=state_address(ray), filters=[("state", "!=", "REMOVED")]
        )
        free = ray.available_resources().get("CPU", 0)
        if not live and free == total:
            return
        if time.time() > deadline:
            pytest.fail(f"resources not released: placement groups {live}, {free}/{total} CPUs")
        time.sleep(1)


class InitCalled(Exception):
    """Raised by `record_ray_init`'s ``ray.init``: the command got as far as starting Ray."""


def record_ray_init(monkeypatch) -> list[dict]:
    """What a command asks ``ray.init`` for, without starting Ray (nor binding any address):
    ``ray.init`` records its keyword arguments and raises `InitCalled`."""
    import ray

    calls: list[dict] = []

    def init(**kwargs):
        calls.append(kwargs)
        raise InitCalled

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    return calls


def joining(address: str, **extra: str) -> dict[str, str]:
    """The environment of a subprocess whose commands run on the cluster at `address` (the
    session's `ray_cluster`) without an ``--address`` flag: signray joins the cluster that
    RAY_ADDRESS names, as it does under ``ray job submit``."""
    return {**os.environ, **extra, "RAY_ADDRESS": address}


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


class Driver:
    """A `python -m signray.tune ...` subprocess whose output is collected as it runs.

    Tune copies results to the experiment folder with each experiment snapshot, every 10 s by
    default (`signray.tuning.retention`); tests that watch the folder while trials of a few
    seconds run get a snapshot every second.
    """

    def __init__(self, *args, env: dict | None = None, cwd: Path = ROOT) -> None:
        self.cmd = [*TUNE, *map(str, args)]
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, CHECKPOINT_PERIOD_ENV: "1", **(env or {})},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def tail(self, n: int = 4000) -> str:
        return self.output[-n:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{' '.join(self.cmd)} did not finish in {timeout}s:\n{self.tail()}")
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=30)


def wait_until(
    condition, timeout: float, what: str, driver: Driver | None = None, every: float = 0.2
):
    """Poll `condition()` until it returns something truthy (returned); fail after `timeout`."""
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if driver is not None and not driver.alive():
            pytest.fail(
                f"the driver exited ({driver.proc.returncode}) before {what}:\n{driver.tail()}"
            )
        if time.time() > deadline:
            pytest.fail(
                f"timed out after {timeout}s waiting for {what}"
                + (f":\n{driver.tail()}" if driver else "")
            )
        time.sleep(every)


class TwoNodes:
    """Drives cluster_node.py: a head and a worker node in their own RAY_TMPDIR."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        # Short: Ray's unix sockets live below it and their paths are limited to 107 bytes.
        self.tmp = Path(tempfile.mkdtemp(prefix="srmn-", dir="/tmp"))
        self.env = {"RAY_TMPDIR": str(self.tmp), LOOPBACK_ENV: "0", **(env or {})}
        self.log = (self.tmp / "cluster.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(NODE_SCRIPT), *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env={**os.environ, **self.env},
        )
        self._messages: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.info = self._next(timeout=180)
        self.address, self.head, self.worker = (self.info[k] for k in ("address", "head", "worker"))

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("@@"):
                self._messages.put(json.loads(line[2:]))
        self._messages.put(None)

    def _next(self, timeout: float) -> dict:
        try:
            message = self._messages.get(timeout=timeout)
        except queue.Empty:
            message = None
        if message is None:
            self.log.flush()
            pytest.fail(
                "the test cluster stopped answering:\n"
                + (self.tmp / "cluster.log").read_text()[-3000:]
            )
        return message

    def ask(self, command: str, timeout: float = 120) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._next(timeout)

    def own_processes(self) -> list:
        """Live processes started for this cluster (they inherited its RAY_TMPDIR)."""
        psutil = get_psutil()
        found = []
        for p in psutil.process_iter():
            try:
                if p.pid != self.proc.pid and p.environ().get("RAY_TMPDIR") == str(self.tmp):
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def shutdown(self) -> list[str]:
        """Stop the cluster; returns the processes that outlived it (then killed)."""
        try:
            if self.proc.poll() is None:
                self.ask("quit", timeout=120)
                self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        deadline = time.time() + 30
        while (left := self.own_processes()) and time.time() < deadline:
            time.sleep(1)
        names = []
        for p in left:
            names.append(" ".join(p.cmdline())[:120])
            p.kill()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return names


def diverging_space(tmp_path: Path) -> Path:
    """A search space whose first point (lr 1e4, no grad clipping) diverges in epoch 2 and whose
    second (lr 3e-3) trains: one trial errors deterministically, the other finishes."""
    import yaml

    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "space": {
                    "lr": {"distribution": "choice", "values": [0.003, 10000.0]},
                    "grad_clip": 0,  # off, so lr=1e4 diverges in epoch 2
                    "d_model": 32, "n_heads": 2, "depth": 1, "ff_dim": 32,
                },
                "points_to_evaluate": [{"lr": 10000.0}, {"lr": 0.003}],
            }
        )
    )  # fmt: skip
    return space
