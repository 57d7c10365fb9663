"""Faults during a search, each asserting that nothing is lost.

Searches run as `python -m signray.tune --address ...` subprocesses on the session's 2-CPU test
cluster (the `ray_cluster` fixture), so a test can kill the driver or a trial's process while it
runs. Covered elsewhere: Ctrl-C on the driver (SIGINT -> exit 130, `--resume` command printed and
run) in tests/launch/test_search.py::test_resume_after_interrupt_runs_exactly_num_samples; a
NaN loss retried and reported in test_a_failing_trial_is_retried_reported_and_does_not_stop_the_
others there; a node dying mid-search in test_multinode.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from rayhelpers import (
    ROOT,
    Driver,
    diverging_space,
    get_psutil,
    result_records,
    saved_statuses,
    trial_dirs,
    trial_rows,
    wait_until,
)

from signray.config import load_config_file, resolve_config
from signray.layout import ExperimentFiles
from signray.training.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

EPOCHS = 30  # iv3_gru on the smoke data: ~0.1 s per epoch, a few seconds per trial


def _smoke(name: str, tmp_path: Path, address: str, *extra) -> list:
    return [
        "--model",
        "iv3_gru",
        "--smoke-test",
        "--epochs",
        EPOCHS,
        "--trial-scheduler",
        "fifo",
        "--storage-path",
        tmp_path,
        "--name",
        name,
        "--address",
        address,
        *extra,
    ]


def _kill_ray_worker(pid: int) -> None:
    """SIGKILL a Ray worker process, after checking that the pid is still one."""
    process = get_psutil().Process(pid)
    assert process.cmdline()[0].startswith("ray::"), process.cmdline()
    os.kill(pid, signal.SIGKILL)


def test_killed_trial_process_resumes_from_its_latest_checkpoint(ray_cluster, tmp_path):
    driver = Driver(
        *_smoke(
            "kill",
            tmp_path,
            ray_cluster,
            "--num-samples",
            2,
            "--max-concurrent",
            2,
            "--max-failures",
            1,
        )
    )
    experiment = tmp_path / "kill"

    def training_trial():
        for trial in trial_dirs(experiment):
            records = result_records(trial)
            if records and 3 <= records[-1]["epoch"] <= EPOCHS - 10:
                return trial, records[-1]
        return None

    try:
        victim, last = wait_until(training_trial, 240, "a trial past epoch 3", driver, every=0.1)
        _kill_ray_worker(last["pid"])  # the trial's own process, in the middle of an epoch
        code = driver.wait(timeout=300)
    finally:
        driver.kill()
    assert code == 0, driver.tail()
    rows = trial_rows(experiment)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"TERMINATED"}, rows
    assert all(r["epochs"] == str(EPOCHS) for r in rows)

    records = result_records(victim)
    restarts = [i for i, r in enumerate(records) if i and r["iterations_since_restore"] == 1]
    assert len(restarts) == 1, [(r["epoch"], r["iterations_since_restore"]) for r in records]
    before, after = records[restarts[0] - 1], records[restarts[0]]
    assert before["epoch"] >= last["epoch"] and after["pid"] != last["pid"]
    # The retry continued from the newest checkpoint Tune had registered: the last epoch
    # reported before the kill, or the one before it when the kill fell between Tune logging
    # that epoch's result and registering its checkpoint (a second round trip to the trial:
    # tune_controller._process_trial_result schedules a `save`, _process_trial_save registers
    # it). At most the epoch in flight is trained again.
    resumed = after["epoch"] - 1
    assert resumed in (before["epoch"], before["epoch"] - 1), (before["epoch"], after["epoch"])
    assert f"resuming from the checkpoint of epoch {resumed}" in driver.output
    assert sorted({r["epoch"] for r in records}) == list(range(1, EPOCHS + 1))


def _fingerprint(folder: Path) -> dict[str, tuple[str, int | None]]:
    """Every file below `folder`: (sha256, mtime_ns), the mtime only for what the trial itself
    writes (checkpoints). Tune's driver rewrites result.json & co. with the same bytes when
    it restores an experiment."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns if p.parent.name.startswith("checkpoint_") else None,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _marker(experiment: Path, trial_id: str) -> tuple[bytes, int]:
    path = ExperimentFiles(experiment).done_marker(trial_id)
    return path.read_bytes(), path.stat().st_mtime_ns


