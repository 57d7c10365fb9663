"""Start or join a Ray cluster with safe defaults: dashboard on loopback, clear URL printed, and
signray's own code shipped to the workers of a joined cluster.

Which cluster, and whether we may join it, is `signray.tuning.address`'s decision (made before
Ray is imported). Code reaches workers like this:

- a new local cluster: its workers run on this machine and inherit the environment the cluster
  starts with: this process's ``sys.path`` as ``PYTHONPATH`` (trials chdir into their folders, so
  a relative entry would be lost) and the settings below. The job itself gets no ``runtime_env``,
  so the idle worker processes Ray starts with the cluster (one per CPU, while it starts) can
  serve its actors that have none either (the data holders): with a job runtime_env they would
  match nothing, and every actor would wait for a new process;
- a joined cluster: signray's package folder goes in the job's ``runtime_env`` ``py_modules``,
  so worker nodes need only the third-party stack, unless the job already ships it (``ray job
  submit --working-dir .`` puts the working dir on every worker's path).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import ray

import signray
from signray.errors import ConfigError
from signray.tuning.address import LOOPBACK_ENV, Target, is_loopback, prepare_target

__all__ = [
    "DASHBOARD_WARNING",
    "LOOPBACK_ENV",
    "init_ray",
    "is_loopback",
    "local_worker_env",
    "runtime_env",
]

# The port a new local cluster's GCS listens on (read by Ray when it starts a head node).
GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"
# Settings the trial processes read (`signray.tuning.tuner.set_tune_environment`,
# `signray.tuning.launcher.set_train_environment`), which the workers of a joined cluster do not
# inherit from this process.
WORKER_SETTINGS = ("TUNE_FUNCTION_THREAD_TIMEOUT_S", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")

DASHBOARD_WARNING = (
    "WARNING: the Ray dashboard is bound to {host}, not loopback. It runs code for anyone who "
    "can reach it (CVE-2023-48022); keep it on 127.0.0.1 and use an SSH tunnel "
    "(ssh -L 8265:127.0.0.1:8265 HEAD) unless this network is trusted."
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _package_dir() -> Path:
    return Path(signray.__file__).resolve().parent


def _worker_settings(gcs_address: str | None) -> dict[str, str]:
    """RAY_ADDRESS tells every process of the job its own cluster: Ray Train's placement-group
    cleaner finds its cluster through it (else /tmp/ray/ray_current_cluster, or `ps`), and on a
    host running other Ray clusters would otherwise ask the wrong one."""
    env_vars = {"RAY_ADDRESS": gcs_address} if gcs_address else {}
    env_vars.update({k: os.environ[k] for k in WORKER_SETTINGS if k in os.environ})
    return env_vars


def local_worker_env(gcs_address: str) -> dict[str, str]:
    """What the workers of a cluster started here inherit: the settings and this process's
    ``sys.path`` (absolute)."""
    env = _worker_settings(gcs_address)
    env["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in sys.path if p)
    return env


def runtime_env(target: Target, gcs_address: str | None) -> dict:
    """The runtime_env of a job on a joined cluster: how its workers import signray and find
    their cluster (the workers of a local cluster inherit `local_worker_env` instead)."""
    env_vars = _worker_settings(gcs_address)
    env: dict = {"env_vars": env_vars} if env_vars else {}
    if "runtime_resources" not in _package_dir().parts:  # not already shipped by the job
        env["py_modules"] = [str(_package_dir())]
    return env


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """`values` in this process's environment, for the processes started meanwhile only."""
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def init_ray(
    address: str | None = None,
    *,
    dashboard: bool = True,
    dashboard_host: str = "127.0.0.1",
    dashboard_port: int | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    quiet: bool = False,
) -> str | None:
    """Start an embedded cluster or join one (see `signray.tuning.address`); returns the
    dashboard URL. Joining refuses with a `ConfigError` (exit 2) when the cluster does not answer
    or does not accept this client's token. A new local cluster starts its dashboard only with
    `dashboard`."""
    if ray.is_initialized():
        return None
    target = prepare_target(address)
    if dashboard and not is_loopback(dashboard_host):
        print(DASHBOARD_WARNING.format(host=dashboard_host), file=sys.stderr)
    kwargs = dict(logging_level="WARNING", log_to_driver=not quiet)
    if target.local:
        port = _free_port()
        inherited = {GCS_PORT_ENV: str(port)}
        inherited.update(local_worker_env(f"127.0.0.1:{port}"))
        # "local": always a new cluster (see signray.tuning.address). Its processes inherit
        # `inherited`; the job has no runtime_env, so the idle workers Ray starts with the
        # cluster (one per CPU) can serve its actors and tasks that have none either (the data
        # holders; Tune gives every trial actor a runtime_env of its own).
        with _environment(inherited):
            context = ray.init(
                address="local",
                include_dashboard=dashboard,
                dashboard_host=dashboard_host,
                dashboard_port=dashboard_port,
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                **kwargs,
            )
    else:
        known = target.address if target.host_port else os.environ.get("RAY_ADDRESS")
        try:
            context = ray.init(
                address=target.address, runtime_env=runtime_env(target, known), **kwargs
            )
        except ConnectionError as err:
            raise ConfigError(
                [f"cannot join the Ray cluster at {target.describe()}: {_reason(err)}"]
            ) from None
        print(f"joined the Ray cluster at {context.address_info['gcs_address']}", flush=True)
    url = context.dashboard_url
    if url:
        url = url if url.startswith("http") else f"http://{url}"
        print(f"Ray dashboard: {url}", flush=True)
    return url or None


def _reason(err: BaseException) -> str:
    text = f"{err} {err.__cause__ or ''}"
    if "InvalidAuthToken" in text or "Authentication" in text:
        return (
            "it requires a token this client does not have or sends a different one (set "
            "RAY_AUTH_TOKEN, or copy the head's ~/.ray/auth_token here)"
        )
    return str(err).splitlines()[0]
