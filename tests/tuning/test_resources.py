"""Trial shapes (N workers x CPUs/GPUs): what each reserves, which are refused before Ray starts,
and what real Ray clusters with simulated GPUs give their workers and trials."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import signray.tuning.cluster
from signray.config import resolve_config
from signray.tune import main
from signray.tuning.cluster import LOOPBACK_ENV
from signray.tuning.launcher import scaling_config
from signray.tuning.resources import DRIVER_MEMORY_BYTES, TrialShape
from signray.tuning.trial import TrialSetup

PROBE = Path(__file__).with_name("gpu_shapes_probe.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("workers", "gpus", "trial", "worker"),
    [
        (1, 0.25, {"CPU": 1.0, "GPU": 0.25}, {"CPU": 1.0, "GPU": 0.25}),
        (1, 1.0, {"CPU": 1.0, "GPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}),
        (2, 2.0, {"CPU": 0, "GPU": 0, "memory": DRIVER_MEMORY_BYTES}, {"CPU": 0.5, "GPU": 1.0}),
        (4, 4.0, {"CPU": 0, "GPU": 0, "memory": DRIVER_MEMORY_BYTES}, {"CPU": 0.25, "GPU": 1.0}),
    ],
)
def test_each_shape_reserves_exactly_what_it_uses(workers, gpus, trial, worker):
    shape = TrialShape(workers, 1.0, gpus)
    assert shape.problems() == []
    assert shape.trial_resources() == trial
    assert shape.worker_resources() == worker
    setup = TrialSetup(resolve_config({}), "/x", workers=workers, gpus_per_trial=gpus)
    assert setup.resources() == trial and setup.gpus_per_worker == worker["GPU"]
    if workers > 1:  # what the TorchTrainer of such a trial asks Ray Train for
        cfg = resolve_config({"ray_workers": workers, "use_gpu": True, "batch_size": 8})
        sc = scaling_config(cfg, cpus_per_worker=0.25, gpus_per_worker=setup.gpus_per_worker)
        assert sc.num_workers == workers and sc.use_gpu
        assert sc.resources_per_worker == {"CPU": 0.25, "GPU": 1.0}


@pytest.mark.parametrize(
    ("workers", "gpus", "expected"),
    [
        (2, 1.0, "gives each DDP worker 0.5 GPU"),
        (2, 3.0, "gives each DDP worker 1.5 GPU"),
        (4, 2.0, "Use --gpus-per-trial 4 (1 per worker)"),
        (1, 2.0, "Use --workers-per-trial 2 --gpus-per-trial 2"),
        (1, 1.5, "would reserve 1.5 GPUs and train on one"),
        (2, 4.0, "gives each DDP worker 2 GPUs, but a worker trains on one GPU"),
        (2, 4.0, "Use --gpus-per-trial 2 (one per worker), or --workers-per-trial 4"),
        (4, 8.0, "each DDP worker 2 GPUs"),
    ],
)
def test_invalid_shapes_say_why_and_how_to_fix(workers, gpus, expected):
    problems = TrialShape(workers, 2.0, gpus).problems()
    assert len(problems) == 1 and expected in problems[0]
    assert set(problems[0].fields) == {"gpus_per_trial", "workers_per_trial"}


def test_the_launcher_refuses_a_fraction_of_a_gpu_per_ddp_worker():
    from signray.errors import ConfigError

    cfg = resolve_config({"ray_workers": 2, "use_gpu": True, "batch_size": 8})
    with pytest.raises(ConfigError, match="need whole GPUs"):
        scaling_config(cfg, gpus_per_worker=0.5)
    with pytest.raises(ConfigError, match="the others would sit reserved and idle"):
        scaling_config(cfg, gpus_per_worker=2)


def test_trials_that_fit_count_whole_workers_per_node():
    one_gpu_box = [{"CPU": 16.0, "GPU": 1.0}]
    assert TrialShape(1, 1.0, 0.25).trials_that_fit(one_gpu_box) == 4
    assert TrialShape(1, 8.0, 0.25).trials_that_fit(one_gpu_box) == 2  # CPUs decide
    assert TrialShape(1, 1.0, 0.0).trials_that_fit(one_gpu_box) == 16
    two_nodes = [{"CPU": 3.0, "GPU": 2.0}, {"CPU": 3.0, "GPU": 2.0}]
    assert TrialShape(1, 2.0, 0.0).trials_that_fit(two_nodes) == 2  # not 6 // 2 = 3
    assert TrialShape(2, 2.0, 2.0).trials_that_fit(two_nodes) == 2  # workers span nodes
    assert TrialShape(4, 4.0, 4.0).trials_that_fit(two_nodes) == 1
    assert TrialShape(1, 1.0, 1.0).trials_that_fit([{"CPU": 8.0}]) == 0


def test_cluster_problems_say_what_the_cluster_has():
    shape = TrialShape(1, 1.0, 1.0)
    [problem] = shape.cluster_problems([{"CPU": 2.0}], "127.0.0.1:6379")
    assert "the cluster at 127.0.0.1:6379 cannot run one trial" in problem
    assert "a trial needs 1 CPU, 1 GPU" in problem and "2 CPUs and 0 GPUs on 1 node(s)" in problem
    assert "join a cluster with GPUs" in problem
    nodes = [{"CPU": 2.0, "GPU": 1.0}, {"CPU": 2.0, "GPU": 1.0}]
    [problem] = TrialShape(1, 3.0, 0.0).cluster_problems(nodes, "head:6379")
    assert "4 CPUs and 2 GPUs on 2 node(s); the largest node has 2 CPUs and 1 GPUs" in problem
    assert TrialShape(2, 2.0, 2.0).cluster_problems(nodes, "head:6379") == []


def test_concurrency_warning_counts_gpus():
    shape = TrialShape(2, 2.0, 2.0)
    nodes = [{"CPU": 16.0, "GPU": 2.0}]
    warning = shape.concurrency_warning(2, nodes)
    assert "--max-concurrent 2 trials of 2 workers x (1 CPU, 1 GPU)" in warning
    assert "16 CPUs and 2 GPUs (room for 1 at once)" in warning
    assert shape.concurrency_warning(1, nodes) == ""
    assert TrialShape(1, 1.0, 1.0).concurrency_warning(8, nodes) == ""  # Tune queues these


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started before the input was validated")

    monkeypatch.setattr(signray.tuning.cluster, "init_ray", refuse)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--workers-per-trial", 2, "--gpus-per-trial", 1], "gives each DDP worker 0.5 GPU"),
        (["--gpus-per-trial", 2], "would reserve 2 GPUs and train on one"),
        (["--workers-per-trial", 2, "--gpus-per-trial", 4], "gives each DDP worker 2 GPUs"),
        # --use-gpu alone: one whole GPU per worker, never half (the machine has none here)
        (["--workers-per-trial", 2, "--use-gpu"], "2 workers x (0.5 CPU, 1 GPU)"),
    ],
)
def test_the_tune_command_refuses_bad_shapes_before_ray(no_ray, tmp_path, capsys, flags, expected):
    import torch

    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has GPUs")
    argv = ["--model", "transformer", "--smoke-test", "--storage-path", tmp_path, *flags]
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err


# ---------------------------------------------------------------------------------------------
# Real Ray clusters with simulated GPUs.


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """What every worker and trial of every shape got (see gpu_shapes_probe.py)."""
    out = tmp_path_factory.mktemp("shapes")
    env = {**os.environ, "PYTHONPATH": str(REPO), LOOPBACK_ENV: "0"}
    proc = subprocess.run(
        [sys.executable, str(PROBE), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def _records(probe, prefix):
    return [v for k, v in sorted(probe.items()) if k.startswith(prefix)]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 4])
def test_ddp_workers_get_disjoint_whole_gpus(probe, workers):
    ranks = _records(probe, f"{workers}x1_rank")
    assert sorted(r["rank"] for r in ranks) == list(range(workers))
    ids = [tuple(r["gpu_ids"]) for r in ranks]
    assert all(len(i) == 1 for i in ids) and len(set(ids)) == workers  # one card each, disjoint
    assert all(r["assigned"] == {"CPU": 1.0, "GPU": 1.0} for r in ranks)


@pytest.mark.slow
def test_one_gpu_trials_get_a_card_each(probe):
    trials = _records(probe, "1x1_trial")
    assert len(trials) == 4
    assert len({tuple(t["gpu_ids"]) for t in trials}) == 4
    assert all(t["assigned"] == {"CPU": 1.0, "GPU": 1.0} for t in trials)


@pytest.mark.slow
def test_four_quarter_gpu_trials_share_one_card_at_the_same_time(probe):
    trials = _records(probe, "1x0.25_trial")
    assert len(trials) == 4
    # Each trial waited at a barrier until all four had started: they ran at the same time.
    assert all(t["together"] for t in trials)
    assert max(t["start"] for t in trials) < min(t["end"] for t in trials)
    assert {tuple(t["gpu_ids"]) for t in trials} == {("0",)}  # the cluster's one GPU
    assert all(t["assigned"] == {"CPU": 1.0, "GPU": 0.25} for t in trials)
    assert all(t["cuda_visible_devices"] == "0" for t in trials)


@pytest.mark.slow
def test_default_concurrency_follows_the_gpus(probe):
    # 4 CPUs and 1 GPU: 0.25 GPU per trial -> 4 at once; 0.5 -> 2; no GPUs -> the 4 CPUs.
    expected = {"1cpu_0.25gpu": 4, "0.5cpu_0.5gpu": 2, "1cpu_0gpu": 4}
    assert probe["default_max_concurrent"] == expected


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--gpus-per-trial", 1], "2 CPUs and 0 GPUs on 1 node(s); join a cluster with GPUs"),
        (["--cpus-per-trial", 3], "a trial needs 3 CPU (each worker on one node)"),
    ],
)
def test_a_plan_the_cluster_cannot_run_exits_2_before_any_trial(
    ray_cluster, tmp_path, flags, expected
):
    """`ray_cluster` has 2 CPUs and no GPU; --address joins it."""
    argv = ["--model", "transformer", "--smoke-test", "--address", ray_cluster,
            "--storage-path", tmp_path, "--name", "x", *flags]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "signray.tune", *map(str, argv)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), LOOPBACK_ENV: "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"the cluster at {ray_cluster} cannot run one trial" in proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert not list(itertools.chain(tmp_path.glob("x/trial_*"), tmp_path.glob("x/*.json")))
