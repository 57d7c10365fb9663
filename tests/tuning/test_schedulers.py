"""Scheduler budgets that fit the data (no cluster): grace periods in samples, steps or epochs,
checks against the warm-up and the budget, HyperBand's first rung, PBT's mutations."""

from __future__ import annotations

import pytest

from signray.config import resolve_config
from signray.config.search import SearchOptions
from signray.config.search_space import parse_search_space
from signray.errors import ConfigError
from signray.tuning.schedulers import (
    MIN_GRACE_STEPS,
    build_scheduler,
    pbt_mutations,
    scheduler_budget,
)


def _base(**over):
    return resolve_config({"num_gloss": 10, "num_cat": 2, "batch_size": 16, "epochs": 60, **over})


def _space(params: dict, base=None):
    return parse_search_space({"space": params}, "transformer", base)


def test_small_data_is_judged_after_min_steps_not_after_one_epoch():
    # 50 clips at batch 16: 4 optimizer steps per epoch; one epoch would judge after 4 steps.
    budget = scheduler_budget(SearchOptions(), _base(), None, n_train=50)
    assert budget.unit == "samples" and budget.attr == "samples_seen"
    assert budget.grace == MIN_GRACE_STEPS * 16  # 800 samples = 16 epochs of 50 clips
    assert budget.max_t == 60 * 50
    steps = scheduler_budget(SearchOptions(budget_unit="steps"), _base(), None, n_train=50)
    assert steps.grace == MIN_GRACE_STEPS and steps.per_epoch == 4


def test_fsl_size_data_keeps_a_one_epoch_grace_period():
    budget = scheduler_budget(SearchOptions(), _base(epochs=30), None, n_train=1680)
    assert budget.grace == 1680 and budget.epochs(budget.grace) == 1.0
    epochs = scheduler_budget(SearchOptions(budget_unit="epochs"), _base(), None, n_train=1680)
    assert (epochs.grace, epochs.max_t, epochs.attr) == (1, 60, "epoch")


def test_steps_budget_covers_the_smallest_sampled_batch():
    space = _space({"batch_size": {"distribution": "choice", "values": [8, 32]}})
    budget = scheduler_budget(SearchOptions(budget_unit="steps"), _base(), space, n_train=64)
    assert budget.max_t == 60 * 8  # batch 8: 8 steps per epoch


def test_default_grace_covers_the_warmup_and_is_capped_by_the_budget():
    base = _base(scheduler="cosine", warmup_epochs=5)
    budget = scheduler_budget(SearchOptions(budget_unit="epochs"), base, None, n_train=1680)
    assert budget.grace == 5
    short = scheduler_budget(SearchOptions(), _base(epochs=4), None, n_train=50)
    assert short.grace == 100 and short.notes  # 4 epochs x 50 / 2: told, not silent


def test_grace_shorter_than_warmup_is_refused_with_the_fix():
    base = _base(scheduler="cosine", warmup_epochs=3)
    opts = SearchOptions(budget_unit="epochs", grace_period=1)
    with pytest.raises(ConfigError) as err:
        scheduler_budget(opts, base, None, n_train=100)
    text = str(err.value)
    assert "`--grace-period` 1 epochs is shorter than the lr warm-up" in text
    assert "Use --grace-period >= 3" in text and "--warmup-epochs" in text
    assert err.value.problems[0].fields == ("grace_period", "warmup_epochs")
    # A searched warm-up counts with its largest value.
    space = _space({"warmup_epochs": {"distribution": "randint", "low": 1, "high": 4}}, base)
    with pytest.raises(ConfigError, match="Use --grace-period >= 4"):
        scheduler_budget(opts.replace(grace_period=2), base, space, n_train=100)


def test_grace_beyond_the_budget_is_refused():
    with pytest.raises(ConfigError, match=r"must be <= the budget of one trial \(3000 samples"):
        scheduler_budget(SearchOptions(grace_period=5000), _base(), None, n_train=50)


def test_hyperband_first_rung_is_at_least_the_grace_period():
    opts = SearchOptions(trial_scheduler="hyperband", budget_unit="samples")
    budget = scheduler_budget(opts, _base(), None, n_train=50)
    hb = build_scheduler(opts, budget)
    first_rungs = [hb._get_r0(s) for s in range(hb._s_max_1)]
    assert min(first_rungs) >= budget.grace
    assert hb._s_max_1 == 2  # 3000 / 800 samples: one halving fits


def test_pbt_perturbs_training_fields_not_the_architecture():
    space = _space(
        {
            "lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2},
            "weight_decay": {"distribution": "loguniform", "low": 1e-5, "high": 1e-2},
            "d_model": {"distribution": "choice", "values": [32, 64]},
            "depth": {"distribution": "randint", "low": 1, "high": 3},
        }
    )
    assert sorted(pbt_mutations(space)) == ["lr", "weight_decay"]
    opts = SearchOptions(trial_scheduler="pbt")
    budget = scheduler_budget(opts, _base(), space, n_train=50)
    pbt = build_scheduler(opts, budget, space=space)
    assert pbt._perturbation_interval == budget.grace
    arch_only = _space({"d_model": {"distribution": "choice", "values": [32, 64]}})
    with pytest.raises(ConfigError, match="outside the architecture"):
        build_scheduler(opts, budget, space=arch_only)


def test_grace_shorter_than_one_epoch_is_refused():
    with pytest.raises(ConfigError, match=r"less than one epoch \(50 samples\).*>= 50"):
        scheduler_budget(SearchOptions(grace_period=20), _base(), None, n_train=50)


def test_pbt_keeps_perturbed_augmentation_strengths_inside_the_space():
    space = _space(
        {
            "lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2},
            "aug_noise": {"distribution": "uniform", "low": 0.0, "high": 0.02},
            "aug_speed": {"distribution": "quniform", "low": 0.0, "high": 0.3, "q": 0.1},
            "label_smoothing": {"distribution": "uniform", "low": 0.0, "high": 0.2},
        }
    )
    assert sorted(pbt_mutations(space)) == ["aug_noise", "aug_speed", "label_smoothing", "lr"]
    opts = SearchOptions(trial_scheduler="pbt")
    pbt = build_scheduler(opts, scheduler_budget(opts, _base(), space, n_train=50), space=space)
    # what Ray's explore step does to a value at the top of its range: * 1.2
    perturbed = {"lr": 1e-2 * 1.2, "aug_noise": 0.02 * 1.2, "aug_speed": 0.3 * 1.2,
                 "label_smoothing": 0.2 * 0.8, "batch_size": 16}  # fmt: skip
    kept = pbt._custom_explore_fn(dict(perturbed))
    assert kept["lr"] == 1e-2 and kept["aug_noise"] == 0.02
    assert kept["aug_speed"] == pytest.approx(0.3) and kept["label_smoothing"] == 0.2 * 0.8
    assert kept["batch_size"] == 16  # not searched: untouched
    resolve_config({k: v for k, v in kept.items()})  # a valid config
