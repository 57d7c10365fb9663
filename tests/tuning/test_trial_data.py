"""Data for trials without the driver holding it: per-node holders (memory mode) whose parts are
read-only object-store views, streams (stream mode), and the final evaluation run on a node."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from signray.config import resolve_config
from signray.data import ShardStream, load_split
from signray.data.synth import write_dataset
from signray.errors import DataError
from signray.training.inputs import check_inputs

pytestmark = pytest.mark.slow

SPEC = dict(num_gloss=4, num_cat=2, train_per_gloss=5, val_per_gloss=2, min_len=8, max_len=20,
            seed=2, feature_dim=64, keypoints=False)  # fmt: skip


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("holders"), num_shards=3, **SPEC)


def _cfg(root: Path, **over):
    return resolve_config({
        "model": "iv3_gru", "features_train": str(root / "features_train"),
        "features_val": str(root / "features_val"), "num_gloss": 4, "num_cat": 2, **over,
    })  # fmt: skip


def _opened(data):
    """What a trial process sees when it opens `data` (run as a Ray task, like a trial)."""
    import ray

    @ray.remote(num_cpus=1)
    def open_in_a_worker(data):
        opened = data.open()
        train = opened.train
        if isinstance(train, ShardStream):
            return "stream", len(train), None
        frames = train.parts[0].frames
        return "memory", len(train), (frames.flags.writeable, frames.flags.owndata,
                                      np.asarray(train.clip(3)).tolist())  # fmt: skip

    return ray.get(open_in_a_worker.remote(data))


def test_memory_mode_holds_one_copy_per_node(ray_cluster, packed) -> None:
    import ray

    from signray.tuning.trial_data import prepare_trial_data

    cfg = _cfg(packed, data_mode="memory")
    data = prepare_trial_data(cfg, check_inputs(cfg))
    assert data.mode == "memory" and data.streams is None
    assert set(data.holders) == {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    mode, count, (writeable, owndata, clip) = _opened(data)
    assert mode == "memory" and count == 20
    assert not writeable and not owndata  # a view of the object store, not a copy
    local = load_split(packed / "features_train", keys=("X2048",), num_gloss=4, num_cat=2)
    assert np.array_equal(np.asarray(clip, dtype=np.float16), local.clip(3))
    assert np.array_equal(data.norm.mean, check_inputs(cfg).train.norm.mean)
    # The process that keeps the copy alive loaded no torch (it would cost ~0.5 GB per node).
    from ray.util.state import list_actors
    from rayhelpers import state_address

    alive = [("class_name", "=", "SplitHolder"), ("state", "=", "ALIVE")]
    holders = list_actors(address=state_address(ray), filters=alive)
    assert holders
    for actor in holders:
        maps = Path(f"/proc/{actor.pid}/maps").read_text()
        assert "libtorch" not in maps and "numpy" in maps


def test_stream_mode_sends_only_the_manifests(ray_cluster, packed) -> None:
    from signray.tuning.trial_data import prepare_trial_data

    cfg = _cfg(packed, data_mode="stream")
    data = prepare_trial_data(cfg, check_inputs(cfg))
    assert data.mode == "stream" and not data.holders
    assert _opened(data)[:2] == ("stream", 20)


def test_holders_report_files_changed_after_the_check(ray_cluster, tmp_path) -> None:
    from signray.tuning.trial_data import prepare_trial_data

    root = write_dataset(tmp_path, **SPEC)  # per-clip files
    cfg = _cfg(root, labels_train_csv=str(root / "train_labels.csv"),
               labels_val_csv=str(root / "val_labels.csv"), data_mode="memory")  # fmt: skip
    summary = check_inputs(cfg)
    first = sorted((root / "features_train").glob("*.npz"))[0]
    first.unlink()
    with pytest.raises(DataError, match=f"{first.name}: file not found"):
        prepare_trial_data(cfg, summary)


def test_trials_start_while_the_holders_load_and_get_their_load_error(
    ray_cluster, tmp_path
) -> None:
    """`start_trial_data` hands out the data before the holders have loaded it: a trial that
    opens it waits for its node's holder, and gets the reason when the load failed (as does the
    driver, which waits for the load while the trials run)."""
    import ray

    from signray.tuning.trial_data import start_trial_data

    root = write_dataset(tmp_path / "ok", **SPEC)
    files = dict(labels_train_csv=str(root / "train_labels.csv"),
                 labels_val_csv=str(root / "val_labels.csv"), data_mode="memory")  # fmt: skip
    cfg = _cfg(root, **files)
    loading = start_trial_data(cfg, check_inputs(cfg))
    assert _opened(loading.data)[:2] == ("memory", 20)  # opened before anyone waited
    assert loading.wait() is loading.data

    broken = write_dataset(tmp_path / "broken", **SPEC)
    cfg = _cfg(broken, **{**files, "labels_train_csv": str(broken / "train_labels.csv"),
                          "labels_val_csv": str(broken / "val_labels.csv")})  # fmt: skip
    summary = check_inputs(cfg)
    first = sorted((broken / "features_train").glob("*.npz"))[0]
    first.unlink()
    loading = start_trial_data(cfg, summary)
    with pytest.raises(ray.exceptions.RayTaskError, match=f"{first.name}: file not found"):
        _opened(loading.data)
    with pytest.raises(DataError, match=f"{first.name}: file not found"):
        loading.wait()


def test_evaluation_runs_where_the_data_is(ray_cluster, packed, tmp_path) -> None:
    import torch

    from signray.training.checkpoint import Checkpoint, save_checkpoint
    from signray.tuning.trial_data import evaluate_best, prepare_trial_data

    for mode in ("memory", "stream"):
        cfg = dataclasses.replace(_cfg(packed, data_mode=mode), output_dir=str(tmp_path))
        data = prepare_trial_data(cfg, check_inputs(cfg))
        torch.manual_seed(0)
        model = cfg.build_model(64)
        path = tmp_path / f"{mode}.pt"
        state = model.checkpoint_state_dict()
        ckpt = Checkpoint.for_config(cfg, 64, model=state, epoch=1, best_metric=0.0, best_epoch=1)
        save_checkpoint(ckpt, path)
        metrics = evaluate_best(data, path, tmp_path / mode)
        assert metrics["count"] == 8
        assert json.loads((tmp_path / mode / "metrics.json").read_text())["count"] == 8
    memory = json.loads((tmp_path / "memory" / "metrics.json").read_text())
    stream = json.loads((tmp_path / "stream" / "metrics.json").read_text())
    assert memory["loss"] == pytest.approx(stream["loss"])
