from __future__ import annotations

import math

import pytest
import torch

from signray.config import resolve_config
from signray.errors import NonFiniteLossError
from signray.training.checkpoint import load_checkpoint
from signray.training.loop import train_loop
from signray.training.reporters import FileReporter

SMALL_TX = {"d_model": 32, "n_heads": 4, "depth": 1, "ff_dim": 64, "head_hidden": 32}


def _cfg(tmp_path, **over):
    values = {
        "num_gloss": 6,
        "num_cat": 2,
        "batch_size": 8,
        "epochs": 3,
        "lr": 3e-3,
        "output_dir": str(tmp_path),
        **SMALL_TX,
        **over,
    }
    return resolve_config(values)


def _run(cfg, data, resume=None):
    reporter = FileReporter(
        cfg.output_dir, cfg.spec.class_name, total_epochs=cfg.epochs, resume=resume
    )
    return train_loop(cfg, reporter, data)


def test_learns_above_chance(tmp_path, tiny_keypoints):
    result = _run(_cfg(tmp_path, epochs=25, dropout=0.0), tiny_keypoints)
    assert result.epochs_run == 25
    # chance is 1/6
    assert result.best_val_gloss_acc >= 0.5
    assert (tmp_path / "SignTransformer_best.pt").is_file()
    log = (tmp_path / "SignTransformer_log.csv").read_text().splitlines()
    assert len(log) == 26 and log[0].startswith("epoch,train_loss,val_loss,val_gloss_acc")


