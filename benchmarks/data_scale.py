"""Benchmark 6: data at scale — memory and stream modes against today's path, 0.3 to 3 GB.

One `python -m signray.tune --model iv3_gru --single-run --workers-per-trial 2` (one epoch, a
DDP trial of 2 workers) per run, on a loopback `ray.cluster_utils.Cluster` started here: a head
node with no CPUs (it runs the driver's services) and one worker node with 2 CPUs (it trains).
Synthetic 2048-d float16 features (60-120 frames per clip, validation 10% of training) at each
size, written as 16 format-2 shards straight from the generator. Contestants, repetitions
interleaved:

- ``today``: main before this change (``--baseline``, extracted with ``git archive``), on the
  same clips packed by that version's own packer (format 1, float32): its driver loads both
  splits, casts them to float32 and ``ray.put``s them; the trial ``ray.get``s them. Run up to
  1 GB only: at 3 GB it needs ~5x the data on the head (15 GB), too much for a shared 24 GB box.
- ``memory``: ``--data-mode memory``: the driver checks, a holder on the worker node puts the
  shards (float16) in its object store, the ranks map that copy.
- ``stream``: ``--data-mode stream``: each rank memory-maps its own shards.

Measured per run: the driver's peak RSS (VmHWM, polled); each node's peak memory (summed PSS of
its raylet, object store included, and every worker it started); time to the first batch (the
first result's arrival minus its epoch time, from the driver's start); training frames/s (both
ranks, from the loop). Also: packing the largest size (re-packing its shards into 24) with the
packer's peak RSS, and a reader probe: one epoch through signray's stream loader against Ray
Data's ``read_numpy`` over the same files (no clip boundaries, no bucketing: Ray Data's best
case).

    python -m benchmarks.data_scale [--sizes 0.3 1 3] [--reps 2] [--baseline ed71c4f] [--tiny]
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    CACHE_DIR,
    REPO,
    TreeMemoryPoller,
    base_parser,
    baseline_tree,
    interleaved,
    median,
    target,
    tree_env,
    write_result,
)
from benchmarks.throughput import bench_dataset

__all__ = ["main"]

MB = 1024**2
BASELINE = "ed71c4f"  # main before format 2: the driver loads and puts every split
TODAY_MAX_GB = 1.0
NUM_SHARDS = 16
SHAPE = dict(num_gloss=50, num_cat=5, min_len=60, max_len=120)  # 90 frames per clip on average
STORES = {"head": 3 << 30, "worker": 4 << 30}  # today's path puts 2x 1 GB of float32 on the head
TINY_STORES = {"head": 200 << 20, "worker": 200 << 20}


def _spec(size_gb: float) -> dict[str, int]:
    """About `size_gb` GB of training features (2048-d float16, 90 frames per clip)."""
    clips = size_gb * 1e9 / (90 * 2048 * 2)
    shape = SHAPE if clips >= 2 * SHAPE["num_gloss"] else {**SHAPE, "num_gloss": 4, "num_cat": 2}
    per_gloss = max(2, round(clips / shape["num_gloss"]))
    return {**shape, "train_per_gloss": per_gloss, "val_per_gloss": max(1, per_gloss // 10)}


def _frames_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*.np[yz]"))


def _today_data(spec: dict[str, int], tree: Path) -> Path:
    """The clips of `spec` packed by today's packer (format 1, float32), once."""
    root = CACHE_DIR / ("today-" + "-".join(map(str, spec.values())))
    if (root / "complete").is_file():
        return root
    clips = bench_dataset(spec, keypoints=False)
    env = tree_env(tree)
    for split in ("train", "val"):
        out = root / f"features_{split}"
        shutil.rmtree(out, ignore_errors=True)
        clip_count = len((clips / f"{split}_labels.csv").read_text().splitlines()) - 1
        subprocess.run(
            [
                sys.executable,
                "-m",
                "signray.data.pack",
                "--src",
                str(clips / f"features_{split}"),
                "--labels",
                str(clips / f"{split}_labels.csv"),
                "--output-dir",
                str(out),
                "--num-shards",
                str(min(NUM_SHARDS, clip_count)),
                "--key",
                "X2048",
            ],
            check=True,
            env=env,
            cwd=tree,  # `python -m` puts the working folder first on sys.path
            capture_output=True,
        )
        if json.loads((out / "manifest.json").read_text())["format_version"] != 1:
            raise RuntimeError(f"{out} was not packed by the baseline {tree}")
    shutil.rmtree(clips)  # the per-clip files were only the packer's input
    (root / "complete").write_text("ok\n")
    return root


