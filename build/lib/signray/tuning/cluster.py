"""Start or join a Ray cluster with safe defaults: dashboard on loopback, clear URL printed."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys

import ray

__all__ = ["init_ray", "is_loopback", "DASHBOARD_WARNING", "LOOPBACK_ENV"]

# With this off, Ray picks 127.0.0.1 as the node address instead of the first routable interface.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# The port a new local cluster's GCS listens on (read by Ray when it starts a head node).
GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"

DASHBOARD_WARNING = (
    "WARNING: the Ray dashboard is bound to {host}, not loopback. It runs code for anyone who "
    "can reach it (CVE-2023-48022); keep it on 127.0.0.1 and use an SSH tunnel "
    "(ssh -L 8265:127.0.0.1:8265 HEAD) unless this network is trusted."
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _keep_on_loopback() -> None:
    """A one-machine cluster needs no routable address: keep every Ray process on 127.0.0.1.

    Ray picks the first routable interface unless this switch is off. The environment variable
    reaches the GCS, raylet and workers started from here; this process read it when it
    imported Ray, so its copy of the constant is switched off too.
    """
    from ray._private import ray_constants

    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
    """Start an embedded cluster (address None) or join one; returns the dashboard URL."""
    if ray.is_initialized():
        return None
    if not is_loopback(dashboard_host):
        print(DASHBOARD_WARNING.format(host=dashboard_host), file=sys.stderr)
    # Workers chdir into trial folders; keep the driver's imports reachable from them.
    env_vars = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    kwargs = dict(logging_level="WARNING", log_to_driver=not quiet)
    if address is None or is_loopback(address.rpartition(":")[0]):
        _keep_on_loopback()
    if address is None:
        port = _free_port()
        # Tell every process of this job its cluster's address. Ray Train frees the placement
        # group of a stopped run from a cleaner actor that finds its cluster through RAY_ADDRESS,
        # else /tmp/ray/ray_current_cluster, else `ps`: on a host running other Ray clusters it
        # would ask the wrong one, and leak the group or remove a live run's.
        env_vars["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        previous = os.environ.get(GCS_PORT_ENV)
        os.environ[GCS_PORT_ENV] = str(port)
        try:
            # "local": always a new cluster here. Without it, ray.init joins the cluster that
            # the last `ray start` on this machine recorded in /tmp/ray/ray_current_cluster
            # (another user's, or a stale one) and ignores the dashboard settings below.
            context = ray.init(
                address="local",
                include_dashboard=dashboard,
                dashboard_host=dashboard_host,
                dashboard_port=dashboard_port,
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                runtime_env={"env_vars": env_vars},
                **kwargs,
            )
        finally:
            if previous is None:
                os.environ.pop(GCS_PORT_ENV, None)
            else:
                os.environ[GCS_PORT_ENV] = previous
    else:
        if address != "auto":
            env_vars["RAY_ADDRESS"] = address
        context = ray.init(address=address, runtime_env={"env_vars": env_vars}, **kwargs)
    url = context.dashboard_url
    if url:
        url = url if url.startswith("http") else f"http://{url}"
        print(f"Ray dashboard: {url}", flush=True)
    return url or None
