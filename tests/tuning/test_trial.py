"""The Tune trainable: a trial that Tune stops frees what its loop held before the next trial
starts in the same (reused) actor."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import pytest

from signray.config import resolve_config
from signray.training.inputs import check_inputs

pytestmark = pytest.mark.slow

TINY_TX = {"d_model": 16, "n_heads": 2, "depth": 1, "ff_dim": 16, "head_hidden": 8}


def _recording_trial(config: dict, setup, data, log: str) -> None:
    """`trial._run_trial`, with its memory release recording which models are still alive then
    (weak references to every model built in this trial)."""
    import weakref

    import signray.tuning.trial as trial
    from signray.config import TrainConfig

    built: list = []
    release, build = trial.release_device_memory, TrainConfig.build_model

    def build_and_watch(cfg, input_dim):
        model = build(cfg, input_dim)
        built.append(weakref.ref(model))
        return model

    def recording_release() -> None:
        release()
        gc.collect()
        record = {"seed": config["seed"], "pid": os.getpid(), "built": len(built),
                  "alive": sum(ref() is not None for ref in built)}  # fmt: skip
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")

    trial.release_device_memory, TrainConfig.build_model = recording_release, build_and_watch
    try:
        trial._run_trial(config, setup=setup, data=data)
    finally:
        trial.release_device_memory, TrainConfig.build_model = release, build


def test_a_stopped_trial_frees_its_model_before_the_next_trial_in_the_actor(ray_cluster, tmp_path):
    from ray import tune

    from signray.tuning.trial import TrialSetup
    from signray.tuning.trial_data import prepare_trial_data

    base = resolve_config({"smoke_test": True, "epochs": 4, "num_gloss": 20, "num_cat": 4,
                           "batch_size": 16, **TINY_TX})  # fmt: skip
    data = prepare_trial_data(base, check_inputs(base))
    setup = TrialSetup(base, str(tmp_path / "experiment")).with_runtime()
    log = tmp_path / "releases.jsonl"
    trainable = tune.with_resources(
        tune.with_parameters(_recording_trial, setup=setup, data=data, log=str(log)),
        setup.resources(),
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"seed": tune.grid_search([1, 2, 3])},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1),
        run_config=tune.RunConfig(
            name="stopped",
            storage_path=str(tmp_path / "ray"),
            verbose=0,
            stop={"training_iteration": 2},  # Tune stops every trial inside its 2nd report
        ),  # fmt: skip
    )
    results = tuner.fit()
    assert not results.errors
    assert [r.metrics["training_iteration"] for r in results] == [2, 2, 2]  # stopped, not done
    # The trials that another trial followed in their actor (the last actor is not cached, and
    # may be ended before its trial's clean-up).
    records = [json.loads(line) for line in Path(log).read_text().splitlines()][:2]
    assert [r["seed"] for r in records] == [1, 2]
    assert records[0]["pid"] == records[1]["pid"]  # the second trial reused the first's actor
    assert all(r["built"] == 1 for r in records)
    assert [r["alive"] for r in records] == [0, 0], records
