"""A real multi-node Ray cluster on one machine, for the multi-node tests: `python cluster_node.py`.

Starts a head node and one worker node with `ray.cluster_utils.Cluster` (separate raylets, object
stores and node ids; everything on 127.0.0.1; one CPU each), prints one ``@@`` JSON line with the
GCS address and both node ids, then obeys commands on stdin, answering each with a ``@@`` line:

- ``actors``: every actor the cluster has had (class name, node id, state), from the State API;
- ``remove_worker``: kill the worker node's processes at once (as when a machine dies);
- ``quit`` (or end of input): shut the cluster down.

Run it with ``RAY_TMPDIR`` set to a private folder: the cluster's session files and its
``ray_current_cluster`` address file then stay there, so no other Ray user on the machine can
join it by accident and its processes can be found by that path.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # node IP 127.0.0.1

from ray.cluster_utils import Cluster  # noqa: E402

# Notice a dead node in ~3 s instead of Ray's default ~30 s.
SYSTEM_CONFIG = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


def say(message: dict) -> None:
    print("@@" + json.dumps(message), flush=True)


def main() -> None:
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": True,  # the State API; Ray Train frees stopped trials' groups
            "dashboard_host": "127.0.0.1",
            "dashboard_port": None,  # the first free port from 8265 up (RayParams pins 8265)
            "_system_config": SYSTEM_CONFIG,
        },
    )
    worker = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    say({"address": cluster.address, "head": cluster.head_node.node_id, "worker": worker.node_id})
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "actors":
                from ray.util.state import list_actors

                actors = list_actors(
                    address=cluster.address, limit=10_000, raise_on_missing_output=False
                )
                say(
                    {
                        "actors": [
                            {"class_name": a.class_name, "node_id": a.node_id, "state": a.state}
                            for a in actors
                        ]
                    }
                )
            elif command == "remove_worker":
                cluster.remove_node(worker, allow_graceful=False)
                say({"removed": worker.node_id})
            elif command == "quit":
                break
    finally:
        cluster.shutdown()
        say({"shutdown": True})


if __name__ == "__main__":
    main()