class _PeakRss:
    """A process's VmHWM (kernel high-water mark of its RSS), polled until it exits."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            if match := re.search(r"VmHWM:\s+(\d+) kB", status):
                self.peak = max(self.peak, int(match.group(1)) * 1024)
            time.sleep(0.1)

    def join(self) -> int:
        self._thread.join()
        return self.peak


def _first_result(experiment: Path) -> tuple[float, dict] | None:
    for path in experiment.glob("trial_*/result.json"):
        line = path.read_text().partition("\n")[0]
        if line.endswith("}"):
            return time.time(), json.loads(line)
    return None


def _run(
    cluster,
    raylets: dict[str, int],
    contestant: str,
    root: Path,
    *,
    storage: Path,
    tree: Path,
    spec: dict[str, int],
    log: Path,
) -> dict[str, Any]:
    """One single-run search; its figures."""
    name = f"{contestant}-{time.time_ns()}"
    cmd = [
        sys.executable,
        "-m",
        "signray.tune",
        "--model",
        "iv3_gru",
        "--single-run",
        "--features-train",
        str(root / "features_train"),
        "--features-val",
        str(root / "features_val"),
        "--num-gloss",
        str(spec["num_gloss"]),
        "--num-cat",
        str(spec["num_cat"]),
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--workers-per-trial",
        "2",
        "--cpus-per-trial",
        "2",
        "--storage-path",
        str(storage),
        "--name",
        name,
        "--address",
        cluster.address,
    ]
    if contestant != "today":
        cmd += ["--data-mode", contestant]
    env = tree_env(tree)
    start = time.time()
    first = None
    with log.open("a") as out:
        out.write(f"\n=== {contestant} {root}\n")
        out.flush()
        # cwd: `python -m` puts the working folder first on sys.path, before PYTHONPATH.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tree, env=env)
        driver = _PeakRss(proc.pid)
        nodes = {k: TreeMemoryPoller(pid, interval_s=0.25) for k, pid in raylets.items()}
        for poller in nodes.values():
            poller.__enter__()
        try:
            while proc.poll() is None:
                if first is None:
                    first = _first_result(storage / name)
                time.sleep(0.1)
        finally:
            for poller in nodes.values():
                poller.__exit__(None, None, None)
    first = first or _first_result(storage / name)
    code = proc.wait()
    arrival, record = first if first else (float("nan"), {})
    return {
        "exit_code": code,
        "driver_peak_rss_mb": driver.join() / MB,
        **{f"{k}_node_peak_pss_mb": p.peak_pss / MB for k, p in nodes.items()},
        **{f"{k}_node_peak_rss_mb": p.peak_rss / MB for k, p in nodes.items()},
        "time_to_first_batch_s": arrival - record.get("epoch_seconds", float("nan")) - start,
        "train_frames_per_s": record.get("train_frames_per_s", float("nan")),
        "wall_s": time.time() - start,
    }


def _pack(root: Path) -> dict[str, Any]:
    """Re-pack the training shards into 24 (the packer's two streaming passes); peak RSS."""
    out = Path(tempfile.mkdtemp(prefix="signray-pack-", dir=CACHE_DIR))
    clips = json.loads((root / "features_train" / "manifest.json").read_text())["num_clips"]
    cmd = [
        sys.executable,
        "-m",
        "signray.data.pack",
        "--src",
        str(root / "features_train"),
        "--output-dir",
        str(out),
        "--num-shards",
        str(min(24, clips)),
        "--key",
        "X2048",
        "--overwrite",
    ]
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, env=tree_env(REPO))
    peak = _PeakRss(proc.pid)
    code = proc.wait()
    result = {
        "exit_code": code,
        "gb": _frames_bytes(root / "features_train") / 1e9,
        "seconds": time.time() - start,
        "peak_rss_mb": peak.join() / MB,
    }
    shutil.rmtree(out)
    return result


def _reader_probe(address: str, root: Path) -> dict[str, Any]:
    """One epoch of reading + batching the training shards: signray's stream loader in this
    process vs Ray Data's read_numpy of the same frames files (tasks on the worker node)."""
    import numpy as np
    import ray

    from signray.data import build_loader, scan_split
    from signray.data.streaming import ShardStream

    index = scan_split(root / "features_train", keys=("X2048",), num_gloss=None, num_cat=None)
    frames = index.num_frames
    tic = time.perf_counter()
    loader = build_loader(ShardStream.from_index(index, None, "train"), batch_size=32, train=True)
    first = None
    for _ in loader:
        first = first or time.perf_counter() - tic
    signray = {"first_batch_s": first, "frames_per_s": frames / (time.perf_counter() - tic)}
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        files = sorted(str(p) for p in (root / "features_train").glob("shard-*/frames.npy"))
        tic = time.perf_counter()
        first, seen = None, 0
        for batch in ray.data.read_numpy(files).iter_batches(
            batch_size=32 * 90, batch_format="numpy"
        ):
            seen += len(np.asarray(batch["data"], dtype=np.float32))
            first = first or time.perf_counter() - tic
        ray_data = {"first_batch_s": first, "frames_per_s": seen / (time.perf_counter() - tic)}
    finally:
        ray.shutdown()
    return {"frames": frames, "signray_stream": signray, "ray_data_read_numpy": ray_data}


