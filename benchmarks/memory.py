"""Benchmark 5: peak memory of a search with 1 and with 2 concurrent trials on a >= 1 GB dataset.

`python -m signray.tune --model iv3_gru` runs in a subprocess on a synthetic feature dataset
(1,500 clips of 60-120 frames x 2048 float32 features: ~1.1 GB packed in memory); a thread here
samples the memory of that process and all its descendants (Ray's GCS, raylet, dashboard, the
trial workers) every 0.25 s. Two trials of one epoch each run with `--max-concurrent 1` and with
`--max-concurrent 2`, repetitions interleaved.

Reported: the peak of the summed PSS (proportional set size: pages shared between processes,
such as Ray's object store where the driver `ray.put`s the dataset once and every trial maps it,
are divided among the sharers, so the sum is the tree's real footprint) and, for reference, the
peak summed RSS (which counts a shared page once per process that touches it). The target:
peak PSS with 2 concurrent trials <= 1.3 x with 1.

    python -m benchmarks.memory [--reps 3] [--tiny]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    TreeMemoryPoller,
    base_parser,
    interleaved,
    median,
    target,
    write_result,
)
from benchmarks.search_efficiency import TINY_DATA
from benchmarks.throughput import bench_dataset

__all__ = ["main", "run_search_tree"]

REPO = Path(__file__).resolve().parent.parent
SPACE = REPO / "search_spaces" / "iv3_gru.yaml"
# 1,300 + 200 clips x 90 frames on average x 2048 float32 = 1.1 GB packed.
MEMORY_DATA = dict(
    num_gloss=50, num_cat=5, train_per_gloss=26, val_per_gloss=4, min_len=60, max_len=120
)
MB = 1024**2


def run_search_tree(
    root: Path, spec: dict[str, int], concurrency: int, storage: Path, log: Path
) -> dict[str, Any]:
    """One `signray.tune` subprocess (2 trials, 1 epoch each); its tree's peak memory."""
    cmd = [
        sys.executable, "-m", "signray.tune", "--model", "iv3_gru",
        "--search-space", str(SPACE),
        "--features-train", str(root / "features_train"),
        "--features-val", str(root / "features_val"),
        "--labels-train-csv", str(root / "train_labels.csv"),
        "--labels-val-csv", str(root / "val_labels.csv"),
        "--num-gloss", str(spec["num_gloss"]), "--num-cat", str(spec["num_cat"]),
        "--epochs", "1", "--num-samples", "2", "--max-concurrent", str(concurrency),
        "--cpus-per-trial", "1", "--storage-path", str(storage),
        "--name", f"memory-{concurrency}-{time.time_ns()}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    tic = time.perf_counter()
    with log.open("a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        with TreeMemoryPoller(proc.pid, interval_s=0.25) as poller:
            code = proc.wait()
    return {
        "peak_pss_mb": poller.peak_pss / MB,
        "peak_rss_mb": poller.peak_rss / MB,
        "peak_processes": poller.peak_processes,
        "seconds": time.perf_counter() - tic,
        "exit_code": code,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser("memory", __doc__.splitlines()[0])
    args = p.parse_args(argv)
    spec = TINY_DATA if args.tiny else MEMORY_DATA
    reps = args.reps or (1 if args.tiny else 3)
    root = bench_dataset(spec)
    clips = spec["num_gloss"] * (spec["train_per_gloss"] + spec["val_per_gloss"])
    packed_gb = (
        sum(
            os.path.getsize(f)
            for d in ("features_train", "features_val")
            for f in (root / d).iterdir()
        )
        * 2
        / 1e9
    )  # float16 on disk -> float32 in memory
    storage = Path(tempfile.mkdtemp(prefix="signray-bench-memory-"))
    log = storage / "tune.log"
    runs = interleaved(
        {
            f"{n}_concurrent": lambda n=n: run_search_tree(root, spec, n, storage, log)
            for n in (1, 2)
        },
        reps,
    )
    results: dict[str, Any] = {"clips": clips, "dataset_packed_gb_approx": packed_gb}
    for name, values in runs.items():
        results[name] = {
            "median_peak_pss_mb": median(v["peak_pss_mb"] for v in values),
            "median_peak_rss_mb": median(v["peak_rss_mb"] for v in values),
            "reps": values,
        }
    ratio = (
        results["2_concurrent"]["median_peak_pss_mb"]
        / results["1_concurrent"]["median_peak_pss_mb"]
    )
    results["ratio_pss"] = ratio
    results["ratio_rss"] = (
        results["2_concurrent"]["median_peak_rss_mb"]
        / results["1_concurrent"]["median_peak_rss_mb"]
    )
    print(
        f"peak PSS: 1 trial {results['1_concurrent']['median_peak_pss_mb']:.0f} MB, 2 trials "
        f"{results['2_concurrent']['median_peak_pss_mb']:.0f} MB, ratio {ratio:.2f} "
        f"(log: {log})",
        flush=True,
    )
    return write_result(
        "memory",
        args,
        {
            "config": {"data": spec, "reps": reps, "epochs": 1, "trials": 2, "log": str(log)},
            "results": results,
            "targets": [
                target(
                    "peak memory 2 / 1 concurrent trials (PSS)", ratio, 1.3, higher_is_better=False
                )
            ],  # fmt: skip
        },
    )


if __name__ == "__main__":
    main()
