"""signray on clusters started the documented way (``ray start --head``, tests/headnode.py): Ray
Jobs, joining with a token, multi-worker trials without the dashboard, a worker dying, and the
head dying with the experiment on an S3 server.

Every cluster runs on 127.0.0.1 with its own temp dir, ports and token, and is killed by pid at
the end. Budget on a 2-core CI machine: about 10 minutes for the module.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from headnode import HeadNode, make_token_home
from rayhelpers import ROOT, Driver, result_records, saved_statuses, trial_rows, wait_until

from signray.layout import ExperimentFiles
from signray.storage import RemotePath

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
# Two short trials: enough for a search to run end to end, on a cluster of 2 CPUs.
SMALL = ["--model", "iv3_gru", "--smoke-test", "--num-samples", 2, "--epochs", 3,
         "--trial-scheduler", "fifo"]  # fmt: skip
# Each stated bound is about 3x what the run took on a loaded 2-core machine.
SEARCH_S = 300
MULTI_WORKER_S = 600


@pytest.fixture(scope="module")
def token_home(tmp_path_factory):
    return make_token_home(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def token_head(token_home):
    """Dashboard (and Jobs API) on 127.0.0.1, token authentication on."""
    head = HeadNode(token_home, dashboard=True)
    yield head
    head.kill()


@pytest.fixture(scope="module")
def bare_head(token_home):
    """Started without the dashboard: no State API, so Ray Train's own cleaner cannot work."""
    head = HeadNode(token_home, dashboard=False)
    yield head
    head.kill()


def _node_ids_of_trials(experiment: Path) -> set[str]:
    return {r["node_id"] for t in experiment.glob("trial_*") for r in result_records(t)}


def test_a_submitted_job_and_a_shell_both_run_on_the_token_cluster(token_head, tmp_path):
    # `ray job submit --working-dir .` with the smoke search and no --address: the entrypoint
    # joins the cluster it was submitted to (RAY_ADDRESS), the trials run there.
    job = subprocess.run(
        [
            RAY,
            "job",
            "submit",
            "--address",
            token_head.dashboard_url,
            "--working-dir",
            ROOT,
            "--",
            sys.executable,
            "-m",
            "signray.tune",
            *map(str, SMALL),
            "--storage-path",
            tmp_path,
            "--name",
            "job",
        ],  # fmt: skip
        cwd=ROOT,
        env=token_head.client_env(RAY_AUTH_MODE="token"),  # the job CLI needs it set
        capture_output=True,
        text=True,
        timeout=SEARCH_S,
    )
    out = job.stdout + job.stderr
    assert job.returncode == 0 and "succeeded" in out, out[-4000:]
    assert f"joined the Ray cluster at {token_head.address}" in out
    assert "Started a local Ray instance" not in out  # no second cluster inside the job
    head_nodes = token_head.node_ids()
    assert len(head_nodes) == 1 and _node_ids_of_trials(tmp_path / "job") == head_nodes
    assert len(trial_rows(tmp_path / "job")) == 2

    # The same search from a plain shell with --address (a token in ~/.ray, RAY_AUTH_MODE
    # unset): it joins; signray reaches the workers as py_modules, not through PYTHONPATH.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shell = Driver(
        *SMALL,
        *("--storage-path", tmp_path, "--name", "shell", "--address", token_head.address),
        env=token_head.client_env(),
        cwd=elsewhere,
    )
    assert shell.wait(timeout=SEARCH_S) == 0, shell.tail()
    assert _node_ids_of_trials(tmp_path / "shell") == head_nodes
    resources = token_head.temp_dir / "session_latest" / "runtime_resources"
    assert list(resources.glob("working_dir_files/*/signray/tune.py"))  # the job's copy
    assert list(resources.glob("py_modules_files/*/signray/tune.py"))  # the shell driver's
    assert not any(elsewhere.iterdir())