def _start_cluster(stores: dict[str, int]):
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "object_store_memory": stores["head"],
            "node_ip_address": "127.0.0.1",
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": None,
        },
    )
    worker = cluster.add_node(
        num_cpus=2, object_store_memory=stores["worker"], node_ip_address="127.0.0.1"
    )
    cluster.wait_for_nodes()
    pid = lambda node: node.all_processes["raylet"][0].process.pid  # noqa: E731
    return cluster, {"head": pid(cluster.head_node), "worker": pid(worker)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser("data_scale", __doc__.splitlines()[0])
    p.add_argument("--sizes", type=float, nargs="+", default=None, help="GB of training data")
    p.add_argument("--baseline", default=BASELINE, help="git commit of today's path ('' = skip)")
    p.add_argument("--keep-data", action="store_true", help="keep datasets >= 1 GB afterwards")
    args = p.parse_args(argv)
    sizes = args.sizes or ([0.004] if args.tiny else [0.3, 1.0, 3.0])
    reps = args.reps or (1 if args.tiny else 2)
    baseline = None if args.tiny or not args.baseline else baseline_tree(args.baseline)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every node on 127.0.0.1
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="srds-", dir="/tmp")  # a private cluster
    storage = Path(tempfile.mkdtemp(prefix="signray-bench-scale-"))
    log = storage / "runs.log"
    datasets = {s: bench_dataset(_spec(s), keypoints=False, num_shards=NUM_SHARDS) for s in sizes}
    cluster, raylets = _start_cluster(TINY_STORES if args.tiny else STORES)
    results: dict[str, Any] = {}
    try:
        for size in sizes:
            spec, root = _spec(size), datasets[size]
            run = functools.partial(_run, cluster, raylets, storage=storage, spec=spec, log=log)
            contestants = {
                mode: functools.partial(run, mode, root, tree=REPO) for mode in ("memory", "stream")
            }
            if baseline is not None and size <= TODAY_MAX_GB:
                today = _today_data(spec, baseline)
                contestants["today"] = functools.partial(run, "today", today, tree=baseline)
            runs = interleaved(contestants, reps)
            row: dict[str, Any] = {"train_gb": _frames_bytes(root / "features_train") / 1e9}
            for name, values in runs.items():
                row[name] = {k: median(v[k] for v in values) for k in values[0]} | {"reps": values}
                figures = ", ".join(f"{k} {v:.1f}" for k, v in row[name].items() if k != "reps")
                print(f"{size:g} GB {name}: {figures}", flush=True)
            results[f"{size:g}GB"] = row
        big = max(sizes)
        results["pack"] = _pack(datasets[big])
        results["reader_probe"] = _reader_probe(cluster.address, datasets[min(sizes)])
    finally:
        cluster.shutdown()
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
        if not args.keep_data:
            for size, root in datasets.items():
                if size >= 1.0:
                    shutil.rmtree(root, ignore_errors=True)
    small, large = results[f"{min(sizes):g}GB"]["stream"], results[f"{max(sizes):g}GB"]["stream"]
    targets = [
        target(
            "driver peak RSS, stream: largest / smallest size",
            large["driver_peak_rss_mb"] / small["driver_peak_rss_mb"],
            1.1,
            higher_is_better=False,
        ),
        target(
            "worker-node peak PSS, stream: largest / smallest size",
            large["worker_node_peak_pss_mb"] / small["worker_node_peak_pss_mb"],
            1.5,
            higher_is_better=False,
        ),
    ]
    with_today = [r for r in results.values() if isinstance(r, dict) and "today" in r]
    if with_today:
        r = with_today[-1]
        targets.append(
            target(
                "driver peak RSS, memory / today (largest size run by both)",
                r["memory"]["driver_peak_rss_mb"] / r["today"]["driver_peak_rss_mb"],
                0.5,
                higher_is_better=False,
            )
        )
    return write_result(
        "data_scale",
        args,
        {
            "config": {
                "sizes_gb": sizes,
                "reps": reps,
                "stores": TINY_STORES if args.tiny else STORES,
                "baseline": args.baseline if baseline else None,
                "log": str(log),
            },
            "results": results,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()
