"""Soak: a 40-trial smoke-sized search, 2 trials at a time, leaks nothing and stays flat.

The driver (`python -m signray.tune --address`, on the session's 2-CPU test cluster) is sampled
for resident memory when the 10th and the last trial have reported; afterwards the cluster must
have every placement group removed, every CPU free, and no process of the search's job alive
(the reused trial processes and the data holders included).
``SIGNRAY_SOAK_TRIALS`` sets the trial count (default 40).
"""

from __future__ import annotations

import os
import time

import pytest
from rayhelpers import (
    Driver,
    get_psutil,
    state_address,
    trial_dirs,
    trial_rows,
    wait_resources_released,
    wait_until,
)

pytestmark = pytest.mark.slow

TRIALS = int(os.environ.get("SIGNRAY_SOAK_TRIALS", "40"))
MiB = 1024**2


def test_soak_search_leaks_nothing(ray_cluster, tmp_path, record_property):
    import ray
    from ray.util.state import list_actors, list_jobs

    psutil = get_psutil()
    driver = Driver(
        "--model",
        "iv3_gru",
        "--smoke-test",
        "--num-samples",
        TRIALS,
        "--max-concurrent",
        2,
        "--epochs",
        2,
        "--storage-path",
        tmp_path,
        "--name",
        "soak",
        "--address",
        ray_cluster,
    )
    experiment = tmp_path / "soak"
    process = psutil.Process(driver.proc.pid)
    rss: dict[int, tuple[int, float]] = {}  # trials reported -> (driver RSS, seconds)
    start = time.perf_counter()
    try:
        while driver.alive():
            reported = sum((t / "result.json").is_file() for t in trial_dirs(experiment))
            try:
                sample = process.memory_info().rss
            except psutil.NoSuchProcess:
                break
            for mark in (10, TRIALS):
                if reported >= mark and mark not in rss:
                    rss[mark] = (sample, time.perf_counter() - start)
            time.sleep(0.25)
        code = driver.wait(timeout=600)
    finally:
        driver.kill()
    assert code == 0, driver.tail()
    elapsed = time.perf_counter() - start
    rows = trial_rows(experiment)
    assert len(rows) == TRIALS
    assert {r["status"] for r in rows} <= {"TERMINATED", "STOPPED_EARLY"}, rows

    # Nothing left behind on the cluster the search ran on.
    wait_resources_released(ray)
    address = state_address(ray)
    (job,) = [
        j
        for j in list_jobs(address=address)
        if j.driver_info and int(j.driver_info.pid) == process.pid
    ]
    actors = list_actors(
        address=address, filters=[("job_id", "=", job.job_id)], detail=True, limit=10_000
    )
    # One-worker trials reuse their processes: a few serve all the trials, and every one ends.
    trial_processes = {a.pid for a in actors if a.class_name == "ImplicitFunc"}
    assert 1 <= len(trial_processes) < TRIALS, trial_processes
    assert all(a.state == "DEAD" for a in actors), [(a.class_name, a.state) for a in actors]

    def leftover():
        alive = []
        for pid in {a.pid for a in actors if a.pid}:
            try:
                if psutil.Process(pid).cmdline()[0].startswith("ray::"):
                    alive.append(pid)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, IndexError):
                continue
        return alive

    wait_until(lambda: not leftover(), 60, "the search's Ray processes to exit")

    first, last = rss[10][0] / MiB, rss.get(TRIALS, rss[10])[0] / MiB
    record_property("driver_rss_mib", {"trial_10": round(first), f"trial_{TRIALS}": round(last)})
    print(
        f"\nsoak: {TRIALS} trials in {elapsed:.0f}s; driver RSS {first:.0f} MiB at trial 10, "
        f"{last:.0f} MiB at trial {TRIALS}"
    )
    assert TRIALS in rss, "the driver exited before the last trial was sampled"
    assert last - first < 150, f"driver RSS grew from {first:.0f} to {last:.0f} MiB"
