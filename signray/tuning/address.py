"""Which Ray cluster a command runs on, decided (and checked) before Ray is imported, because Ray
reads some of its settings only when it is imported. Imports no Ray.

- ``--address HOST:PORT`` or ``--address auto``: join that cluster.
- no ``--address`` but ``RAY_ADDRESS`` set (as ``ray job submit`` does for its entrypoint, with
  the GCS address of the cluster the job was submitted to): join that cluster.
- neither: start a new cluster inside this command, on 127.0.0.1 only. Ray would otherwise join
  whatever cluster the last ``ray start`` on this machine recorded (another user's, or a stale
  one) and ignore our dashboard settings.

Loopback: Ray gives a new node this machine's routable address, and its servers then listen on
every interface, unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` was set when Ray was imported;
with it the node address is 127.0.0.1 and the servers listen there only. A client joining a
cluster at a loopback address needs the same setting (else it turns 127.0.0.1 into the routable
address, where a loopback-only cluster does not answer); it also joins ordinary clusters on this
machine.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass

from signray.tuning.auth import check_cluster, use_token_if_found

__all__ = ["LOOPBACK_ENV", "Target", "cluster_target", "is_loopback", "prepare_target"]

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
ADDRESS_ENV = "RAY_ADDRESS"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Target:
    """The cluster to use: `address` None means a new one started here."""

    address: str | None
    source: str  # "--address", "RAY_ADDRESS", or "" for a new local cluster

    @property
    def local(self) -> bool:
        return self.address is None

    @property
    def host_port(self) -> tuple[str, int] | None:
        """(host, port) of a GCS address; None for ``auto`` or a ``ray://``/``http://`` URL."""
        if not self.address or "://" in self.address or ":" not in self.address:
            return None
        host, _, port = self.address.rpartition(":")
        return (host, int(port)) if port.isdigit() else None

    def describe(self) -> str:
        return "a new local cluster" if self.local else f"{self.address} ({self.source})"


def cluster_target(address: str | None) -> Target:
    """The cluster `--address` (None if not given) and the environment point at."""
    if address:
        return Target(address, "--address")
    from_env = os.environ.get(ADDRESS_ENV, "").strip()
    return Target(from_env, ADDRESS_ENV) if from_env else Target(None, "")


def prepare_target(address: str | None) -> Target:
    """The cluster for `--address` (None if not given), with this process set up to reach it:
    loopback when it is local, the token when the cluster wants one, and the GCS asked at once
    whether it answers and accepts us (a `ConfigError`, exit 2, if not). Call before importing
    Ray."""
    target = cluster_target(address)
    hp = target.host_port
    if target.local or (hp and is_loopback(hp[0])):
        if "ray" in sys.modules and os.environ.get(LOOPBACK_ENV) != "0":
            print(
                f"note: Ray was imported before signray could set {LOOPBACK_ENV}=0; a cluster "
                "started now listens on every interface (token authentication still applies)",
                file=sys.stderr,
            )
        os.environ[LOOPBACK_ENV] = "0"
    if hp is not None:
        check_cluster(target.address, target.source)  # and token mode if the cluster wants it
    elif not target.local:
        use_token_if_found()  # ``auto`` or a URL: no probe, send the token when one exists
    return target