def test_killed_driver_resumes_without_rerunning_finished_trials(ray_cluster, tmp_path):
    driver = Driver(
        *_smoke("drv", tmp_path, ray_cluster, "--num-samples", 3, "--max-concurrent", 1)
    )
    experiment = tmp_path / "drv"

    def finished_and_one_running():
        saved = saved_statuses(experiment)
        done = {t for t, s in saved.items() if s == "TERMINATED"}
        running = [
            t
            for t in trial_dirs(experiment)
            if not any(d in t.name for d in done) and len(result_records(t)) >= 3
        ]
        return done if done and running else None

    try:
        done = wait_until(
            finished_and_one_running,
            240,
            "a trial saved as finished and the next one training",
            driver,
        )
        os.kill(driver.proc.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        driver.kill()
    finished = [t for t in trial_dirs(experiment) if any(d in t.name for d in done)]
    before = {t.name: _fingerprint(t) for t in finished}
    markers = {d: _marker(experiment, d) for d in done}

    resumed = Driver(
        "--resume", "--name", "drv", "--storage-path", tmp_path, "--address", ray_cluster
    )
    assert resumed.wait(timeout=300) == 0, resumed.tail()
    rows = trial_rows(experiment)
    assert len(rows) == 3, rows  # == --num-samples: nothing lost, nothing sampled twice
    assert {r["status"] for r in rows} == {"TERMINATED"}, rows
    assert all(r["epochs"] == str(EPOCHS) for r in rows), rows
    # Trials finished before the kill were not run again: their files are byte-identical, their
    # checkpoints and done markers untouched, and the checkpoints still load.
    assert {t.name: _fingerprint(t) for t in finished} == before
    assert {d: _marker(experiment, d) for d in done} == markers  # written by the trial
    for trial in finished:
        for state in trial.glob("checkpoint_*/state.pt"):
            assert load_checkpoint(state).model_name == "iv3_gru"
    best = load_checkpoint(experiment / "IV3GRU_best.pt")
    assert best.metrics["val_gloss_acc"] == pytest.approx(
        max(float(r["best_val_gloss_acc"]) for r in rows)
    )


def test_failing_trials_are_reported_and_the_others_finish(
    ray_cluster, tmp_path, capsys, monkeypatch
):
    """A sampled config that cannot be built, and a loss that turns NaN (lr 1e30, no clipping):
    both trials are ERROR with their reason in trials.csv and the summary; the third finishes.

    The search-space check refuses configs that cannot be built before Ray starts, so it is
    switched off here to let one through, as a config the check cannot foresee would be.
    """
    from signray.tune import main

    monkeypatch.setattr("signray.config.space_checks._config_problems", lambda values, start: [])
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "space": {
                    "lr": {"distribution": "choice", "values": [0.003, 1.0e30]},
                    "d_model": {"distribution": "choice", "values": [32, 17]},
                    "grad_clip": 0,
                    "n_heads": 2,
                    "depth": 1,
                    "ff_dim": 32,
                    "head_hidden": 16,
                },
                "points_to_evaluate": [
                    {"lr": 1.0e30, "d_model": 32},
                    {"lr": 0.003, "d_model": 17},
                    {"lr": 0.003, "d_model": 32},
                ],
            }
        )
    )
    assert (
        main(
            [
                str(a)
                for a in (
                    "--model",
                    "transformer",
                    "--smoke-test",
                    "--search-space",
                    space,
                    "--num-samples",
                    3,
                    "--epochs",
                    2,
                    "--trial-scheduler",
                    "fifo",
                    "--storage-path",
                    tmp_path,
                    "--name",
                    "err",
                )
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = {(float(r["lr"]), int(r["d_model"])): r for r in trial_rows(tmp_path / "err")}
    assert rows[(0.003, 32)]["status"] == "TERMINATED" and rows[(0.003, 32)]["epochs"] == "2"
    diverged, unbuildable = rows[(1.0e30, 32)], rows[(0.003, 17)]
    assert diverged["status"] == "ERROR" and unbuildable["status"] == "ERROR"
    assert "NonFiniteLossError: training loss became nan" in diverged["error"]
    assert "lower `lr`" in diverged["error"]
    assert "ConfigError" in unbuildable["error"]
    assert "`n_heads` must divide `d_model`, but got n_heads=2, d_model=17" in unbuildable["error"]
    assert "2 errored" in out
    assert "NonFiniteLossError" in out and "`n_heads` must divide `d_model`" in out


# A process that saves _best.pt, _last.pt and best_config.yaml in a loop, killed with SIGKILL at
# random moments; after every kill the test loads all three. Version v is in every file: the
# checkpoint's epoch, every value of its 4 MiB tensor, and the config's seed.
SAVER = r"""
import os, random, signal, sys, time
import torch
from signray.config import resolve_config, save_config
from signray.training.checkpoint import Checkpoint, save_checkpoint

out, kills = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)

def save_all(v):
    weights = {"w": torch.full((1024, 1024), float(v))}
    state = Checkpoint("transformer", "SignTransformer", 2, {}, weights, v, 0.0, v)
    save_checkpoint(state, f"{out}/SignTransformer_best.pt")
    save_checkpoint(state, f"{out}/SignTransformer_last.pt")
    save_config(resolve_config({"seed": v}), f"{out}/best_config.yaml")

save_all(0)
rng = random.Random(0)
for i in range(kills):
    pid = os.fork()
    if pid == 0:
        v = (i + 1) * 1_000_000
        while True:
            save_all(v)
            v += 1
    time.sleep(rng.uniform(0.05, 0.4))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    print("@@killed", i, flush=True)
    sys.stdin.readline()  # the test has loaded every file
"""


def test_sigkill_during_saves_never_leaves_a_truncated_file(tmp_path):
    kills = 20
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(tmp_path), str(kills)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    versions, mid_write = set(), 0
    try:
        for _ in range(kills):
            line = proc.stdout.readline()
            assert line.startswith("@@killed"), line
            best = load_checkpoint(tmp_path / "SignTransformer_best.pt")
            last = load_checkpoint(tmp_path / "SignTransformer_last.pt")
            for state in (best, last):
                assert torch.all(state.model["w"] == state.epoch)  # whole, one version
            config = resolve_config(load_config_file(tmp_path / "best_config.yaml"))
            assert config.seed <= best.epoch  # written after the checkpoints
            versions.add(best.epoch)
            mid_write += any(tmp_path.glob(".*.tmp"))  # a temp file the kill left behind
            proc.stdin.write("next\n")
            proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(versions) > kills // 2, versions  # the files really were being rewritten
    assert mid_write >= 1, "no kill landed during a write"


def _saved_failures(experiment: Path) -> dict[str, int]:
    """Trial id -> how often it failed, in the newest experiment state Tune saved."""
    (state,) = sorted(experiment.glob("experiment_state-*.json"))[-1:]
    return {
        json.loads(trial)["trial_id"]: json.loads(metadata)["num_failures"]
        for trial, metadata in json.loads(state.read_text())["trial_data"]
    }


def test_resume_keeps_errored_trials_unless_told_to_retry_them(ray_cluster, tmp_path):
    """A deterministic error (NaN loss at epoch 2) stays an error on --resume: the trial is not
    run again; --retry-errored runs it again from its checkpoint (and it fails again)."""
    from signray.tune import main

    space = diverging_space(tmp_path)
    where = ["--storage-path", str(tmp_path), "--name", "keep"]
    args = ["--model", "transformer", "--smoke-test", "--search-space", str(space),
            "--num-samples", "2", "--epochs", "3", "--trial-scheduler", "fifo", *where]  # fmt: skip
    assert main(args) == 0
    experiment = tmp_path / "keep"
    (errored,) = [r["trial_id"] for r in trial_rows(experiment) if r["status"] == "ERROR"]
    assert _saved_failures(experiment)[errored] == 1

    assert main(["--resume", *where]) == 0
    assert _saved_failures(experiment)[errored] == 1  # not run again
    row = next(r for r in trial_rows(experiment) if r["trial_id"] == errored)
    assert row["status"] == "ERROR" and "NonFiniteLossError" in row["error"]

    assert main(["--resume", "--retry-errored", *where]) == 0
    assert _saved_failures(experiment)[errored] == 2  # ran again, failed again
    row = next(r for r in trial_rows(experiment) if r["trial_id"] == errored)
    assert row["status"] == "ERROR" and "NonFiniteLossError" in row["error"]