def test_a_missing_or_wrong_token_exits_2_at_once(token_head, tmp_path, monkeypatch):
    # A shell that chose no auth mode: a cluster this test process started (the session's) has
    # set RAY_AUTH_MODE=token here, and its subprocesses would inherit it.
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    no_token = tmp_path / "empty-home"
    no_token.mkdir()
    for env, expected in (
        ({"HOME": str(no_token)}, "requires token authentication and no token was found in"),
        ({"RAY_AUTH_TOKEN": "0" * 64}, "refused the token from RAY_AUTH_TOKEN"),
    ):
        start = time.perf_counter()
        driver = Driver(
            *SMALL,
            *("--storage-path", tmp_path, "--name", "refused", "--address", token_head.address),
            env={**token_head.client_env(), **env},
        )
        assert driver.wait(timeout=60) == 2, driver.tail()
        seconds = time.perf_counter() - start
        assert f"the Ray cluster at {token_head.address} (--address) {expected}" in driver.output
        assert "Traceback" not in driver.output
        print(f"token case exited 2 after {seconds:.1f}s (interpreter start included)")
    assert not (tmp_path / "refused").exists()


def test_multi_worker_trials_free_their_groups_without_the_dashboard(bare_head, tmp_path):
    """2 DDP workers per trial on 2 CPUs, so trials run one after another; ASHA stops the
    second, and Tune ends the others at max_t before their Train runs finish: without the
    driver freeing those groups, the next trial would wait for CPUs forever."""
    space = tmp_path / "space.yaml"
    space.write_text(
        "space:\n  lr: {distribution: choice, values: [0.005, 0.00001]}\n"
        "  hidden1: 32\n  hidden2: 24\n  depth: 1\n  dropout: 0.0\n  batch_size: 16\n"
        "points_to_evaluate: [{lr: 0.005}, {lr: 0.00001}, {lr: 0.005}]\n"
    )
    start = time.perf_counter()
    driver = Driver("--model", "iv3_gru", "--smoke-test", "--search-space", space,
                    "--num-samples", 3, "--epochs", 3, "--workers-per-trial", 2,
                    "--cpus-per-trial", 2, "--storage-path", tmp_path, "--name", "w2",
                    "--address", bare_head.address, env=bare_head.client_env())  # fmt: skip
    assert driver.wait(timeout=MULTI_WORKER_S) == 0, driver.tail()
    print(f"3 two-worker trials on a dashboard-less cluster: {time.perf_counter() - start:.0f}s")
    rows = trial_rows(tmp_path / "w2")
    assert sorted(r["status"] for r in rows) == ["STOPPED_EARLY", "TERMINATED", "TERMINATED"]
    assert len(re.findall(r"freed the worker placement group \w+ of trial", driver.output)) >= 1
    assert bare_head.live_placement_groups() == {}


def test_a_killed_train_worker_restarts_the_group_from_its_checkpoint(bare_head, tmp_path):
    """--worker-failures 1: a rank killed mid-epoch; Ray Train restarts the worker group from the
    trial's last checkpoint, and Tune sees one uninterrupted trial (no Tune-level retry)."""
    epochs = 20
    driver = Driver("--model", "iv3_gru", "--smoke-test", "--single-run", "--epochs", epochs,
                    "--workers-per-trial", 2, "--cpus-per-trial", 2, "--worker-failures", 1,
                    "--storage-path", tmp_path, "--name", "wf",
                    "--address", bare_head.address, env=bare_head.client_env())  # fmt: skip
    experiment = tmp_path / "wf"

    def training():
        records = [r for t in experiment.glob("trial_*") for r in result_records(t)]
        return records[-1] if records and 3 <= records[-1]["epoch"] <= epochs - 8 else None

    try:
        seen = wait_until(training, MULTI_WORKER_S, "the trial past epoch 3", driver, every=0.1)
        (victim, *_) = [p for p in bare_head.processes() if p.name() == "ray::RayTrainWorker"]
        victim.kill()
        code = driver.wait(timeout=MULTI_WORKER_S)
    finally:
        driver.kill()
    assert code == 0, driver.tail()
    (row,) = trial_rows(experiment)
    assert row["status"] == "TERMINATED" and row["epochs"] == str(epochs), row
    (trial,) = experiment.glob("trial_*")
    records = result_records(trial)
    # One Tune trial process throughout, whose results never restarted: no Tune-level retry.
    assert {r["pid"] for r in records} == {seen["pid"]}
    assert [r["iterations_since_restore"] for r in records] == list(range(1, len(records) + 1))
    assert list(saved_statuses(experiment).values()) == ["TERMINATED"]
    assert "[FailurePolicy] RETRY" in driver.output  # Train restarted its worker group ...
    resumed = re.search(r"resuming from the checkpoint of epoch (\d+)", driver.output)
    assert resumed, driver.tail()
    # ... from the last epoch it reported before the kill, and went on with the next one.
    last = int(resumed.group(1))
    assert last >= seen["epoch"]
    epochs_seen = [r["epoch"] for r in records]
    assert epochs_seen[epochs_seen.index(last) + 1] == last + 1
    assert sorted(set(epochs_seen)) == list(range(1, epochs + 1))
    assert bare_head.live_placement_groups() == {}


