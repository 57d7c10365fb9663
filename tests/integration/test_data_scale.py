"""Data larger than every node's object store still trains: a real search on a loopback cluster.

The cluster (tests/integration/cluster_node.py) has a head node with no CPUs and two worker nodes
with one CPU each, every node's object store 150 MiB; the training split is ~300 MB of 2048-d
float16 features in 8 format-2 shards. A 2-trial search with 2-worker DDP trials must:

- choose stream mode by itself (`--data-mode auto`: the data exceed half an object store);
- keep the driver's peak RSS under 1 GiB. Its own footprint with the built-in tiny data is
  ~0.83 GB (torch alone is 0.52 GB), so the bound leaves less room than the training split:
  it fails if the driver ever held the split once (today's path held it as float32, 2x, plus
  the copy it put in the object store);
- have each DDP rank open only its own shards (the shard log, `SIGNRAY_SHARD_LOG`, records
  every shard each process opens and who it was) and the driver none but to verify them;
- report validation metrics equal to an in-memory evaluation of the same weights.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from rayhelpers import ROOT, Driver, TwoNodes, trial_rows

from signray.data import load_split
from signray.data.shards import SHARD_LOG_ENV
from signray.data.streaming import assign_shards
from signray.data.synth import write_dataset
from signray.train import evaluate_checkpoint
from signray.training.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

STORE_MB = 150
DRIVER_BOUND = 1 << 30
DATA = dict(num_gloss=20, num_cat=4, train_per_gloss=40, val_per_gloss=4, min_len=60,
            max_len=120, feature_dim=2048, seed=0)  # fmt: skip


def _peak_rss(pid: int, stop: threading.Event, out: list[int]) -> None:
    """VmHWM (the kernel's high-water mark of this process's RSS), polled until it exits."""
    while not stop.is_set():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        if match := re.search(r"VmHWM:\s+(\d+) kB", status):
            out.append(int(match.group(1)) * 1024)
        time.sleep(0.2)


def test_search_streams_data_larger_than_the_object_store(tmp_path: Path) -> None:
    ds = write_dataset(tmp_path / "ds", keypoints=False, num_shards=8, **DATA)
    train_dir = ds / "features_train"
    train_bytes = sum(f.stat().st_size for f in train_dir.rglob("frames.npy"))
    assert 250e6 < train_bytes < 350e6
    log = tmp_path / "shard-log"
    log.mkdir()
    nodes = ["--workers", "2", "--head-cpus", "0", "--object-store-mb", str(STORE_MB)]
    cluster = TwoNodes(*nodes, env={SHARD_LOG_ENV: str(log)})
    try:
        stores = cluster.info["object_store_bytes"]
        assert len(stores) == 3 and max(stores.values()) < train_bytes, stores
        driver = Driver(
            "--model", "iv3_gru", "--search-space", ROOT / "search_spaces" / "iv3_gru.yaml",
            "--features-train", train_dir, "--features-val", ds / "features_val",
            "--labels-train-csv", ds / "train_labels.csv",
            "--labels-val-csv", ds / "val_labels.csv",
            "--num-gloss", DATA["num_gloss"], "--num-cat", DATA["num_cat"], "--epochs", 1,
            "--num-samples", 2, "--workers-per-trial", 2, "--cpus-per-trial", 2,
            "--max-concurrent", 1, "--trial-scheduler", "fifo",
            "--storage-path", tmp_path, "--name", "scale", "--address", cluster.address,
            env=cluster.env,
        )  # fmt: skip
        stop, peaks = threading.Event(), []
        poller = threading.Thread(target=_peak_rss, args=(driver.proc.pid, stop, peaks))
        poller.start()
        try:
            code = driver.wait(timeout=900)
        finally:
            stop.set()
            poller.join()
        assert code == 0, driver.tail()
        workers = [
            a for a in cluster.ask("actors")["actors"] if a["class_name"] == "RayTrainWorker"
        ]
    finally:
        leaked = cluster.shutdown()
    assert not leaked, leaked

    assert "data: stream mode (auto:" in driver.output, driver.tail()
    rows = trial_rows(tmp_path / "scale")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"TERMINATED"}, rows
    assert {a["node_id"] for a in workers} == set(cluster.info["workers"]), workers
    assert max(peaks) < DRIVER_BOUND, f"driver peak RSS {max(peaks) / 2**20:.0f} MiB"
    print(
        f"driver peak RSS {max(peaks) / 2**20:.0f} MiB; training frames {train_bytes / 1e6:.0f} MB"
    )

    # Each rank opened exactly its own training shards, in every trial; the driver only verified.
    manifest = json.loads((train_dir / "manifest.json").read_text())
    names = [e["name"] for e in manifest["shards"]]
    dealt = assign_shards([e["num_clips"] for e in manifest["shards"]], 2)
    expected = [{names[s] for s in shards} for shards in dealt]
    opened: dict[tuple[int, str], set[str]] = defaultdict(set)
    for f in log.iterdir():
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            if rec["folder"] == str(train_dir):
                opened[(rec["pid"], rec["reader"])].add(rec["shard"])
    assert {r for p, r in opened if p == driver.proc.pid} == {"verify"}
    ranks = {(p, r): shards for (p, r), shards in opened.items() if r.startswith("rank ")}
    assert len({p for p, _ in ranks}) >= 2 and {r for _, r in ranks} == {"rank 0/2", "rank 1/2"}
    for (pid, reader), shards in ranks.items():
        assert shards == expected[int(reader[5])], (pid, reader, shards)
        assert not any(p == pid and r != reader for p, r in opened), "a rank read other shards"

    # The metrics the two ranks reported together equal an in-memory pass with the same weights.
    best_path = tmp_path / "scale" / "IV3GRU_best.pt"
    best = load_checkpoint(best_path)
    val = load_split(ds / "features_val", keys=("X2048",), num_gloss=20, num_cat=4)
    again = evaluate_checkpoint(best_path, val, batch_size=16)
    assert again["val_count"] == len(val) == 80
    assert best.metrics["val_gloss_acc"] == again["val_gloss_acc"]
    assert best.metrics["val_cat_acc"] == again["val_cat_acc"]
    assert best.metrics["val_loss"] == pytest.approx(again["val_loss"], rel=1e-5)
    remote = json.loads((tmp_path / "scale" / "evaluation" / "metrics.json").read_text())
    assert remote["count"] == 80 and remote["gloss_acc"] == again["val_gloss_acc"]
