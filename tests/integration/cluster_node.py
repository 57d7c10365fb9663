"""A real multi-node Ray cluster on one machine, for the multi-node tests: `python cluster_node.py
[--workers N --head-cpus C --worker-cpus C --object-store-mb M]`.

Starts a head node and worker nodes (default: one) with `ray.cluster_utils.Cluster` (separate
raylets, object stores and node ids; everything on 127.0.0.1; one CPU each by default), prints
one ``@@`` JSON line with the GCS address, the node ids (``worker`` is the first worker's) and
each node's object-store size, then obeys commands on stdin, answering each with a ``@@`` line:

- ``actors``: every actor the cluster has had (class name, node id, state), from the State API;
- ``remove_worker``: kill the worker node's processes at once (as when a machine dies);
- ``quit`` (or end of input): shut the cluster down.

Run it with ``RAY_TMPDIR`` set to a private folder: the cluster's session files and its
``ray_current_cluster`` address file then stay there, so no other Ray user on the machine can
join it by accident and its processes can be found by that path.
"""

from __future__ import annotations

import argparse
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
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--head-cpus", type=int, default=1)
    p.add_argument("--worker-cpus", type=int, default=1)
    p.add_argument("--object-store-mb", type=int, default=None)
    args = p.parse_args()
    store = (
        {} if args.object_store_mb is None else {"object_store_memory": args.object_store_mb << 20}
    )
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **store,
            "num_cpus": args.head_cpus,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": True,  # the State API; Ray Train frees stopped trials' groups
            "dashboard_host": "127.0.0.1",
            "dashboard_port": None,  # the first free port from 8265 up (RayParams pins 8265)
            "_system_config": SYSTEM_CONFIG,
        },
    )
    workers = [
        cluster.add_node(num_cpus=args.worker_cpus, node_ip_address="127.0.0.1", **store)
        for _ in range(args.workers)
    ]
    worker = workers[0]
    cluster.wait_for_nodes()
    import ray

    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    stores = {n["NodeID"]: n["Resources"].get("object_store_memory") for n in ray.nodes()}
    ray.shutdown()
    say({"address": cluster.address, "head": cluster.head_node.node_id, "worker": worker.node_id,
         "workers": [w.node_id for w in workers], "object_store_bytes": stores})  # fmt: skip
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