def test_a_new_cluster_continues_after_the_head_is_lost(s3, s3_bucket, token_home):
    """The experiment lives on the S3 server, off the cluster. Every process of the cluster
    (head included) and the driver are killed mid-search; a new cluster and --resume finish
    it with exactly --num-samples trials, the finished ones untouched."""
    bucket = s3_bucket
    storage = f"s3://{bucket}/exps"
    experiment = RemotePath(f"{storage}/lose")
    args = ["--model", "iv3_gru", "--smoke-test", "--num-samples", 3, "--epochs", 30,
            "--trial-scheduler", "fifo", "--max-concurrent", 1,
            "--storage-path", storage]  # fmt: skip
    first = HeadNode(token_home, dashboard=False, env=s3.env)  # its workers reach the bucket
    try:
        driver = Driver(*args, "--name", "lose", "--address", first.address,
                        env=first.client_env(**s3.env))  # fmt: skip

        def one_finished_one_running():
            done = {t for t, s in saved_statuses(experiment).items() if s == "TERMINATED"}
            running = [
                t
                for t in experiment.glob("trial_*")
                if t.name.removeprefix("trial_") not in done and list(t.glob("checkpoint_*"))
            ]
            return done if done and running else None

        done = wait_until(one_finished_one_running, SEARCH_S, "a finished and a running trial",
                          driver, every=0.5)  # fmt: skip
        driver.proc.kill()
        first.kill()
        driver.wait(timeout=60)
    finally:
        driver.kill()
        first.kill()

    def objects(trial_id: str) -> dict[str, tuple[str, object]]:
        prefixes = [f"exps/lose/trial_{trial_id}/", f"exps/lose/trials_done/{trial_id}"]
        return {
            o["Key"]: (o["ETag"], o["LastModified"])
            for p in prefixes
            for o in s3.client().list_objects_v2(Bucket=bucket, Prefix=p).get("Contents", [])
        }

    before = {t: objects(t) for t in done}
    second = HeadNode(token_home, dashboard=False, env=s3.env)
    try:
        resumed = Driver("--resume", "--name", "lose", "--storage-path", storage,
                         "--address", second.address, env=second.client_env(**s3.env))  # fmt: skip
        assert resumed.wait(timeout=SEARCH_S) == 0, resumed.tail()
    finally:
        second.kill()
    rows = _csv_rows(experiment)
    assert len(rows) == 3 and {r["status"] for r in rows} == {"TERMINATED"}, rows
    assert all(r["epochs"] == "30" for r in rows)
    after = {t: objects(t) for t in done}
    # Finished trials were not run again: same bytes, and what the trial itself writes
    # (checkpoints, its done marker) not even rewritten.
    for trial_id, keys in before.items():
        assert {k: etag for k, (etag, _) in keys.items()} == {
            k: etag for k, (etag, _) in after[trial_id].items()
        }
        mine = [k for k in keys if "/checkpoint_" in k or "/trials_done/" in k]
        assert mine and all(keys[k] == after[trial_id][k] for k in mine)
    assert ExperimentFiles(experiment).best_checkpoint("IV3GRU").is_file()


def _csv_rows(experiment: RemotePath) -> list[dict]:
    return list(csv.DictReader(io.StringIO(ExperimentFiles(experiment).trials_csv.read_text())))
