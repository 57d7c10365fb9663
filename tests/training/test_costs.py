from __future__ import annotations

import pytest
import torch

from signray.config import resolve_config
from signray.layout import LATENCY_METRIC, PARAMS_METRIC
from signray.training.costs import count_params, model_costs


def _cfg(**over):
    return resolve_config(
        {"num_gloss": 6, "num_cat": 2, "d_model": 32, "n_heads": 4, "depth": 1, "ff_dim": 64,
         "num_threads": 1, **over}
    )  # fmt: skip


def test_costs_are_measured_only_when_asked(tiny_keypoints):
    _, val = tiny_keypoints
    assert model_costs(_cfg(), val, []) == {}
    costs = model_costs(_cfg(), val, [LATENCY_METRIC, PARAMS_METRIC])
    assert costs[PARAMS_METRIC] == count_params(_cfg().build_model(val.feature_dim))
    assert costs[LATENCY_METRIC] > 0


def test_a_bigger_model_has_more_parameters(tiny_keypoints):
    _, val = tiny_keypoints
    small = model_costs(_cfg(), val, [PARAMS_METRIC])[PARAMS_METRIC]
    big = model_costs(_cfg(d_model=64, depth=2), val, [PARAMS_METRIC])[PARAMS_METRIC]
    assert big > small


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_trial_times_its_latency_on_the_gpu(tiny_keypoints):
    _, val = tiny_keypoints
    torch.cuda.reset_peak_memory_stats()
    costs = model_costs(_cfg(use_gpu=True), val, [LATENCY_METRIC])
    assert costs[LATENCY_METRIC] > 0 and torch.cuda.max_memory_allocated() > 0