def test_resume_equals_uninterrupted_run(tmp_path, tiny_keypoints):
    full = _cfg(tmp_path / "full", epochs=4)
    _run(full, tiny_keypoints)
    half = _cfg(tmp_path / "half", epochs=2)
    _run(half, tiny_keypoints)
    resumed = _cfg(tmp_path / "half", epochs=4)
    result = _run(resumed, tiny_keypoints, resume=tmp_path / "half" / "SignTransformer_last.pt")
    assert [m["epoch"] for m in result.history] == [1, 2, 3, 4]
    a = load_checkpoint(tmp_path / "full" / "SignTransformer_last.pt")
    b = load_checkpoint(tmp_path / "half" / "SignTransformer_last.pt")
    assert a.epoch == b.epoch == 4
    for key, value in a.model.items():
        assert torch.equal(value, b.model[key]), key
    assert a.metrics["val_loss"] == b.metrics["val_loss"]
    rows = (tmp_path / "half" / "SignTransformer_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]


def test_early_stop_follows_val_gloss_acc(tmp_path, tiny_keypoints):
    # A vanishing lr freezes the model, so val accuracy never improves after epoch 1.
    cfg = _cfg(tmp_path, epochs=10, lr=1e-12, early_stop=2, scheduler="none")
    result = _run(cfg, tiny_keypoints)
    assert result.stopped_early
    assert result.epochs_run == 3
    assert result.best_epoch == 1


def test_plateau_halves_lr_after_patience(tmp_path, tiny_keypoints):
    cfg = _cfg(tmp_path, epochs=4, lr=1e-12, scheduler="plateau", scheduler_patience=1)
    lrs = [m["lr"] for m in _run(cfg, tiny_keypoints).history]
    assert lrs[:3] == [1e-12, 1e-12, 1e-12]
    assert lrs[3] == pytest.approx(0.5e-12)


def test_cosine_with_warmup(tmp_path, tiny_keypoints):
    cfg = _cfg(tmp_path, epochs=5, lr=1e-3, scheduler="cosine", warmup_epochs=2)
    lrs = [m["lr"] for m in _run(cfg, tiny_keypoints).history]
    expected = [0.5e-3, 1e-3] + [0.5e-3 * (1 + math.cos(math.pi * k / 3)) for k in range(3)]
    assert lrs == pytest.approx(expected)


def test_diverging_training_stops_with_clear_reason(tmp_path, tiny_keypoints):
    cfg = _cfg(tmp_path, lr=1e30, grad_clip=0, scheduler="none")
    with pytest.raises(NonFiniteLossError, match="lower `lr`"):
        _run(cfg, tiny_keypoints)


def test_iv3_gru_trains(tmp_path, tiny_features):
    cfg = resolve_config(
        {
            "model": "iv3_gru",
            "num_gloss": 6,
            "num_cat": 2,
            "batch_size": 8,
            "epochs": 2,
            "output_dir": str(tmp_path),
        }
    )
    result = _run(cfg, tiny_features)
    assert result.epochs_run == 2
    state = load_checkpoint(tmp_path / "IV3GRU_best.pt")
    assert not any(k.startswith("backbone") for k in state.model)


def _compiled_cfg(tmp_path, **over):
    """One compiled epoch on one torch thread, not the count an earlier test left: Inductor keys
    its cache on it, and `benchmarks.compile_trials --tiny` compiles these kernels first in CI."""
    return _cfg(tmp_path, epochs=1, compile=True, num_threads=1, **over)


@pytest.mark.slow
def test_compiled_model_trains_and_saves_plain_weights(tmp_path, tiny_keypoints):
    result = _run(_compiled_cfg(tmp_path), tiny_keypoints)
    assert result.epochs_run == 1 and math.isfinite(result.last_metrics["train_loss"])
    state = load_checkpoint(tmp_path / "SignTransformer_last.pt")
    assert not any(k.startswith("_orig_mod") for k in state.model)  # loads into a plain model


def test_every_epoch_reports_the_training_it_has_had(tmp_path, tiny_keypoints):
    train, _ = tiny_keypoints
    cfg = _cfg(tmp_path, epochs=3)
    history = _run(cfg, tiny_keypoints).history
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    assert [m["optimizer_steps"] for m in history] == [steps_per_epoch * e for e in (1, 2, 3)]
    assert [m["samples_seen"] for m in history] == [len(train) * e for e in (1, 2, 3)]
    # A resumed run counts on from the checkpoint.
    resumed = _run(
        _cfg(tmp_path, epochs=4), tiny_keypoints, resume=tmp_path / "SignTransformer_last.pt"
    )
    assert resumed.history[-1]["samples_seen"] == 4 * len(train)


class _Capture:
    """A reporter that resumes from `resume` and keeps the optimizer's state at every report."""

    def __init__(self, resume=None) -> None:
        self.resume, self.optimizer_groups = resume, []

    def resume_state(self):
        return self.resume

    def report(self, metrics, checkpoint, *, is_best):
        self.last = checkpoint()
        self.optimizer_groups.append(self.last.optimizer["param_groups"])


@pytest.mark.parametrize("scheduler", ["none", "plateau", "cosine"])
def test_pbt_exploit_trains_with_the_perturbed_lr_and_weight_decay(
    tmp_path, tiny_keypoints, scheduler
):
    """PBT restores the exploited trial's checkpoint into a perturbed config: the optimizer
    state it loads must not bring back the old lr and weight decay."""
    extra = {"warmup_epochs": 1} if scheduler == "cosine" else {}
    first = _Capture()
    old = _cfg(tmp_path, epochs=2, lr=1e-3, weight_decay=0.01, scheduler=scheduler, **extra)
    train_loop(old, first, tiny_keypoints)
    exploited = first.last  # the checkpoint PBT copies from the better trial
    new = _cfg(tmp_path, epochs=4, lr=2.5e-3, weight_decay=0.03, scheduler=scheduler, **extra)
    after = _Capture(resume=exploited)
    history = train_loop(new, after, tiny_keypoints).history
    groups = after.optimizer_groups[0]
    assert all(g["weight_decay"] == 0.03 for g in groups)
    if scheduler == "cosine":  # the schedule continues from epoch 2, scaled to the new lr
        factor = 0.5 * (1 + math.cos(math.pi * 1 / 3))
        assert history[2]["lr"] == pytest.approx(2.5e-3 * factor)
    else:
        assert history[2]["lr"] == pytest.approx(2.5e-3)
        assert all(g["lr"] == pytest.approx(2.5e-3) for g in groups)


def test_plain_resume_keeps_the_checkpoints_reduced_lr(tmp_path, tiny_keypoints):
    """Same lr in the config: the plateau scheduler's reductions survive a resume."""
    # lr 1e-7 learns nothing in 4 epochs, so the plateau scheduler halves it (ReduceLROnPlateau
    # ignores reductions smaller than 1e-8: a tinier lr would never be reduced).
    cfg = _cfg(tmp_path, epochs=4, lr=1e-7, scheduler="plateau", scheduler_patience=0)
    _run(cfg, tiny_keypoints)
    last = load_checkpoint(tmp_path / "SignTransformer_last.pt")
    reduced = last.optimizer["param_groups"][0]["lr"]
    assert reduced < 1e-7
    more = _cfg(tmp_path, epochs=5, lr=1e-7, scheduler="plateau", scheduler_patience=0)
    history = _run(more, tiny_keypoints, resume=tmp_path / "SignTransformer_last.pt").history
    assert history[-1]["lr"] == pytest.approx(reduced, rel=1e-9)


@pytest.mark.slow
def test_compiled_runs_in_one_process_each_compile_their_own_model(tmp_path, tiny_keypoints):
    """Dynamo guards on dropout's p: without a fresh cache per run, a reused actor's later
    configs recompile until `recompile_limit` and then train eagerly (here the limit is 1)."""
    from torch._dynamo.utils import counters

    graphs = []
    with torch._dynamo.config.patch(recompile_limit=1):
        for i, dropout in enumerate((0.1, 0.2)):
            before = counters["stats"]["unique_graphs"]
            _run(_compiled_cfg(tmp_path / str(i), dropout=dropout), tiny_keypoints)
            graphs.append(counters["stats"]["unique_graphs"] - before)
    assert graphs[0] >= 1 and graphs[1] >= 1, graphs  # the second run compiled, not eager
